"""validate, test and predict that stop together: SIGTERM to any one process, or the death of one, ends the command on
every process within a batch, and no process is left waiting in a collective for a peer that is gone.

Lightning's own SIGTERM handler broadcasts from inside the handler (pytorch-lightning #20825, meant for the training
loop, which broadcasts at every step: #21487). Nothing else broadcasts during ``predict`` or ``test``, so one
``kill -TERM`` of one process hung both for the collective's timeout (30 minutes). Here, from the start of
validate, test or predict (not of a fit's validation: that is the training loop's):

- SIGTERM sets a flag, and is passed on to the other processes of the command on this machine; each finishes its
  batch and stops before the next one, with exit status 143. ``predict`` keeps what it wrote: the same command
  continues it (:class:`~emotion_lightning.callbacks.PredictionWriter` says so).
- Before every batch each process looks whether its peers on this machine still run; one that is gone (``kill -9``,
  out of memory) stops the others with one line saying which, exit status 1.
- A collective that fails because a peer is gone (gloo answers at once on a closed connection) is said the same way,
  in one line, not as a traceback.

Peers on other machines cannot be looked at from here: there, the job's launcher (torchrun, SLURM) ends the job when
one of its processes dies, and the collectives fail on the closed connection. The SIGTERM handler is taken over at the
start of the evaluation loop: a SIGTERM in the second before it (Lightning's handler is in place) is Lightning's.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from emotion_lightning.console import say
from emotion_lightning.processes import process_alive

# Exit statuses: 128 + SIGTERM, what a shell reports for a process it terminated; 1 for a peer that is gone.
SIGTERM_STATUS, PEER_GONE_STATUS = 143, 1
# How long a process whose collective failed looks for the peer that stopped, before taking it for another failure.
PEER_GONE_WAIT_SECONDS = 5.0
STAGES = ("validate", "test", "predict")


class StoppedTogether(SystemExit):
    """The command stops on this process because of ``reason`` (SIGTERM, or a peer that is gone): the batch in
    progress was finished, and the process exits with ``code`` (143 or 1) once the callbacks have said what they
    kept."""

    def __init__(self, reason: str, code: int):
        super().__init__(code)
        self.reason = reason


class StopTogether(Callback):
    """Makes the processes of a validate, test or predict stop together (see the module's description)."""

    def __init__(self):
        self._peers: list[tuple[int, int]] = []  # (rank, process id) of the others on this machine
        self._reason: str | None = None
        self._code = SIGTERM_STATUS
        self._stage: str | None = None

    @staticmethod
    def of(trainer: L.Trainer) -> StopTogether | None:
        """The trainer's :class:`StopTogether`, if it has one."""
        return next((c for c in trainer.callbacks if isinstance(c, StopTogether)), None)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        stage = str(getattr(stage, "value", stage))  # Lightning passes its TrainerFn
        self._stage = stage if stage in STAGES else None
        self._peers, self._reason = [], None
        if self._stage and trainer.world_size > 1 and torch.distributed.is_initialized():
            # Every process is here (setup runs between two barriers): the one collective, while all are alive.
            me = (socket.gethostname(), os.getpid())
            everyone: list = [None] * trainer.world_size
            torch.distributed.all_gather_object(everyone, me)
            self._peers = [
                (rank, pid)
                for rank, (host, pid) in enumerate(everyone)
                if host == me[0] and rank != trainer.global_rank
            ]
            for _, pid in self._peers:
                self._collect_when_it_ends(pid)

    def _collect_when_it_ends(self, pid: int) -> None:
        """Where a peer is this process's child (Lightning started it), wait for it in a thread of its own, so that
        its end is collected the moment it comes. Lightning's launcher otherwise looks every 5 s and, finding a
        child that ended with a status other than 0, SIGKILLs this process too, which then cannot say what it kept.
        (A child collected here is one it finds ended with 0.)"""
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return  # not a child of this process: process_alive sees its end

        def collect() -> None:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)

        threading.Thread(target=collect, name=f"collect-rank-process-{pid}", daemon=True).start()

    def _take_over_sigterm(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning has put its handler in place by now (and puts back the one before it at the end).
        if self._stage and trainer.state.fn == self._stage:
            signal.signal(signal.SIGTERM, self._on_sigterm)

    on_validation_start = on_test_start = on_predict_start = _take_over_sigterm

    def _on_sigterm(self, signum, frame) -> None:
        if self._reason is None:
            self._reason, self._code = "Received SIGTERM", SIGTERM_STATUS
            for _, pid in self._peers:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGTERM)

    def _look_for_a_gone_peer(self) -> None:
        """Take a peer that no longer runs as the reason to stop, unless there is one already."""
        if self._reason is None:
            gone = next(((rank, pid) for rank, pid in self._peers if not process_alive(pid)), None)
            if gone is not None:
                self._reason, self._code = f"Rank {gone[0]} (process {gone[1]}) is gone", PEER_GONE_STATUS

    def _stop_if_asked(self, trainer: L.Trainer, *args) -> None:
        self._look_for_a_gone_peer()
        if self._reason is not None:
            raise StoppedTogether(self._reason, self._code)

    on_validation_batch_start = on_test_batch_start = on_predict_batch_start = _stop_if_asked

    def why_stopped(self, exception: BaseException) -> StoppedTogether | None:
        """``exception`` as the stop it is: itself, or a collective's failure (a ``RuntimeError``) while this process
        was asked to stop or a peer is gone (looked for a few seconds: a peer's connection closes before its
        process ends). None for any other failure."""
        if isinstance(exception, StoppedTogether):
            return exception
        if not isinstance(exception, RuntimeError) or not self._peers:
            return None
        deadline = time.monotonic() + PEER_GONE_WAIT_SECONDS
        self._look_for_a_gone_peer()
        while self._reason is None and time.monotonic() < deadline:
            time.sleep(0.1)
            self._look_for_a_gone_peer()
        return StoppedTogether(self._reason, self._code) if self._reason is not None else None

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        # predict's writer says what it kept; validate and test keep nothing: they start over.
        if self._stage in ("validate", "test") and (stopped := self.why_stopped(exception)):
            say(f"{stopped.reason}: {self._stage} stopped; run the same command again", every_process=True)
