"""Fault injection: texts, paths, files, signals and neighbours that a run meets in the wild.

Each test asserts the exit status, the first line of the message, and that nothing already written
is lost or mixed. Runs that must be killed, or run side by side, are real subprocesses.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from emotion_lightning import EmotionPredictor
from emotion_lightning.checkpoints import CheckpointError
from emotion_lightning.cli import main, run
from emotion_lightning.tokenized_cache import build_folder, remove_abandoned_builds
from tests.conftest import fixture_rows, quiet_run_args, run_folder, tiny_training_args, write_semicolon_file
from tests.subprocess_runs import cli_subprocess, fit_logged_run_args

csv.field_size_limit(sys.maxsize)  # to read the long texts back


def error_of(args: list[str]) -> str:
    """Run main() in this process; return the one-line message it exits with (exit status 1)."""
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    message = exit_info.value.code
    assert isinstance(message, str), f"exit status {message!r} instead of a message"
    assert message.startswith("emotion-lightning: error: ") and "\n" not in message
    return message.removeprefix("emotion-lightning: error: ")


def last_line(done: subprocess.CompletedProcess) -> str:
    return done.stderr.strip().splitlines()[-1]


def read_output(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


@pytest.fixture(scope="module")
def trained(tiny_distilbert, data_dir, tmp_path_factory) -> tuple[Path, list[str]]:
    """A fitted tiny model's run folder, and the arguments that evaluate it."""
    root = tmp_path_factory.mktemp("trained")
    args = [*tiny_training_args(tiny_distilbert, data_dir, epochs=1), "--data.eval_batch_size", "4"]
    args += [*quiet_run_args(root), "--trainer.enable_model_summary", "false"]
    run(["fit", *args])
    return run_folder(root), args


def predict_args(trained, texts_file: Path, *extra: str) -> list[str]:
    folder, args = trained
    return [
        "predict",
        *args,
        "--ckpt_path",
        str(folder / "checkpoints" / "best.ckpt"),
        "--data.predict_file",
        str(texts_file),
        *extra,
    ]


# -- predict output survives any text ---------------------------------------------------------------

TRICKY_TEXTS = [
    'he said "hi", then left; "quoted"',
    "tab\tseparated,with,commas",
    "a nul\x00inside",
    "happy " * 27_000,  # 162,000 characters: above the csv module's default field limit
    "ünïcödé ✓ and a backslash \\",
]


def test_predict_output_keeps_every_text_whole(trained, tmp_path):
    texts_file = tmp_path / "texts.txt"
    texts_file.write_text("".join(f"{text}\n" for text in TRICKY_TEXTS), encoding="utf-8")
    output = tmp_path / "out.csv"
    run(predict_args(trained, texts_file, "--prediction_writer.output_file", str(output)))
    assert [row["text"] for row in read_output(output)] == TRICKY_TEXTS
    assert not list(tmp_path.glob("out.csv.*"))


def test_predict_from_python_keeps_texts_with_line_breaks(trained, tmp_path):
    import lightning as L

    from emotion_lightning import EmotionClassifier, EmotionDataModule, PredictionWriter

    folder, _ = trained
    model = EmotionClassifier.load_from_checkpoint(folder / "checkpoints" / "best.ckpt", map_location="cpu")
    texts = ["two\nlines", "carriage\r\nreturn", "plain"]
    data = EmotionDataModule(predict_texts=texts)
    output = tmp_path / "python.csv"
    trainer = L.Trainer(callbacks=[PredictionWriter(str(output))], logger=False, enable_progress_bar=False)
    trainer.predict(model, datamodule=data, return_predictions=False)
    assert [row["text"] for row in read_output(output)] == texts


