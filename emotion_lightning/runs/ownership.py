"""Which process writes into a run folder: one fit at a time (a lock held as long as it runs), and of a
distributed job only its first process, which claims the folder."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

# Held (flock) by the fit that writes into a run folder, for as long as it runs.
LOCK_FILE = ".fit.lock"


def first_process_of_job() -> bool:
    """Whether this is the process that owns the run folder (not another DDP process of the same job)."""
    return int(os.environ.get("LOCAL_RANK", "0")) == 0 and _global_rank() == 0


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


def _global_rank() -> int:
    return int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")))
