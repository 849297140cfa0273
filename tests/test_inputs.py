"""Inputs that never turn into something else, nor into something bigger: YAML without aliases wherever the package
reads YAML, ``--text`` values as they are given, run folders whose files the package did not write."""

from __future__ import annotations

import csv
import re
import time
from pathlib import Path

import pytest

from emotion_lightning.cli import main
from emotion_lightning.runs import best_checkpoint
from emotion_lightning.runs.listing import describe_runs
from tests.test_faults import error_of, predict_args, trained  # noqa: F401  (trained: a fixture)

# Nine levels of nine aliases: a few hundred bytes that stand for 9**9 (387 million) strings once expanded.
BOMB_LEVELS = ["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"] + [
    f"{name}: &{name} [{', '.join([f'*{previous}'] * 9)}]"
    for previous, name in zip("abcdefgh", "bcdefghi", strict=True)
]


def bomb(path: Path, under: str) -> Path:
    """A YAML alias bomb whose last level is the setting ``under`` (``data.predict_texts``, ``allowed_hosts``)."""
    *section, key = under.split(".")
    levels = "\n".join(f"  {line}" if section else line for line in BOMB_LEVELS[:-1])
    last = f"{key}: &i [{', '.join(['*h'] * 9)}]"
    body = f"{section[0]}:\n{levels}\n  {last}\n" if section else f"{levels}\n{last}\n"
    path.write_text(body)
    return path


def test_an_alias_bomb_given_with_c_is_refused_at_once_naming_the_file(trained, tmp_path):  # noqa: F811
    config = bomb(tmp_path / "bomb.yaml", "data.predict_texts")
    texts = tmp_path / "texts.txt"
    texts.write_text("i am glad\n")
    started = time.monotonic()
    message = error_of([*predict_args(trained, texts), "-c", str(config)])
    assert message.startswith(f"{config}, line 3: not valid YAML (an alias (*a) repeats another value")
    assert time.monotonic() - started < 10  # it took minutes and 12.8 GB


def test_an_alias_bomb_in_serves_config_or_setting_is_refused_before_the_model_loads(tiny_checkpoint, tmp_path):
    config = bomb(tmp_path / "hosts.yaml", "allowed_hosts")
    message = error_of(["serve", str(tiny_checkpoint), "-c", str(config), "--port", "8123"])
    assert message.startswith(f"{config}, line 2: not valid YAML (an alias (*a) repeats another value")
    # The same bomb as the setting's value on the command line: refused as a value that is no list of names.
    value = "[" + ", ".join(["&a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"] + ["*a"] * 8) + "]"
    started = time.monotonic()
    message = error_of(["serve", str(tiny_checkpoint), "--allowed_hosts", value, "--port", "8123"])
    assert message.startswith("--allowed_hosts") and time.monotonic() - started < 10


def test_aliases_are_refused_in_the_search_space(tmp_path):
    from emotion_lightning.errors import SettingError
    from emotion_lightning.tune.space import read_space

    space = tmp_path / "space.yaml"
    space.write_text("low: &low 1.0e-5\nmodel.learning_rate: {type: float, low: *low, high: 1.0e-3}\n")
    with pytest.raises(SettingError, match=r"space.yaml, line 2: not a YAML search space \(an alias \(\*low\)"):
        read_space(str(space))


def test_a_folder_given_as_a_config_file_is_named(tmp_path):
    for subcommand in ("fit", "serve", "runs"):
        assert error_of([subcommand, "-c", str(tmp_path)]) == f"-c / --config: {tmp_path} is a folder; give a YAML file"


# -- a text is a text -----------------------------------------------------------------------------------------------

# What YAML would have read as a list, a list of one, nothing, and a setting.
TEXTS = ["[I am happy, I am sad]", "[happy]", "null", "--verbose", "so sad", "i am glad: really { very } glad"]


