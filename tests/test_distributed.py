"""DDP on CPU (gloo), 2 processes: the same answers as one process, and a stop of one process (SIGTERM, kill -9)
that ends both within seconds and keeps what was predicted.

Each run is `python -m emotion_lightning ... --trainer.strategy ddp --trainer.devices 2`, launched
the way a user launches it: Lightning starts the second process by running the command again.
The validation set (19 texts) and the predict file (21 texts) do not split evenly over 2
processes, which is where a distributed sampler would repeat a text.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from emotion_lightning.processes import process_alive
from tests.conftest import fixture_rows, run_folder, write_semicolon_file
from tests.subprocess_runs import (
    cli_subprocess,
    csv_logged_run_args,
    fit_logged_run_args,
    logged_metrics,
    logged_metrics_of,
    newest_csv_log,
    subprocess_environment,
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
    # One run folder, claimed by the first process; the other wrote through it and left nothing of its own.
    assert [path.name for path in tmp_path.iterdir() if path.name.startswith("version_")] == ["version_0"]
    assert (run_folder(tmp_path) / "checkpoints" / "best.ckpt").is_file()
    assert (run_folder(tmp_path) / "checkpoints" / "last.ckpt").is_file()
    epochs = logged_metrics(run_folder(tmp_path) / "metrics.csv")
    assert [row["epoch"] for row in epochs] == [0, 1]
    # 48 texts over 2 processes in batches of 8: 3 optimizer steps per epoch.
    assert epochs[-1]["step"] == 5


# -- one process stopped: both end within seconds, the parts are kept, the same command finishes -------------------


@pytest.fixture(scope="module")
def many_texts(tmp_path_factory) -> tuple[Path, list[str]]:
    """200 texts: 25 batches of 4 on each of two processes."""
    texts = [f"{text} {number}" for number, (text, _) in enumerate(fixture_rows(34, seed=21)[:200])]
    path = tmp_path_factory.mktemp("many") / "many.txt"
    path.write_text("".join(f"{text}\n" for text in texts))
    return path, texts


def predict_args(checkpoint: Path, texts_file: Path, output: Path, root: Path) -> list[str]:
    return [
        "--data.eval_batch_size",
        "4",
        *csv_logged_run_args(root),
        "--ckpt_path",
        str(checkpoint),
        "--data.predict_file",
        str(texts_file),
        "--prediction_writer.output_file",
        str(output),
    ]


class DistributedRun:
    """A 2-process command started as a terminal starts it (its own process group), its processes found by PID."""

    def __init__(self, *args: str):
        command = [sys.executable, "-m", "emotion_lightning", *args, *TWO_PROCESSES]
        self.launcher = subprocess.Popen(
            command, env=subprocess_environment(), stderr=subprocess.PIPE, text=True, start_new_session=True
        )
        self.stderr = ""

    def second_process(self, seconds: float = 120) -> int:
        """The PID of rank 1, the process that Lightning started by running the command again."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            found = subprocess.run(
                ["pgrep", "-P", str(self.launcher.pid), "-f", "emotion_lightning"], capture_output=True
            )
            if found.stdout.split():
                return int(found.stdout.split()[0])
            time.sleep(0.2)
        self.kill()
        pytest.fail("rank 1 never started")

    def wait(self, seconds: float) -> tuple[int, float]:
        """The launcher's exit status and the seconds it took to end."""
        started = time.monotonic()
        try:
            _, self.stderr = self.launcher.communicate(timeout=seconds)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"still running {seconds} s later")
        return self.launcher.returncode, time.monotonic() - started

    def kill(self) -> None:
        os.killpg(self.launcher.pid, signal.SIGKILL)
        self.launcher.communicate()


