"""Usable CPU cores: the affinity mask capped by a cgroup v1 / v2 CPU quota (fake cgroup trees)."""

from __future__ import annotations

import math
import os

import pytest

from unirank import cpus


def _tree(tmp_path, files, proc="0::/\n"):
    for rel, text in files.items():
        path = tmp_path / "cg" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (tmp_path / "proc_cgroup").write_text(proc)
    return tmp_path / "cg", tmp_path / "proc_cgroup"


@pytest.mark.parametrize(
    ("files", "proc", "expected"),
    [
        ({"cpu.max": "150000 100000\n"}, "0::/\n", 1.5),  # v2 at the root
        ({"kubepods/pod1/cpu.max": "200000 100000\n", "cpu.max": "max 100000\n"}, "0::/kubepods/pod1\n", 2.0),
        ({"cpu.max": "max 100000\n"}, "0::/\n", None),  # v2, unlimited
        ({"cpu/cpu.cfs_quota_us": "300000\n", "cpu/cpu.cfs_period_us": "100000\n"}, "4:cpu,cpuacct:/\n", 3.0),
        (
            {
                "cpu,cpuacct/docker/x/cpu.cfs_quota_us": "50000",
                "cpu,cpuacct/docker/x/cpu.cfs_period_us": "100000",
            },
            "4:cpu,cpuacct:/docker/x\n",
            0.5,
        ),
        (
            {"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"},
            "4:cpu:/\n",
            None,
        ),  # v1 unlimited
        ({"cpu.max": "garbage"}, "0::/\n", None),
        # a parent's limit binds its children: the tightest on the way up counts
        (
            {"kubepods/cpu.max": "200000 100000", "kubepods/pod/cpu.max": "max 100000"},
            "0::/kubepods/pod\n",
            2.0,
        ),
        ({"a/cpu.max": "100000 100000", "a/b/cpu.max": "400000 100000"}, "0::/a/b\n", 1.0),
        ({"a/cpu.max": "400000 100000", "a/init.scope/cpu.max": "250000 100000"}, "0::/a/init.scope\n", 2.5),
        (
            {
                "cpu/pod/cpu.cfs_quota_us": "100000",
                "cpu/pod/cpu.cfs_period_us": "100000",
                "cpu/pod/c/cpu.cfs_quota_us": "-1",
                "cpu/pod/c/cpu.cfs_period_us": "100000",
            },
            "4:cpu:/pod/c\n",
            1.0,
        ),
        ({"cpu.max": "300000 100000"}, "0::/../..\n", 3.0),  # outside the namespace: the root's limit
        ({}, "", None),  # no cgroup file system
    ],
)
def test_cgroup_cpu_limit(tmp_path, files, proc, expected):
    root, proc_file = _tree(tmp_path, files, proc)
    assert cpus.cgroup_cpu_limit(root, proc_file) == expected


def test_available_cores_is_capped_by_the_quota_rounded_up(monkeypatch):
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    monkeypatch.setattr(cpus, "cgroup_cpu_limit", lambda: None)
    assert cpus.available_cores() == affinity
    monkeypatch.setattr(cpus, "cgroup_cpu_limit", lambda: 0.5)
    assert cpus.available_cores() == 1
    monkeypatch.setattr(cpus, "cgroup_cpu_limit", lambda: 1000.5)  # a quota above the mask: the mask
    assert cpus.available_cores() == affinity
    monkeypatch.setattr(cpus, "cgroup_cpu_limit", lambda: 1.2)
    assert cpus.available_cores() == min(affinity, math.ceil(1.2))


def test_the_onnx_engine_sizes_its_workers_from_it(monkeypatch, make_tiny_bert):
    pytest.importorskip("onnxruntime")
    from unirank import Reranker

    path = make_tiny_bert("seqcls", seed=3)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    for limit, workers in ((None, 4), (1.0, 1), (2.5, 3)):
        monkeypatch.setattr(cpus, "cgroup_cpu_limit", lambda limit=limit: limit)
        assert Reranker(f"ce:{path}", device="cpu", backend="onnx")._onnx.workers == workers
