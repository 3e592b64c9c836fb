import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))   # report/ modules
sys.path.insert(0, str(HERE))          # handmade.py (logs shared by the tests)
