"""Strategy options reachable from an ``llm-listwise`` spec (issue 15): ``sort=`` for setwise / pairwise (the
ranker's own ``method=`` is generate / FIRST) and ``concurrency=`` overlapping windows in sync calls too."""

from __future__ import annotations

import pytest

from _reasoning_server import ReasoningServer, rel_docs
from _strategies_fixtures import OracleWindow, docs_with_relevance
from unirank import Reranker
from unirank.strategies import Pairwise, Setwise

RELS = [3, 17, 8, 1, 12, 19, 5, 0, 14, 10, 2, 16, 7, 11, 4, 18, 9, 13, 6, 15]  # depth 20, all distinct


@pytest.fixture
def server():
    s = ReasoningServer(shape="plain").start()
    yield s
    s.stop()


def _spec(server: ReasoningServer, **kw) -> Reranker:
    return Reranker("llm-listwise:openai:test-model", base_url=server.base_url, max_retries=0, **kw)


def test_pairwise_sort_from_a_spec_heapsort_needs_far_fewer_calls(server):
    rels = RELS[:12]
    docs, ideal = rel_docs(rels), sorted(range(12), key=lambda i: -rels[i])
    got = {}
    for sort in ("allpairs", "heapsort", "bubblesort"):
        r = _spec(server, strategy="pairwise", sort=sort, window_size=2, top_k=3)
        before = len(server.requests)
        res = r.rank("rain", docs)
        got[sort] = len(server.requests) - before
        assert r.strategy.sort == {"allpairs": "allpair"}.get(sort, sort)
        assert res.indices[:3] == ideal[:3], sort  # noiseless oracle: the true top 3, in order
        assert r.strategy.last_stats["calls"] == got[sort]
    assert got["allpairs"] == 132  # 12 * 11 ordered pairs: both orders of every pair
    assert got["heapsort"] < got["allpairs"] / 2
    assert got["bubblesort"] == 2 * sum(11 - i for i in range(3))


def test_pairwise_call_counts_at_depth_20():
    """The issue's figure: all pairs is 380 calls per query at depth 20; heap sort (top 10) far fewer."""
    docs, ideal = docs_with_relevance([float(x) for x in RELS]), sorted(range(20), key=lambda i: -RELS[i])
    calls = {}
    for sort in ("allpairs", "heapsort"):
        oracle = OracleWindow(2)
        assert Pairwise(oracle, sort=sort, top_k=10).rank("q", docs).indices[:10] == ideal[:10]
        calls[sort] = oracle.calls
    assert calls["allpairs"] == 380 and calls["heapsort"] < 380 / 2, calls


def test_setwise_sort_from_a_spec(server):
    docs, ideal = rel_docs(RELS), sorted(range(20), key=lambda i: -RELS[i])
    calls = {}
    for sort in ("heapsort", "bubblesort"):
        r = _spec(server, strategy="setwise", sort=sort, window_size=4, top_k=3)
        assert r.rank("rain", docs).indices[:3] == ideal[:3]
        calls[sort] = r.strategy.last_stats["calls"]
    assert calls["bubblesort"] == sum(-(-(20 - i - 1) // 3) for i in range(3))
    assert calls["heapsort"] < 20


def test_sort_and_its_old_name():
    w = OracleWindow(2)
    assert Pairwise(w, method="heapsort").sort == Pairwise(w, sort="heap").sort == "heapsort"
    assert Setwise(OracleWindow(4), sort="bubble").method == "bubblesort"
    with pytest.raises(ValueError, match="disagree"):
        Pairwise(w, sort="heapsort", method="allpair")
    with pytest.raises(ValueError, match="sort='quicksort'"):
        Setwise(OracleWindow(4), sort="quicksort")
    docs = docs_with_relevance([2.0, 9.0, 4.0])
    assert Pairwise(w, sort="allpairs").rank("q", docs).indices == [1, 2, 0]


def test_spec_method_stays_the_listwise_switch(server):
    with pytest.raises(ValueError, match="method="):
        _spec(server, strategy="pairwise", method="heapsort", window_size=2)


@pytest.mark.parametrize("strategy", ["sliding", "jointrank"])
def test_sync_rank_many_overlaps_windows_across_queries(strategy):
    """Before: sync rank() sent one window at a time (only arank overlapped) and concurrency= went to the
    engine only. Now it is a strategy option too and the sync path overlaps a round's windows."""
    queries = ["rain"] * 4
    lists = [rel_docs(RELS[j : j + 8]) for j in range(4)]
    results = {}
    for conc in (1, 4):
        s = ReasoningServer(shape="plain", delay=0.02).start()
        try:
            r = _spec(s, strategy=strategy, window_size=4, concurrency=conc)
            assert r.strategy.concurrency == conc
            results[conc] = [x.indices for x in r.rank_many(queries, lists)]
            peak = s.max_in_flight
        finally:
            s.stop()
        if conc == 1:
            assert peak == 1
        else:
            assert 1 < peak <= 4, peak
    assert results[1] == results[4]
