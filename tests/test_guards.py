"""Guarded training: a NaN loss stops the run cleanly; gradient clipping comes from the config."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from emotion_lightning.callbacks import NonFiniteLossError
from emotion_lightning.cli import run
from tests.conftest import run_folder


class RecordGradientNorm(L.Callback):
    """The total gradient norm of every step, as the optimizer saw it (after clipping)."""

    def __init__(self):
        self.norms: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        norms = [p.grad.norm() for p in pl_module.parameters() if p.grad is not None]
        self.norms.append(float(torch.linalg.vector_norm(torch.stack(norms))))


def test_nan_loss_stops_training_naming_the_step_and_keeps_good_checkpoints(fit_args, tmp_path):
    args = [*fit_args, "--trainer.max_epochs", "3", "--trainer.callbacks+=tests.mishaps.NaNLossAtStep"]
    with pytest.raises(NonFiniteLossError, match=r"Training loss is NaN at global step 8 \(epoch 1, batch_idx 2\)"):
        run(["fit", *args, "--trainer.callbacks.step=8"])
    # 6 steps per epoch: the epoch-0 validation wrote both checkpoints; nothing was written after.
    for name in ("best.ckpt", "last.ckpt"):
        checkpoint = torch.load(run_folder(tmp_path) / "checkpoints" / name, weights_only=True)
        assert checkpoint["global_step"] == 6
        assert all(torch.isfinite(weights).all() for weights in checkpoint["state_dict"].values())


@pytest.mark.parametrize("clip", [None, 0.01])
def test_gradient_clipping_from_the_config_bounds_the_gradient_norm(fit_args, clip):
    settings = ["--trainer.gradient_clip_val", str(clip)] if clip else []
    cli = run(["fit", *fit_args, *settings, "--trainer.callbacks+=tests.test_guards.RecordGradientNorm"])
    (recorder,) = [callback for callback in cli.trainer.callbacks if type(callback).__name__ == "RecordGradientNorm"]
    assert len(recorder.norms) == 12
    if clip:
        assert max(recorder.norms) <= clip * 1.001
    else:  # what makes the clipped case mean something
        assert min(recorder.norms) > 0.01
