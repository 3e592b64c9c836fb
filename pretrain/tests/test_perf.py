"""modeling_gpt2's MFU peaks: GPU names as torch.cuda.get_device_name() reports them map to exactly one datasheet
entry (or none), the peak follows the run's dtype, and the CPU peak is a measured figure."""
import pytest
import torch

import modeling_gpt2 as perf

# Names as drivers report them (nvidia-smi / torch.cuda.get_device_name) -> the key it must pick.
REPORTED_NAMES = {
    "NVIDIA H100 80GB HBM3": "H100 SXM",
    "NVIDIA H100 PCIe": "H100 PCIe",
    "NVIDIA H100 NVL": "H100 NVL",
    "NVIDIA H200": "H200 SXM",
    "NVIDIA H200 NVL": "H200 NVL",
    "NVIDIA GH200 480GB": "GH200",
    "NVIDIA A100-SXM4-80GB": "A100 SXM",
    "NVIDIA A100-SXM4-40GB": "A100 SXM",
    "NVIDIA A100-PCIE-40GB": "A100 PCIe",
    "NVIDIA A100 80GB PCIe": "A100 PCIe",
    "NVIDIA A10": "A10",
    "NVIDIA L4": "L4",
    "NVIDIA L40": "L40",
    "NVIDIA L40S": "L40S",
    "NVIDIA GeForce RTX 4090": "RTX 4090",
    "NVIDIA GeForce RTX 3090": "RTX 3090",
    "Tesla V100-SXM2-16GB": "V100 SXM2",
    "Tesla V100-PCIE-32GB": "V100 PCIe",
    "Tesla T4": "T4",
}


@pytest.mark.parametrize("name,key", REPORTED_NAMES.items())
def test_reported_names_match_exactly_one_key(name, key):
    assert perf.match_gpu(name) == key


@pytest.mark.parametrize("name", ["NVIDIA A10G", "NVIDIA L40G", "NVIDIA H800", "NVIDIA B200", "NVIDIA RTX A6000",
                                  "NVIDIA A100", "Tesla V100S-PCIE-32GB", "NVIDIA GeForce RTX 4090 D"])
def test_near_misses_get_no_peak(name):
    """A name that only contains a known one (L4 in 'L40G', A100 without its form factor) is not guessed."""
    assert perf.match_gpu(name) is None
    assert perf.gpu_peak_flops(name, "bf16") is None


def test_variants_have_their_own_datasheet_peaks():
    bf16 = {key: perf.gpu_peak_flops(name, "bf16") for name, key in REPORTED_NAMES.items()}
    assert bf16["H100 SXM"] == 989.4e12 and bf16["H100 PCIe"] == 756.5e12 and bf16["H100 NVL"] == 835.5e12
    assert bf16["H200 NVL"] < bf16["H200 SXM"]
    assert bf16["L4"] == 121e12 and bf16["L40"] == 181e12 and bf16["L40S"] == 362e12
    # the dtype decides the column: bf16 > tf32 > fp32 on every Ampere/Hopper part
    for name in ("NVIDIA H100 PCIe", "NVIDIA A100-SXM4-80GB", "NVIDIA L40S"):
        peaks = [perf.gpu_peak_flops(name, m) for m in ("bf16", "tf32", "fp32")]
        assert peaks == sorted(peaks, reverse=True) and len(set(peaks)) == 3
    assert perf.gpu_peak_flops("NVIDIA H100 PCIe", "tf32") == 378.0e12
    # Volta/Turing have no bf16 or TF32 tensor cores: no peak rather than a wrong one
    assert perf.gpu_peak_flops("Tesla V100-SXM2-16GB", "bf16") is None
    assert perf.gpu_peak_flops("Tesla V100-SXM2-16GB", "fp16") == 125e12


def test_precision_mode_follows_dtype_and_tf32():
    assert perf.precision_mode(torch.bfloat16) == "bf16" and perf.precision_mode(torch.float16) == "fp16"
    assert perf.precision_mode(torch.float32, tf32=True) == "tf32"
    assert perf.precision_mode(torch.float32, tf32=False) == "fp32"


def test_peak_flops_on_a_cuda_device_uses_the_name_and_dtype(monkeypatch):
    """The CUDA path without a GPU: the device name is what torch would report on an H100 PCIe."""
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 PCIe")
    assert perf.peak_flops("cuda", torch.bfloat16) == 756.5e12
    assert perf.peak_flops("cuda:0", torch.float32, tf32=True) == 378.0e12
    assert perf.peak_flops("cuda", torch.float32, tf32=False) == 51.2e12
    assert "H100 PCIe: bf16 dense peak 756.5 TFLOP/s" in perf.describe_peak("cuda", torch.bfloat16)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA L40G")
    assert perf.peak_flops("cuda", torch.bfloat16) is None
    assert "not in modeling_gpt2.GPU_PEAKS" in perf.describe_peak("cuda", torch.bfloat16)
    assert perf.mfu(1e9, 1e3, None) is None


def test_cpu_peak_is_the_best_timed_matmul(monkeypatch):
    """The measured fp32 peak is 2 n^3 / (fastest matmul time), on a fake clock so the test is deterministic."""
    ticks = iter([0.0, 0.0, 0.0, 0.5, 0.5, 1.0, 1.25, 3.0])  # t_end = 2; loop checks, matmuls 0.5 s, 0.25 s
    monkeypatch.setattr(perf.time, "perf_counter", lambda: next(ticks))
    assert perf.measured_cpu_peak_flops.__wrapped__(n=8, seconds=2.0) == 2 * 8 ** 3 / 0.25
    monkeypatch.undo()
    assert perf.peak_flops("cpu") > 0 and perf.peak_flops("cpu") == perf.measured_cpu_peak_flops()  # cached
    assert perf.mfu(6e6, 100.0, 6e8 * 2) == pytest.approx(0.5)


def test_bench_parts_times_ours_and_the_anchor_on_every_part(capsys):
    import bench

    r = bench.main(["--parts", "--n_layer", "1", "--n_head", "1", "--n_embd", "32", "--vocab_size", "256",
                    "--seq_len", "16", "--batch_size", "2", "--steps", "2"])
    assert list(r["parts"]) == ["blocks fwd+bwd", "head+loss ours", "head+loss anchor", "optimizer ours",
                                "optimizer anchor", "step ours", "step anchor"]
    assert all(len(p["step_s"]) == 2 and p["ms"] > 0 and 0 < p["peak_fraction"] for p in r["parts"].values())
    out = capsys.readouterr().out
    assert "machine: " in out and "threads, load average" in out and "Newton-Schulz in" in out
