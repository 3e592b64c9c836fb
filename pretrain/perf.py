"""Precision and throughput for every script: the compute dtype and its autocast (``autocast_for``), and the peak
FLOP/s an MFU figure is measured against (train.py, bench.py, hellaswag.py, sample.py).

MFU (model FLOPs utilization, PaLM paper appendix B) = achieved model FLOP/s / peak FLOP/s of the dtype the run
computes in. On CUDA the peak is the datasheet *dense* figure (sparsity doubles the marketing numbers; halve them)
for the GPU the name identifies exactly: H100 SXM, PCIe and NVL differ by up to 30 %, L4 and L40 by 1.5x, so a
name that no pattern matches in full gets no peak (MFU None) instead of a neighbour's. CPUs have no agreed datasheet
figure, so on CPU the peak is *measured*: the best FLOP/s of a large fp32 matmul on this machine with the current
thread count. CPU MFU therefore says "fraction of what this machine's matmul reaches", not a vendor number.

    python pretrain/perf.py              # which GPU key this machine's name matched, and its peaks
"""
from __future__ import annotations

import contextlib
import functools
import re
import time

import torch

# Dense TFLOP/s from the vendors' datasheets: (bf16, fp16, tf32, fp32); None = no such tensor-core mode.
# Keys are what we print; patterns must match the whole of torch.cuda.get_device_name() after `_normalize`.
GPU_PEAKS = {
    "H100 SXM": (r"H100( SXM5?)?( \d+GB)?( HBM3E?)?", (989.4, 989.4, 494.7, 66.9)),
    "H100 PCIe": (r"H100( \d+GB)? PCIE( \d+GB)?", (756.5, 756.5, 378.0, 51.2)),
    "H100 NVL": (r"H100 NVL( \d+GB)?", (835.5, 835.5, 417.5, 60.0)),
    "H200 SXM": (r"H200( SXM)?( \d+GB)?( HBM3E)?", (989.4, 989.4, 494.7, 66.9)),
    "H200 NVL": (r"H200 NVL( \d+GB)?", (835.5, 835.5, 417.5, 60.0)),
    "GH200": (r"GH200( \d+GB)?", (989.4, 989.4, 494.7, 66.9)),
    "A100 SXM": (r"A100 SXM4?( \d+GB)?", (312.0, 312.0, 156.0, 19.5)),
    "A100 PCIe": (r"A100( \d+GB)? PCIE( \d+GB)?", (312.0, 312.0, 156.0, 19.5)),
    "A10": (r"A10", (125.0, 125.0, 62.5, 31.2)),  # A10G (AWS) publishes no tensor figures: left out on purpose
    "L4": (r"L4", (121.0, 121.0, 60.0, 30.3)),
    "L40": (r"L40", (181.0, 181.0, 90.5, 90.5)),
    "L40S": (r"L40S", (362.0, 362.0, 183.0, 91.6)),
    "RTX 4090": (r"RTX 4090", (165.2, 165.2, 82.6, 82.6)),
    "RTX 3090": (r"RTX 3090", (71.0, 71.0, 35.6, 35.6)),
    "V100 SXM2": (r"V100 SXM2( \d+GB)?", (None, 125.0, None, 15.7)),  # Volta: no bf16, no TF32
    "V100 PCIe": (r"V100 PCIE( \d+GB)?", (None, 112.0, None, 14.0)),
    "T4": (r"T4", (None, 65.0, None, 8.1)),
}
MODES = ("bf16", "fp16", "tf32", "fp32")


def _normalize(name: str) -> str:
    """'NVIDIA A100-SXM4-80GB' -> 'A100 SXM4 80GB': upper case, '-'/'_' as spaces, vendor words dropped."""
    words = re.sub(r"[-_\s]+", " ", name.upper()).split()
    return " ".join(w for w in words if w not in ("NVIDIA", "TESLA", "GEFORCE"))


def match_gpu(name: str) -> str | None:
    """The GPU_PEAKS key whose pattern matches the whole device name, or None (never a near miss)."""
    norm = _normalize(name)
    hits = [key for key, (pattern, _) in GPU_PEAKS.items() if re.fullmatch(pattern, norm)]
    assert len(hits) <= 1, f"{name}: matched {hits}; the patterns must be disjoint"
    return hits[0] if hits else None