@pytest.mark.parametrize("where", ["folder", "read-only"])
def test_unusable_output_is_named_before_the_model_is_built(where, trained, tmp_path, monkeypatch):
    texts_file = tmp_path / "texts.txt"
    texts_file.write_text("i am glad\n")
    output = tmp_path if where == "folder" else Path("/proc/emotion-lightning-test/predictions.csv")
    monkeypatch.setattr("emotion_lightning.model.build_classifier", _must_not_build)
    message = error_of(predict_args(trained, texts_file, "--prediction_writer.output_file", str(output)))
    expected = (
        f"{output} is a folder; give a file name" if where == "folder" else f"cannot write predictions to {output}"
    )
    assert expected in message


def _must_not_build(*args, **kwargs):
    raise AssertionError("the model was built before the input was checked")


@pytest.mark.parametrize("problem", ["missing", "folder"])
def test_unusable_predict_file_is_named_before_the_model_is_built(problem, trained, tmp_path, monkeypatch):
    texts_file = tmp_path / "texts.txt"
    if problem == "folder":
        texts_file.mkdir()
    monkeypatch.setattr("emotion_lightning.model.build_classifier", _must_not_build)
    message = error_of(predict_args(trained, texts_file))
    assert message == (
        f"data.predict_file {texts_file} does not exist"
        if problem == "missing"
        else f"data.predict_file {texts_file} is not a file (one text per line)"
    )


# -- signals and kills during predict ---------------------------------------------------------------


@pytest.fixture
def many_texts(tmp_path) -> tuple[Path, list[str]]:
    texts = [text for text, _ in fixture_rows(10, seed=11)]  # 60 texts: 15 batches of 4
    texts_file = tmp_path / "many.txt"
    texts_file.write_text("".join(f"{text}\n" for text in texts))
    return texts_file, texts


@pytest.mark.slow
@pytest.mark.parametrize(("signal_name", "status"), [("SIGTERM", 143), ("SIGKILL", -9)])
def test_stopped_predict_keeps_its_rows_and_the_rerun_finishes_the_rest(
    signal_name, status, trained, many_texts, tmp_path
):
    texts_file, texts = many_texts
    reference = tmp_path / "reference.csv"  # in this process: only the stopped run must be a process of its own
    run(predict_args(trained, texts_file, "--prediction_writer.output_file", str(reference)))

    output = tmp_path / "out.csv"
    args = predict_args(trained, texts_file, "--prediction_writer.output_file", str(output))
    stopper = ["--trainer.callbacks+=mishaps.SignalAtPredictBatch", "--trainer.callbacks.batch=4"]
    stopped = cli_subprocess(*args, *stopper, f"--trainer.callbacks.signal_name={signal_name}")
    assert stopped.returncode == status, stopped.stderr[-3000:]
    assert not output.exists()
    (part,) = tmp_path.glob("out.csv.*.part0")
    kept = len(part.read_text().splitlines()) - 1  # the first line says which job the rows belong to
    # SIGTERM: the batch in progress is finished and written; SIGKILL: what was written before.
    assert kept == (5 * 4 if signal_name == "SIGTERM" else 4 * 4)
    if signal_name == "SIGTERM":
        assert "Received SIGTERM: stopped after 20 predictions" in stopped.stderr

    finished = cli_subprocess(*args)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert f"Continuing a stopped prediction: {kept} of {len(texts)} texts are done" in finished.stderr
    # Only what was left is predicted (and at most one text again, so that the run ends by writing).
    predicted_now = int(finished.stderr.split(f"Wrote {len(texts)} predictions to {output} (")[1].split()[0])
    assert len(texts) - kept <= predicted_now <= len(texts) - kept + 1
    assert output.read_text() == reference.read_text()
    assert not list(tmp_path.glob("out.csv.*"))


