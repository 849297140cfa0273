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
from tests.conftest import run_folder


def test_fit_keeps_best_and_last_checkpoint_and_links_arguments(fit_args, tmp_path, tiny_distilbert):
    cli = run(["fit", *fit_args])
    checkpoint_dir = run_folder(tmp_path) / "checkpoints"
    assert (checkpoint_dir / "best.ckpt").is_file()
    assert (checkpoint_dir / "last.ckpt").is_file()
    callback = cli.trainer.checkpoint_callback
    assert callback.monitor == "val/acc" and callback.mode == "max"
    assert Path(callback.best_model_path) == checkpoint_dir / "best.ckpt"
    # One owner: the data module encodes with the model's tokenizer, max_length and labels.
    assert cli.datamodule.tokenizer is cli.model.tokenizer
    assert cli.datamodule.max_length == cli.model.max_length
    assert cli.datamodule.labels == cli.model.labels == LABELS
    logged = cli.trainer.callback_metrics
    for key in ("train/loss", "train/loss_epoch", "train/acc", "val/loss", "val/acc", "val/f1_macro"):
        assert key in logged, key
    # best.ckpt: weights, settings and tokenizer only; last.ckpt: everything a resumed run needs.
    best = torch.load(checkpoint_dir / "best.ckpt", weights_only=True)
    assert {"state_dict", "hyper_parameters", "tokenizer_files", "datamodule_hyper_parameters"} <= set(best)
    assert "optimizer_states" not in best and "callbacks" not in best
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
    best = str(run_folder(tmp_path) / "checkpoints" / "best.ckpt")
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
    run(["fit", *args, "--trainer.max_epochs", "1"])
    with pytest.raises(
        FileNotFoundError, match=r"^test needs the test split: .* or give the file with --data.test_file"
    ):
        run(["test", *args, "--ckpt_path", "best"])


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
            str(run_folder(tmp_path) / "checkpoints" / "best.ckpt"),
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
            str(run_folder(tmp_path) / "checkpoints" / "last.ckpt"),
            "--data.predict_file",
            str(predict_file),
        ]
    )
    assert (run_folder(tmp_path) / "predictions" / "texts.csv").is_file()


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
    best = str(run_folder(tmp_path) / "checkpoints" / "best.ckpt")
    run(["predict", *args, "--ckpt_path", best, "--data.predict_file", str(predict_file)])
    with (run_folder(tmp_path) / "predictions" / "texts.csv").open() as file:
        assert [row["text"] for row in csv.DictReader(file)] == ["i feel glad", "i am scared"]


def test_progress_is_a_bar_in_a_terminal_and_lines_in_a_log(fit_args, monkeypatch, caplog):
    from lightning.pytorch.callbacks import RichProgressBar

    from emotion_lightning.callbacks import LineProgress

    without_bar = run(["fit", *fit_args, "--trainer.max_epochs", "1"])
    assert without_bar.trainer.progress_bar_callback is None
    position = fit_args.index("--trainer.enable_progress_bar")
    progress_args = [*fit_args[:position], *fit_args[position + 2 :], "--trainer.max_epochs", "1"]
    with caplog.at_level("INFO", logger="emotion_lightning"):
        in_a_log = run(["fit", *progress_args, "--trainer.log_every_n_steps", "2"])
    assert isinstance(in_a_log.trainer.progress_bar_callback, LineProgress)
    lines = [record.message for record in caplog.records if record.message.startswith("epoch 1/1  step")]
    # 6 steps, a line every 2: steps, rate, time left and loss in each.
    assert [line.split("  ")[1] for line in lines] == ["step 2/6", "step 4/6", "step 6/6"]
    assert all("steps/s" in line and "left (training)" in line and "loss " in line for line in lines)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    in_a_terminal = run(["fit", *progress_args])
    assert isinstance(in_a_terminal.trainer.progress_bar_callback, RichProgressBar)


