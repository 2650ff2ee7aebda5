"""Job description, validation, checkpoint and assembly of ``unirank.distributed`` (in-process engine).

Oracle: :func:`unirank.eval.job.rerank_run` over the whole (validated) run, written by ``write_trec_run``; the
sharded, checkpointed job must produce exactly those bytes.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from unirank import Reranker
from unirank.distributed import JobInputError, RerankJob, run_job
from unirank.distributed.__main__ import main as cli_main
from unirank.distributed.job import Checkpoint, read_run_lenient
from unirank.eval.datasets import dataset_folder, load_dataset
from unirank.eval.io import write_trec_run
from unirank.eval.job import rerank_run


@pytest.fixture(scope="module")
def dl19():
    return load_dataset("trec-dl-2019")


@pytest.fixture(scope="module")
def scifact():
    return load_dataset("scifact")


def _oracle(ds, run, depth, path: Path, spec: str = "bm25") -> bytes:
    ranker = Reranker(spec)
    write_trec_run(rerank_run(ranker, ds, run, depth=depth, show_progress=False), path, tag=ranker.name)
    return path.read_bytes()


def _write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_sharded_job_is_byte_identical_to_eval_job(dl19, tmp_path):
    run = dl19.get_run("bm25")
    job = RerankJob.from_dataset(dl19, "bm25", "bm25", depth=30, shard_size=5)
    assert len(job.shards) == 9 and job.report.problems == 0
    res = run_job(job, tmp_path / "out.trec", workers=0, show_progress=False)
    assert (res.shards_scored, res.shards_resumed, res.queries_scored) == (9, 0, 43)
    assert res.docs_scored == sum(min(len(v), 30) for v in run.values())
    assert (tmp_path / "out.trec").read_bytes() == _oracle(dl19, run, 30, tmp_path / "ref.trec")
    assert not (tmp_path / "out.trec.ckpt").exists()  # removed after assembly by default


def _damaged_dl19_run(dl19, path: Path) -> Path:
    """DL19's BM25 run plus: 1 unknown query, 2 missing docs within depth (1 more below it), 2 duplicates."""
    run = dl19.get_run("bm25")
    qids = list(run)
    lines = []
    for qi, q in enumerate(qids):
        ranking = list(run[q])
        if qi == 0:
            ranking.insert(0, ("MISSING-A", 99.0))
        if qi == 1:
            ranking.insert(3, ("MISSING-B", ranking[2][1]))
            ranking.append(("MISSING-DEEP", -1.0))
        lines += [f"{q} Q0 {d} {r + 1} {s!r} bm25" for r, (d, s) in enumerate(ranking)]
    lines.append(f"{qids[2]} Q0 {run[qids[2]][0][0]} 500 -5.0 bm25")  # duplicate (qid, docid)
    lines.append(f"{qids[3]} Q0 {run[qids[3]][5][0]} 501 -6.0 bm25")
    lines += ["NOSUCHQ Q0 d1 1 3.0 bm25", "NOSUCHQ Q0 d2 2 2.0 bm25"]
    return _write_lines(path, lines)


def test_validation_counts_and_strict(dl19, tmp_path):
    path = _damaged_dl19_run(dl19, tmp_path / "damaged.trec")
    folder = dataset_folder("trec-dl-2019")
    job = RerankJob.from_files(path, folder, reranker="bm25", depth=20, shard_size=8)
    rep = job.report.to_dict()
    assert rep == {
        "run_queries": 44,
        "run_entries": sum(len(v) for v in dl19.get_run("bm25").values()) + 3 + 2,  # 2 dups dropped
        "unknown_queries": 1,
        "missing_docs": 2,  # MISSING-DEEP is below depth 20: not scored, not counted
        "queries_with_missing": 2,
        "duplicates": 2,
    }
    assert job.report.unknown_queries == ["NOSUCHQ"] and "NOSUCHQ" not in job.qids
    with pytest.raises(JobInputError, match=r"1 unknown query ids.*2 documents missing.*2 duplicate"):
        RerankJob.from_files(path, folder, reranker="bm25", depth=20, strict=True)

    # default: skip and report; the output follows eval.job (missing docs kept below the re-ranked head)
    run_job(job, tmp_path / "out.trec", workers=0, show_progress=False)
    lenient, dups = read_run_lenient(path)
    assert len(dups) == 2
    expected = _oracle(dl19, lenient, 20, tmp_path / "ref.trec")
    out = (tmp_path / "out.trec").read_bytes()
    assert out == expected
    text = out.decode()
    assert "NOSUCHQ" not in text and "MISSING-A" in text and "MISSING-DEEP" in text
    first_q = next(iter(dl19.get_run("bm25")))
    q_lines = [ln.split() for ln in text.splitlines() if ln.split()[0] == first_q]
    assert q_lines[19][2] == "MISSING-A"  # right below the 19 scored documents of the top 20


