"""A callback for the benchmark's lightning arm: training seconds (validation left out) and peak memory, as JSON.

    emotion-lightning fit ... --trainer.callbacks+=timing.TrainTiming --trainer.callbacks.output_file t.json
(with benchmarks/ on PYTHONPATH).
"""

from __future__ import annotations

import json
import resource
import time

import torch
from lightning.pytorch.callbacks import Callback


class TrainTiming(Callback):
    def __init__(self, output_file: str):
        self.output_file = output_file
        self.validation_seconds = 0.0

    def _sync(self) -> float:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter()

    def on_train_start(self, trainer, pl_module):
        self.started = self._sync()

    def on_validation_start(self, trainer, pl_module):
        self.validation_started = self._sync()

    def on_validation_end(self, trainer, pl_module):
        self.validation_seconds += self._sync() - self.validation_started

    def on_train_end(self, trainer, pl_module):
        peak = (
            torch.cuda.max_memory_allocated() / 2**20
            if torch.cuda.is_available()
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        )
        seconds = self._sync() - self.started - self.validation_seconds
        with open(self.output_file, "w") as file:
            json.dump({"train_seconds": seconds, "peak_memory_mib": peak}, file)
