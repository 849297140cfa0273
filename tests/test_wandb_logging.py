"""W&B logging, offline: what a run records, read back from its own files; an unreachable server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from emotion_lightning import EmotionPredictor
from emotion_lightning.cli import run
from tests.conftest import run_folder
from tests.wandb_reader import summarize_run

CONFIGS = Path(__file__).parents[1] / "configs"


def wandb_args(fit_args, save_dir: Path, *extra: str) -> list[str]:
    position = fit_args.index("--trainer.logger")
    without_logger = fit_args[:position] + fit_args[position + 2 :]
    return [
        "-c",
        str(CONFIGS / "wandb.yaml"),
        *without_logger,
        "--trainer.logger.init_args.save_dir",
        str(save_dir),
        "--trainer.logger.init_args.name",
        "tiny-test-run",
        *extra,
    ]


def test_offline_run_records_metrics_media_config_and_model(fit_args, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    args = wandb_args(fit_args, tmp_path, "--trainer.log_every_n_steps", "1")
    cli = run(["fit", *args])
    # Finish this run itself (not whatever wandb.run is): returns once its records are all written.
    cli.trainer.logger.experiment.finish()
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    recorded = summarize_run(run_dir)
    for key in ("train/loss", "train/acc", "val/loss", "val/acc", "val/f1_macro", "train/lr"):
        assert key in recorded["history_keys"], key
    media = recorded["media"]
    # W&B's confusion-matrix chart is backed by a table of (actual, predicted, count) rows.
    assert media["val/confusion_matrix_table"]["_type"] == "table-file"
    assert media["val/confusion_matrix_table"]["nrows"] == 6 * 6
    assert media["val/per_class"]["_type"] == "table-file" and media["val/per_class"]["nrows"] == 6
    assert media["val/mistakes"]["_type"] == "table-file" and media["val/mistakes"]["ncols"] == 4
    assert (run_dir / "files" / media["val/mistakes"]["path"]).is_file()
    # The full resolved CLI config is the run's config.
    assert recorded["config"]["model"]["learning_rate"] == 1e-3
    assert recorded["config"]["trainer"]["max_epochs"] == 2
    assert recorded["config"]["data"]["batch_size"] == 8
    charts = {key: value for key, value in recorded["config"].items() if "val/confusion_matrix" in key}
    assert any("wandb/confusion_matrix" in json.dumps(value) for value in charts.values()), list(recorded["config"])
    assert recorded["summary"]["best/val_acc"] == pytest.approx(float(cli.trainer.checkpoint_callback.best_model_score))
    assert recorded["summary"]["best/epoch"] in (0, 1)
    # The run folder and the W&B run name each other, and the run folder keeps its own metrics.csv.
    folder = run_folder(tmp_path)
    link = json.loads((folder / "wandb.json").read_text())
    assert run_dir.name.endswith(link["id"]) and Path(link["local_files"]) == run_dir.resolve()
    assert recorded["config"]["run_folder"] == str(folder.resolve())
    assert "val/acc" in (folder / "metrics.csv").read_text().splitlines()[0]
    models = [artifact for artifact in recorded["artifacts"] if artifact["type"] == "model"]
    assert models and {"best", "latest"} <= set(models[0]["aliases"]), recorded["artifacts"]
    assert models[0]["files"] == ["model.ckpt"]
    # The artifact is the best checkpoint, which the package's own loader opens.
    predictor = EmotionPredictor.from_checkpoint(cli.trainer.checkpoint_callback.best_model_path, device="cpu")
    assert predictor(["i feel glad"])[0].label


def test_unreachable_server_falls_back_to_offline_and_keeps_checkpoints(fit_args, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    args = wandb_args(fit_args, tmp_path, "--trainer.logger.init_args.init_timeout", "10")
    cli = run(["fit", *args, "--trainer.max_epochs", "1"])
    cli.trainer.logger.experiment.finish()
    assert (run_folder(tmp_path) / "checkpoints" / "best.ckpt").is_file()
    assert (run_folder(tmp_path) / "checkpoints" / "last.ckpt").is_file()
    assert list((tmp_path / "wandb").glob("offline-run-*"))


def test_no_api_key_means_offline(monkeypatch, tmp_path):
    from emotion_lightning.wandb_logging import FallbackWandbLogger

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    logger = FallbackWandbLogger(project="p", save_dir=str(tmp_path))
    assert logger.offline_from_start
    assert logger.experiment.offline
    logger.experiment.finish()


@pytest.mark.slow
def test_a_logged_run_leaves_no_hidden_checkpoint_copy_and_a_plain_log(fit_args, tmp_path):
    data_dir = tmp_path / "wandb-data"
    args = wandb_args(fit_args, tmp_path)
    done = cli_subprocess_with_env({"WANDB_MODE": "offline", "WANDB_DATA_DIR": str(data_dir)}, "fit", *args)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "\x1b" not in done.stderr, "terminal escape codes in a log written to a file"
    assert "wandb sync" in done.stderr
    best = run_folder(tmp_path) / "checkpoints" / "best.ckpt"
    staged = [path for path in data_dir.rglob("*") if path.is_file()]
    assert all(path.stat().st_size < best.stat().st_size / 10 for path in staged), staged


def cli_subprocess_with_env(environment: dict, *args: str):
    import os
    import subprocess
    import sys

    tests = str(Path(__file__).parent)
    env = {**os.environ, **environment, "PYTHONPATH": tests}
    command = [sys.executable, "-m", "emotion_lightning", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
