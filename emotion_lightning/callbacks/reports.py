"""Per-class report, confusion matrix and most confident mistakes after validation and test.

At the end of ``validate`` and ``test`` they are written as files into the run folder; at every
validation end (and test end) they also go to W&B when a ``WandbLogger`` is in use.
"""

from __future__ import annotations

import csv
import itertools
import json
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import WandbLogger

from emotion_lightning.callbacks.resume import model_checkpoint
from emotion_lightning.console import say


def _named(folder: Path, stage: str, name: str, suffix: str) -> Path:
    stem, _, extension = name.partition(".")
    return folder / f"{stage}_{stem}{suffix}.{extension}"


@dataclass(frozen=True)
class Mistake:
    """A wrong prediction: the text, its true and predicted labels, and the predicted label's probability."""

    text: str
    true: str
    predicted: str
    confidence: float


@dataclass(frozen=True)
class Evaluation:
    """What one evaluation found, in input order: the report, the confusion matrix and the worst mistakes."""

    labels: tuple[str, ...]
    true_ids: list[int]
    predicted_ids: list[int]
    report: dict  # scikit-learn's classification_report(output_dict=True)
    matrix: np.ndarray  # rows: true labels, columns: predicted labels
    mistakes: list[Mistake]  # most confident first

    @classmethod
    def of(cls, labels, indices, texts, true_ids, probabilities, mistakes: int) -> Evaluation:
        # scikit-learn is slow to import: only when there is something to report.
        from sklearn.metrics import classification_report, confusion_matrix

        order = np.argsort(indices)  # back to input order
        true = np.asarray(true_ids)[order]
        probabilities = np.asarray(probabilities)[order]
        predicted = probabilities.argmax(axis=1)
        label_ids = list(range(len(labels)))
        report = classification_report(
            true, predicted, labels=label_ids, target_names=list(labels), output_dict=True, zero_division=0
        )
        wrong = np.flatnonzero(predicted != true)
        confidence = probabilities[wrong, predicted[wrong]]
        worst = wrong[np.argsort(-confidence, kind="stable")][:mistakes]
        return cls(
            labels=tuple(labels),
            true_ids=true.tolist(),
            predicted_ids=predicted.tolist(),
            report=report,
            matrix=confusion_matrix(true, predicted, labels=label_ids),
            mistakes=[
                Mistake(texts[order[i]], labels[true[i]], labels[predicted[i]], float(probabilities[i, predicted[i]]))
                for i in worst
            ],
        )

    def write_files(self, folder: Path, stage: str) -> str:
        """``<stage>_report.json`` / ``.csv``, ``<stage>_mistakes.csv`` and ``<stage>_confusion_matrix.png``; a later
        evaluation's as ``<stage>_report-2.json``, ...: an earlier report is never replaced. Returns the suffix."""
        folder.mkdir(parents=True, exist_ok=True)
        names = ("report.json", "report.csv", "mistakes.csv", "confusion_matrix.png")
        numbers = (f"-{number}" for number in itertools.count(2))
        suffix = next(
            s for s in itertools.chain([""], numbers) if not any(_named(folder, stage, n, s).exists() for n in names)
        )
        _named(folder, stage, "report.json", suffix).write_text(json.dumps(self.report, indent=2))
        with _named(folder, stage, "report.csv", suffix).open("w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(["label", "precision", "recall", "f1", "support"])
            for name in self.labels:
                scores = self.report[name]
                measures = (f"{scores[key]:.4f}" for key in ("precision", "recall", "f1-score"))
                writer.writerow([name, *measures, int(scores["support"])])
        with _named(folder, stage, "mistakes.csv", suffix).open("w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(["text", "true", "predicted", "confidence"])
            writer.writerows([m.text, m.true, m.predicted, f"{m.confidence:.4f}"] for m in self.mistakes)
        self._save_confusion_matrix(_named(folder, stage, "confusion_matrix.png", suffix), f"{stage}: confusion matrix")
        return suffix

    def _save_confusion_matrix(self, path: Path, title: str) -> None:
        import matplotlib

        matplotlib.use("Agg")  # files only, no display
        import matplotlib.pyplot as plt
        from sklearn.metrics import ConfusionMatrixDisplay

        figure, axes = plt.subplots(figsize=(6.5, 5.5))
        display = ConfusionMatrixDisplay(self.matrix, display_labels=list(self.labels))
        display.plot(ax=axes, cmap="Blues", xticks_rotation=45, colorbar=True)
        axes.set_title(title)
        figure.tight_layout()
        figure.savefig(path, dpi=100)
        plt.close(figure)

    def log_to_wandb(self, logger: WandbLogger, stage: str, global_step: int) -> None:
        import wandb

        measures = ("precision", "recall", "f1-score")
        per_class = wandb.Table(
            columns=["label", "precision", "recall", "f1", "support"],
            data=[
                [name, *(self.report[name][key] for key in measures), int(self.report[name]["support"])]
                for name in self.labels
            ],
        )
        mistakes = wandb.Table(
            columns=["text", "true", "predicted", "confidence"],
            data=[[m.text, m.true, m.predicted, m.confidence] for m in self.mistakes],
        )
        chart = wandb.plot.confusion_matrix(
            y_true=self.true_ids, preds=self.predicted_ids, class_names=list(self.labels)
        )
        logger.experiment.log(
            {
                f"{stage}/confusion_matrix": chart,
                f"{stage}/per_class": per_class,
                f"{stage}/mistakes": mistakes,
                "trainer/global_step": global_step,
            }
        )


class EvaluationReports(Callback):
    """Collects each evaluation's predictions and reports on them.

    Args:
        mistakes: how many of the most confident wrong predictions to list.
    """

    def __init__(self, mistakes: int = 25):
        self.mistakes = mistakes
        self._reset()

    # -- collecting --------------------------------------------------------------------------

    def _reset(self, *args) -> None:
        self._indices, self._texts, self._true_ids, self._probabilities = [], [], [], []

    on_validation_epoch_start = _reset
    on_test_epoch_start = _reset

    def _collect(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if outputs is None or "probabilities" not in outputs:
            return
        probabilities = outputs["probabilities"].float().cpu()
        self._indices += batch["index"].tolist()
        self._texts += batch.get("text") or [""] * len(probabilities)
        self._true_ids += batch["labels"].tolist()
        self._probabilities += probabilities.tolist()

    on_validation_batch_end = _collect
    on_test_batch_end = _collect

    # -- reporting ---------------------------------------------------------------------------

    def _gathered(self, trainer: L.Trainer) -> tuple[list, list, list, list]:
        """Under DDP every process holds its share of the predictions: every process gets all of them."""
        collected = (self._indices, self._texts, self._true_ids, self._probabilities)
        if trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            shares = [None] * trainer.world_size
            torch.distributed.all_gather_object(shares, collected)
            collected = tuple([item for share in shares for item in share[column]] for column in range(4))
        return collected

    def _evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        indices, texts, true_ids, probabilities = self._gathered(trainer)
        if not indices:
            return
        evaluation = Evaluation.of(pl_module.labels, indices, texts, true_ids, probabilities, self.mistakes)
        if trainer.state.fn != "fit" and trainer.is_global_zero:
            folder = self.report_dir(trainer)
            suffix = evaluation.write_files(folder, stage)
            accuracy = evaluation.report["accuracy"]
            reports = f"{folder / stage}_*{suffix}.*"
            # The precision it ran in: one file gets slightly different scores in 32-true and in bf16-mixed.
            say(
                f"{stage}/acc {accuracy:.4f} (in {trainer.precision}); the reports (per class, mistakes, confusion "
                f"matrix): {reports}"
            )
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                evaluation.log_to_wandb(logger, stage, trainer.global_step)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._evaluate(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._evaluate(trainer, pl_module, "test")

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        checkpoint = model_checkpoint(trainer)
        if checkpoint is None or checkpoint.best_model_score is None:
            return
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                best = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=True, mmap=True)
                name = checkpoint.monitor.replace("/", "_")  # val/acc -> best/val_acc
                logger.experiment.summary[f"best/{name}"] = float(checkpoint.best_model_score)
                logger.experiment.summary["best/epoch"] = best["epoch"]

    def report_dir(self, trainer: L.Trainer) -> Path:
        """``reports/`` in the run folder (the CLI's ``default_root_dir``: the checkpoint's run)."""
        return Path(trainer.default_root_dir) / "reports"
