"""Per-class report, confusion matrix and most confident mistakes after validation and test.

At the end of ``validate`` and ``test`` they are written as files into the run folder; at every
validation end (and test end) they also go to W&B when a ``WandbLogger`` is in use.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import WandbLogger

from emotion_lightning.console import say


def classification_report_rows(labels, true_ids: list[int], predicted_ids: list[int]) -> dict:
    """scikit-learn's classification report (precision, recall, F1, support per class and averaged)."""
    from sklearn.metrics import classification_report

    return classification_report(
        true_ids,
        predicted_ids,
        labels=list(range(len(labels))),
        target_names=list(labels),
        output_dict=True,
        zero_division=0,
    )


def save_confusion_matrix_png(matrix: np.ndarray, labels, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.5, 5.5))
    image = axes.imshow(matrix, cmap="Blues")
    axes.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    axes.set_yticks(range(len(labels)), labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    threshold = matrix.max().item() / 2
    for row in range(len(labels)):
        for column in range(len(labels)):
            count = matrix[row, column].item()
            axes.text(column, row, count, ha="center", va="center", color="white" if count > threshold else "black")
    figure.colorbar(image)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


class EvaluationReports(Callback):
    """Collects each evaluation's predictions and reports on them.

    Args:
        mistakes: how many of the most confident wrong predictions to list.
    """

    def __init__(self, mistakes: int = 25):
        self.mistakes = mistakes
        self._collected: list[tuple] = []
        self.best_accuracy: float | None = None
        self.best_epoch: int | None = None

    # -- collecting --------------------------------------------------------------------------

    def _reset(self, *args) -> None:
        self._collected = []

    on_validation_epoch_start = _reset
    on_test_epoch_start = _reset

    def _collect(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if outputs is None or "probabilities" not in outputs:
            return
        probabilities = outputs["probabilities"].float().cpu()
        texts = batch.get("text") or [""] * len(probabilities)
        self._collected.extend(
            zip(batch["index"].tolist(), texts, batch["labels"].tolist(), probabilities.tolist(), strict=True)
        )

    on_validation_batch_end = _collect
    on_test_batch_end = _collect

    # -- reporting ---------------------------------------------------------------------------

    def _gather(self, trainer: L.Trainer) -> None:
        """Under DDP every process holds its share of the predictions: give each process all of them."""
        if trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            shares = [None] * trainer.world_size
            torch.distributed.all_gather_object(shares, self._collected)
            self._collected = [row for share in shares for row in share]

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self._gather(trainer)
        if not self._collected:
            return
        accuracy = self._report(trainer, pl_module, "val", write_files=trainer.state.fn == "validate")
        if trainer.state.fn == "fit" and (self.best_accuracy is None or accuracy > self.best_accuracy):
            self.best_accuracy, self.best_epoch = accuracy, trainer.current_epoch

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._gather(trainer)
        if self._collected:
            self._report(trainer, pl_module, "test", write_files=True)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.best_accuracy is None:
            return
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.experiment.summary["best/val_acc"] = self.best_accuracy
                logger.experiment.summary["best/epoch"] = self.best_epoch

    def _report(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str, write_files: bool) -> float:
        """Report on the collected predictions; returns their accuracy."""
        labels = pl_module.labels
        rows = sorted(self._collected)  # input order
        true_ids = [true for _, _, true, _ in rows]
        predicted_ids = [max(range(len(p)), key=p.__getitem__) for _, _, _, p in rows]
        report = classification_report_rows(labels, true_ids, predicted_ids)
        from sklearn.metrics import confusion_matrix  # imported here: scikit-learn is slow to import

        # Rows are true labels, columns predicted labels.
        matrix = confusion_matrix(true_ids, predicted_ids, labels=list(range(len(labels))))
        mistakes = sorted(
            (
                (probabilities[predicted], text, labels[true], labels[predicted])
                for (_, text, true, probabilities), predicted in zip(rows, predicted_ids, strict=True)
                if predicted != true
            ),
            reverse=True,
        )[: self.mistakes]
        if write_files and trainer.is_global_zero:
            folder = self.report_dir(trainer)
            self._write_files(folder, stage, labels, report, matrix, mistakes)
            say(f"Wrote the {stage} reports to {folder}")
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                self._log_to_wandb(logger, trainer, stage, labels, report, true_ids, predicted_ids, mistakes)
        return report["accuracy"]

    def report_dir(self, trainer: L.Trainer) -> Path:
        """``reports/`` in the run folder (the CLI's ``default_root_dir``: the checkpoint's run)."""
        return Path(trainer.default_root_dir) / "reports"

    def _write_files(self, folder: Path, stage, labels, report, matrix, mistakes) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{stage}_report.json").write_text(json.dumps(report, indent=2))
        with (folder / f"{stage}_report.csv").open("w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(["label", "precision", "recall", "f1", "support"])
            for name in labels:
                scores = report[name]
                writer.writerow(
                    [name, *(f"{scores[k]:.4f}" for k in ("precision", "recall", "f1-score")), int(scores["support"])]
                )
        with (folder / f"{stage}_mistakes.csv").open("w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(["text", "true", "predicted", "confidence"])
            writer.writerows(
                [text, true, predicted, f"{confidence:.4f}"] for confidence, text, true, predicted in mistakes
            )
        save_confusion_matrix_png(
            matrix, labels, folder / f"{stage}_confusion_matrix.png", f"{stage}: confusion matrix"
        )

    def _log_to_wandb(self, logger, trainer, stage, labels, report, true_ids, predicted_ids, mistakes) -> None:
        import wandb

        per_class = wandb.Table(
            columns=["label", "precision", "recall", "f1", "support"],
            data=[
                [
                    name,
                    report[name]["precision"],
                    report[name]["recall"],
                    report[name]["f1-score"],
                    int(report[name]["support"]),
                ]
                for name in labels
            ],
        )
        mistake_table = wandb.Table(
            columns=["text", "true", "predicted", "confidence"],
            data=[[text, true, predicted, confidence] for confidence, text, true, predicted in mistakes],
        )
        logger.experiment.log(
            {
                f"{stage}/confusion_matrix": wandb.plot.confusion_matrix(
                    y_true=true_ids, preds=predicted_ids, class_names=list(labels)
                ),
                f"{stage}/per_class": per_class,
                f"{stage}/mistakes": mistake_table,
                "trainer/global_step": trainer.global_step,
            }
        )
