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
    fit_args = tiny_training_args(tiny_distilbert, data_dir, epochs=1)
    at = fit_args.index("--model.learning_rate")
    del fit_args[at : at + 2]  # searched: a setting typed on the command line would hold in every trial
    return [
        "tune",
        *fit_args,
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
    study = output / "emotion-lightning"
    assert len(list(study.glob("version_*"))) == 3  # a run folder per trial
    preset = yaml.safe_load((study / "best.yaml").read_text())
    assert set(preset["model"]) == {"learning_rate", "warmup_ratio"}
    assert (study / "val_acc_by_trial.png").is_file() and (study / "importances.png").is_file()
    with pytest.raises(SystemExit):  # the preset composes after the configs it was tuned with
        run(["fit", "-c", str(CONFIGS / "reference.yaml"), "-c", str(study / "best.yaml"), "--print_config"])
    assert f"learning_rate: {preset['model']['learning_rate']}" in capsys.readouterr().out


def test_the_shipped_search_space_runs_with_the_users_max_epochs(tiny_distilbert, data_dir, tmp_path, capsys):
    shipped = CONFIGS / "tune.yaml"  # it searches trainer.max_epochs in 2..4; the tiny fit types --trainer.max_epochs 1
    main(tune_args(tiny_distilbert, data_dir, tmp_path, "--tune.trials", "1", "--tune.space", str(shipped)))
    assert [state for _, state in finished_trials(tmp_path / "tune" / "study.db")] == ["COMPLETE"]
    said = capsys.readouterr().err
    for typed in ("trainer.max_epochs", "data.batch_size"):
        assert f"{typed}: the value given on the command line, in every trial (not searched, though {shipped}" in said
    trial = yaml.safe_load((tmp_path / "tune" / "emotion-lightning" / "version_0" / "config.yaml").read_text())
    assert (trial["trainer"]["max_epochs"], trial["data"]["batch_size"]) == (1, 8)
    assert trial["model"]["learning_rate"] != 1e-3  # the trial's config: the searched values are in it


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
    done = cli_subprocess(*args)  # at once: its process is known to be gone, no need to wait for the heartbeat
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Trial 1 was interrupted (its tuner stopped): marked failed, and its values tried again" in done.stderr
    states = [state for _, state in finished_trials(tmp_path / "tune" / "study.db")]
    # The three trials asked for are finished (the pruner may stop one of them early), and the killed one failed.
    assert states.count("COMPLETE") + states.count("PRUNED") == 3 and states.count("FAIL") == 1


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
    assert message == f"{space}: model.learnig_rate: not a fit setting (model.*, data.* or trainer.*)"


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


# -- trials that fail, and input that cannot work --------------------------------------------------------------


@pytest.mark.parametrize(
    ("parameter", "reason"),
    [
        ("model.learning_rate: {type: float, low: 1.0e+8, high: 1.0e+9}", "Training loss is NaN"),
        ("model.learning_rate: {type: float, low: -2.0, high: -1.0}", "model.learning_rate must be more than 0"),
        ("trainer.max_epochs: {type: categorical, choices: [three]}", "--trainer.max_epochs takes int, not 'three'"),
    ],
    ids=["diverging", "refused-by-the-model", "refused-by-the-parser"],
)
def test_a_failing_trial_is_marked_failed_with_its_reason_and_the_study_goes_on(
    parameter, reason, tiny_distilbert, data_dir, tmp_path, capsys
):
    space = tmp_path / "space.yaml"
    space.write_text(parameter + "\n")
    args = tune_args(tiny_distilbert, data_dir, tmp_path, "--tune.space", str(space), "--tune.trials", "5")
    searched = parameter.partition(":")[0]
    if f"--{searched}" in args:  # a typed value would hold in every trial: the one searched is left to the space
        del args[args.index(f"--{searched}") : args.index(f"--{searched}") + 2]
    message = error_line([*args, "--tune.max_failures", "2"])
    assert message.startswith("2 trials in a row failed (--tune.max_failures), the study stops; the last: ")
    assert reason in message
    assert [state for _, state in finished_trials(tmp_path / "tune" / "study.db")] == ["FAIL", "FAIL"]
    printed = capsys.readouterr().err
    assert printed.count("Trial 0 failed: ") == 1 and printed.count("Trial 1 failed: ") == 1
    assert "Traceback" not in printed


def test_a_study_goes_on_past_a_failed_trial(tiny_distilbert, data_dir, tmp_path, monkeypatch):
    import emotion_lightning.cli.lightning

    real_run, calls = emotion_lightning.cli.lightning.run, []

    def first_trial_fails(args, callbacks=None):
        calls.append(args)
        if len(calls) == 1:
            raise OSError(28, "No space left on device")
        return real_run(args, callbacks=callbacks)

    monkeypatch.setattr(emotion_lightning.cli.lightning, "run", first_trial_fails)
    space = tmp_path / "space.yaml"
    space.write_text("model.warmup_ratio: {type: float, low: 0.0, high: 0.2}\n")
    main(tune_args(tiny_distilbert, data_dir, tmp_path, "--tune.space", str(space), "--tune.trials", "2"))
    states = [state for _, state in finished_trials(tmp_path / "tune" / "study.db")]
    assert states == ["FAIL", "COMPLETE", "COMPLETE"]


def test_a_full_database_is_one_line(tiny_distilbert, data_dir, tmp_path, space, monkeypatch):
    import optuna
    import sqlalchemy.exc

    def disk_full(*args, **kwargs):
        raise sqlalchemy.exc.OperationalError("INSERT ...", {}, Exception("database or disk is full"))

    # The database refuses the write at the end of the first trial, as SQLite does on a full disk.
    monkeypatch.setattr(optuna.storages.RDBStorage, "set_trial_state_values", disk_full)
    message = error_line(tune_args(tiny_distilbert, data_dir, tmp_path, "--tune.space", str(space)))
    assert message.startswith(f"the study sqlite:///{tmp_path / 'tune' / 'study.db'} could not be written: ")
    assert "database or disk is full" in message


def test_results_never_replace_an_earlier_file_nor_go_through_a_link(tiny_distilbert, data_dir, tmp_path, space):
    outside = tmp_path / "outside.txt"
    outside.write_text("mine")
    study = tmp_path / "tune" / "emotion-lightning"
    study.mkdir(parents=True)
    for name in ("best.yaml", "val_acc_by_trial.png"):
        (study / name).symlink_to(outside)
        (tmp_path / "tune" / name).symlink_to(outside)  # where results went before
    main(tune_args(tiny_distilbert, data_dir, tmp_path, "--tune.trials", "1", "--tune.space", str(space)))
    assert outside.read_text() == "mine"
    assert yaml.safe_load((study / "best-2.yaml").read_text())["model"]
    assert (study / "val_acc_by_trial-2.png").stat().st_size > 1000
    main(tune_args(tiny_distilbert, data_dir, tmp_path, "--tune.trials", "2", "--tune.space", str(space)))
    assert (study / "best-3.yaml").is_file() and (study / "best-2.yaml").is_file()  # the earlier one kept


def test_a_second_study_writes_beside_the_first(tiny_distilbert, data_dir, tmp_path, space):
    for name in ("first", "second"):
        args = tune_args(tiny_distilbert, data_dir, tmp_path, "--tune.trials", "1", "--tune.space", str(space))
        main([*args, "--tune.study_name", name])
    assert (tmp_path / "tune" / "first" / "best.yaml").is_file() and (
        tmp_path / "tune" / "second" / "best.yaml"
    ).is_file()
    assert not (tmp_path / "tune" / "best.yaml").exists()


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        (["--tune.study_name", "../../escape"], "--tune.study_name must be a name"),
        (["--tune.study_name", "a/b"], "--tune.study_name must be a name"),
        (["--tune.timeout", "-5"], "--tune.timeout must be a number of seconds more than 0, got -5.0"),
        (["--tune.timeout", ".nan"], "--tune.timeout must be a number of seconds more than 0, got nan"),
        (["--tune.trials", "0"], "--tune.trials must be an integer of at least 1, got 0"),
        (["--tune.storage", "sqlite:///:memory:"], "keeps the study in memory: it could not be continued or shared"),
        (["--tune.storage", "sqlite://"], "keeps the study in memory"),
    ],
)
def test_a_tune_setting_that_cannot_work_is_one_line_and_writes_nothing(
    setting, message, tiny_distilbert, data_dir, tmp_path, space
):
    assert message in error_line(tune_args(tiny_distilbert, data_dir, tmp_path, "--tune.space", str(space), *setting))
    assert not (tmp_path / "tune").exists() and not list(Path.cwd().glob(":memory:*"))


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("model.learning_rate: {type: float, low: 1.0e-4\n", "line 2: not a YAML search space"),
        ("model.learning_rate: !!python/object/apply:os.system [echo]\n", "line 1: not a YAML search space"),
        ("low: &low 1.0e-5\nmodel.learning_rate: {type: float, low: *low}\n", "line 2: not a YAML search space"),
        (
            "model.learning_rate: {type: float, low: 0.1, high: 0.01}",
            "model.learning_rate: low 0.1 is more than high 0.01",
        ),
        ("model.learning_rate: {type: float, low: 0.0, high: 0.1, log: true}", "a log range needs low more than 0"),
        ("data.batch_size: {type: categorical, choices: 16}", "data.batch_size: choices must be a list"),
        ("trainer.max_epochs: {type: int, low: 1.5, high: 3}", "low must be an integer, got 1.5"),
        ("model.weight_decay: {type: float, lowest: 0, high: 1}", "'lowest' is not a key of a float range"),
    ],
)
def test_a_bad_search_space_is_named_before_the_study_is_touched(
    text, problem, tiny_distilbert, data_dir, tmp_path, space
):
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(SystemExit) as exit_info:
        main(tune_args(tiny_distilbert, data_dir, tmp_path, "--tune.space", str(bad)))
    assert problem in exit_info.value.code and "Traceback" not in exit_info.value.code
    assert not (tmp_path / "tune" / "study.db").exists()
    main(tune_args(tiny_distilbert, data_dir, tmp_path, "--tune.trials", "1", "--tune.space", str(space)))


