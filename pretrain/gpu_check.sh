#!/usr/bin/env bash
# One short GPU measurement for pretrain/README.md, in three parts that also run alone:
#   bench    bench.py: GPT-2 124M, T=1024, B=32, bf16 autocast: compiled ours, eager ours, eager HF GPT2LMHeadModel
#            (tokens/s, MFU against the bf16 dense peak of the GPU that bench.py --peak matched by its exact name);
#   train    12 steps of the real train.py (preset gpt2-124m: fused AdamW, bf16, TF32, compile) on one GPU, then its
#            HF export; steady-state tokens/s and MFU from its log (steps after the first, which holds the
#            compilation), against the peak of the run's dtype. Needs a prepared data set (see below);
#   bench64  bench.py again at the preset's micro-batch of 64 rows, ours only: does a bigger batch raise MFU?
# What it does NOT cover: DDP. One GPU runs train.py with world size 1, which takes the same code path without a
# process group, so the nccl all-reduce, DistributedSampler-style striding and rank-0 decisions are not exercised.
# Check those on a machine with 2+ GPUs:
#   torchrun --standalone --nproc_per_node=2 pretrain/train.py --preset gpt2-124m ...
#
# Usage (repo root):  bash pretrain/gpu_check.sh [bench] [train] [bench64]      (no part named: all three)
# Time: every command runs under `timeout -k 5 LIMIT` (SIGTERM at the limit, SIGKILL 5 s later). The limits are
# environment 5 + 10 + 10, bench 110, train 150 + bench.py --from_run 10, bench64 5 (free memory) + 75 = 375 s, plus
# at most 5 s of kill grace for each of the 8 commands = 415 s at most: one 600 s device call holds the whole script
# and still leaves room to rerun a part that failed. bench64 is skipped with a note when less than 76 GB are free.
# Results, at most 7 files, flat in $OUT (or pretrain/output/gpu_check):
#   gpu_check.txt (environment, matched GPU key, every part's output, appended), bench.json, bench64.json,
#   train.json (steady-state figures), train_log.jsonl, train_summary.json, train_loss.png.
# For the train part from a machine without data, prepare locally first and carry the folder:
#   python pretrain/prepare.py --input tinyshakespeare.txt --out_dir pretrain/output/data/tinyshakespeare-gpt2
# GPU_CHECK_DRY=1 rehearses every part on the CPU at toy sizes (pretrain/tests/test_gpu_check.py does, so the script
# cannot rot between the rare sessions that have a GPU); GPU_CHECK_DATA / GPU_CHECK_TRAIN_OUT move the folders.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out="${OUT:-pretrain/output/gpu_check}"
data="${GPU_CHECK_DATA:-pretrain/output/data/tinyshakespeare-gpt2}"
train_out="${GPU_CHECK_TRAIN_OUT:-pretrain/output/gpu_train}"
log="$out/gpu_check.txt"
mkdir -p "$out"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false MPLBACKEND=Agg HF_HUB_OFFLINE=1 LLMHW_OFFLINE=1
if [ "${GPU_CHECK_DRY:-0}" = 1 ]; then
    # same commands, toy model, CPU fp32; no time limits (compiling on a busy 2-core CPU is slow) and bench64
    # without a compiled model: part bench already rehearses bench.py --compile, and each compilation costs CI ~20 s
    device=cpu dtype=float32 model=(--n_layer 2 --n_head 2 --n_embd 64) T=64 B=2 compile64=() steps=3
    limits=(0 0 0 0 0 0 0)  # timeout 0: no limit
    env_line="dry run on the CPU"
else  # the target: GPT-2 124M, T=1024, bf16 autocast + compile
    device=cuda dtype=bfloat16 model=(--n_layer 12 --n_head 12 --n_embd 768) T=1024 B=32 steps=8
    limits=(5 10 10 110 150 10 75)  # nvidia-smi, versions, --peak, bench, train, --from_run, bench64 (seconds)
    compile64=(--compile)
    env_line="$(timeout -k 5 ${limits[0]} nvidia-smi --query-gpu=name,memory.total,memory.free,driver_version \
        --format=csv,noheader || echo "nvidia-smi: no answer within ${limits[0]} s")"
