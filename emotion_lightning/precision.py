"""Pick a precision that the hardware runs: fp16 on CUDA, bf16 or fp32 on a CPU, for training and for prediction."""

from __future__ import annotations

from pathlib import Path

import torch

FP16_SETTINGS = ("16-mixed", "16", 16)
CUDA_ACCELERATORS = ("auto", "gpu", "cuda")


def cpu_supports_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX).

    Without it bf16 is emulated: on a 2-core AVX2 EPYC a bf16 matmul ran at 0.9 GFLOP/s
    against 116 GFLOP/s in fp32, so there 32-true is the only sensible fallback.
    """
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        cpuinfo = Path("/proc/cpuinfo")
        flags = cpuinfo.read_text() if cpuinfo.is_file() else ""
        return "avx512_bf16" in flags or "amx_bf16" in flags


def runnable_precision(requested, accelerator) -> tuple[object, str | None]:
    """The precision to run with, and a message when it differs from the one requested.

    fp16 mixed precision needs CUDA. Elsewhere it becomes bf16-mixed where the CPU computes in
    bf16 natively, else 32-true.
    """
    if requested not in FP16_SETTINGS:
        return requested, None
    accelerator_name = accelerator if isinstance(accelerator, str) else type(accelerator).__name__.lower()
    if accelerator_name in CUDA_ACCELERATORS and torch.cuda.is_available():
        return requested, None
    fallback = "bf16-mixed" if cpu_supports_bf16() else "32-true"
    return fallback, f"precision {requested} needs a CUDA GPU; running on the CPU with precision {fallback} instead"


def inference_precision(device: torch.device) -> str:
    """The fastest precision that predicts faithfully on ``device``: 16-mixed on CUDA, bf16-mixed on a
    CPU that computes bf16 natively, else 32-true."""
    if device.type == "cuda":
        return "16-mixed"
    return "bf16-mixed" if device.type == "cpu" and cpu_supports_bf16() else "32-true"
