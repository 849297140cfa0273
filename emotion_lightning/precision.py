"""Pick a precision that the hardware runs: fp16 on CUDA, bf16 or fp32 on a CPU, for training and for prediction."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, get_args

from emotion_lightning.compat import cpu_supports_bf16

if TYPE_CHECKING:  # not imported here: `serve`'s HTTP process reads PredictionPrecision and never imports torch
    import torch

# How a model predicts; "auto" picks fp16 on CUDA, bf16 on a CPU that computes it natively, else fp32.
PredictionPrecision = Literal["auto", "32-true", "bf16-mixed", "16-mixed"]
PREDICTION_PRECISIONS = get_args(PredictionPrecision)
FP16_SETTINGS = ("16-mixed", "16", 16)
CUDA_ACCELERATORS = ("auto", "gpu", "cuda")


def runnable_precision(requested, accelerator) -> tuple[object, str | None]:
    """The precision to run with, and a message when it differs from the one requested.

    fp16 mixed precision needs CUDA. Elsewhere it becomes bf16-mixed where the CPU computes in
    bf16 natively, else 32-true.
    """
    import torch

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


def prediction_precision(requested, accelerator):
    """``predict``'s precision: the one given, else the fastest that predicts faithfully where it runs (16-mixed on
    CUDA, bf16-mixed on a CPU that computes bf16 natively, else 32-true), as ``EmotionPredictor`` picks it. (The
    Trainer's own default is 32-true.)"""
    import torch

    if requested is not None:
        return requested
    accelerator_name = accelerator if isinstance(accelerator, str) else type(accelerator).__name__.lower()
    on_cuda = accelerator_name in CUDA_ACCELERATORS and torch.cuda.is_available()
    return inference_precision(torch.device("cuda" if on_cuda else "cpu"))