fi

environment() {  # what ran where: GPU, versions, and which datasheet entry bench.py --peak matched
    echo "== $(date -u +%FT%TZ) parts: $*"
    echo "$env_line"
    timeout -k 5 ${limits[1]} python -c "import torch, transformers; print('torch', torch.__version__, 'cuda', \
torch.version.cuda, 'transformers', transformers.__version__)"
    timeout -k 5 ${limits[2]} python pretrain/bench.py --peak --device $device
}

# Each part returns non-zero on its first failing command (set -e does not act inside a tested function).
bench() {
    timeout -k 5 ${limits[3]} python pretrain/bench.py --device $device --dtype $dtype "${model[@]}" \
        --vocab_size 50304 --seq_len $T --batch_size $B --steps $steps --compile --out "$out/bench.json" 2>&1 \
        | { grep -v "Loading weights" || true; }
}

train() {
    if [ ! -f "$data/meta.json" ]; then
        echo "train: no prepared data at $data: skipped (see the header of this script)"
        return 0
    fi
    # one micro-batch of B x T tokens per step; evaluation only at the end (1 val step, no HellaSwag)
    # --overwrite: a fresh run each time (an earlier check's run folder is replaced, not resumed)
    timeout -k 5 ${limits[4]} python pretrain/train.py --preset gpt2-124m --device $device "${model[@]}" \
        --data "$data" --out_dir "$train_out" --overwrite --max_steps 12 --warmup_steps 2 --seq_len $T \
        --total_batch_size 0 --batch_size $B --eval_interval 0 --val_steps 1 --hellaswag_limit 0 \
        --sample_tokens 16 2>&1 || return 1
    cp "$train_out/log.jsonl" "$out/train_log.jsonl" || return 1
    cp "$train_out/summary.json" "$out/train_summary.json" || return 1
    if [ -f "$train_out/loss.png" ]; then cp "$train_out/loss.png" "$out/train_loss.png"; fi
    timeout -k 5 ${limits[5]} python pretrain/bench.py --from_run "$train_out" --out "$out/train.json"
}

bench64() {
    if [ "$device" = cuda ]; then  # B=64 at 124M / T=1024 needs ~70 GB: an 80 GB H100 may not fit it
        free=$(timeout -k 5 ${limits[0]} nvidia-smi --query-gpu=memory.free --format=csv,noheader,nounits \
            | head -1 || echo 0)
        if [ "${free:-0}" -lt 76000 ]; then
            echo "bench64: skipped: ${free:-?} MiB free on the GPU, B=64 needs about 76 GB"
            return 0
        fi
    fi
    timeout -k 5 ${limits[6]} python pretrain/bench.py --device $device --dtype $dtype "${model[@]}" --no_hf \
        --vocab_size 50304 --seq_len $T --batch_size $((2 * B)) --steps $steps "${compile64[@]}" \
        --out "$out/bench64.json" 2>&1
}

parts=("$@")
[ ${#parts[@]} -gt 0 ] || parts=(bench train bench64)
for part in "${parts[@]}"; do
    case "$part" in bench|train|bench64) ;; *) echo "gpu_check: unknown part '$part' (bench, train, bench64)" >&2
        exit 2 ;; esac
done
environment "${parts[@]}" 2>&1 | tee -a "$log"
fail=0  # a failed part is reported at the end; the others still run (device time is precious)
for part in "${parts[@]}"; do
    echo "== part $part" | tee -a "$log"
    if ! "$part" 2>&1 | tee -a "$log"; then
        echo "gpu_check: part $part failed (rerun it alone: bash pretrain/gpu_check.sh $part)" | tee -a "$log"
        fail=1
    fi
done
exit "$fail"
