"""Kill a training run at different points, resume it with `fit --ckpt_path last`, and compare.

Each run is a real `python -m emotion_lightning fit` subprocess, stopped by tests/mishaps.py the
way real runs are stopped: SIGTERM (preemption), SIGKILL (out of memory), SIGKILL halfway through
writing a checkpoint. The resumed run must end with the same weights, bit for bit, and the same
val/acc as a run that was never stopped.
"""

from __future__ import annotations

import csv
import signal
import subprocess
from pathlib import Path

import pytest
import torch

from tests.conftest import run_folder, tiny_training_args
from tests.subprocess_runs import cli_subprocess, fit_logged_run_args, logged_metrics

pytestmark = pytest.mark.slow


def fit(args: list[str], root: Path, *extra: str) -> subprocess.CompletedProcess:
    return cli_subprocess("fit", *args, *extra, *fit_logged_run_args(root))


def final_state(root: Path) -> tuple[dict, int, float, list[dict]]:
    """Weights and global step of last.ckpt, the last val/acc the run logged, and every epoch's logged row."""
    checkpoint = torch.load(run_folder(root) / "checkpoints" / "last.ckpt", weights_only=True)
    with (run_folder(root) / "metrics.csv").open() as file:
        epoch_rows = [row for row in csv.DictReader(file) if row.get("train/acc") or row.get("val/acc")]
    return (
        checkpoint["state_dict"],
        checkpoint["global_step"],
        logged_metrics(run_folder(root) / "metrics.csv")[-1]["val/acc"],
        epoch_rows,
    )


@pytest.fixture(scope="module")
def resume_args(tiny_distilbert, data_dir) -> list[str]:
    # 48 training texts in batches of 8: 6 steps per epoch, 18 in all.
    return [*tiny_training_args(tiny_distilbert, data_dir, epochs=3), "--trainer.deterministic", "true"]


@pytest.fixture(scope="module")
def uninterrupted(resume_args, tmp_path_factory) -> tuple[dict, int, float, list[dict]]:
    root = tmp_path_factory.mktemp("uninterrupted")
    done = fit(resume_args, root)
    assert done.returncode == 0, done.stderr[-3000:]
    return final_state(root)


def stop_at(step: int, *settings: str) -> list[str]:
    return ["--trainer.callbacks+=mishaps.StopAtStep", f"--trainer.callbacks.step={step}", *settings]


CASES = {
    # SIGTERM mid-epoch: the batch in progress finishes, last.ckpt is saved, exit status 143.
    "sigterm-mid-epoch": (stop_at(4), [], 143, 4),
    # SIGTERM on the last batch of an epoch: validation runs, then the save.
    "sigterm-epoch-end": (stop_at(6), [], 143, 6),
    # SIGKILL gives no warning: the periodic last.ckpt from step 8 is what is left.
    "sigkill-mid-epoch": (
        stop_at(9, "--trainer.callbacks.signal_name=SIGKILL"),
        ["--resume.every_n_train_steps=2"],
        -9,
        8,
    ),
    # SIGKILL halfway through writing last.ckpt at step 10: the one from the step-6 validation stays.
    "sigkill-while-saving": (
        stop_at(10, "--trainer.callbacks.during_checkpoint_write=true"),
        ["--resume.every_n_train_steps=5"],
        -9,
        6,
    ),
}


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="POSIX signals")
@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_resumed_run_ends_like_an_uninterrupted_one(case, resume_args, uninterrupted, tmp_path):
    stopper, settings, expected_status, saved_step = CASES[case]
    stopped = fit(resume_args, tmp_path, *settings, *stopper)
    assert stopped.returncode == expected_status, stopped.stderr[-3000:]
    left = torch.load(run_folder(tmp_path) / "checkpoints" / "last.ckpt", weights_only=True)
    assert left["global_step"] == saved_step

    resumed = fit(resume_args, tmp_path, *settings, "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Resuming run folder {run_folder(tmp_path)} at step {saved_step} (epoch " in resumed.stderr

    weights, global_step, val_acc, epoch_rows = final_state(tmp_path)
    reference_weights, reference_step, reference_val_acc, reference_rows = uninterrupted
    assert global_step == reference_step == 18
    assert val_acc == reference_val_acc
    # The epoch's training accuracy and mean loss cover the whole epoch, stopped or not.
    assert epoch_rows == reference_rows
    assert weights.keys() == reference_weights.keys()
    different = [name for name in weights if not torch.equal(weights[name], reference_weights[name])]
    assert not different, f"weights differ from the uninterrupted run: {different}"


def test_resume_without_any_checkpoint_starts_from_scratch(resume_args, uninterrupted, tmp_path):
    stopped = fit(resume_args, tmp_path, *stop_at(2, "--trainer.callbacks.signal_name=SIGKILL"))
    assert stopped.returncode == -9
    assert not (run_folder(tmp_path) / "checkpoints" / "last.ckpt").exists()
    resumed = fit(resume_args, tmp_path, "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    weights, _, _, _ = final_state(tmp_path)
    assert all(torch.equal(weights[name], uninterrupted[0][name]) for name in weights)


def test_ctrl_c_keeps_the_work_and_last_continues_this_run_never_a_finished_one(resume_args, uninterrupted, tmp_path):
    # A finished run of other settings, newer than nothing but there: --ckpt_path last must not take it.
    other = fit([*resume_args, "--model.learning_rate", "1e-2", "--trainer.max_steps", "2"], tmp_path)
    assert other.returncode == 0, other.stderr[-3000:]
    ctrl_c = stop_at(4, "--trainer.callbacks.signal_name=SIGINT", "--trainer.callbacks.to_group=true")
    stopped = fit(resume_args, tmp_path, *ctrl_c)
    assert stopped.returncode == 130, stopped.stderr[-3000:]  # 128 + SIGINT
    folder = run_folder(tmp_path)
    assert f"Received Ctrl-C: saved {folder / 'checkpoints' / 'last.ckpt'}" in stopped.stderr
    assert torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4

    resumed = fit(resume_args, tmp_path, "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Resuming run folder {folder} at step 4 (epoch " in resumed.stderr
    weights, global_step, val_acc, _ = final_state(tmp_path)
    assert global_step == uninterrupted[1] and val_acc == uninterrupted[2]
    assert all(torch.equal(weights[name], uninterrupted[0][name]) for name in weights)

    again = fit(resume_args, tmp_path, "--ckpt_path", "last")  # the run of these settings has finished
    assert again.returncode == 1
    assert again.stderr.strip().splitlines()[-1] == (
        f"emotion-lightning: error: --ckpt_path {folder / 'checkpoints' / 'last.ckpt'}: its run has finished "
        "(3 of 3 epochs); raise --trainer.max_epochs to train it further, or leave out --ckpt_path for a new run"
    )


def test_a_second_ctrl_c_stops_at_once(resume_args, tmp_path):
    ctrl_c_twice = stop_at(4, "--trainer.callbacks.signal_name=SIGINT", "--trainer.callbacks.to_group=true")
    stopped = fit(resume_args, tmp_path, *ctrl_c_twice, "--trainer.callbacks.times=2")
    assert stopped.returncode == 1, stopped.stderr[-3000:]
    assert "Ctrl-C again: stopped at once; this run saved no last.ckpt yet" in stopped.stderr
    assert not list(tmp_path.glob("**/last.ckpt"))
