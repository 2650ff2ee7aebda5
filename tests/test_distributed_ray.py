"""The Ray engine (Ray Data actor pool) against the local engine, on one local Ray for the module."""

from __future__ import annotations

import pytest

from unirank import Reranker
from unirank.distributed import RerankJob, run_job
from unirank.distributed.job import Checkpoint
from unirank.eval.datasets import load_dataset
from unirank.eval.io import write_trec_run
from unirank.eval.job import rerank_run

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")


@pytest.fixture(scope="module", autouse=True)
def ray_session():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def dl19():
    return load_dataset("trec-dl-2019")


def test_ray_and_local_engines_write_identical_runs(dl19, tmp_path):
    job = RerankJob.from_dataset(dl19, "bm25", "bm25", depth=30, shard_size=4)
    local = run_job(job, tmp_path / "local.trec", workers=2, show_progress=False)
    on_ray = run_job(job, tmp_path / "ray.trec", engine="ray", workers=2, show_progress=False)
    assert (local.engine, on_ray.engine) == ("local", "ray")
    assert local.shards_scored == on_ray.shards_scored == 11
    expected = rerank_run(Reranker("bm25"), dl19, dl19.get_run("bm25"), depth=30, show_progress=False)
    write_trec_run(expected, tmp_path / "ref.trec", tag="bm25")
    ref = (tmp_path / "ref.trec").read_bytes()
    assert (tmp_path / "local.trec").read_bytes() == (tmp_path / "ray.trec").read_bytes() == ref


def test_job_started_locally_resumes_on_ray(dl19, tmp_path):
    out, ckpt = tmp_path / "out.trec", tmp_path / "ck"
    job = RerankJob.from_dataset(dl19, "bm25", "bm25", depth=25, shard_size=5)
    run_job(job, out, workers=0, checkpoint_dir=ckpt, keep_checkpoint=True, show_progress=False)
    reference = out.read_bytes()
    cp = Checkpoint(ckpt, job, resume=True)
    for i in (1, 4, 7):  # as if the first session died before committing these
        cp.shard_path(i).unlink()
    out.unlink()
    res = run_job(
        job, out, engine="ray", workers=2, checkpoint_dir=ckpt, resume=True, keep_checkpoint=True,
        show_progress=False, engine_options={"num_cpus": 1, "window": 2},  # 2 Ray Datasets
    )  # fmt: skip
    assert (res.shards_scored, res.shards_resumed) == (3, 6)
    assert out.read_bytes() == reference
    session = [e for e in cp.events() if e["event"] == "session"][-1]
    assert session["engine"] == "ray" and session["pending"] == [1, 4, 7]
    ray_commits = [e["shard"] for e in cp.events() if e.get("engine") == "ray" and e["event"] == "commit"]
    assert sorted(ray_commits) == [1, 4, 7]


def test_cli_ray_engine_uses_the_running_ray(dl19, tmp_path, capsys):
    from unirank.distributed.__main__ import main as cli_main

    out = tmp_path / "cli.trec"
    argv = ["rerank-run", "--run", "bm25", "--corpus", "trec-dl-2019", "--reranker", "bm25", "--depth", "12"]
    argv += ["--out", str(out), "--engine", "ray", "--workers", "2", "--shard-size", "10", "--no-progress"]
    assert cli_main([*argv, "--ray-window", "3", "--max-retries", "2"]) == 0
    assert '"engine": "ray"' in capsys.readouterr().out
    expected = rerank_run(Reranker("bm25"), dl19, dl19.get_run("bm25"), depth=12, show_progress=False)
    write_trec_run(expected, tmp_path / "ref.trec", tag="bm25")
    assert out.read_bytes() == (tmp_path / "ref.trec").read_bytes()
    assert ray.is_initialized()  # a Ray it did not start is left running


# -- a worker SIGKILLed mid-shard ---------------------------------------------------------------------------
# A tiny cross-encoder whose score cache (tests/_worker_kill.py, shipped to the actors by value) parks the
# actor inside one shard's scoring call until the test SIGKILLs it. The reference is the same job scored
# in-process with the actors' thread count (1), uninterrupted.
@pytest.fixture(scope="module")
def kill_job(make_tiny_bert, dl19, tmp_path_factory):
    import _worker_kill

    ray.cloudpickle.register_pickle_by_value(_worker_kill)
    switch, spec = tmp_path_factory.mktemp("switch"), f"ce:{make_tiny_bert('seqcls', seed=11)}"

    def job(folder):
        return RerankJob.from_dataset(
            dl19, "bm25", spec, depth=5, shard_size=8,
            options={"cache": _worker_kill.KillSwitchCache(folder)},
        )  # fmt: skip

    ref = tmp_path_factory.mktemp("ref") / "ref.trec"
    run_job(job(switch), ref, workers=0, show_progress=False, engine_options={"threads": 1})
    return job, ref.read_bytes()


def test_killed_actor_is_restarted_and_its_shard_retried(kill_job, tmp_path):
    from _worker_kill import KillSwitchCache, kill_when_parked

    make, reference = kill_job
    job = make(tmp_path)
    KillSwitchCache(tmp_path).arm(2)  # the second shard's scoring call parks its actor
    killed = kill_when_parked(tmp_path)
    out, ckpt = tmp_path / "out.trec", tmp_path / "ck"
    res = run_job(
        job, out, engine="ray", workers=1, checkpoint_dir=ckpt, keep_checkpoint=True, show_progress=False,
        engine_options={"num_cpus": 1},
    )  # fmt: skip
    assert len(killed) == 1, "the actor was never parked mid-shard"
    assert out.read_bytes() == reference
    assert (res.shards_scored, res.shards_resumed) == (6, 0)
    commits = [e for e in Checkpoint(ckpt, job, resume=True).events() if e["event"] == "commit"]
    assert sorted(e["shard"] for e in commits) == list(range(6))  # each shard committed once
    by_killed = [e["shard"] for e in commits if e["pid"] == killed[0]]
    assert len(by_killed) <= 1  # at most the shard it finished before it was parked in the second one
    assert len({e["pid"] for e in commits} - {killed[0]}) == 1  # the rest: the restarted actor


def test_worker_lost_after_retries_is_typed_and_resume_is_byte_identical(kill_job, tmp_path):
    from _worker_kill import KillSwitchCache, kill_when_parked
    from unirank.distributed import WorkerLostError

    make, reference = kill_job
    job = make(tmp_path)
    KillSwitchCache(tmp_path).arm(3, 4)  # the third call, and the first one after a restart
    killed = kill_when_parked(tmp_path, times=2)
    out, ckpt = tmp_path / "out.trec", tmp_path / "ck"
    with pytest.raises(WorkerLostError, match=r"max_retries=1 .*resume=True \(--resume\)"):
        run_job(
            job, out, engine="ray", workers=1, checkpoint_dir=ckpt, show_progress=False,
            engine_options={"num_cpus": 1, "max_retries": 1},
        )  # fmt: skip
    assert len(killed) == 2 and not out.exists()
    committed = len(Checkpoint(ckpt, job, resume=True).done())
    assert committed < 6
    # resumed in this process (same code, same thread count): the same bytes as the uninterrupted run
    res = run_job(
        job, out, workers=0, checkpoint_dir=ckpt, resume=True, show_progress=False,
        engine_options={"threads": 1},
    )  # fmt: skip
    assert (res.shards_scored, res.shards_resumed) == (6 - committed, committed)
    assert out.read_bytes() == reference
