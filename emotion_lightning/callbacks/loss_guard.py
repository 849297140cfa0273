"""Stop training at the first loss that is not a number, before it reaches the weights."""

from __future__ import annotations

import math

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from emotion_lightning.callbacks.resume import model_checkpoint
from emotion_lightning.compat import skip_step_where, step_divides_gradients
from emotion_lightning.errors import EmotionLightningError


class NonFiniteLossError(EmotionLightningError, FloatingPointError):
    """The training loss became NaN or infinite."""


class NonFiniteLossGuard(Callback):
    """Stops ``fit`` with :class:`NonFiniteLossError` when the training loss is NaN or infinite.

    No step with a bad loss changes the weights, and no checkpoint is written after it: ``best.ckpt`` and
    ``last.ckpt`` stay the last good ones. Under DDP every process stops together.

    With a fused optimizer (the package's AdamW) the check costs no wait for the device: the loss is judged
    on the device, where the optimizer step skips itself for a bad loss (as it does for a GradScaler's
    overflow), and the run stops at the next look at the host: every ``trainer.log_every_n_steps`` steps,
    at an epoch's end, or before any checkpoint is written. With other optimizers every step is checked
    before its backward pass.
    """

    def __init__(self):
        self._window: list[tuple[int, int, int]] = []  # (global step, epoch, batch_idx) since the last look
        self._first_bad: torch.Tensor | None = None  # position in the window of the first bad loss, or -1
        self._first_value: torch.Tensor | None = None
        self._step_bad: torch.Tensor | None = None
        self._skipping = None  # the optimizer whose next step was handed the verdict
        self._batch_idx = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._window, self._first_bad, self._first_value = [], None, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._batch_idx = batch_idx

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        loss = loss.detach()
        bad = ~torch.isfinite(loss).all()
        if self._first_bad is None:
            self._first_bad = torch.full((), -1, dtype=torch.long, device=loss.device)
            self._first_value = torch.zeros((), dtype=torch.float32, device=loss.device)
        new = bad & (self._first_bad < 0)
        self._first_bad = torch.where(new, len(self._window), self._first_bad)
        self._first_value = torch.where(new, loss.float(), self._first_value)
        self._window.append((trainer.global_step, trainer.current_epoch, self._batch_idx))
        self._step_bad = bad
        if not all(step_divides_gradients(optimizer) for optimizer in trainer.optimizers):
            self.look(trainer)  # nothing can skip the step on the device: judge it now

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        # A GradScaler (16-mixed) skips the step itself: a bad loss makes the gradients inf or NaN.
        if self._step_bad is not None and getattr(trainer.precision_plugin, "scaler", None) is None:
            skip_step_where(optimizer, self._step_bad)
            self._skipping = optimizer

    def on_before_zero_grad(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        if self._skipping is not None:  # the verdict was for the step just taken
            skip_step_where(self._skipping, None)
            self._skipping = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step % trainer.log_every_n_steps == 0:
            self.look(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.look(trainer)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "fit":
            self.look(trainer)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        if trainer.state.fn == "fit":
            self.look(trainer)  # raised before the file is written

    def look(self, trainer: L.Trainer) -> None:
        """Raise :class:`NonFiniteLossError` if a loss since the last look was bad (this waits for the device)."""
        if self._first_bad is None:
            return
        position = int(self._first_bad)
        # One all-reduce of a flag: if one process raised alone, the others would wait forever.
        if trainer.strategy.reduce_boolean_decision(position >= 0, all=False):
            raise NonFiniteLossError(self._message(trainer, position))
        self._window.clear()
        self._first_bad.fill_(-1)

    def _message(self, trainer: L.Trainer, position: int) -> str:
        if position >= 0:  # under DDP another process's loss may have been the bad one
            value = float(self._first_value)
            step, epoch, batch_idx = self._window[position]
            what = f"Training loss is {'NaN' if math.isnan(value) else value}"
        else:
            step, epoch, batch_idx = self._window[-1] if self._window else (trainer.global_step, 0, 0)
            what = "Training loss on another process is NaN or infinite"
        where = f"at global step {step} (epoch {epoch}, batch_idx {batch_idx})"
        checkpoint = model_checkpoint(trainer)
        best = checkpoint.best_model_path if checkpoint is not None else ""
        kept = f"The best checkpoint so far is kept: {best}." if best else "No checkpoint had been saved yet."
        return (
            f"{what} {where}; that step and any after it did not change the weights. {kept} "
            "Common remedies: a lower --model.learning_rate, gradient clipping (--trainer.gradient_clip_val 1.0), "
            "or --trainer.precision 32-true / bf16-mixed instead of 16-mixed."
        )
