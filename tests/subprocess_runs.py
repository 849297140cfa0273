"""Runs of the real CLI in their own processes, and what they leave behind (CSV metric logs)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import quiet_run_args


def cli_subprocess(*args: str) -> subprocess.CompletedProcess:
    """``python -m emotion_lightning ARGS`` in a new process that can import the tests' helper modules.

    For what one process cannot do: be killed, or launch DDP (Lightning starts the other ranks
    by running the same command again). In a process group of its own, as a terminal runs a command: a signal
    to its group (Ctrl-C) reaches it and the processes it starts, not the tests.
    """
    command = [sys.executable, "-m", "emotion_lightning", *args]
    return subprocess.run(
        command, env=subprocess_environment(), capture_output=True, text=True, timeout=300, start_new_session=True
    )


def subprocess_environment() -> dict[str, str]:
    """This environment, where the tests' helper modules (``mishaps``) can be imported."""
    tests = str(Path(__file__).parent)
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [tests, os.environ.get("PYTHONPATH")]))}


def fit_logged_run_args(root: Path) -> list[str]:
    """CLI arguments for a fit into ``root`` that logs its metrics to ``<run folder>/metrics.csv``, no progress bar."""
    # The later --trainer.logger replaces quiet_run_args' "false": Lightning's default, the run folder's CSV.
    return [*quiet_run_args(root), "--trainer.logger", "true", "--trainer.enable_model_summary", "false"]


def csv_logged_run_args(root: Path) -> list[str]:
    """CLI arguments for a run into ``root`` that logs metrics to ``root/lightning_logs/version_N/metrics.csv``.

    (validate, test and predict log nothing of their own by default.)
    """
    return [
        *quiet_run_args(root),
        "--trainer.logger",
        "lightning.pytorch.loggers.CSVLogger",
        "--trainer.logger.init_args.save_dir",
        str(root),
        "--trainer.enable_model_summary",
        "false",
    ]


def logged_metrics(metrics_file: Path) -> list[dict[str, float]]:
    """The rows of a CSV metrics log that hold val/acc, as numbers."""
    return logged_metrics_of(metrics_file, "val/acc")


def logged_metrics_of(metrics_file: Path, metric: str) -> list[dict[str, float]]:
    """The rows of a CSV metrics log that hold ``metric``, as numbers."""
    with metrics_file.open() as file:
        rows = [row for row in csv.DictReader(file) if row.get(metric)]
    return [{name: float(value) for name, value in row.items() if value} for row in rows]


def newest_csv_log(root: Path) -> Path:
    """The metrics.csv of the newest ``CSVLogger`` version under ``root``."""
    return sorted((root / "lightning_logs").glob("version_*/metrics.csv"))[-1]