@pytest.mark.slow
def test_two_predicts_into_one_output_do_not_collide(trained, many_texts, tmp_path):
    texts_file, texts = many_texts
    output = tmp_path / "shared.csv"
    args = predict_args(trained, texts_file, "--prediction_writer.output_file", str(output))
    both = [
        subprocess.Popen(_subprocess_command(args), env=_subprocess_env(), stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    for process in both:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr[-3000:]
    assert [row["text"] for row in read_output(output)] == texts
    assert not list(tmp_path.glob("shared.csv.*"))


def _subprocess_command(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "emotion_lightning", *args]


def _subprocess_env() -> dict:
    tests = str(Path(__file__).parent)
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [tests, os.environ.get("PYTHONPATH")]))}


# -- runs sharing a folder ----------------------------------------------------------------------------


@pytest.mark.slow
def test_two_fits_into_one_folder_get_a_run_folder_each(tiny_distilbert, data_dir, tmp_path):
    def fit_command(seed: int) -> list[str]:
        settings = ["--seed_everything", str(seed), *fit_logged_run_args(tmp_path)]
        return _subprocess_command(["fit", *tiny_training_args(tiny_distilbert, data_dir, epochs=1), *settings])

    both = [
        subprocess.Popen(fit_command(seed), env=_subprocess_env(), stderr=subprocess.PIPE, text=True) for seed in (1, 2)
    ]
    for process in both:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr[-3000:]
    folders = sorted(tmp_path.glob("version_*"))
    assert [folder.name for folder in folders] == ["version_0", "version_1"]
    seeds = set()
    for folder in folders:
        config = (folder / "config.yaml").read_text()
        seeds.add(next(line for line in config.splitlines() if line.startswith("seed_everything")))
        assert (folder / "checkpoints" / "best.ckpt").is_file() and (folder / "checkpoints" / "last.ckpt").is_file()
        rows = read_output(folder / "metrics.csv")
        assert rows and all(None not in row for row in rows)  # no row longer than the header
        assert {row["step"] for row in rows if row.get("val/acc")} == {"5"}
    assert seeds == {"seed_everything: 1", "seed_everything: 2"}


def test_a_second_fit_never_replaces_the_first_runs_model(trained, tmp_path):
    folder, args = trained
    best = folder / "checkpoints" / "best.ckpt"
    before = best.read_bytes()
    run(["fit", *args])
    assert best.read_bytes() == before
    assert run_folder(folder.parent) != folder


# -- bad files and values -----------------------------------------------------------------------------


