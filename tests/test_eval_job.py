"""Re-ranking jobs: depth handling, completeness of the output run, partial results on failure.

The rankers here are tiny deterministic inputs (word overlap, identity, relevance oracle), not mocks of the
code under test.
"""

from __future__ import annotations

import logging
import math
import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest.importorskip("ir_measures")

import itertools

from unirank.base import Ranker
from unirank.eval import (
    Dataset,
    PartialRunError,
    eval_job,
    evaluate,
    load_dataset,
    read_trec_run,
    rerank_run,
)
from unirank.types import Document


class Overlap(Ranker):
    """Score = number of distinct query words in the document (+ a tiny length tie-breaker)."""

    def __init__(self, fail_on_call: int | None = None, exc: BaseException | None = None) -> None:
        super().__init__("word overlap")
        self.calls = 0
        self.batch_sizes: list[int] = []
        self.fail_on_call = fail_on_call
        self.exc = exc or RuntimeError("model crashed (simulated)")

    def _score_many(self, queries, docs_lists, show_progress=False):
        self.calls += 1
        self.batch_sizes.append(len(queries))
        if self.calls == self.fail_on_call:
            raise self.exc
        out = []
        for q, docs in zip(queries, docs_lists):
            words = set(q.lower().split())
            out.append(
                np.array([len(words & set(d.text.lower().split())) + 1e-6 * len(d.text) for d in docs])
            )
        return out


class ByLookup(Ranker):
    """Scores taken from a table ``{query text: {doc id: score}}``; unknown documents get ``default``."""

    def __init__(self, table, default=0.0) -> None:
        super().__init__("lookup")
        self.table, self.default = table, default

    def _score_many(self, queries, docs_lists, show_progress=False):
        return [
            np.array([self.table[q].get(d.id, self.default) for d in docs])
            for q, docs in zip(queries, docs_lists)
        ]


def _toy() -> Dataset:
    texts = {
        "d1": "cats sleep a lot",
        "d2": "rain falls from clouds",
        "d3": "why does rain fall from clouds",
        "d4": "clouds",
        "d5": "rain",
    }
    corpus = {k: Document(v, k) for k, v in texts.items()}
    queries = {"q1": "why does rain fall from clouds", "q2": "cats"}
    qrels = {"q1": {"d3": 2, "d2": 1}, "q2": {"d1": 1}}
    return Dataset("toy", corpus, queries, qrels)


FIRST = {
    "q1": [("d1", 5.0), ("d4", 4.0), ("d3", 3.0), ("d2", 2.0), ("d5", 1.0)],
    "q2": [("d2", 9.0), ("d1", 8.0)],
}


def _strictly_decreasing(ranking) -> bool:
    scores = [s for _, s in ranking]
    return all(a > b for a, b in itertools.pairwise(scores))


def _ordered(ranking, depth) -> bool:
    """Re-ranked part non-increasing (the ranker may tie), everything below strictly lower and decreasing."""
    scores = [s for _, s in ranking]
    head, tail = scores[:depth], scores[depth - 1 :]
    head_ok = all(a >= b for a, b in itertools.pairwise(head))
    return head_ok and all(a > b for a, b in itertools.pairwise(tail))


def test_depth_reorders_only_the_top_and_keeps_the_tail():
    out = rerank_run(Overlap(), _toy(), FIRST, depth=3, show_progress=False)
    ids = [d for d, _ in out["q1"]]
    assert ids[:3] == ["d3", "d4", "d1"]  # top 3 re-ordered by overlap
    assert ids[3:] == ["d2", "d5"]  # below depth: first-stage order, even though d2 would score higher
    assert _strictly_decreasing(out["q1"]) and _strictly_decreasing(out["q2"])
    assert max(s for _, s in out["q1"][3:]) < min(s for _, s in out["q1"][:3])
    assert [d for d, _ in out["q2"]] == ["d1", "d2"]
    for qid, ranking in FIRST.items():  # complete: the same documents, each once
        assert sorted(d for d, _ in out[qid]) == sorted(d for d, _ in ranking)


def test_depth_larger_than_the_run_reranks_everything():
    out = rerank_run(Overlap(), _toy(), FIRST, depth=1000, show_progress=False)
    assert [d for d, _ in out["q1"]][:3] == ["d3", "d2", "d4"]
    assert _strictly_decreasing(out["q1"])


def test_bad_arguments():
    for kwargs in ({"depth": 0}, {"depth": 2.5}, {"batch_queries": 0}):
        with pytest.raises(ValueError):
            rerank_run(Overlap(), _toy(), FIRST, show_progress=False, **kwargs)


def test_missing_documents_and_queries_are_counted(caplog):
    ds = _toy()
    del ds.corpus["d4"]
    run = {**FIRST, "q-unknown": [("d1", 1.0)]}
    with caplog.at_level(logging.WARNING, logger="unirank.eval"):
        out = rerank_run(Overlap(), ds, run, depth=3, show_progress=False)
    # d4 is in the top 3 but cannot be scored: right after the scored ones, before the tail
    assert [d for d, _ in out["q1"]] == ["d3", "d1", "d4", "d2", "d5"]
    assert _strictly_decreasing(out["q1"])
    assert "q-unknown" not in out
    assert "1 candidate documents in 1 queries are missing" in caplog.text
    assert "1 of 3 run queries have no query text" in caplog.text


