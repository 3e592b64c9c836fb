#!/usr/bin/env bash
# The README's test command: set up the environment, then run each folder's tests in its own pytest process
# (bpe/, pretrain/ and finetune/ each have a module named `train`, which cannot share one Python process),
# then the cross-folder tests. Extra arguments go to every pytest run (e.g. -x, -k name).
# Two pytest-xdist workers (LLMHW_TEST_WORKERS) with one torch thread each: the tests' models are tiny, and two
# single-threaded processes finish about twice as fast on two cores as one process with two threads.
# Prints one closing line "N passed, N failed" and exits non-zero on any failure.
set -u
source "$(dirname "${BASH_SOURCE[0]}")/../.ci/env.sh"
cd "$LLMHW_ROOT"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
# The oldest transformers requirements.txt allows, in its own virtual environment (built once, about 45 s, then
# reused; rebuilt when requirements.txt's floor moves): bpe/tests/test_io.py loads a tokenizer folder with it.
oldest="transformers==$(grep -oE '^transformers>=[0-9.]+' requirements.txt | cut -d= -f2).*"
oldvenv="${LLMHW_OLDEST_VENV:-$LLMHW_ROOT/.cache/oldest-transformers}"
if [ "$(cat "$oldvenv/.llmhw-spec" 2>/dev/null)" != "$oldest" ]; then
    if [ -e "$oldvenv" ] && [ ! -f "$oldvenv/.llmhw-spec" ]; then
        echo "[setup] $oldvenv exists but was not built here; not touching it (set LLMHW_OLDEST_VENV elsewhere)"
    else
        echo "[setup] building $oldvenv with $oldest (the oldest transformers requirements.txt allows)"
        rm -rf "$oldvenv" && "${PYTHON:-python3}" -m venv "$oldvenv" \
            && "$oldvenv/bin/python" -m pip install -q "$oldest" \
            && echo "$oldest" > "$oldvenv/.llmhw-spec" || echo "[setup] could not build $oldvenv"
    fi
fi
export LLMHW_OLDEST_TRANSFORMERS_PYTHON="$oldvenv/bin/python" LLMHW_OLDEST_TRANSFORMERS="$oldest"
workers="${LLMHW_TEST_WORKERS:-2}"
passed=0; failed=0; status=0
for suite in tests bpe/tests pretrain/tests finetune/tests report/tests; do
    [ -d "$suite" ] || continue
    echo "===== $suite"
    log="$(mktemp)"
    python -m pytest "$suite" -q -p no:cacheprovider --import-mode=importlib --rootdir "$suite" -n "$workers" "$@" \
        2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    p=$(tail -n 3 "$log" | grep -oE '[0-9]+ passed' | grep -oE '[0-9]+' || echo 0)
    f=$(tail -n 3 "$log" | grep -oE '[0-9]+ (failed|error)' | grep -oE '[0-9]+' | paste -sd+ | bc 2>/dev/null || echo 0)
    passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0}))
    if [ "$rc" -ne 0 ]; then status=1; [ "${f:-0}" -eq 0 ] && failed=$((failed + 1)); fi
    rm -f "$log"
done
echo "$passed passed, $failed failed"
exit $status
