"""Processes the package starts and watches: a child that ends with its parent, whether a process still runs."""

from __future__ import annotations

import ctypes
import os
import signal
from pathlib import Path


def end_with_parent() -> None:
    """Have this process killed when its parent dies, however the parent ends (SIGKILL too)."""
    try:
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the workers end when their parent closes them
        pass
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (another user's counts as running; one that has ended but that
    its parent has not collected yet, a zombie, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # Linux: the state after the command's name in /proc/PID/stat; Z (zombie) or X (dead) has ended
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")
