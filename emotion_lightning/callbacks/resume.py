"""Runs that survive being stopped: a checkpoint on SIGTERM or Ctrl-C and every N steps, exact resumption.

Resume a stopped run with ``emotion-lightning fit ... --ckpt_path last``.
"""

from __future__ import annotations

import os
import random
import signal
import threading
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Checkpoint, ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torchmetrics import Metric

from emotion_lightning.console import say
from emotion_lightning.errors import check_at_least


def _random_state() -> dict:
    # Tensors and plain values only, so that checkpoints still load with torch.load(weights_only=True).
    kind, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    numpy_state = [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached_gaussian]
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": numpy_state}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_random_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    kind, keys, position, has_gauss, cached_gaussian = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached_gaussian))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _metric_states(module: L.LightningModule) -> dict[str, dict]:
    """What the model's metrics have accumulated so far in this epoch (torchmetrics keep it out of checkpoints)."""
    states = {}
    for name, metric in module.named_modules():
        if isinstance(metric, Metric):
            metric.persistent(True)
            states[name] = metric.state_dict()
            metric.persistent(False)
    return states


def _set_metric_states(module: L.LightningModule, states: dict[str, dict]) -> None:
    metrics = dict(module.named_modules())
    for name, state in states.items():
        if isinstance(metric := metrics.get(name), Metric):
            metric.persistent(True)
            metric.load_state_dict(state)
            metric.persistent(False)


def epochs_done(checkpoint: dict) -> int | None:
    """The whole epochs a ``last.ckpt`` had trained when it was saved (None: saved by a version that did not say)."""
    states = checkpoint.get("callbacks", {})
    return next(
        (
            state["epochs_done"]
            for key, state in states.items()
            if key.startswith("ResumeCheckpoint") and "epochs_done" in state
        ),
        None,
    )


def model_checkpoint(trainer: L.Trainer) -> ModelCheckpoint | None:
    """The trainer's first ``ModelCheckpoint`` (``trainer.checkpoint_callback`` may be a ``ResumeCheckpoint``)."""
    return next((c for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint)), None)


