"""`emotion-lightning tune`: a study of tiny fits that writes a preset, survives SIGKILL, is shared by two tuners,
and names what is wrong with its input in one line."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from emotion_lightning.cli import main, run
from tests.conftest import quiet_run_args, tiny_training_args
from tests.subprocess_runs import cli_subprocess

CONFIGS = Path(__file__).parents[1] / "configs"


@pytest.fixture
def space(tmp_path) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(
        "model.learning_rate: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}\n"
        "model.warmup_ratio: {type: float, low: 0.0, high: 0.2}\n"
    )
    return path


def tune_args(tiny_distilbert, data_dir, tmp_path, *extra) -> list[str]:
    return [
        "tune",
        *tiny_training_args(tiny_distilbert, data_dir, epochs=1),
        *quiet_run_args(tmp_path / "unused"),
        "--tune.output",
        str(tmp_path / "tune"),
        *extra,
    ]


def finished_trials(database: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(database) as connection:
        return connection.execute("SELECT number, state FROM trials ORDER BY number").fetchall()


def test_a_study_of_fits_writes_a_preset_that_composes(tiny_distilbert, data_dir, tmp_path, space, capsys):
    main(tune_args(tiny_distilbert, data_dir, tmp_path, "--tune.trials", "3", "--tune.space", str(space)))
    output = tmp_path / "tune"
    printed = capsys.readouterr().err
    assert "Trials (number, state, best val/acc, time, values):" in printed
    assert [state for _, state in finished_trials(output / "study.db")] == ["COMPLETE"] * 3
    assert len(list((output / "emotion-lightning").glob("version_*"))) == 3  # a run folder per trial
    preset = yaml.safe_load((output / "best.yaml").read_text())
    assert set(preset["model"]) == {"learning_rate", "warmup_ratio"}
    assert (output / "val_acc_by_trial.png").is_file() and (output / "importances.png").is_file()
    with pytest.raises(SystemExit):  # the preset composes after the configs it was tuned with
        run(["fit", "-c", str(CONFIGS / "reference.yaml"), "-c", str(output / "best.yaml"), "--print_config"])
    assert f"learning_rate: {preset['model']['learning_rate']}" in capsys.readouterr().out


def test_the_shipped_search_space_runs(tiny_distilbert, data_dir, tmp_path):
    main(
        tune_args(tiny_distilbert, data_dir, tmp_path, "--tune.trials", "1", "--tune.space", str(CONFIGS / "tune.yaml"))
    )
    assert [state for _, state in finished_trials(tmp_path / "tune" / "study.db")] == ["COMPLETE"]


@pytest.mark.slow
def test_a_killed_tuner_continues_its_study(tiny_distilbert, data_dir, tmp_path, space):
    args = tune_args(tiny_distilbert, data_dir, tmp_path, "--tune.trials", "3", "--tune.space", str(space))
    args += ["--trainer.max_epochs", "3"]
    process = subprocess.Popen(_command(args), stderr=subprocess.DEVNULL)
    trials = tmp_path / "tune" / "emotion-lightning"
    deadline = time.monotonic() + 120
    while not (trials / "version_1").exists():  # the second trial has started
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)
    process.send_signal(signal.SIGKILL)
    process.wait()
    time.sleep(11)  # the killed tuner's heartbeat goes stale
    done = cli_subprocess(*args)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Trial 1 was interrupted (its tuner stopped): marked failed, and its values tried again" in done.stderr
    states = [state for _, state in finished_trials(tmp_path / "tune" / "study.db")]
    assert states.count("COMPLETE") == 3 and states.count("FAIL") == 1


@pytest.mark.slow
def test_two_tuners_share_one_study(tiny_distilbert, data_dir, tmp_path, space):
    args = tune_args(tiny_distilbert, data_dir, tmp_path, "--tune.trials", "4", "--tune.space", str(space))
    both = [subprocess.Popen(_command(args), stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for process in both:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr[-3000:]
    rows = finished_trials(tmp_path / "tune" / "study.db")
    numbers = [number for number, _ in rows]
    assert len(numbers) == len(set(numbers)) >= 4
    assert [state for _, state in rows].count("COMPLETE") >= 4
    folders = list((tmp_path / "tune" / "emotion-lightning").glob("version_*"))
    assert len(folders) == len(rows)  # one run folder per trial, none shared


def _command(args: list[str]) -> list[str]:
    import sys

    return [sys.executable, "-m", "emotion_lightning", *args]


def error_line(args: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    message = exit_info.value.code
    assert isinstance(message, str) and "\n" not in message
    return message.removeprefix("emotion-lightning: error: ")


def test_an_unknown_parameter_in_the_search_space_is_named(tiny_distilbert, data_dir, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("model.learnig_rate: {type: float, low: 1.0e-4, high: 1.0e-2}\n")
    message = error_line(tune_args(tiny_distilbert, data_dir, tmp_path, "--tune.space", str(space)))
    assert message == f"{space}: model.learnig_rate is not a fit setting (model.*, data.* or trainer.*)"


@pytest.mark.parametrize("url", ["sqlite:////proc/emotion-lightning/study.db", "postgresql://nobody@127.0.0.1:9/db"])
def test_an_unreachable_storage_is_named(url, tiny_distilbert, data_dir, tmp_path, space):
    args = tune_args(tiny_distilbert, data_dir, tmp_path, "--tune.space", str(space), "--tune.storage", url)
    assert error_line(args).startswith(f"cannot open the study storage {url}: ")


def test_a_study_made_with_another_search_space_is_refused(tiny_distilbert, data_dir, tmp_path, space):
    main(tune_args(tiny_distilbert, data_dir, tmp_path, "--tune.trials", "1", "--tune.space", str(space)))
    other = tmp_path / "other.yaml"
    other.write_text("model.weight_decay: {type: float, low: 0.0, high: 0.1}\n")
    message = error_line(tune_args(tiny_distilbert, data_dir, tmp_path, "--tune.space", str(other)))
    assert message.startswith("study 'emotion-lightning' in sqlite:///")
    assert "was made with another search space" in message
