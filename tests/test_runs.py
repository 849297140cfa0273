"""Run folders: claimed once per run, by the first process of a job, found again to resume."""

from __future__ import annotations

import pytest

from emotion_lightning import runs
from emotion_lightning.runs import ownership


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


@pytest.mark.parametrize(
    ("environment", "first"),
    [({}, True), ({"LOCAL_RANK": "1"}, False), ({"RANK": "1"}, False), ({"SLURM_PROCID": "3"}, False)],
)
def test_the_first_process_of_a_job_is_the_one_that_claims_the_run_folder(environment, first, monkeypatch):
    # A DDP process that Lightning started (LOCAL_RANK), or one of a torchrun / SLURM job (RANK, SLURM_PROCID).
    for name in ("LOCAL_RANK", "RANK", "SLURM_PROCID"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert ownership.first_process_of_job() == first
