"""Evaluation reports written as files at the end of validate and test."""

from __future__ import annotations

import csv
import json

import matplotlib.image

from emotion_lightning.cli import run
from emotion_lightning.data import LABELS
from tests.conftest import run_folder


def test_validate_and_test_write_report_files(fit_args, tmp_path):
    run(["fit", *fit_args])
    best = str(run_folder(tmp_path) / "checkpoints" / "best.ckpt")
    validated = run(["validate", *fit_args, "--ckpt_path", best])
    run(["test", *fit_args, "--ckpt_path", best])
    reports = run_folder(tmp_path) / "reports"
    for stage in ("val", "test"):
        with (reports / f"{stage}_report.csv").open() as file:
            rows = list(csv.DictReader(file))
        assert [row["label"] for row in rows] == list(LABELS)
        assert sum(int(row["support"]) for row in rows) == 3 * len(LABELS)
        report = json.loads((reports / f"{stage}_report.json").read_text())
        assert set(LABELS) <= set(report) and "macro avg" in report
        image = matplotlib.image.imread(reports / f"{stage}_confusion_matrix.png")
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
        with (reports / f"{stage}_mistakes.csv").open() as file:
            mistakes = list(csv.DictReader(file))
        confidences = [float(row["confidence"]) for row in mistakes]
        assert confidences == sorted(confidences, reverse=True)
        assert all(row["true"] != row["predicted"] for row in mistakes)
    accuracy = json.loads((reports / "val_report.json").read_text())["accuracy"]
    assert (
        accuracy == float(validated.trainer.callback_metrics["val/acc"])
        or abs(accuracy - float(validated.trainer.callback_metrics["val/acc"])) < 1e-6
    )


def test_fit_alone_writes_no_report_files(fit_args, tmp_path):
    run(["fit", *fit_args, "--trainer.max_epochs", "1"])
    assert not (run_folder(tmp_path) / "reports").exists()
