"""What a run shows while it trains and when it ends: progress lines for logs, and what the fit made."""

from __future__ import annotations

import math
import time
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback, ProgressBar, RichProgressBar

from emotion_lightning.callbacks.resume import ResumeCheckpoint, model_checkpoint
from emotion_lightning.compat import counting_epochs_from_one
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
        self._trained = (0.0, 0)  # seconds spent training (validation left out) and steps taken since the start

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
        # The rate over the whole run so far: one slow stretch (a busy machine) does not swing the time left.
        self._trained = (self._trained[0] + now - self._last[0], self._trained[1] + step - self._last[1])
        rate = self._trained[1] / max(self._trained[0], 1e-9)
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


class BarWithLoss(counting_epochs_from_one(RichProgressBar)):
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

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict:
        step = trainer.global_step
        due = step and (step % trainer.log_every_n_steps == 0 or not self._shown)  # and from the first step on
        if due and (loss := trainer.callback_metrics.get("train/loss")) is not None:
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
        self._before = 0.0  # seconds the run took before it was stopped and resumed here

    def state_dict(self) -> dict:  # kept in last.ckpt: a resumed run's summary counts the whole run
        return {"seconds": self._before + time.monotonic() - self._started}

    def load_state_dict(self, state_dict: dict) -> None:
        self._before = float(state_dict.get("seconds", 0.0))

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
        if not trainer.is_global_zero:  # said by the first process, of the run folder it claimed
            return
        folder = Path(trainer.default_root_dir)
        size = sum(path.stat().st_size for path in folder.rglob("*") if path.is_file()) / 2**20
        here = time.monotonic() - self._started
        took = (
            f"{duration(self._before + here)} ({duration(here)} since it resumed)" if self._before else duration(here)
        )
        lines = [f"Fit finished in {took}; run folder {folder} ({size:.1f} MiB)"]
        best = model_checkpoint(trainer)
        if best is not None and best.best_model_path:
            lines.append(
                f"  best checkpoint: {best.best_model_path} ({best.monitor} {float(best.best_model_score):.4f})"
            )
        if (curves := write_curves(folder)) is not None:
            lines.append(f"  curves: {curves}")
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


def write_curves(folder: Path) -> Path | None:
    """``curves.png`` in the run folder: the training loss by step, and the validation loss and accuracy by epoch,
    drawn from its ``metrics.csv`` (None when it has none)."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = folder / "metrics.csv"
    if not metrics.is_file():
        return None
    with metrics.open(newline="") as file:
        rows = list(csv.DictReader(file))

    def series(name: str, by: str) -> tuple[list[float], list[float]]:
        points = [(float(row[by]) + (by == "epoch"), float(row[name])) for row in rows if row.get(name) and row.get(by)]
        return [x for x, _ in points], [y for _, y in points]

    figure, (loss, accuracy) = plt.subplots(1, 2, figsize=(11, 4))
    loss.plot(*series("train/loss", "step"), label="train/loss", alpha=0.6)
    # At the step it was measured (the end of its epoch), on the training loss's axis: a second axis of epochs drew
    # epoch 1's validation at step 0.
    loss.plot(*series("val/loss", "step"), "o-", color="tab:red", label="val/loss (each validation)")
    loss.set_xlabel("step"), loss.legend()
    accuracy.plot(*series("val/acc", "epoch"), "o-", label="val/acc")
    accuracy.plot(*series("train/acc", "epoch"), "s--", label="train/acc")
    accuracy.set_xlabel("epoch"), accuracy.set_ylabel("accuracy"), accuracy.legend()
    figure.suptitle(folder.name)
    figure.tight_layout()
    figure.savefig(folder / "curves.png", dpi=100)
    plt.close(figure)
    return folder / "curves.png"
