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


def _ancestors(base: Path, rel: str) -> list[Path]:
    """``base/rel`` and every folder above it up to ``base`` (a limit set on a parent cgroup binds its
    children too); a path that would leave ``base`` (``..``: a process outside the cgroup namespace)
    counts as ``base`` itself."""
    parts = [p for p in rel.split("/") if p and p != "."]
    if ".." in parts:
        parts = []
    return [base.joinpath(*parts[:i]) for i in range(len(parts), -1, -1)]


def _quota(text: str | None, period_text: str | None = None) -> float | None:
    """Cores from a v2 ``cpu.max`` line (``"<quota> <period>"`` / ``"max <period>"``) or a v1 quota /
    period pair; ``None`` when unlimited or unreadable."""
    if text is None:
        return None
    if period_text is None:
        quota, _, period_text = text.partition(" ")
    else:
        quota = text
    try:
        q, p = (float("inf") if quota == "max" else int(quota)), int(period_text or 100000)
    except ValueError:
        return None
    return q / p if 0 < q < float("inf") and p > 0 else None


def cgroup_cpu_limit(
    root: str | os.PathLike[str] = "/sys/fs/cgroup", proc_cgroup: str | os.PathLike[str] = "/proc/self/cgroup"
) -> float | None:
    """The CPU quota of this process's cgroup in cores (e.g. ``1.5``): the tightest one on the way from its
    own cgroup up to the root, cgroup v2 (``cpu.max``) or else v1 (``cpu.cfs_quota_us`` /
    ``cpu.cfs_period_us``); ``None`` when there is none or it cannot be read (not Linux, no cgroup file
    system, unlimited)."""
    root, paths = Path(root), _cgroup_paths(Path(proc_cgroup))
    limits = [_quota(_read(d / "cpu.max")) for d in _ancestors(root, paths.get("", ""))]
    if all(x is None for x in limits):  # no v2 limit: the v1 hierarchy, if mounted
        limits = [
            _quota(_read(d / "cpu.cfs_quota_us"), _read(d / "cpu.cfs_period_us") or "")
            for base in (root / "cpu", root / "cpu,cpuacct")
            for d in _ancestors(base, paths.get("cpu", ""))
            if (d / "cpu.cfs_quota_us").is_file()
        ]
    return min((x for x in limits if x is not None), default=None)


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
