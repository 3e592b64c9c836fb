#!/usr/bin/env bash
# The README's main job: set up the environment, then run the whole pipeline at CPU scale and build the report.
# Extra arguments go to report/pipeline.py (e.g. --redo all, --only bpe). The set-up time is recorded in the report.
set -u
SECONDS=0
LLMHW_SETUP=runtime  # the pipeline needs requirements.txt only (the test command installs the test packages too)
source "$(dirname "${BASH_SOURCE[0]}")/../.ci/env.sh"
cd "$LLMHW_ROOT"
exec python report/pipeline.py --setup_seconds "$SECONDS" "$@"