def test_every_problem_of_a_space_is_said_one_line_each(tiny_distilbert, data_dir, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "model.learning_rate: {type: float, low: 0.1, high: 0.01}\n"
        "data.batch_size: {type: categorical, choices: []}\nmodel.nope: {type: int, low: 1, high: 2}\n"
    )
    with pytest.raises(SystemExit) as exit_info:
        main(tune_args(tiny_distilbert, data_dir, tmp_path, "--tune.space", str(bad)))
    lines = exit_info.value.code.splitlines()
    assert lines[0] == "emotion-lightning: error: the search space cannot be used:"
    assert [line.split(": ")[1] for line in lines[1:]] == ["model.learning_rate", "data.batch_size", "model.nope"]


def test_a_setting_typed_on_the_command_line_holds_in_every_trial(tiny_distilbert, data_dir, tmp_path, space, capsys):
    # The search space has model.learning_rate and model.warmup_ratio; the user gives the learning rate.
    args = tune_args(tiny_distilbert, data_dir, tmp_path, "--tune.trials", "2", "--tune.space", str(space))
    main([*args, "--model.learning_rate", "5e-3"])
    said = "model.learning_rate: the value given on the command line, in every trial (not searched, though"
    assert f"{said} {space} has it)" in capsys.readouterr().err
    study = tmp_path / "tune" / "emotion-lightning"
    preset = yaml.safe_load((study / "best.yaml").read_text())
    assert "learning_rate" not in preset.get("model", {}) and "warmup_ratio" in preset["model"]
    assert yaml.safe_load((study / "fit-config.yaml").read_text())["model"]["learning_rate"] == 5e-3