class ResumeCheckpoint(Checkpoint):
    """Keeps ``last.ckpt`` and makes ``fit --ckpt_path last`` continue a stopped run as if it had never stopped.

    - ``last.ckpt`` is saved after every validation during ``fit``. (Lightning's own ``save_last``
      skips it when the monitored metric did not improve, which would resume a run from its best
      epoch instead of its latest.) It is saved after the ``ModelCheckpoint`` callbacks have acted
      on that validation (this is a ``Checkpoint`` callback, which Lightning runs after them, and at
      an epoch's end it waits for ``on_train_epoch_end``), so it holds their best-model records.
    - On SIGTERM (a preempted node, ``kill``, a scheduler's time limit) the current batch is
      finished, ``last.ckpt`` is saved and the process exits with status 143. Ctrl-C does the same
      (exit status 130): it is handed to Lightning's SIGTERM handling, which under DDP stops every
      process after the same step; a second Ctrl-C stops at once.
    - With ``every_n_train_steps``, ``last.ckpt`` is also saved that often, so that a process
      killed without warning (SIGKILL, out of memory) loses at most that many steps.
    - Checkpoints carry the random state (dropout), the position in the epoch (the data loader's)
      and what the metrics have summed up in the epoch so far, so a resumed run trains on the same
      batches with the same dropout masks and logs the epoch's accuracy and mean loss over all of it.

    Args:
        every_n_train_steps: save ``last.ckpt`` every this many optimizer steps; None: only at
            validation ends (the checkpoint callback) and on SIGTERM.
        save_on_sigterm: save ``last.ckpt`` when the process receives SIGTERM.
        keep_last_after_fit: keep ``last.ckpt`` once the fit has finished (three times the size of ``best.ckpt``);
            false removes it then, where a ``best.ckpt`` holds the weights.
    """

    def __init__(
        self, every_n_train_steps: int | None = None, save_on_sigterm: bool = True, keep_last_after_fit: bool = True
    ):
        if every_n_train_steps is not None:
            check_at_least("resume.every_n_train_steps", every_n_train_steps, 1, "or null for none")
        self.every_n_train_steps = every_n_train_steps
        self.save_on_sigterm = save_on_sigterm
        self.keep_last_after_fit = keep_last_after_fit
        self._trainer: L.Trainer | None = None
        self._random_state_to_restore: dict | None = None
        self._metric_states_to_restore: dict | None = None
        self._train_loader_state_to_restore: dict | None = None
        self._save_at_epoch_end = False
        self._saving_at_epoch_end = False
        self._batch_idx = -1  # of the last training batch, from on_train_batch_end
        self._saved_at_step: int | None = None
        self._ctrl_c = False

    @staticmethod
    def last_checkpoint_path(trainer: L.Trainer) -> Path:
        """Where ``last.ckpt`` goes: beside the checkpoint callback's files, where ``--ckpt_path last`` looks."""
        callback = model_checkpoint(trainer)
        if callback is not None and callback.dirpath:
            return Path(callback.dirpath) / f"{callback.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}"
        return Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt"

    def _save_last(self, trainer: L.Trainer) -> Path:
        path = self.last_checkpoint_path(trainer)
        trainer.save_checkpoint(path)
        self._saved_at_step = trainer.global_step
        return path

    # -- random state --------------------------------------------------------------------------

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def _train_loader(self):
        loader = self._trainer.train_dataloader if self._trainer is not None else None
        return loader if callable(getattr(loader, "load_state_dict", None)) else None

    def state_dict(self) -> dict:
        state = {"random_state": _random_state()}
        if self._trainer is not None:
            # Whole epochs trained, so that `--ckpt_path last` knows a finished run without loading it into a Trainer.
            state["epochs_done"] = self._trainer.current_epoch + (1 if self._saving_at_epoch_end else 0)
        if not self._saving_at_epoch_end and self._trainer is not None and self._trainer.lightning_module is not None:
            # Mid-epoch only: at an epoch's end the metrics hold the finished epoch, which the next one must not add to.
            state["metric_states"] = _metric_states(self._trainer.lightning_module)
        # Lightning would keep a resumable loader's position itself, but skips restoring it when
        # the optimizer setup has already loaded the data (estimated_stepping_batches): kept here.
        if (loader := self._train_loader()) is not None:
            state["train_loader"] = loader.state_dict()
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        self._random_state_to_restore = state_dict.get("random_state")
        self._metric_states_to_restore = state_dict.get("metric_states")
        self._train_loader_state_to_restore = state_dict.get("train_loader")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning puts back the handler it found once the fit ends (it saves them all before it runs).
        self._ctrl_c = False
        if self.save_on_sigterm and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._on_ctrl_c)
        if self._train_loader_state_to_restore is not None and (loader := self._train_loader()) is not None:
            loader.load_state_dict(self._train_loader_state_to_restore)
        self._train_loader_state_to_restore = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        # Restored here, right before the first step after resuming: whatever ran in between
        # (sanity checks, data loading) cannot shift the dropout masks.
        if self._random_state_to_restore is not None:
            _set_random_state(self._random_state_to_restore)
            self._random_state_to_restore = None
        if self._metric_states_to_restore is not None:
            _set_metric_states(pl_module, self._metric_states_to_restore)
            self._metric_states_to_restore = None

    # -- saving --------------------------------------------------------------------------------

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn != "fit" or trainer.sanity_checking:
            return
        if self._batch_idx + 1 >= trainer.num_training_batches:
            # At an epoch's end ModelCheckpoint saves on_train_epoch_end (by default): wait for it,
            # so that last.ckpt records the best checkpoint this validation may have made.
            self._save_at_epoch_end = True
        else:
            self._save_last(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._save_at_epoch_end:
            self._save_at_epoch_end, self._saving_at_epoch_end = False, True
            try:
                self._save_last(trainer)
            finally:
                self._saving_at_epoch_end = False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._batch_idx = batch_idx  # validation, if due, runs after this hook: on_validation_end reads it
        if self.every_n_train_steps and trainer.global_step % self.every_n_train_steps == 0:
            self._save_last(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        best = model_checkpoint(trainer)
        if not self.keep_last_after_fit and best is not None and best.best_model_path:
            self.last_checkpoint_path(trainer).unlink(missing_ok=True)
        elif trainer.global_step and self._saved_at_step != trainer.global_step:
            # A run that ends between validations (max_steps, max_time) still keeps what it trained.
            self._save_last(trainer)

    def _on_ctrl_c(self, signum, frame) -> None:
        """The first Ctrl-C: SIGTERM's way (the batch finishes, last.ckpt is saved); the next one stops at once."""
        self._ctrl_c = True
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if self._trainer is None or self._trainer.is_global_zero:
            # Not through logging: a handler may interrupt the logging module while it holds its lock.
            # File descriptor 2: sys.stderr may have none (a test's capture).
            os.write(2, b"\nCtrl-C: stopping after this batch to save last.ckpt (Ctrl-C again: now)\n")
        os.kill(os.getpid(), signal.SIGTERM)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        # Lightning raises SIGTERMException once the batch in progress is finished: a consistent state.
        if self.save_on_sigterm and isinstance(exception, SIGTERMException) and trainer.state.fn == "fit":
            path = self._save_last(trainer)
            stopped_by = "Ctrl-C" if self._ctrl_c else "SIGTERM"
            say(f"Received {stopped_by}: saved {path}. Resume with `fit ... --ckpt_path last`.")
            # 128 + the signal, what a shell reports for a process that a signal stopped.
            exception.code = 130 if self._ctrl_c else 143
        elif isinstance(exception, KeyboardInterrupt) and trainer.state.fn == "fit":
            last = self.last_checkpoint_path(trainer)
            kept = f"{last} is as it was saved before" if last.is_file() else "this run saved no last.ckpt yet"
            say(f"Ctrl-C again: stopped at once; {kept}")