def precision_mode(dtype: torch.dtype, tf32: bool | None = None) -> str:
    """'bf16' / 'fp16' / 'tf32' / 'fp32': the matmul mode a run in `dtype` uses. For float32 that depends on
    whether TF32 is allowed (tf32 None: read torch.backends.cuda.matmul.allow_tf32, which train.py sets)."""
    if dtype == torch.bfloat16:
        return "bf16"
    if dtype == torch.float16:
        return "fp16"
    if tf32 is None:
        tf32 = torch.backends.cuda.matmul.allow_tf32
    return "tf32" if tf32 else "fp32"


def gpu_peak_flops(name: str, mode: str) -> float | None:
    """Datasheet dense peak FLOP/s of the GPU called `name` in `mode`; None for an unknown GPU or mode."""
    key = match_gpu(name)
    if key is None:
        return None
    tflops = GPU_PEAKS[key][1][MODES.index(mode)]
    return None if tflops is None else tflops * 1e12


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


def peak_flops(device: torch.device | str, dtype: torch.dtype = torch.float32, tf32: bool | None = None
               ) -> float | None:
    """Peak FLOP/s for MFU on `device` computing in `dtype` (see precision_mode for float32 and `tf32`);
    None for an unknown GPU (describe_peak says why)."""
    device = torch.device(device)
    if device.type == "cpu":
        return measured_cpu_peak_flops()
    if device.type == "cuda":
        return gpu_peak_flops(torch.cuda.get_device_name(device), precision_mode(dtype, tf32))
    return None


def describe_peak(device: torch.device | str, dtype: torch.dtype = torch.float32, tf32: bool | None = None) -> str:
    """One line saying which peak MFU uses: the matched GPU key and mode, or why there is none."""
    device = torch.device(device)
    peak = peak_flops(device, dtype, tf32)
    if device.type == "cpu":
        return f"cpu: measured fp32 matmul peak {peak / 1e12:.3f} TFLOP/s ({torch.get_num_threads()} threads)"
    if device.type != "cuda":
        return f"{device}: no peak known, MFU not computed"
    name, mode = torch.cuda.get_device_name(device), precision_mode(dtype, tf32)
    key = match_gpu(name)
    if key is None:
        return f"{name!r}: not in perf.GPU_PEAKS (exact names only), MFU not computed"
    if peak is None:
        return f"{name!r} = {key}: has no {mode} tensor-core mode, MFU not computed"
    return f"{name!r} = {key}: {mode} dense peak {peak / 1e12:.1f} TFLOP/s (datasheet)"


def compute_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """--dtype auto|float32|bfloat16 on ``device``: auto = bf16 on CUDA, fp32 elsewhere."""
    return {"auto": torch.bfloat16 if device.type == "cuda" else torch.float32, "float32": torch.float32,
            "bfloat16": torch.bfloat16}[dtype]


def autocast_for(dtype: str, device: torch.device):
    """A context factory for forward passes: bf16 autocast (auto on CUDA, or asked), else nothing. On CUDA it
    also turns TF32 on for the fp32 matmuls left outside autocast (the CPU stays exact fp32)."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        torch.set_float32_matmul_precision("high")
    if compute_dtype(dtype, device) == torch.float32:
        return contextlib.nullcontext
    return lambda: torch.autocast(device.type, dtype=torch.bfloat16)


def mfu(flops_per_token: float, tokens_per_s: float, peak: float | None) -> float | None:
    """Model FLOPs utilization; None when the peak is unknown."""
    return None if not peak else flops_per_token * tokens_per_s / peak


def main(argv=None):
    import argparse

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    for dtype, tf32 in ((torch.bfloat16, None), (torch.float32, True), (torch.float32, False)):
        print(describe_peak(args.device, dtype, tf32))
        if torch.device(args.device).type == "cpu":
            break  # one measured figure, whatever the dtype


if __name__ == "__main__":
    main()