def test_unusable_scores_go_below_the_scored_ones(caplog):
    table = {"why does rain fall from clouds": {"d1": float("nan"), "d4": 1.0, "d3": -math.inf}, "cats": {}}
    with caplog.at_level(logging.WARNING, logger="unirank.eval"):
        out = rerank_run(ByLookup(table), _toy(), FIRST, depth=3, show_progress=False)
    assert [d for d, _ in out["q1"]] == ["d4", "d1", "d3", "d2", "d5"]
    assert all(math.isfinite(s) for _, s in out["q1"]) and _strictly_decreasing(out["q1"])
    assert "2 documents got no usable score" in caplog.text


def test_dl19_bm25_complete_and_batched():
    ds = load_dataset("trec-dl-2019")
    bm25 = ds.get_run("bm25")
    ranker = Overlap()
    out = rerank_run(ranker, ds, "bm25", depth=20, batch_queries=16, show_progress=False)
    assert ranker.batch_sizes == [16, 16, 11]
    assert list(out) == list(bm25)
    for qid, ranking in bm25.items():
        got = [d for d, _ in out[qid]]
        assert len(got) == len(ranking) == 100
        assert set(got[:20]) == {d for d, _ in ranking[:20]}
        assert got[20:] == [d for d, _ in ranking[20:]]
        assert _ordered(out[qid], 20)


def test_identity_ranker_reproduces_the_first_stage_metrics():
    ds = load_dataset("trec-dl-2019")
    bm25 = ds.get_run("bm25")
    identity = ByLookup({ds.queries[q]: dict(r) for q, r in bm25.items()})
    _table, results = eval_job(identity, ds, "bm25", depth=30, show_progress=False)
    first, reranked = results.values()
    assert list(results) == ["bm25", "bm25 >> lookup@30"]
    assert reranked.per_query == first.per_query
    assert round(first["nDCG@10"], 4) == 0.5058


def test_eval_job_writes_the_run_and_a_table(tmp_path):
    ds = load_dataset("trec-dl-2019")
    grades = {ds.queries[q]: {d: float(g) for d, g in docs.items()} for q, docs in ds.qrels.items()}
    out_path = tmp_path / "reranked.trec"
    (tmp_path / "reranked.trec.partial").write_text("stale\n")
    table, results = eval_job(
        ByLookup(grades), "trec-dl-2019", "bm25", 100, ["nDCG@10", "AP"], out_path, show_progress=False
    )
    first, oracle = results["bm25"], results["bm25 >> lookup@100"]
    assert oracle["nDCG@10"] > first["nDCG@10"] + 0.2  # a relevance oracle must beat BM25 by far
    lines = table.splitlines()
    assert lines[0].split() == ["run", "nDCG@10", "AP"]
    assert lines[1].split() == ["bm25", "0.5058", f"{first['AP']:.4f}"]
    assert lines[2].startswith("bm25 >> lookup@100")
    written = read_trec_run(out_path)
    assert evaluate(ds.qrels, written, ["nDCG@10", "AP"], 2).aggregate == oracle.aggregate
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reranked.trec"]  # stale partial removed
    assert out_path.read_text().split("\n", 1)[0].split()[-1] == "lookup"


def test_failure_on_third_batch_keeps_finished_queries(tmp_path):
    ds = _toy()
    ds.queries.update({f"x{i}": f"rain clouds {i}" for i in range(6)})
    run = {**FIRST, **{f"x{i}": [("d2", 2.0), ("d5", 1.0)] for i in range(6)}}  # 8 queries, 4 batches of 2
    with pytest.raises(PartialRunError) as info:
        rerank_run(Overlap(fail_on_call=3), ds, run, depth=2, batch_queries=2, show_progress=False)
    err = info.value
    assert list(err.run) == ["q1", "q2", "x0", "x1"]
    assert err.failed_qids == ["x2", "x3", "x4", "x5"]
    assert isinstance(err.__cause__, RuntimeError) and err.partial_path is None

    out_path = tmp_path / "run.trec"
    with pytest.raises(PartialRunError) as info:
        eval_job(
            Overlap(fail_on_call=3), ds, run, depth=2, out_path=out_path, batch_queries=2, show_progress=False
        )
    err = info.value
    assert not out_path.exists()  # the final file is only ever written complete
    assert err.partial_path == tmp_path / "run.trec.partial"
    assert read_trec_run(err.partial_path) == err.run
    assert list(err.run) == ["q1", "q2", "x0", "x1"]
    assert "run.trec.partial" in str(err)


def test_keyboard_interrupt_writes_partial_and_propagates(tmp_path):
    ds = _toy()
    out_path = tmp_path / "run.trec"
    with pytest.raises(KeyboardInterrupt):
        eval_job(
            Overlap(fail_on_call=2, exc=KeyboardInterrupt()),
            ds,
            FIRST,
            depth=2,
            out_path=out_path,
            batch_queries=1,
            show_progress=False,
        )
    assert list(read_trec_run(tmp_path / "run.trec.partial")) == ["q1"]
    assert not out_path.exists()
