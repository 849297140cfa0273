"""What a run shows while it trains and when it ends: progress lines for logs, and what the fit made."""

from __future__ import annotations

import math
import time
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback, ProgressBar, RichProgressBar

from emotion_lightning.callbacks.resume import ResumeCheckpoint, model_checkpoint
from emotion_lightning.console import COMMAND_STARTED, say


def duration(seconds: float) -> str:
    """``1h02m03s``, ``16m20s`` or ``42s``."""
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{seconds:02d}s"
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


class LineProgress(ProgressBar):
    """Training progress as one line every ``every_n_steps`` steps, for output that is not a terminal (a batch
    job's log), where a progress bar would show only its first and last state.

    Args:
        every_n_steps: steps between lines; default the trainer's ``log_every_n_steps``.
    """

    def __init__(self, every_n_steps: int | None = None):
        super().__init__()
        self.every_n_steps = every_n_steps
        self._enabled = True
        self._last = (0.0, 0)  # time and global step of the last line

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last = (time.monotonic(), trainer.global_step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        every = self.every_n_steps or trainer.log_every_n_steps
        if not self._enabled or trainer.global_step % every:
            return
        now, step = time.monotonic(), trainer.global_step
        rate = (step - self._last[1]) / max(now - self._last[0], 1e-9)
        self._last = (now, step)
        total = trainer.estimated_stepping_batches
        left = duration((total - step) / rate) if rate > 0 and math.isfinite(total) else "?"
        loss = trainer.callback_metrics.get("train/loss")
        loss_text = f"  loss {float(loss):.4f}" if loss is not None else ""
        epochs = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        steps = f"/{int(total)}" if math.isfinite(total) else ""
        say(
            f"epoch {trainer.current_epoch + 1}{epochs}  step {step}{steps}  {rate:.2f} steps/s  "
            f"{left} left (training){loss_text}"
        )

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._enabled or trainer.sanity_checking or trainer.state.fn != "fit":
            return
        self._last = (time.monotonic(), trainer.global_step)  # the rate is of training, not validation
        metrics = {name: float(value) for name, value in trainer.callback_metrics.items() if name.startswith("val/")}
        shown = "  ".join(f"{name} {value:.4f}" for name, value in sorted(metrics.items()))
        say(f"epoch {trainer.current_epoch + 1} validation: {shown}")


class BarWithLoss(RichProgressBar):
    """Lightning's rich progress bar, with the training loss and the time left for the whole run.

    Both are read every ``trainer.log_every_n_steps`` steps: a value on the device is read back only then.
    """

    def __init__(self):
        super().__init__()
        self._shown: dict[str, str] = {}
        self._started = (0.0, 0)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._started = (time.monotonic(), trainer.global_step)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        # Epochs counted from 1, as the log lines and the fit summary count them (Lightning's bar counts from 0).
        if self.progress is not None and self.train_progress_bar_id is not None:
            epochs = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
            description = f"Epoch {trainer.current_epoch + 1}{epochs}"
            self.progress.update(self.train_progress_bar_id, description=description)

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict:
        step = trainer.global_step
        if step and step % trainer.log_every_n_steps == 0 and (loss := trainer.callback_metrics.get("train/loss")):
            rate = (step - self._started[1]) / max(time.monotonic() - self._started[0], 1e-9)
            total = trainer.estimated_stepping_batches
            left = duration((total - step) / rate) if rate > 0 and math.isfinite(total) else "?"
            self._shown = {"loss": f"{float(loss):.4f}", "run left": left}
        return {**super().get_metrics(trainer, pl_module), **self._shown}


class RunSummary(Callback):
    """Where a ``fit`` writes, said when it starts (and from where it resumes); at its end, what it kept: the
    best checkpoint and its score (or why there is none), the last checkpoint, the run folder's size, the time.

    Args:
        started: ``time.monotonic()`` when the run started; default when the command started.
    """

    def __init__(self, started: float = COMMAND_STARTED):
        self._started = started

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step:
            epochs = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
            say(
                f"Resuming run folder {trainer.default_root_dir} at step {trainer.global_step} "
                f"(epoch {trainer.current_epoch + 1}{epochs})"
            )
        else:
            say(f"Run folder {trainer.default_root_dir}")

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        folder = Path(trainer.default_root_dir)
        size = sum(path.stat().st_size for path in folder.rglob("*") if path.is_file()) / 2**20
        lines = [f"Fit finished in {duration(time.monotonic() - self._started)}; run folder {folder} ({size:.1f} MiB)"]
        best = model_checkpoint(trainer)
        if best is not None and best.best_model_path:
            lines.append(
                f"  best checkpoint: {best.best_model_path} ({best.monitor} {float(best.best_model_score):.4f})"
            )
        last = ResumeCheckpoint.last_checkpoint_path(trainer)
        if best is not None and not best.best_model_path:
            kept = "the last checkpoint holds the weights" if Path(last).is_file() else "no checkpoint was written"
            lines.append(
                f"  no best checkpoint: {best.monitor} was never measured (no validation ran before the run ended "
                f"at step {trainer.global_step}); {kept}"
            )
        if Path(last).is_file():
            lines.append(f"  last checkpoint: {last} (resume with --ckpt_path last)")
        say("\n".join(lines))
