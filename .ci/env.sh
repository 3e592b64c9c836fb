# Sourced by the README's two commands (report/run_pipeline.sh, tests/run.sh): do all the set-up on a fresh machine.
#   - reuse the active virtual environment, else create/reuse $LLMHW_VENV (default <repo>/.venv);
#   - with no torch installed, install the CPU build torch==2.13.0 (plain `pip install torch` would pull a multi-GB
#     CUDA build; on a GPU machine install the torch you want first and it is kept);
#   - install requirements.txt, and requirements-test.txt unless LLMHW_SETUP=runtime (the main job needs no test
#     packages: wandb and tensorboard alone add a minute to a fresh set-up), each when it changed since its last
#     install (one stamp file per list).
set -e
LLMHW_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "${VIRTUAL_ENV:-}" ]; then
    venv="${LLMHW_VENV:-$LLMHW_ROOT/.venv}"
    if [ ! -x "$venv/bin/python" ]; then
        echo "[setup] creating virtual environment $venv"
        "${PYTHON:-python3}" -m venv "$venv"
    fi
    # shellcheck disable=SC1091
    . "$venv/bin/activate"
fi
if ! python -c "import torch" >/dev/null 2>&1; then
    echo "[setup] installing torch==2.13.0 (CPU build)"
    python -m pip install -q torch==2.13.0
fi
lists=(requirements.txt)
[ "${LLMHW_SETUP:-all}" = runtime ] || lists+=(requirements-test.txt)
todo=()
hash_of() { sha256sum < "$LLMHW_ROOT/$1" | cut -c1-16; }
for list in "${lists[@]}"; do
    [ "$(cat "$VIRTUAL_ENV/.llmhw-${list%.txt}" 2>/dev/null)" = "$(hash_of "$list")" ] || todo+=(-r "$LLMHW_ROOT/$list")
done
if [ ${#todo[@]} -gt 0 ]; then
    echo "[setup] installing ${todo[*]} into $VIRTUAL_ENV"
    python -m pip install -q "${todo[@]}"
    for list in "${lists[@]}"; do hash_of "$list" > "$VIRTUAL_ENV/.llmhw-${list%.txt}"; done
fi
# Offline copy of the data sets beside the checkout (as in CI), unless the user chose a data directory.
if [ -z "${LLMHW_DATA_DIR:-}" ] && [ -d "$LLMHW_ROOT/../shared/data" ]; then
    export LLMHW_DATA_DIR="$(cd "$LLMHW_ROOT/../shared/data" && pwd)"
fi
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false MPLBACKEND=Agg
set +e
