"""On a CUDA machine: fp16 mixed precision is what runs, and prediction works on the GPU.

Skipped where there is no GPU (CI has none); benchmarks/gpu.sh runs it on a GPU machine.
"""

from __future__ import annotations

import pytest
import torch

from emotion_lightning import EmotionPredictor
from emotion_lightning.cli import run

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_fit_on_cuda_runs_16_mixed(fit_args, tmp_path):
    args = [*fit_args, "--trainer.accelerator", "gpu", "--trainer.devices", "1", "--trainer.precision", "16-mixed"]
    cli = run(["fit", *args])
    assert cli.trainer.precision == "16-mixed"
    assert cli.trainer.strategy.root_device.type == "cuda"
    predictor = EmotionPredictor.from_checkpoint(tmp_path / "checkpoints" / "best.ckpt", device="cuda")
    assert predictor.device.type == "cuda"
    (result,) = predictor(["i feel glad"])
    assert abs(sum(result.probabilities.values()) - 1.0) < 1e-3
