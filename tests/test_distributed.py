"""DDP on CPU (gloo), 2 processes: the same answers as one process.

Each run is `python -m emotion_lightning ... --trainer.strategy ddp --trainer.devices 2`, launched
the way a user launches it: Lightning starts the second process by running the command again.
The validation set (19 texts) and the predict file (21 texts) do not split evenly over 2
processes, which is where a distributed sampler would repeat a text.
"""

from __future__ import annotations

import csv
import json

import pytest

from tests.conftest import fixture_rows, run_folder, write_semicolon_file
from tests.subprocess_runs import (
    cli_subprocess,
    csv_logged_run_args,
    fit_logged_run_args,
    logged_metrics,
    newest_csv_log,
)

pytestmark = pytest.mark.slow

TWO_PROCESSES = ["--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu"]
ONE_PROCESS = ["--trainer.devices", "1", "--trainer.accelerator", "cpu"]


@pytest.fixture(scope="module")
def uneven_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("uneven")
    write_semicolon_file(folder / "train.txt", fixture_rows(8, seed=1))
    write_semicolon_file(folder / "validation.txt", fixture_rows(4, seed=2)[:19])
    texts = [text for text, _ in fixture_rows(4, seed=5)[:21]]
    (folder / "predict.txt").write_text("".join(f"{text}\n" for text in texts))
    return folder, texts


def data_args(folder) -> list[str]:
    return ["--data.data_dir", str(folder), "--data.batch_size", "8", "--data.eval_batch_size", "4"]


def test_validate_on_two_processes_gives_the_metrics_of_one(uneven_data, tiny_checkpoint, tmp_path):
    folder, _ = uneven_data
    results = {}
    for name, processes in (("one", ONE_PROCESS), ("two", TWO_PROCESSES)):
        root = tmp_path / name
        done = cli_subprocess(
            "validate", *data_args(folder), *processes, *csv_logged_run_args(root), "--ckpt_path", str(tiny_checkpoint)
        )
        assert done.returncode == 0, done.stderr[-3000:]
        (metrics,) = logged_metrics(newest_csv_log(root))
        report = json.loads((root / "reports" / "val_report.json").read_text())
        results[name] = metrics, report

    (one, one_report), (two, two_report) = results["one"], results["two"]
    assert two["val/acc"] == one["val/acc"]
    assert two["val/f1_macro"] == one["val/f1_macro"]
    assert two["val/loss"] == pytest.approx(one["val/loss"], rel=1e-5)
    # The reports see every text once, from both processes.
    assert one_report["macro avg"]["support"] == two_report["macro avg"]["support"] == 19
    assert two_report == one_report


def test_predict_on_two_processes_writes_every_text_once_in_input_order(uneven_data, tiny_checkpoint, tmp_path):
    folder, texts = uneven_data
    outputs = {}
    for name, processes in (("one", ONE_PROCESS), ("two", TWO_PROCESSES)):
        outputs[name] = tmp_path / f"{name}.csv"
        done = cli_subprocess(
            "predict",
            *data_args(folder),
            *processes,
            *csv_logged_run_args(tmp_path / name),
            "--ckpt_path",
            str(tiny_checkpoint),
            "--data.predict_file",
            str(folder / "predict.txt"),
            "--prediction_writer.output_file",
            str(outputs[name]),
        )
        assert done.returncode == 0, done.stderr[-3000:]
    with outputs["two"].open(newline="") as file:
        rows = list(csv.DictReader(file))
    assert [row["text"] for row in rows] == texts
    assert outputs["two"].read_text() == outputs["one"].read_text()
    assert not list(tmp_path.glob("*.part*"))


def test_fit_on_two_processes_trains_and_keeps_checkpoints(uneven_data, tiny_distilbert, tmp_path):
    folder, _ = uneven_data
    done = cli_subprocess(
        "fit",
        "--model.backbone",
        str(tiny_distilbert),
        *data_args(folder),
        *TWO_PROCESSES,
        *fit_logged_run_args(tmp_path),
        "--trainer.max_epochs",
        "2",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (run_folder(tmp_path) / "checkpoints" / "best.ckpt").is_file()
    assert (run_folder(tmp_path) / "checkpoints" / "last.ckpt").is_file()
    epochs = logged_metrics(run_folder(tmp_path) / "metrics.csv")
    assert [row["epoch"] for row in epochs] == [0, 1]
    # 48 texts over 2 processes in batches of 8: 3 optimizer steps per epoch.
    assert epochs[-1]["step"] == 5