def test_text_values_reach_the_model_as_given_and_print_in_input_order(trained, tmp_path, capsys):  # noqa: F811
    folder, args = trained
    output = tmp_path / "out.csv"
    given = [word for text in TEXTS for word in ("--text", text)] + [f"--text={TEXTS[0]}"]
    checkpoint = str(folder / "checkpoints" / "best.ckpt")
    main(["predict", *args, "--ckpt_path", checkpoint, *given, "--prediction_writer.output_file", str(output)])
    with output.open(newline="") as file:
        assert [row["text"] for row in csv.DictReader(file)] == [*TEXTS, TEXTS[0]]
    printed = [line for line in capsys.readouterr().err.splitlines() if line.startswith("  ")]
    assert [line.split(maxsplit=2)[2] for line in printed] == [*TEXTS, TEXTS[0]]  # label, score, text


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (["--text", ""], "--text number 1: empty text"),
        (["--text", "ok", "--text", " \t"], "--text number 2: empty text"),
        (
            ["--text", "\u200b"],
            "--text number 1: text has no visible character (only spaces, control, format or combining characters)",
        ),
        (["--text"], '--text needs the text to classify after it: --text "I passed my exam!"'),
    ],
)
def test_a_text_that_cannot_be_classified_is_one_line(given, message, trained, tmp_path):  # noqa: F811
    folder, args = trained
    assert error_of(["predict", *args, "--ckpt_path", str(folder / "checkpoints" / "best.ckpt"), *given]) == message


def test_texts_and_a_predict_file_together_are_refused(trained, tmp_path):  # noqa: F811
    texts = tmp_path / "texts.txt"
    texts.write_text("i am glad\n")
    message = error_of([*predict_args(trained, texts), "--text", "so sad"])
    assert message == "give the texts to classify with --text or with --data.predict_file, not both"


def test_ten_thousand_texts_on_the_command_line_are_read_in_linear_time(trained, tmp_path):  # noqa: F811
    folder, args = trained
    output = tmp_path / "many.csv"
    given = [word for number in range(10_000) for word in ("--text", f"text number {number}")]
    started = time.monotonic()
    main(
        ["predict", *args, "--ckpt_path", str(folder / "checkpoints" / "best.ckpt"), *given]
        + ["--prediction_writer.output_file", str(output), "--trainer.limit_predict_batches", "1"]
    )
    # A guard against the quadratic reading that never finished (10,000 took over 600 s), not a speed claim.
    assert time.monotonic() - started < 120
    assert output.is_file()


# -- a run folder's files that the package did not write -------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"epoch,step,val/acc\n0,5,0.5\n\xff\xfe\n", "not a metrics file the package wrote (bytes that are not UTF-8)"),
        (b"epoch,step,val/acc\n0,5,0.5\n1,10,lots\n", "line 3: val/acc 'lots' is not an accuracy"),
        (b"epoch,step,val/acc\n0,5,7\n", "line 2: val/acc '7' is not an accuracy"),
        (None, "is not a file; the package writes metrics.csv as one"),
    ],
    ids=["not-utf8", "not-a-number", "not-an-accuracy", "a-folder"],
)
def test_a_metrics_file_the_package_did_not_write_is_named(content, problem, tiny_checkpoint, tmp_path):
    from emotion_lightning.runs import RunFileError
    from tests.test_first_hour import fake_run

    good = fake_run(tmp_path, 0, tiny_checkpoint, 0.5)
    bad = fake_run(tmp_path, 1, tiny_checkpoint, 0.9)
    (bad / "metrics.csv").unlink()
    if content is None:
        (bad / "metrics.csv").mkdir()
    else:
        (bad / "metrics.csv").write_bytes(content)

    # runs: every run listed; the file that cannot be read left out, with a line saying which.
    listed = describe_runs(tmp_path).splitlines()
    assert [line.split()[0] for line in listed[1:3]] == [str(good), str(bad)]
    assert listed[-1].startswith(f"skipped {bad / 'metrics.csv'}") and problem in listed[-1]
    # --ckpt_path best: one line naming the file (the best cannot be known without it).
    with pytest.raises(RunFileError, match=f"^{re.escape(str(bad / 'metrics.csv'))}.*{re.escape(problem)}"):
        best_checkpoint(tmp_path)
    message = error_of(["predict", "--ckpt_path", "best", "--trainer.default_root_dir", str(tmp_path), "--text", "a"])
    assert message.startswith(str(bad / "metrics.csv")) and problem in message


def test_a_checkpoint_outside_a_run_folder_is_said_with_its_score(tiny_checkpoint, trained, tmp_path, capsys):  # noqa: F811
    _, args = trained
    main(["predict", *args, "--ckpt_path", str(tiny_checkpoint), "--text", "i am glad"])
    said = next(line for line in capsys.readouterr().err.splitlines() if line.startswith("Checkpoint "))
    assert said.startswith(f"Checkpoint {tiny_checkpoint} (val/acc ") or said == (
        f"Checkpoint {tiny_checkpoint} (val/acc not recorded)"
    )
