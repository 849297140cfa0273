"""Every config in configs/ runs the way a user runs it: composed as the README says, in every precision
the package can pick, with the recipe's gradient clipping on, with a logger and without one.

The tiny test backbone and fixture data are swapped in and a few steps are run; everything else is
the shipped config. A new config without a run here fails ``test_every_config_has_a_user_run``.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from emotion_lightning.cli import run
from emotion_lightning.precision import runnable_precision
from tests.conftest import run_folder

CONFIG_DIR = Path(__file__).parents[1] / "configs"


def sweep_trial_args() -> list[str]:
    """What `wandb agent` runs for one trial of configs/sweep.yaml: its command, with sampled values."""
    sweep = yaml.safe_load((CONFIG_DIR / "sweep.yaml").read_text())
    command = [part for part in sweep["command"] if not part.startswith("${")]
    assert command[:2] == [sweep["program"], "fit"]
    sampled = [
        f"--{name}={spec['values'][-1] if 'values' in spec else spec['min']}"
        for name, spec in sweep["parameters"].items()
    ]
    return command[2:] + sampled


# How a user runs each config (the README's commands and each config's own header): by the recipe's name.
USER_RUNS = {
    "reference.yaml": ["-c", "reference"],
    "offline.yaml": ["-c", "reference", "-c", "offline"],
    "wandb.yaml": ["-c", "reference", "-c", "offline", "-c", "wandb"],
    "sweep.yaml": sweep_trial_args(),
    "offline-tuned.yaml": ["-c", "reference", "-c", "offline", "-c", "offline-tuned"],
}


# Search spaces are run by the tuner, in tests/test_tune.py.
SEARCH_SPACES = {"tune.yaml": "tests/test_tune.py::test_the_shipped_search_space_runs"}


def test_every_config_has_a_user_run():
    shipped = sorted(path.name for path in CONFIG_DIR.glob("*.yaml"))
    missing = [name for name in shipped if name not in USER_RUNS and name not in SEARCH_SPACES]
    assert not missing, f"configs without a run in {Path(__file__).name}: {missing}"


@pytest.mark.parametrize("name", USER_RUNS)
def test_every_config_parses(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run(["fit", *USER_RUNS[name], "--print_config"])
    assert exit_info.value.code == 0
    assert "max_epochs" in capsys.readouterr().out


def test_offline_config_composes_with_reference(capsys):
    with pytest.raises(SystemExit):
        run(["fit", *USER_RUNS["offline.yaml"], "--print_config"])
    printed = capsys.readouterr().out
    assert "backbone: sentence-transformers/all-MiniLM-L6-v2" in printed
    assert "data_dir: ../shared/data/emotion" in printed
    assert "max_epochs: 3" in printed


def test_sweep_values_reach_the_run(capsys):
    with pytest.raises(SystemExit) as exit_info:
        run(["fit", *USER_RUNS["sweep.yaml"], "--print_config"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    assert "learning_rate: 1.0e-05" in printed and "max_epochs: 4" in printed and "warmup_ratio: 0.1" in printed


def tiny_stand_in(backbone: Path, data_dir: Path, root: Path) -> list[str]:
    """The tiny backbone and fixture data in place of the real ones, and 3 training steps."""
    return [
        "--model.backbone",
        str(backbone),
        "--data.data_dir",
        str(data_dir),
        "--trainer.default_root_dir",
        str(root),
        "--trainer.accelerator",
        "cpu",
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_train_batches",
        "3",
        "--trainer.limit_val_batches",
        "2",
        "--trainer.enable_progress_bar",
        "false",
    ]


def fit_like_a_user(name, tiny_distilbert, data_dir, tmp_path, monkeypatch, *extra):
    # The user's working folder: where W&B writes ./wandb.
    monkeypatch.chdir(tmp_path)
    return run(["fit", *USER_RUNS[name], *tiny_stand_in(tiny_distilbert, data_dir, tmp_path / "run"), *extra])


def check_trained_with_clipping(cli, root: Path) -> None:
    trainer = cli.trainer
    assert trainer.gradient_clip_val == 1.0, "the recipe's clipping is on"
    # 3 steps, or one epoch where the sweep's batch size makes that shorter.
    assert trainer.global_step == trainer.num_training_batches <= 3
    assert math.isfinite(float(trainer.callback_metrics["train/loss"]))
    assert (run_folder(root) / "checkpoints" / "best.ckpt").is_file()
    assert (run_folder(root) / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.parametrize("logger", ["default", "false"])
@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
@pytest.mark.parametrize("name", USER_RUNS)
def test_config_trains_in_every_cpu_precision(
    name, precision, logger, tiny_distilbert, data_dir, tmp_path, monkeypatch
):
    no_logger = ["--trainer.logger", "false"] if logger == "false" else []
    cli = fit_like_a_user(
        name, tiny_distilbert, data_dir, tmp_path, monkeypatch, "--trainer.precision", precision, *no_logger
    )
    check_trained_with_clipping(cli, tmp_path / "run")
    assert cli.trainer.precision == precision
    assert (cli.trainer.logger is None) == (logger == "false")
    if logger == "default":
        assert "train/lr" in cli.trainer.logged_metrics


def test_reference_recipe_runs_in_the_precision_this_machine_picks(tiny_distilbert, data_dir, tmp_path, monkeypatch):
    # No precision given: the recipe's 16-mixed, or on a CPU its fallback (bf16-mixed or 32-true).
    cli = fit_like_a_user("reference.yaml", tiny_distilbert, data_dir, tmp_path, monkeypatch)
    check_trained_with_clipping(cli, tmp_path / "run")
    assert cli.trainer.precision == runnable_precision("16-mixed", "cpu")[0]
