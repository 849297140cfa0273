"""What goes wrong in real training runs, staged at a chosen step by callbacks.

Given to the CLI as ``--trainer.callbacks+=mishaps.StopAtStep`` (in a subprocess that it may
kill outright) or ``--trainer.callbacks+=tests.mishaps.NaNLossAtStep`` (in the test process).
"""

from __future__ import annotations

import io
import os
import signal
import time

import torch
from lightning.pytorch.callbacks import Callback


class StopAtStep(Callback):
    """Sends ``signal_name`` to this process after optimizer step ``step`` (``times`` times); with ``to_group``, to
    its whole process group, as a terminal sends Ctrl-C.

    With ``during_checkpoint_write`` the process is instead killed (SIGKILL) halfway through
    writing the first checkpoint file after that step.
    """

    def __init__(
        self,
        step: int,
        signal_name: str = "SIGTERM",
        during_checkpoint_write: bool = False,
        to_group: bool = False,
        times: int = 1,
    ):
        self.step = step
        self.signal = getattr(signal, signal_name)
        self.during_checkpoint_write = during_checkpoint_write
        self.to_group, self.times = to_group, times

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step != self.step:
            return
        if self.during_checkpoint_write:
            torch.save = _save_half_then_die(torch.save)
            return
        for _ in range(self.times):
            if self.to_group:
                os.killpg(os.getpgid(0), self.signal)
            else:
                os.kill(os.getpid(), self.signal)
            time.sleep(0.2)  # each press is handled before the next


def _save_half_then_die(save):
    def save_half(obj, file, *args, **kwargs):
        buffer = io.BytesIO()
        save(obj, buffer, *args, **kwargs)
        file.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        file.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    return save_half


class NaNLossAtStep(Callback):
    """Makes the model's output NaN for optimizer step ``step``, as an overflow in the forward pass would."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            pl_module.register_forward_hook(lambda module, inputs, output: output * float("nan"))


class SignalAtPredictBatch(Callback):
    """Sends ``signal_name`` to this process once predict batch ``batch`` (counted from 0) is written."""

    def __init__(self, batch: int, signal_name: str = "SIGTERM"):
        self.batch = batch
        self.signal = getattr(signal, signal_name)

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if batch_idx == self.batch:
            os.kill(os.getpid(), self.signal)


class SlowBatches(Callback):
    """Waits ``seconds`` after every predict or test batch (on process ``rank`` only, if given): time to stop a run
    part of the way through, or to have one process reach the end long before another. With ``mark_file``, each
    process adds a line to ``<mark_file>.<rank>`` at every batch: a test sees how far each has come."""

    def __init__(self, seconds: float, rank: int | None = None, mark_file: str | None = None):
        self.seconds, self.rank, self.mark_file = seconds, rank, mark_file

    def _wait(self, trainer, *args, **kwargs) -> None:
        if self.mark_file:
            with open(f"{self.mark_file}.{trainer.global_rank}", "a") as marks:
                marks.write("batch\n")
        if self.rank is None or trainer.global_rank == self.rank:
            time.sleep(self.seconds)

    on_predict_batch_end = on_test_batch_end = _wait