def test_input_forms_agree_on_scifact(scifact, tmp_path):
    """A BEIR folder, and JSONL corpus + queries + TREC run (a doc store) give the same output."""
    qids = sorted(scifact.qrels)[:24]
    pool = sorted(scifact.corpus)[:40]
    run = {q: [(d, 10.0 - i) for i, d in enumerate([*scifact.qrels[q], *pool][:12])] for q in qids}
    run_path = tmp_path / "first.trec"
    write_trec_run(run, run_path, tag="first")
    docs = {d for v in run.values() for d, _ in v}
    corpus_path = tmp_path / "docs.jsonl.gz"
    with gzip.open(corpus_path, "wt", encoding="utf-8") as fh:
        for d in sorted(docs):
            doc = scifact.corpus[d]
            title = doc.metadata.get("title", "")
            body = doc.text[len(title) + 1 :] if title else doc.text
            fh.write(json.dumps({"_id": d, "title": title, "text": body}) + "\n")
    queries_path = _write_lines(tmp_path / "q.tsv", [f"{q}\t{scifact.queries[q]}" for q in qids])

    beir = RerankJob.from_files(run_path, dataset_folder("scifact"), reranker="bm25", depth=10, shard_size=7)
    files = RerankJob.from_files(run_path, corpus_path, queries_path, "bm25", depth=10, shard_size=7)
    assert beir.report.problems == files.report.problems == 0
    run_job(beir, tmp_path / "a.trec", workers=0, show_progress=False)
    run_job(files, tmp_path / "b.trec", workers=0, show_progress=False)
    a = (tmp_path / "a.trec").read_bytes()
    assert a == (tmp_path / "b.trec").read_bytes() == _oracle(scifact, run, 10, tmp_path / "ref.trec")
    assert len(a.decode().splitlines()) == 24 * 12


def test_checkpoint_resume_contract(dl19, tmp_path):
    out = tmp_path / "out.trec"
    ckpt = tmp_path / "ck"
    job = RerankJob.from_dataset(dl19, "bm25", "bm25", depth=15, shard_size=4)
    first = run_job(job, out, workers=0, checkpoint_dir=ckpt, keep_checkpoint=True, show_progress=False)
    reference = out.read_bytes()
    assert first.shards_scored == 11
    with pytest.raises(FileExistsError, match="resume"):
        run_job(job, out, workers=0, checkpoint_dir=ckpt, show_progress=False)
    other = RerankJob.from_dataset(dl19, "bm25", "bm25", depth=16, shard_size=4)
    with pytest.raises(ValueError, match="different job"):
        run_job(other, out, workers=0, checkpoint_dir=ckpt, resume=True, show_progress=False)

    # lose three shards (and leave a crashed writer's temp file); resume scores exactly those
    cp = Checkpoint(ckpt, job, resume=True)
    for i in (0, 5, 10):
        cp.shard_path(i).unlink()
    (cp.shard_dir / ".00000005.trec.abc.tmp").write_text("half a line")
    out.unlink()
    res = run_job(
        job, out, workers=0, checkpoint_dir=ckpt, resume=True, keep_checkpoint=True, show_progress=False
    )
    assert (res.shards_scored, res.shards_resumed) == (3, 8)
    assert out.read_bytes() == reference
    assert not list(cp.shard_dir.glob(".*.tmp"))
    sessions = [e for e in cp.events() if e["event"] == "session"]
    assert [s["pending"] for s in sessions] == [list(range(11)), [0, 5, 10]]
    commits = [e["shard"] for e in cp.events() if e["event"] == "commit"]
    assert sorted(commits) == sorted([*range(11), 0, 5, 10])

    # nothing left to do: a resume only reassembles
    again = run_job(job, out, workers=0, checkpoint_dir=ckpt, resume=True, show_progress=False)
    assert (again.shards_scored, again.shards_resumed) == (0, 11) and out.read_bytes() == reference
    assert not ckpt.exists()


