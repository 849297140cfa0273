"""Prediction output: a CSV with one row per input text, in input order."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info


class PredictionWriter(BasePredictionWriter):
    """Writes ``predict`` results to ``output_file`` (CSV: text, label, score, one column per class).

    Batches arrive sorted by length, not in input order. Each process appends its rows to a part
    file as they come, flushed after every batch, so that a crash keeps what was already predicted;
    at the end the parts are merged into the output in input order and removed.

    Args:
        output_file: where the CSV goes; default ``predictions.csv`` in the trainer's
            ``default_root_dir``.
    """

    def __init__(self, output_file: str | None = None):
        super().__init__(write_interval="batch")
        self.output_file = output_file
        self._part = None
        self._part_writer = None

    def resolved_output_file(self, trainer: L.Trainer) -> Path:
        return Path(self.output_file) if self.output_file else Path(trainer.default_root_dir) / "predictions.csv"

    def _part_path(self, trainer: L.Trainer, rank: int) -> Path:
        output = self.resolved_output_file(trainer)
        return output.with_name(f"{output.name}.part{rank}")

    def on_predict_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        part_path = self._part_path(trainer, trainer.global_rank)
        part_path.parent.mkdir(parents=True, exist_ok=True)
        self._part = part_path.open("w", newline="", encoding="utf-8")
        self._part_writer = csv.writer(self._part)

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        rows = zip(
            prediction["index"].tolist(),
            batch["text"],
            prediction["labels"],
            prediction["probabilities"].tolist(),
            strict=True,
        )
        for index, text, label, probabilities in rows:
            self._part_writer.writerow([index, text, label, *(f"{p:.6f}" for p in probabilities)])
        self._part.flush()

    def on_predict_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._part.close()
        trainer.strategy.barrier()
        if trainer.is_global_zero:
            self._merge_parts(trainer, pl_module.labels)
        trainer.strategy.barrier()

    def _merge_parts(self, trainer: L.Trainer, labels) -> None:
        rows: dict[int, list[str]] = {}
        part_paths = [self._part_path(trainer, rank) for rank in range(trainer.world_size)]
        for path in part_paths:
            with path.open(newline="", encoding="utf-8") as part:
                # A distributed sampler repeats a few inputs to even out the ranks: keep one of each.
                rows.update((int(row[0]), row[1:]) for row in csv.reader(part))
        output = self.resolved_output_file(trainer)
        with output.open("w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out)
            writer.writerow(["text", "label", "score", *(f"prob_{label}" for label in labels)])
            for index in sorted(rows):
                text, label, *probabilities = rows[index]
                writer.writerow([text, label, max(probabilities, key=float), *probabilities])
        for path in part_paths:
            path.unlink()
        rank_zero_info(f"Wrote {len(rows)} predictions to {output}")
