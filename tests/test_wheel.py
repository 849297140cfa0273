"""The package as users install it: a wheel built from the repository, run from an empty folder, no checkout.

The wheel is unpacked where Python finds it first, so that every file the commands open comes from it (the
recipes, the search space, the help texts, the page); the libraries come from the environment the tests run in.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import tiny_training_args

REPOSITORY = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory) -> Path:
    built = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(built), str(REPOSITORY)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = built.glob("emotion_lightning-*.whl")
    site = tmp_path_factory.mktemp("site")
    zipfile.ZipFile(wheel).extractall(site)
    return site


def from_wheel(site: Path, folder: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1"}
    code = "import emotion_lightning, sys; assert emotion_lightning.__file__.startswith(sys.argv[1]); "
    code += "sys.argv = ['emotion-lightning', *sys.argv[2:]]; from emotion_lightning.cli import main; main()"
    command = [sys.executable, "-c", code, str(site), *args]
    return subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=600)


def test_the_wheel_carries_the_recipes_the_search_space_the_help_and_the_pages(installed_wheel):
    package = installed_wheel / "emotion_lightning"
    for name in ("reference", "offline", "offline-tuned", "wandb", "tune", "sweep"):
        assert (package / "configs" / f"{name}.yaml").is_file(), name
    for name in ("fit", "validate", "test", "predict", "export", "serve", "tune"):
        assert (package / "help" / f"{name}.txt").is_file(), name
    for name in ("index.html", "docs.html"):
        assert (package / "static" / name).is_file(), name


def test_from_an_empty_folder_every_help_answers_and_the_recipe_prints(installed_wheel, tmp_path):
    from emotion_lightning.cli import SUBCOMMANDS

    for subcommand in SUBCOMMANDS:
        done = from_wheel(installed_wheel, tmp_path, subcommand, "--help")
        assert done.returncode == 0 and f"usage: emotion-lightning {subcommand}" in done.stdout, done.stderr
    done = from_wheel(
        installed_wheel, tmp_path, "fit", "-c", "reference", "--trainer.accelerator", "cpu", "--print_config"
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "learning_rate: 2.0e-05" in done.stdout and "max_epochs: 3" in done.stdout
    assert list(tmp_path.iterdir()) == []  # printing wrote nothing


def test_from_an_empty_folder_tune_with_the_shipped_space_completes_a_trial(
    installed_wheel, tiny_distilbert, data_dir, tmp_path
):
    args = [*tiny_training_args(tiny_distilbert, data_dir, epochs=1), "--trainer.enable_progress_bar", "false"]
    done = from_wheel(installed_wheel, tmp_path, "tune", *args, "--tune.trials", "1")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "COMPLETE" in done.stderr
    assert (tmp_path / "runs" / "tune" / "emotion-lightning" / "best.yaml").is_file()