def test_cli_and_bad_arguments(dl19, tmp_path, capsys):
    out = tmp_path / "cli.trec"
    run_file = dataset_folder("trec-dl-2019") / "runs" / "bm25.top100.trec"
    argv = ["rerank-run", "--run", str(run_file), "--corpus", "trec-dl-2019", "--reranker", "bm25"]
    argv += ["--depth", "12", "--out", str(out), "--workers", "0", "--shard-size", "10", "--no-progress"]
    assert cli_main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["shards"] == summary["shards_scored"] == 5 and summary["validation"]["duplicates"] == 0
    assert out.read_bytes() == _oracle(dl19, dl19.get_run("bm25"), 12, tmp_path / "ref.trec")
    assert cli_main([*argv, "--strict", "--depth", "0"]) == 2
    for bad in ({"depth": 0}, {"shard_size": -1}, {"batch_queries": True}):
        with pytest.raises(ValueError):
            RerankJob.from_dataset(dl19, "bm25", "bm25", **bad)
    with pytest.raises(ValueError, match="engine"):
        run_job(RerankJob.from_dataset(dl19, "bm25", "bm25"), out, engine="spark")
    with pytest.raises(FileNotFoundError, match="bundled"):
        RerankJob.from_files(run_file, tmp_path / "nope.jsonl", tmp_path / "q.tsv")
    with pytest.raises(ValueError, match="queries file"):
        RerankJob.from_files(run_file, tmp_path / "ref.trec")


def test_local_worker_killed_midway_is_a_typed_error_and_resume_is_byte_identical(
    make_tiny_bert, dl19, tmp_path
):
    """A local worker SIGKILLed inside a shard (parked there by tests/_worker_kill.py) stops the job with
    ``WorkerLostError`` (it was a bare ``BrokenProcessPool``); the resumed job writes the bytes of an
    uninterrupted one."""
    from _worker_kill import KillSwitchCache, kill_when_parked
    from unirank.distributed import WorkerLostError

    spec = f"ce:{make_tiny_bert('seqcls', seed=12)}"

    def job(folder):
        opts = {"cache": KillSwitchCache(folder)}
        return RerankJob.from_dataset(dl19, "bm25", spec, depth=5, shard_size=8, options=opts)

    (tmp_path / "ref").mkdir()
    threads = {"threads": 1}
    ref = tmp_path / "ref.trec"
    run_job(job(tmp_path / "ref"), ref, workers=0, show_progress=False, engine_options=threads)
    switch, out, ckpt = tmp_path / "switch", tmp_path / "out.trec", tmp_path / "ck"
    switch.mkdir()
    killing = job(switch)
    KillSwitchCache(switch).arm(3)
    killed = kill_when_parked(switch)
    with pytest.raises(WorkerLostError, match=r"a worker process died .*resume=True \(--resume\)"):
        run_job(killing, out, workers=1, checkpoint_dir=ckpt, show_progress=False, engine_options=threads)
    assert len(killed) == 1 and not out.exists()
    committed = len(Checkpoint(ckpt, killing, resume=True).done())
    assert committed < 6
    res = run_job(
        killing, out, workers=0, checkpoint_dir=ckpt, resume=True, show_progress=False, engine_options=threads
    )
    assert (res.shards_scored, res.shards_resumed) == (6 - committed, committed)
    assert out.read_bytes() == ref.read_bytes()
