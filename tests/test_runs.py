"""Run folders: claimed once per run, shared by all processes of a job, found again to resume."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from emotion_lightning import runs
from emotion_lightning.runs import ownership

CLAIM = (
    "import sys; from emotion_lightning.runs import shared_new_run_folder; print(shared_new_run_folder(sys.argv[1]))"
)


def test_new_folders_are_numbered_and_never_reused(tmp_path):
    first, second = runs.claim_new_run_folder(tmp_path), runs.claim_new_run_folder(tmp_path)
    (tmp_path / "version_7").mkdir()
    third = runs.claim_new_run_folder(tmp_path)
    assert [first.name, second.name, third.name] == ["version_0", "version_1", "version_8"]


def test_resuming_finds_the_newest_run_with_a_last_checkpoint(tmp_path):
    for number in (0, 1, 2):
        (tmp_path / f"version_{number}" / "checkpoints").mkdir(parents=True)
    (tmp_path / "version_1" / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert (
        runs.newest_checkpoint(tmp_path, runs.LAST_CHECKPOINT) == tmp_path / "version_1" / "checkpoints" / "last.ckpt"
    )
    assert runs.run_folder_of(tmp_path / "version_1" / "checkpoints" / "last.ckpt") == tmp_path / "version_1"
    assert runs.run_folder_of(tmp_path / "model.ckpt") is None


def _claim_as(rank: int, root: Path, port: str) -> subprocess.Popen:
    """A process of a 2-process job started by an outside launcher (torchrun, SLURM) that claims a run folder."""
    environment = {**os.environ, "RANK": str(rank), "WORLD_SIZE": "2", "MASTER_ADDR": "localhost", "MASTER_PORT": port}
    environment.pop(ownership.RUN_FOLDER_VARIABLE, None)
    return subprocess.Popen(
        [sys.executable, "-c", CLAIM, str(root)], env=environment, stdout=subprocess.PIPE, text=True
    )


def test_processes_of_one_job_share_one_new_folder(tmp_path):
    (tmp_path / "version_0").mkdir()  # an earlier run
    second, first = _claim_as(1, tmp_path, "29511"), _claim_as(0, tmp_path, "29511")
    folders = {process.communicate(timeout=120)[0].strip() for process in (first, second)}
    assert folders == {str(tmp_path / "version_1")}
    # The next job (another port) gets a folder of its own, even though the first job's pointer is there.
    second, first = _claim_as(1, tmp_path, "29512"), _claim_as(0, tmp_path, "29512")
    assert {process.communicate(timeout=120)[0].strip() for process in (first, second)} == {str(tmp_path / "version_2")}
