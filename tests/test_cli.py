"""The real CLI, driven through run(args) (what main() and the console script call) on tiny models."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from emotion_lightning.cli import run
from emotion_lightning.data import LABELS


def test_fit_keeps_best_and_last_checkpoint_and_links_arguments(fit_args, tmp_path, tiny_distilbert):
    cli = run(["fit", *fit_args])
    checkpoint_dir = tmp_path / "checkpoints"
    assert (checkpoint_dir / "best.ckpt").is_file()
    assert (checkpoint_dir / "last.ckpt").is_file()
    callback = cli.trainer.checkpoint_callback
    assert callback.monitor == "val/acc" and callback.mode == "max"
    assert Path(callback.best_model_path) == checkpoint_dir / "best.ckpt"
    # One value, given once, reaches both the model and the data.
    assert cli.datamodule.backbone == str(tiny_distilbert)
    assert cli.datamodule.labels == cli.model.labels == LABELS
    logged = cli.trainer.callback_metrics
    for key in ("train/loss", "train/loss_epoch", "train/acc", "val/loss", "val/acc", "val/f1_macro"):
        assert key in logged, key
    best = torch.load(checkpoint_dir / "best.ckpt", weights_only=False)
    assert best["callbacks"]
    # last.ckpt is written after the best-checkpoint bookkeeping, so a resumed run knows its best.
    last = torch.load(checkpoint_dir / "last.ckpt", weights_only=True)
    assert last["global_step"] == 12
    (kept,) = [state for name, state in last["callbacks"].items() if name.startswith("ModelCheckpoint")]
    assert kept["best_model_path"] == str(checkpoint_dir / "best.ckpt")
    assert float(kept["best_model_score"]) == float(callback.best_model_score)
    assert float(callback.best_model_score) == pytest.approx(
        max(float(logged["val/acc"]), float(callback.best_model_score))
    )


def test_validate_and_test_from_checkpoint(fit_args, tmp_path):
    run(["fit", *fit_args])
    best = str(tmp_path / "checkpoints" / "best.ckpt")
    validated = run(["validate", *fit_args, "--ckpt_path", best])
    assert 0.0 <= float(validated.trainer.callback_metrics["val/acc"]) <= 1.0
    tested = run(["test", *fit_args, "--ckpt_path", best])
    assert {"test/acc", "test/f1_macro", "test/loss"} <= set(tested.trainer.callback_metrics)


def test_test_without_test_split_says_so(fit_args, tmp_path, data_dir):
    no_test = tmp_path / "no-test"
    no_test.mkdir()
    for name in ("train.txt", "validation.txt"):
        (no_test / name).write_text((data_dir / name).read_text())
    args = [*fit_args, "--data.data_dir", str(no_test)]
    with pytest.raises(FileNotFoundError, match="no test split"):
        run(["test", *args])


def test_predict_writes_csv_in_input_order(fit_args, tmp_path):
    run(["fit", *fit_args])
    texts = ["i feel happy", "i am so angry about this exam really really very angry today", "sad", "scared"]
    predict_file = tmp_path / "texts.txt"
    predict_file.write_text("\n".join(texts) + "\n")
    output = tmp_path / "out" / "predictions.csv"
    run(
        [
            "predict",
            *fit_args,
            "--ckpt_path",
            str(tmp_path / "checkpoints" / "best.ckpt"),
            "--data.predict_file",
            str(predict_file),
            "--data.eval_batch_size",
            "2",
            "--prediction_writer.output_file",
            str(output),
        ]
    )
    with output.open() as file:
        rows = list(csv.DictReader(file))
    assert [row["text"] for row in rows] == texts
    assert list(rows[0]) == ["text", "label", "score", *(f"prob_{label}" for label in LABELS)]
    for row in rows:
        probabilities = [float(row[f"prob_{label}"]) for label in LABELS]
        assert sum(probabilities) == pytest.approx(1.0, abs=1e-4)
        assert row["label"] == LABELS[probabilities.index(max(probabilities))]
        assert float(row["score"]) == max(probabilities)
    assert not list(output.parent.glob("*.part*"))


def test_predict_file_defaults_to_root_dir(fit_args, tmp_path):
    run(["fit", *fit_args])
    predict_file = tmp_path / "texts.txt"
    predict_file.write_text("i feel glad\n")
    run(
        [
            "predict",
            *fit_args,
            "--ckpt_path",
            str(tmp_path / "checkpoints" / "last.ckpt"),
            "--data.predict_file",
            str(predict_file),
        ]
    )
    assert (tmp_path / "predictions.csv").is_file()


def test_cpu_run_falls_back_from_fp16_with_one_log_line(fit_args, caplog):
    cli = run(["fit", *fit_args, "--trainer.precision", "16-mixed", "--trainer.max_epochs", "1"])
    assert cli.trainer.precision in ("bf16-mixed", "32-true")
    messages = [record.getMessage() for record in caplog.records if "needs a CUDA GPU" in record.getMessage()]
    assert len(messages) == 1


def test_module_entry_point_runs_help():
    result = subprocess.run([sys.executable, "-m", "emotion_lightning", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    assert "fit" in result.stdout and "predict" in result.stdout


def test_predict_from_checkpoint_needs_no_backbone(fit_args, tmp_path, tiny_distilbert):
    """The checkpoint carries the architecture and the tokenizer: the backbone folder can be gone."""
    import shutil

    backbone = tmp_path / "backbone"
    shutil.copytree(tiny_distilbert, backbone)
    args = [*fit_args, "--model.backbone", str(backbone)]
    run(["fit", *args])
    shutil.rmtree(backbone)
    predict_file = tmp_path / "texts.txt"
    predict_file.write_text("i feel glad\ni am scared\n")
    best = str(tmp_path / "checkpoints" / "best.ckpt")
    run(["predict", *args, "--ckpt_path", best, "--data.predict_file", str(predict_file)])
    with (tmp_path / "predictions.csv").open() as file:
        assert [row["text"] for row in csv.DictReader(file)] == ["i feel glad", "i am scared"]


def test_rich_progress_bar_unless_turned_off(fit_args):
    from lightning.pytorch.callbacks import RichProgressBar

    without_bar = run(["fit", *fit_args, "--trainer.max_epochs", "1"])
    assert not any(isinstance(c, RichProgressBar) for c in without_bar.trainer.callbacks)
    position = fit_args.index("--trainer.enable_progress_bar")
    with_bar = run(["fit", *fit_args[:position], *fit_args[position + 2 :], "--trainer.max_epochs", "1"])
    assert isinstance(with_bar.trainer.progress_bar_callback, RichProgressBar)


def test_console_script_exits_zero(fit_args, tmp_path):
    """The installed `emotion-lightning` command: a finished run exits with status 0."""
    import shutil

    script = shutil.which("emotion-lightning", path=str(Path(sys.executable).parent))
    assert script, "emotion-lightning is not installed next to this Python"
    result = subprocess.run([script, "fit", *fit_args, "--trainer.max_epochs", "1"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "checkpoints" / "best.ckpt").is_file()


def test_predict_file_that_is_not_utf8_names_the_line(fit_args, tmp_path):
    from emotion_lightning.sources import DataFileError

    run(["fit", *fit_args, "--trainer.max_epochs", "1"])
    predict_file = tmp_path / "texts.txt"
    predict_file.write_bytes(b"i feel glad\n\xff\xfe broken\n")
    best = str(tmp_path / "checkpoints" / "best.ckpt")
    with pytest.raises(DataFileError, match=r"texts.txt, line 2: bytes that are not UTF-8"):
        run(["predict", *fit_args, "--ckpt_path", best, "--data.predict_file", str(predict_file)])
    assert not (tmp_path / "predictions.csv").exists()


def test_predict_file_blank_lines_bom_and_crlf(fit_args, tmp_path):
    run(["fit", *fit_args, "--trainer.max_epochs", "1"])
    predict_file = tmp_path / "texts.txt"
    predict_file.write_bytes("\ufeffi feel glad\r\n\r\n   \r\ni am scared\r\n".encode())
    best = str(tmp_path / "checkpoints" / "best.ckpt")
    run(["predict", *fit_args, "--ckpt_path", best, "--data.predict_file", str(predict_file)])
    with (tmp_path / "predictions.csv").open() as file:
        assert [row["text"] for row in csv.DictReader(file)] == ["i feel glad", "i am scared"]


def test_empty_predict_file_is_a_clear_error(fit_args, tmp_path):
    from emotion_lightning.sources import DataFileError

    run(["fit", *fit_args, "--trainer.max_epochs", "1"])
    predict_file = tmp_path / "empty.txt"
    predict_file.write_text("")
    best = str(tmp_path / "checkpoints" / "best.ckpt")
    with pytest.raises(DataFileError, match="no text to classify"):
        run(["predict", *fit_args, "--ckpt_path", best, "--data.predict_file", str(predict_file)])
