#!/usr/bin/env bash
# One short GPU measurement (a few minutes on an H100/H200) for pretrain/README.md:
#   1. bench.py: GPT-2 124M, T=1024, bf16 autocast + torch.compile (ours), eager ours and eager HF GPT2LMHeadModel:
#      tokens/s and MFU against the datasheet bf16 dense peak (perf.py: H200/H100 989 TFLOP/s);
#   2. when a prepared data set was carried along, 12 steps of the real train.py (preset gpt2-124m: fused AdamW,
#      bf16, TF32, compile, nccl path with world size 1), then its HF export;
#   3. bench.py again at twice the micro-batch (preset gpt2-124m's 64 rows), ours only: does a bigger batch raise MFU?
# The parts' time limits add up to 540 s, so the whole script fits one device call of 600 s.
# Usage (repo root):  bash pretrain/gpu_check.sh      results: $OUT (or pretrain/output/gpu_check)/
# To include step 2 from a machine without data, prepare locally first and carry the folder:
#   python pretrain/prepare.py --input tinyshakespeare.txt --out_dir pretrain/output/data/tinyshakespeare-gpt2
# GPU_CHECK_DRY=1 rehearses the whole script on the CPU at toy sizes (pretrain/tests/test_gpu_check.py does, so the
# script cannot rot between the rare sessions that have a GPU); GPU_CHECK_DATA / GPU_CHECK_TRAIN_OUT move the folders.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out="${OUT:-pretrain/output/gpu_check}"
data="${GPU_CHECK_DATA:-pretrain/output/data/tinyshakespeare-gpt2}"
train_out="${GPU_CHECK_TRAIN_OUT:-pretrain/output/gpu_train}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false MPLBACKEND=Agg HF_HUB_OFFLINE=1 LLMHW_OFFLINE=1
if [ "${GPU_CHECK_DRY:-0}" = 1 ]; then  # same commands, toy model, CPU fp32
    device=cpu dtype=float32 model=(--n_layer 2 --n_head 2 --n_embd 64) T=64 B=2
    echo "dry run on the CPU" | tee "$out/gpu.txt"
else  # the issue's target: GPT-2 124M, T=1024, bf16 autocast + compile
    device=cuda dtype=bfloat16 model=(--n_layer 12 --n_head 12 --n_embd 768) T=1024 B=32
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
fi
python -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'transformers', transformers.__version__)" | tee -a "$out/gpu.txt"

fail=0  # a failed part is reported at the end; the other part still runs (one device session is precious)
timeout 200 python pretrain/bench.py --device $device --dtype $dtype "${model[@]}" \
    --vocab_size 50304 --seq_len $T --batch_size $B --steps 8 --compile --json "$out/bench_124m.json" \
    2>&1 | grep -v "Loading weights" | tee "$out/bench_124m.txt" || fail=1

if [ -f "$data/meta.json" ]; then
    # 12 steps of B x T tokens (one micro-batch per step): the training loop's own tokens/s and MFU
    # (checkpoint and HF export, ~1.5 GB, stay in $train_out; the logs are copied to $out)
    timeout 200 python pretrain/train.py --preset gpt2-124m --device $device "${model[@]}" --data "$data" \
        --out_dir "$train_out" --max_steps 12 --warmup_steps 2 --seq_len $T --total_batch_size 0 --batch_size $B \
        --eval_interval 0 --val_steps 1 --hellaswag_limit 0 --sample_tokens 16 2>&1 | tee "$out/train.txt" || fail=1
    cp "$train_out"/{log.jsonl,summary.json,loss.png} "$out/" || fail=1
    python - "$out/log.jsonl" <<'EOF' | tee -a "$out/train.txt" || fail=1
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"loss"' in l]
steady = rows[3:]  # after compilation and warm-up
print(f"train.py steady state: {statistics.median(r['tokens_per_s'] for r in steady):,.0f} tokens/s, "
      f"MFU {statistics.median(r['mfu'] for r in steady):.1%} (median of steps 3..{rows[-1]['step']})")
EOF
else
    echo "no $data: skipped the train.py part (see the header of this script)"
fi

timeout 140 python pretrain/bench.py --device $device --dtype $dtype "${model[@]}" --no_hf \
    --vocab_size 50304 --seq_len $T --batch_size $((2 * B)) --steps 8 --compile --json "$out/bench_124m_2b.json" \
    2>&1 | tee "$out/bench_124m_2b.txt" || fail=1
[ "$fail" = 0 ] || echo "gpu_check: a part failed (see above)"
exit "$fail"