@pytest.mark.parametrize("split", ["train", "validation"])
@pytest.mark.parametrize("content", ["", "\n  \n\t\n"], ids=["empty", "blank-lines"])
def test_empty_split_is_named(split, content, fit_args, data_dir, tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    for name in ("train.txt", "validation.txt"):
        (folder / name).write_text((data_dir / name).read_text())
    (folder / f"{split}.txt").write_text(content)
    message = error_of(["fit", *fit_args, "--data.data_dir", str(folder)])
    assert message == f"{folder / f'{split}.txt'}: no examples (the file is empty or only blank lines)"


def _half_of(path: Path, target: Path) -> Path:
    data = path.read_bytes()
    target.write_bytes(data[: len(data) // 2])
    return target


class NotATensor:
    pass


CHECKPOINT_PROBLEMS = {
    "missing": (lambda good, tmp: tmp / "nowhere.ckpt", "checkpoint {path} does not exist"),
    "folder": (lambda good, tmp: tmp, "checkpoint {path} is a folder; give a .ckpt file that fit wrote"),
    "exported-folder": (
        lambda good, tmp: _exported(good, tmp / "exported"),
        "{path} is a model folder (as `export` writes), not a checkpoint",
    ),
    "truncated": (
        lambda good, tmp: _half_of(good, tmp / "half.ckpt"),
        "{path} is not a readable checkpoint: it is truncated",
    ),
    "random-bytes": (
        lambda good, tmp: _write(tmp / "noise.ckpt", os.urandom(4096)),
        "{path} is not a readable checkpoint: it is truncated",
    ),
    "other-torch-file": (
        lambda good, tmp: _torch_save({"weights": torch.zeros(3)}, tmp / "other.pt"),
        "{path} is a PyTorch file but not an emotion-lightning checkpoint",
    ),
    "pickled-object": (
        lambda good, tmp: _torch_save({"state_dict": NotATensor()}, tmp / "object.ckpt"),
        "{path} is not an emotion-lightning checkpoint: it could not be read as tensors and plain values",
    ),
}


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _torch_save(obj, path: Path) -> Path:
    torch.save(obj, path)
    return path


def _exported(checkpoint: Path, folder: Path) -> Path:
    main(["export", str(checkpoint), str(folder)])
    return folder


@pytest.mark.parametrize("problem", CHECKPOINT_PROBLEMS)
def test_bad_checkpoint_is_named_with_what_is_wrong(problem, trained, tmp_path):
    folder, args = trained
    make, expected = CHECKPOINT_PROBLEMS[problem]
    path = make(folder / "checkpoints" / "best.ckpt", tmp_path)
    message = error_of(["validate", *args, "--ckpt_path", str(path)])
    assert message.startswith(expected.format(path=path))
    assert "weights_only=False" not in message
    with pytest.raises(CheckpointError, match="^" + expected.format(path=path).replace("(", r"\(").replace(")", r"\)")):
        EmotionPredictor.from_checkpoint(path, device="cpu")


@pytest.mark.parametrize("setting", ["max_epochs", "max_steps"])
def test_negative_trainer_limit_is_named(setting, fit_args):
    message = error_of(["fit", *fit_args, f"--trainer.{setting}", "-5"])
    assert message == f"trainer.{setting} must be -1 (no limit) or at least 0, got -5"


def test_yaml_syntax_error_names_the_file_and_line(fit_args, tmp_path):
    config = tmp_path / "broken.yaml"
    config.write_text("trainer:\n  max_epochs: [1, 2\nmodel:\n  learning_rate: 0.1\n")
    message = error_of(["fit", "-c", str(config), *fit_args])
    assert message.startswith(f"{config}, line ")
    assert "not valid YAML" in message


def test_unwritable_run_root_is_named(fit_args):
    root = Path("/proc/emotion-lightning-test")
    message = error_of(["fit", *fit_args, "--trainer.default_root_dir", str(root)])
    assert message.startswith(f"cannot create a run folder in trainer.default_root_dir {root}")


# -- tokenization workers end with their run ------------------------------------------------------------


def _children_of(pid: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
@pytest.mark.parametrize("signal_name", ["SIGKILL", "SIGTERM"])
def test_killed_run_leaves_no_tokenization_workers_and_its_build_folder_is_cleared(
    signal_name, tiny_distilbert, tmp_path, fit_args
):
    data = tmp_path / "big"
    data.mkdir()
    rows = fixture_rows(1, seed=3)
    write_semicolon_file(data / "train.txt", rows * 60_000)  # 360,000 rows: a few seconds of tokenizing
    write_semicolon_file(data / "validation.txt", rows)
    cache = tmp_path / "cache"
    command = _subprocess_command(["fit", *fit_args, "--data.data_dir", str(data), "--data.num_proc", "2"])
    process = subprocess.Popen(
        command, env={**_subprocess_env(), "EMOTION_LIGHTNING_CACHE": str(cache)}, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while len(workers := _children_of(process.pid)) < 2:
        assert process.poll() is None and time.monotonic() < deadline, "no tokenization workers appeared"
        time.sleep(0.05)
    process.send_signal(getattr(signal, signal_name))  # to the run only, as `kill PID` does
    process.wait()
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in workers), "tokenization workers outlived their run"
    assert list(cache.glob(".building-*")), "the killed run's build folder is the case under test"

    live = build_folder(cache, "0123abcd")  # this process's: in use
    remove_abandoned_builds(cache)  # what the next run does before it builds
    assert list(cache.glob(".building-*")) == [live]