def wait_for_rows(part_files: str, folder: Path, rows: int, seconds: float = 120) -> None:
    """Until each of the ``part_files`` (a glob) holds ``rows`` predictions."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        parts = sorted(folder.glob(part_files))
        if len(parts) == 2 and all(len(part.read_text().splitlines()) > rows for part in parts):
            return
        time.sleep(0.1)
    pytest.fail(f"the parts never held {rows} predictions: {[p.name for p in folder.glob(part_files)]}")


def read_output(path: Path) -> list[dict]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def wait_for_rows_of(part: Path, rows: int, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while len(part.read_text().splitlines()) <= rows and time.monotonic() < deadline:
        time.sleep(0.1)


def test_a_sigterm_to_one_process_of_a_distributed_predict_stops_both_and_the_same_command_finishes(
    tiny_checkpoint, many_texts, tmp_path
):
    texts_file, texts = many_texts
    output = tmp_path / "out.csv"
    args = ["predict", *predict_args(tiny_checkpoint, texts_file, output, tmp_path)]
    run = DistributedRun(*args, "--trainer.callbacks+=mishaps.SlowBatches", "--trainer.callbacks.seconds=0.3")
    rank_1 = run.second_process()
    wait_for_rows("out.csv.*.part*", tmp_path, rows=4)  # both are predicting
    os.kill(rank_1, signal.SIGTERM)  # kill -TERM PID, of one process
    code, seconds = run.wait(60)
    assert code == 143 and seconds < 30, run.stderr[-3000:]
    assert not process_alive(rank_1) and not output.exists()
    # Each process says what it kept; the other was passed the SIGTERM.
    assert (
        "\nReceived SIGTERM: stopped after" in run.stderr and "\nRank 1: Received SIGTERM: stopped after" in run.stderr
    )

    # The same command predicts only what is left, and writes every text once, in input order.
    again = cli_subprocess(*args, *TWO_PROCESSES)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Continuing a stopped prediction" in again.stderr
    assert [row["text"] for row in read_output(output)] == texts
    assert not list(tmp_path.glob("out.csv.*"))


def test_a_process_killed_while_the_other_waits_at_the_end_stops_it_and_one_process_finishes(
    tiny_checkpoint, many_texts, tmp_path
):
    texts_file, texts = many_texts
    output = tmp_path / "out.csv"
    args = ["predict", *predict_args(tiny_checkpoint, texts_file, output, tmp_path)]
    slow_rank_1 = ["--trainer.callbacks+=mishaps.SlowBatches", "--trainer.callbacks.seconds=1"]
    run = DistributedRun(*args, *slow_rank_1, "--trainer.callbacks.rank=1")
    rank_1 = run.second_process()
    wait_for_rows("out.csv.*.part*", tmp_path, rows=1)
    (part_0,) = tmp_path.glob("out.csv.*.part0")
    wait_for_rows_of(part_0, len(texts) // 2)  # rank 0 has predicted its share: it waits for rank 1 at the end
    time.sleep(1)
    os.kill(rank_1, signal.SIGKILL)  # kill -9 PID
    code, seconds = run.wait(60)
    assert code == 1 and seconds < 30, run.stderr[-3000:]
    assert f"Rank 1 (process {rank_1}) is gone: stopped after {len(texts) // 2} predictions" in run.stderr
    assert "Traceback" not in run.stderr

    # The same command on one process (any number) predicts what rank 1 left, and writes every text once, in order.
    again = cli_subprocess(*args, *ONE_PROCESS)
    assert again.returncode == 0, again.stderr[-3000:]
    assert [row["text"] for row in read_output(output)] == texts
    assert not list(tmp_path.glob("out.csv.*"))


def test_a_killed_process_of_a_distributed_test_stops_the_other(uneven_data, tiny_checkpoint, tmp_path):
    folder, _ = uneven_data
    marks = tmp_path / "batches"
    slow = ["--trainer.callbacks+=mishaps.SlowBatches", "--trainer.callbacks.seconds=1"]
    run = DistributedRun(
        "test",
        *data_args(folder),
        "--data.test_file",
        str(folder / "validation.txt"),
        "--data.eval_batch_size",
        "1",
        *csv_logged_run_args(tmp_path),
        "--ckpt_path",
        str(tiny_checkpoint),
        *slow,
        f"--trainer.callbacks.mark_file={marks}",
    )
    rank_1 = run.second_process()
    deadline = time.monotonic() + 120
    while not all(Path(f"{marks}.{rank}").is_file() for rank in (0, 1)) and time.monotonic() < deadline:
        time.sleep(0.1)  # both are testing, a text a second
    os.kill(rank_1, signal.SIGKILL)
    code, seconds = run.wait(60)
    assert code == 1 and seconds < 30, run.stderr[-3000:]
    assert f"Rank 1 (process {rank_1}) is gone: test stopped; run the same command again" in run.stderr


def test_fewer_texts_than_processes(tiny_checkpoint, tmp_path):
    # One text on two processes: one of them has none, and still takes part (an empty batch), counted nowhere.
    labelled = write_semicolon_file(tmp_path / "one.txt", [("i am so happy and glad", "joy")])
    texts_file = tmp_path / "one-text.txt"
    texts_file.write_text("i am so happy and glad\n")
    output = tmp_path / "out.csv"
    done = cli_subprocess("predict", *TWO_PROCESSES, *predict_args(tiny_checkpoint, texts_file, output, tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    with output.open(newline="") as file:
        (row,) = csv.DictReader(file)
    assert row["text"] == "i am so happy and glad"
    assert sum(float(value) for name, value in row.items() if name.startswith("prob_")) == pytest.approx(1, abs=1e-5)

    done = cli_subprocess(
        "test",
        *TWO_PROCESSES,
        "--data.test_file",
        str(labelled),
        *csv_logged_run_args(tmp_path),
        "--ckpt_path",
        str(tiny_checkpoint),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (metrics,) = logged_metrics_of(newest_csv_log(tmp_path), "test/acc")
    report = json.loads((tmp_path / "reports" / "test_report.json").read_text())
    assert metrics["test/acc"] == float(row["label"] == "joy")  # the text predicted, scored once
    assert report["macro avg"]["support"] == 1
