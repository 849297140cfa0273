"""Stop training at the first loss that is not a number, before it reaches the weights."""

from __future__ import annotations

import math

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from emotion_lightning.callbacks.resume import model_checkpoint
from emotion_lightning.errors import EmotionLightningError


class NonFiniteLossError(EmotionLightningError, FloatingPointError):
    """The training loss became NaN or infinite."""


class NonFiniteLossGuard(Callback):
    """Stops ``fit`` with :class:`NonFiniteLossError` when the training loss is NaN or infinite.

    The check runs before the backward pass, so the step that produced the bad loss never changes
    the weights, and no checkpoint is written after it: ``best.ckpt`` and ``last.ckpt`` stay the
    last good ones. Under DDP every process stops together (one process's bad loss stops all).
    """

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        finite = bool(torch.isfinite(loss.detach()).all())
        # One all-reduce of a flag: if one process raised alone, the others would wait forever.
        if trainer.strategy.reduce_boolean_decision(not finite, all=False):
            raise NonFiniteLossError(self._message(trainer, loss))

    @staticmethod
    def _message(trainer: L.Trainer, loss: torch.Tensor) -> str:
        value = loss.detach().float().cpu().item()
        where = (
            f"at global step {trainer.global_step} (epoch {trainer.current_epoch}, "
            f"batch_idx {trainer.fit_loop.epoch_loop.batch_idx})"
        )
        if math.isfinite(value):  # under DDP: this process's loss was fine
            what = "Training loss on another process is NaN or infinite"
        else:
            what = f"Training loss is {'NaN' if math.isnan(value) else value}"
        checkpoint = model_checkpoint(trainer)
        best = checkpoint.best_model_path if checkpoint is not None else ""
        kept = f"The best checkpoint so far is kept: {best}." if best else "No checkpoint had been saved yet."
        return (
            f"{what} {where}; stopped before this step changed the weights. {kept} "
            "Common remedies: a lower --model.learning_rate, gradient clipping (--trainer.gradient_clip_val 1.0), "
            "or --trainer.precision 32-true / bf16-mixed instead of 16-mixed."
        )
