"""The local engine under crashes: a job killed (SIGKILL, Ctrl-C) midway and resumed gives the same bytes as
an uninterrupted run and re-scores no committed shard (counted from the checkpoint's log)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from unirank.distributed import RerankJob, run_job
from unirank.distributed.job import Checkpoint
from unirank.eval.datasets import dataset_folder

RUN = dataset_folder("trec-dl-2019") / "runs" / "bm25.top100.trec"
DEPTH, SHARD = 20, 2  # 22 shards of 2 queries


@pytest.fixture(scope="module")
def tiny_ce(make_tiny_bert):
    return f"ce:{make_tiny_bert('seqcls', seed=3)}"


def _job(spec: str) -> RerankJob:
    return RerankJob.from_files(RUN, "trec-dl-2019", reranker=spec, depth=DEPTH, shard_size=SHARD)


@pytest.fixture(scope="module")
def reference(tiny_ce, tmp_path_factory):
    """An uninterrupted run with one worker process and the killed runs' thread count (1): output bytes and
    committed shard bytes."""
    tmp = tmp_path_factory.mktemp("ref")
    job = _job(tiny_ce)
    res = run_job(
        job, tmp / "out.trec", workers=1, checkpoint_dir=tmp / "ck", keep_checkpoint=True,
        show_progress=False, engine_options={"threads": 1},
    )  # fmt: skip
    assert res.shards_scored == len(job.shards) == 22
    cp = Checkpoint(tmp / "ck", job, resume=True)
    return (tmp / "out.trec").read_bytes(), {i: cp.shard_path(i).read_bytes() for i in range(22)}


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


@pytest.mark.parametrize("how", ["sigkill-parent", "ctrl-c"])
def test_killed_job_resumes_byte_identical(how, tiny_ce, reference, tmp_path):
    out, ckpt = tmp_path / "out.trec", tmp_path / "ck"
    cmd = [sys.executable, "-m", "unirank.distributed", "rerank-run", "--run", str(RUN), "--corpus",
           "trec-dl-2019", "--reranker", tiny_ce, "--depth", str(DEPTH), "--shard-size", str(SHARD),
           "--workers", "1", "--threads", "1", "--out", str(out), "--checkpoint-dir", str(ckpt),
           "--keep-checkpoint", "--no-progress"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    proc = subprocess.Popen(
        cmd,
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        # a terminal's foreground job takes Ctrl-C; pytest itself may run where SIGINT is ignored (a shell's
        # background job), and an ignored signal would be inherited by the job
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    shards = ckpt / "shards"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if shards.is_dir() and len(list(shards.glob("*.trec"))) >= 3:
                break
            time.sleep(0.01)
        # freeze the whole group first: on a fast machine the remaining shards can otherwise finish
        # between this check and the signal's delivery
        os.killpg(proc.pid, signal.SIGSTOP)
        assert proc.poll() is None, f"job ended before it could be killed: {proc.communicate()}"
        if how == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)  # what a terminal sends to the foreground group
            os.killpg(proc.pid, signal.SIGCONT)  # the pending SIGINT is handled as the group resumes
            assert proc.wait(timeout=30) == 130
        else:
            proc.kill()  # the parent only: its worker must notice and exit by itself
            proc.wait(timeout=30)
            with contextlib.suppress(ProcessLookupError):  # let the stopped, orphaned worker run and notice
                os.killpg(proc.pid, signal.SIGCONT)
        job = _job(tiny_ce)
        cp = Checkpoint(ckpt, job, resume=True)
        workers = {e["pid"] for e in cp.events() if e["event"] == "commit"}
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(p) for p in workers), "worker outlived its killed parent"
    finally:
        if proc.poll() is None or how != "ctrl-c":
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.communicate()

    full_out, full_shards = reference
    committed = sorted(cp.done())
    assert 3 <= len(committed) < 22 and not out.exists()
    for i in committed:  # every committed shard is complete and what an uninterrupted run commits
        assert cp.shard_path(i).read_bytes() == full_shards[i]

    # resumed in this process (torch is loaded already): same code, same thread count, same bytes
    res = run_job(job, out, workers=0, checkpoint_dir=ckpt, resume=True, keep_checkpoint=True,
                  show_progress=False, engine_options={"threads": 1})  # fmt: skip
    assert out.read_bytes() == full_out
    assert (res.shards_scored, res.shards_resumed) == (22 - len(committed), len(committed))
    events = list(cp.events())
    resumed_session = [e for e in events if e["event"] == "session"][-1]
    assert resumed_session["pending"] == [i for i in range(22) if i not in committed]
    rescored = [
        e["shard"] for e in events if e["event"] == "commit" and e["session"] == resumed_session["session"]
    ]
    assert sorted(rescored) == resumed_session["pending"]  # each pending shard once, no committed one
    assert not set(rescored) & set(committed)
    assert json.loads((ckpt / "manifest.json").read_text())["shards"] == 22
