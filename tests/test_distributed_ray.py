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
    assert cli_main([*argv, "--ray-window", "3"]) == 0
    assert '"engine": "ray"' in capsys.readouterr().out
    expected = rerank_run(Reranker("bm25"), dl19, dl19.get_run("bm25"), depth=12, show_progress=False)
    write_trec_run(expected, tmp_path / "ref.trec", tag="bm25")
    assert out.read_bytes() == (tmp_path / "ref.trec").read_bytes()
    assert ray.is_initialized()  # a Ray it did not start is left running
