"""Throughput bookkeeping shared by train.py and bench.py: the peak FLOP/s an MFU figure is measured against.

MFU (model FLOPs utilization, PaLM paper appendix B) = achieved model FLOP/s / peak FLOP/s. On CUDA the peak is the
datasheet dense figure for the dtype (table below). CPUs have no agreed datasheet figure, so on CPU the peak is
*measured*: the best FLOP/s of a large fp32 matmul on this machine, with the current thread count. CPU MFU therefore
says "fraction of what this machine's matmul reaches", not a vendor number.
"""
from __future__ import annotations

import functools
import time

import torch

# Dense (non-sparse) peak TFLOP/s by GPU name substring: bf16 / fp16 tensor cores, and fp32 (TF32 where it applies).
GPU_PEAK_TFLOPS = {  # name substring: (bf16, tf32)
    "H200": (989.0, 494.0), "H100": (989.0, 494.0), "A100": (312.0, 156.0), "A10G": (125.0, 62.5),
    "L40S": (362.0, 183.0), "L4": (121.0, 60.0), "4090": (165.0, 82.6), "3090": (71.0, 35.6), "V100": (125.0, 15.7),
    "T4": (65.0, 8.1),
}


@functools.lru_cache(maxsize=None)
def measured_cpu_peak_flops(n: int = 1024, seconds: float = 1.0) -> float:
    """Best fp32 FLOP/s of an n x n matmul on this CPU (cached for the process)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm up the BLAS threads
    best, t_end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        a @ b
        best = max(best, 2 * n ** 3 / (time.perf_counter() - t0))
    return best


def peak_flops(device: torch.device | str, dtype: torch.dtype = torch.float32) -> float | None:
    """Peak FLOP/s for MFU on `device` computing in `dtype`; None for an unknown GPU."""
    device = torch.device(device)
    if device.type == "cpu":
        return measured_cpu_peak_flops()
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, (half, tf32) in GPU_PEAK_TFLOPS.items():
            if key in name:
                return 1e12 * (half if dtype in (torch.bfloat16, torch.float16) else tf32)
    return None


def mfu(flops_per_token: float, tokens_per_s: float, peak: float | None) -> float | None:
    return None if not peak else flops_per_token * tokens_per_s / peak
