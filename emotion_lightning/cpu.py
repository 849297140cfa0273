"""What this CPU is and how much of it this process may use: the two facts prediction's defaults depend on."""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


CPUINFO = Path("/proc/cpuinfo")
# The flags that decide how fast the model runs here, as benchmarks print them beside their figures.
SPEED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")


def cpu_flags(cpuinfo: Path = CPUINFO) -> set[str]:
    """The CPU's flags as /proc/cpuinfo lists them (Linux); none where there is no such file."""
    return set(cpuinfo.read_text().split()) if cpuinfo.is_file() else set()


def cpu_kind(cpuinfo: Path = CPUINFO) -> str:
    """``amx`` (AMX-BF16 matrix units), ``avx512_bf16`` (bf16 vector instructions, no AMX) or ``other``: what
    decides how fast bf16 runs here. From /proc/cpuinfo's flags (Linux); ``other`` where there are none."""
    flags = cpu_flags(cpuinfo)
    if "amx_bf16" in flags:
        return "amx"
    return "avx512_bf16" if "avx512_bf16" in flags else "other"


@functools.cache
def this_cpu_kind() -> str:
    """:func:`cpu_kind` of this machine, read once: prediction asks at every batch, and /proc/cpuinfo grows with
    the cores (hundreds of kilobytes on a large server)."""
    return cpu_kind()


def usable_cores(cgroup_root: Path = CGROUP_ROOT) -> int:
    """The cores this process may run on: its CPU affinity (``taskset``, a cpuset), cut to its cgroup's CPU quota
    (a container's CPU limit, as Kubernetes sets it), rounded up; at least 1.

    ``os.cpu_count()`` counts the machine's cores, which a container limited to one of sixteen would take as
    sixteen threads' worth: threads that then wait on each other through every parallel region.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = cgroup_cpu_quota(cgroup_root)
    return max(1, min(cores, math.ceil(quota)) if quota else cores)


def cgroup_cpu_quota(cgroup_root: Path = CGROUP_ROOT) -> float | None:
    """The CPU quota of this process's cgroup in cores (cgroup v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``), or None
    where there is none (or it cannot be read)."""
    try:
        v2 = cgroup_root / "cpu.max"
        if v2.is_file():
            quota, period = v2.read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        v1 = cgroup_root / "cpu"
        if (v1 / "cpu.cfs_quota_us").is_file():
            quota = int((v1 / "cpu.cfs_quota_us").read_text())
            return None if quota < 0 else quota / int((v1 / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None