def test_fit_ends_by_saying_what_it_made(fit_args, tmp_path, caplog):
    with caplog.at_level("INFO", logger="emotion_lightning"):
        cli = run(["fit", *fit_args])
    (summary,) = [record.message for record in caplog.records if record.message.startswith("Fit finished in ")]
    folder = run_folder(tmp_path)
    score = float(cli.trainer.checkpoint_callback.best_model_score)
    assert f"run folder {folder}" in summary
    assert f"best checkpoint: {folder / 'checkpoints' / 'best.ckpt'} (val/acc {score:.4f})" in summary
    assert f"last checkpoint: {folder / 'checkpoints' / 'last.ckpt'} (resume with --ckpt_path last)" in summary


def test_console_script_exits_zero(fit_args, tmp_path):
    """The installed `emotion-lightning` command: a finished run exits with status 0."""
    import shutil

    script = shutil.which("emotion-lightning", path=str(Path(sys.executable).parent))
    assert script, "emotion-lightning is not installed next to this Python"
    result = subprocess.run([script, "fit", *fit_args, "--trainer.max_epochs", "1"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (run_folder(tmp_path) / "checkpoints" / "best.ckpt").is_file()


def test_predict_file_that_is_not_utf8_names_the_line(fit_args, tmp_path):
    from emotion_lightning.sources import DataFileError

    run(["fit", *fit_args, "--trainer.max_epochs", "1"])
    predict_file = tmp_path / "texts.txt"
    predict_file.write_bytes(b"i feel glad\n\xff\xfe broken\n")
    best = str(run_folder(tmp_path) / "checkpoints" / "best.ckpt")
    with pytest.raises(DataFileError, match=r"texts.txt, line 2: bytes that are not UTF-8"):
        run(["predict", *fit_args, "--ckpt_path", best, "--data.predict_file", str(predict_file)])
    assert not (run_folder(tmp_path) / "predictions" / "texts.csv").exists()


def test_predict_file_blank_lines_bom_and_crlf(fit_args, tmp_path):
    run(["fit", *fit_args, "--trainer.max_epochs", "1"])
    predict_file = tmp_path / "texts.txt"
    predict_file.write_bytes("\ufeffi feel glad\r\n\r\n   \r\ni am scared\r\n".encode())
    best = str(run_folder(tmp_path) / "checkpoints" / "best.ckpt")
    run(["predict", *fit_args, "--ckpt_path", best, "--data.predict_file", str(predict_file)])
    with (run_folder(tmp_path) / "predictions" / "texts.csv").open() as file:
        assert [row["text"] for row in csv.DictReader(file)] == ["i feel glad", "i am scared"]


def test_empty_predict_file_is_a_clear_error(fit_args, tmp_path):
    from emotion_lightning.sources import DataFileError

    run(["fit", *fit_args, "--trainer.max_epochs", "1"])
    predict_file = tmp_path / "empty.txt"
    predict_file.write_text("")
    best = str(run_folder(tmp_path) / "checkpoints" / "best.ckpt")
    with pytest.raises(DataFileError, match="no text to classify"):
        run(["predict", *fit_args, "--ckpt_path", best, "--data.predict_file", str(predict_file)])


def test_evaluating_reads_the_checkpoint_once(fit_args, tmp_path, monkeypatch):
    run(["fit", *fit_args])
    best = run_folder(tmp_path) / "checkpoints" / "best.ckpt"
    reads = []
    real_load = torch.load

    def counting_load(file, *args, **kwargs):
        if Path(file if isinstance(file, str | Path) else file.name) == best:
            reads.append(file)
        return real_load(file, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counting_load)
    validated = run(["validate", *fit_args, "--ckpt_path", str(best)])
    assert len(reads) == 1
    assert 0.0 <= float(validated.trainer.callback_metrics["val/acc"]) <= 1.0


def test_predict_command_and_predictor_give_the_same_probabilities(fit_args, tmp_path):
    from emotion_lightning import EmotionPredictor

    run(["fit", *fit_args])
    best = run_folder(tmp_path) / "checkpoints" / "best.ckpt"
    texts = ["i feel glad", " ".join(["sad"] * 300), "so scared about my exam", "happy"]  # one longer than 64 tokens
    predict_file = tmp_path / "texts.txt"
    predict_file.write_text("".join(f"{text}\n" for text in texts))
    settings = [
        "--trainer.precision",
        "32-true",
        "--data.eval_batch_size",
        "3",
        "--data.predict_file",
        str(predict_file),
    ]
    run(["predict", *fit_args, *settings, "--ckpt_path", str(best)])
    with (run_folder(tmp_path) / "predictions" / "texts.csv").open() as file:
        rows = list(csv.DictReader(file))
    predictor = EmotionPredictor.from_checkpoint(best, device="cpu", precision="32-true", batch_size=3)
    results = predictor(texts)
    assert [result.truncated for result in results] == [False, True, False, False]
    for row, result in zip(rows, results, strict=True):
        assert row["label"] == result.label
        for label, probability in result.probabilities.items():
            assert float(row[f"prob_{label}"]) == pytest.approx(probability, abs=1e-6)


def test_help_lists_every_subcommand_and_version_answers(capsys):
    from emotion_lightning import __version__
    from emotion_lightning.cli import main

    main(["--help"])
    printed = capsys.readouterr().out
    assert printed.startswith("usage: emotion-lightning ")
    for subcommand in ("fit", "validate", "test", "predict", "export"):
        assert f"\n  {subcommand} " in printed, subcommand
    main(["--version"])
    assert capsys.readouterr().out.strip() == f"emotion-lightning {__version__}"


def test_help_and_version_do_not_import_torch():
    # What makes `emotion-lightning --help` answer at once: nothing heavy is imported for it.
    code = "import sys; from emotion_lightning.cli import main; main(['--help']); main(['--version']); "
    code += "assert 'torch' not in sys.modules and 'lightning' not in sys.modules, sorted(sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_a_model_trained_at_a_short_max_length_is_encoded_alike_by_the_cli_and_the_api(fit_args, tmp_path):
    import warnings

    from emotion_lightning import EmotionPredictor

    run(["fit", *fit_args, "--model.max_length", "16", "--trainer.max_epochs", "1"])
    best = run_folder(tmp_path) / "checkpoints" / "best.ckpt"
    texts = ["i feel glad", " ".join(["sad", "happy", "angry"] * 10)]  # the second is 30 words long
    predict_file = tmp_path / "texts.txt"
    predict_file.write_text("".join(f"{text}\n" for text in texts))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cli = run(["predict", *fit_args, "--ckpt_path", str(best), "--data.predict_file", str(predict_file)])
        predictor = EmotionPredictor.from_checkpoint(best, device="cpu", precision="32-true")
        results = predictor(texts)
    assert not [str(w.message) for w in caught if "max_length" in str(w.message)]
    assert cli.datamodule.max_length == predictor.max_length == 16
    assert [len(ids) for ids in cli.datamodule.splits["predict"].table["input_ids"]] == [5, 16]
    with (run_folder(tmp_path) / "predictions" / "texts.csv").open() as file:
        rows = list(csv.DictReader(file))
    for row, result in zip(rows, results, strict=True):
        for label, probability in result.probabilities.items():
            assert float(row[f"prob_{label}"]) == pytest.approx(probability, abs=1e-6)


def test_a_drawn_seed_shuffles_the_training_batches_when_last_finds_no_run(fit_args, tmp_path, monkeypatch):
    # `--ckpt_path last` looks for a run before LightningCLI draws the seed of `seed_everything: true`: the new run it
    # then starts shuffles with the seed drawn, as a run started without --ckpt_path does. (Lightning's draw is
    # $PL_GLOBAL_SEED, else 0: 7 here, so that a shuffling seed left at 0 shows.)
    monkeypatch.setenv("PL_GLOBAL_SEED", "7")
    cli = run(["fit", *fit_args, "--seed_everything", "true", "--ckpt_path", "last", "--trainer.max_steps", "1"])
    drawn = cli.config.fit.seed_everything
    assert drawn == 7 and cli.datamodule.shuffle_seed == drawn
    saved = (Path(cli.trainer.default_root_dir) / "config.yaml").read_text()
    assert f"shuffle_seed: {drawn}\n" in saved
