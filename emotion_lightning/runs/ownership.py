"""Which process writes into a run folder: one fit at a time (a lock held as long as it runs), and one folder
for all the processes of a distributed job."""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from pathlib import Path

from emotion_lightning.runs.folders import claim_new_run_folder

# Held (flock) by the fit that writes into a run folder, for as long as it runs.
LOCK_FILE = ".fit.lock"
# Set by the process that claims the folder; the DDP processes that Lightning starts inherit it.
RUN_FOLDER_VARIABLE = "EMOTION_LIGHTNING_RUN_DIR"
# How long the other processes of a torchrun / SLURM job wait for the first one's run folder, and how
# much earlier than them the first one may have claimed it (an older claim is a former job's).
SHARED_FOLDER_WAIT_SECONDS = 120
FIRST_PROCESS_LEAD_SECONDS = 30


# -- one fit per run folder at a time -----------------------------------------------------------


def first_process_of_job() -> bool:
    """Whether this is the process that owns the run folder (not another DDP process of the same job)."""
    return int(os.environ.get("LOCAL_RANK", "0")) == 0 and global_rank() == 0


class HeldRunFolders:
    """The run folders one command holds: each locked for as long as the command runs (an advisory ``flock``,
    which the kernel drops when the process ends, however it ends), and the one it created removed again if the
    command failed before writing anything of its own there."""

    def __init__(self):
        self.created: list[Path] = []
        self.made_roots: set[str] = set()  # trainer.default_root_dir folders this command made
        self._locks: list[int] = []

    def lock(self, folder: Path, created: bool = False) -> bool:
        """Mark ``folder`` as written by this process; False if another process holds it. Where the file system
        has no locks, every fit is let through."""
        import fcntl

        descriptor = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            return False
        except OSError:
            pass  # no locking on this file system
        self._locks.append(descriptor)
        if created:
            self.created.append(folder)
        return True

    def release(self, failed: bool) -> None:
        """At the command's end: let go of the locks; after a failure, remove what it created and left unused
        (the run folder, and the folder above it when the run made that too and it is empty now)."""
        for folder in self.created if failed else ():
            if remove_if_unused(folder) and folder.parent.name in self.made_roots:
                with contextlib.suppress(OSError):
                    folder.parent.rmdir()
        while self._locks:
            os.close(self._locks.pop())


# What a fit writes into its folder before it has done anything worth keeping.
_NOTHING_KEPT = {LOCK_FILE, "config.yaml", "hparams.yaml"}


def remove_if_unused(folder: Path) -> bool:
    """Remove a run folder that a failed fit created and left with nothing of its own (no checkpoint, no
    metrics): a fit that could not start leaves no empty ``version_N`` behind."""
    try:
        names = {path.name for path in folder.iterdir()}
    except OSError:
        return False
    if not names <= _NOTHING_KEPT:
        return False
    for name in names:
        (folder / name).unlink(missing_ok=True)
    folder.rmdir()
    return True


# -- one run folder for all the processes of a job ----------------------------------------------


def _launch_key() -> str | None:
    """An id shared by all processes of a job started by torchrun or SLURM; None for one process.

    Processes that Lightning starts itself inherit the run folder through the environment instead.
    """
    if int(os.environ.get("WORLD_SIZE", os.environ.get("SLURM_NTASKS", "1"))) <= 1:
        return None
    parts = [os.environ.get(name, "") for name in ("MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID", "SLURM_JOB_ID")]
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:16]


def global_rank() -> int:
    return int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")))


def shared_new_run_folder(root: str | Path) -> Path:
    """A new run folder for this job: claimed by its first process and the same for all its processes."""
    inherited = os.environ.get(RUN_FOLDER_VARIABLE)
    if inherited and int(os.environ.get("LOCAL_RANK", "0")) > 0:
        return Path(inherited)  # a DDP process that Lightning started: its parent claimed the folder
    key = _launch_key()
    pointer = Path(root) / f".run-of-job-{key}" if key else None
    if pointer is not None and global_rank() > 0:
        folder = Path(root) / _wait_for_pointer(pointer)
    else:
        folder = claim_new_run_folder(root)
        if pointer is not None:
            partial = pointer.with_name(f"{pointer.name}.partial")
            partial.write_text(folder.name)
            os.replace(partial, pointer)
    os.environ[RUN_FOLDER_VARIABLE] = str(folder)
    return folder


def _wait_for_pointer(pointer: Path) -> str:
    """The folder name that the job's first process wrote; an older pointer is a former job's."""
    started = time.time() - FIRST_PROCESS_LEAD_SECONDS
    deadline = time.monotonic() + SHARED_FOLDER_WAIT_SECONDS
    while not (pointer.is_file() and pointer.stat().st_mtime >= started):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the first process of this job created no run folder in {pointer.parent}")
        time.sleep(0.2)
    return pointer.read_text().strip()
