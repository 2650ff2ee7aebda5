"""How many CPU cores this process may really use: its affinity mask, capped by a cgroup CPU quota.

A container limited to 2 CPUs on a 64-core host still sees 64 cores in ``os.cpu_count()`` and, with a
quota rather than a cpuset, in its affinity mask too; sizing thread pools by either oversubscribes the
quota and makes every thread wait for its time slice. :func:`available_cores` reads the quota of cgroup v2
(``cpu.max``) and v1 (``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``), rounded up, as the JVM and Go do.

>>> available_cores() >= 1
True
"""

from __future__ import annotations

import math
import os
from pathlib import Path

__all__ = ["available_cores", "cgroup_cpu_limit"]


def _cgroup_paths(proc_cgroup: Path) -> dict[str, str]:
    """``{controller: path}`` from ``/proc/self/cgroup`` (``""`` is the cgroup v2 unified entry)."""
    out: dict[str, str] = {}
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) == 3:
            for controller in parts[1].split(","):
                out[controller] = parts[2]
    return out


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def cgroup_cpu_limit(
    root: str | os.PathLike[str] = "/sys/fs/cgroup", proc_cgroup: str | os.PathLike[str] = "/proc/self/cgroup"
) -> float | None:
    """The CPU quota of this process's cgroup in cores (e.g. ``1.5``), or ``None`` when there is none or it
    cannot be read (not Linux, no cgroup file system, unlimited)."""
    root, paths = Path(root), _cgroup_paths(Path(proc_cgroup))
    rel = paths.get("", "/").lstrip("/")
    for folder in dict.fromkeys([root / rel, root]):  # cgroup v2: "<quota> <period>" or "max <period>"
        text = _read(folder / "cpu.max")
        if text:
            quota, _, period = text.partition(" ")
            try:
                return int(quota) / int(period) if quota != "max" and int(period) > 0 else None
            except ValueError:
                return None
    rel = paths.get("cpu", "/").lstrip("/")
    for base in (root / "cpu", root / "cpu,cpuacct"):  # cgroup v1
        for folder in dict.fromkeys([base / rel, base]):
            quota, period = _read(folder / "cpu.cfs_quota_us"), _read(folder / "cpu.cfs_period_us")
            if quota is not None and period is not None:
                try:
                    q, p = int(quota), int(period)
                except ValueError:
                    return None
                return q / p if q > 0 and p > 0 else None
    return None


def available_cores() -> int:
    """CPU cores this process may use: its affinity mask where the OS has one, capped by a cgroup CPU quota
    (rounded up); at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        cores = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    if limit is not None:
        cores = min(cores, math.ceil(limit))
    return max(1, cores)
