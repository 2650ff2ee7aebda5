"""Property tests of the strategies: a permutation for any window ranker, exact order with an oracle."""

from __future__ import annotations

import asyncio
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from _strategies_fixtures import OracleWindow, RandomWindow, docs_with_relevance, ideal
from unirank.strategies import build_strategy
from unirank.types import ScoreKind

CONFIGS = [
    ("sliding", {}),
    ("sliding", {"stride": 1, "passes": 3}),
    ("setwise", {"method": "heapsort", "top_k": 3}),
    ("setwise", {"method": "bubblesort", "top_k": 3}),
    ("pairwise", {"method": "allpair"}),
    ("pairwise", {"method": "heapsort", "top_k": 4}),
    ("pairwise", {"method": "bubblesort", "top_k": 2, "both_orders": False}),
    ("tournament", {"top_k": 4}),
    ("jointrank", {"aggregation": "winrate"}),
    ("jointrank", {"aggregation": "pagerank", "design": "random", "seed": 3}),
    ("jointrank", {"aggregation": "bt", "replicates": None}),
]

distinct_rels = st.lists(st.integers(-1000, 1000), min_size=0, max_size=40, unique=True)


@pytest.mark.parametrize(("name", "options"), CONFIGS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CONFIGS)])
@settings(max_examples=25, deadline=None)
@given(n=st.integers(0, 40), window=st.integers(2, 8), seed=st.integers(0, 2**16), nq=st.integers(1, 3))
def test_any_window_ranker_gives_a_permutation(name, options, n, window, seed, nq):
    strategy = build_strategy(name, RandomWindow(window, seed), **options)
    lists = [docs_with_relevance(list(range(n + q))) for q in range(nq)]
    results = strategy.rank_many(["q"] * nq, lists)
    for docs, res in zip(lists, results):
        assert sorted(res.indices) == list(range(len(docs)))
        assert res.score_kind is ScoreKind.RANK
        assert res.scores == sorted(res.scores, reverse=True)
    got = asyncio.run(strategy.arank("q", lists[0]))
    assert sorted(got.indices) == list(range(len(lists[0])))


@settings(max_examples=60, deadline=None)
@given(rels=distinct_rels, window=st.integers(2, 9), data=st.data())
def test_sliding_window_with_enough_passes_is_exact(rels, window, data):
    stride = data.draw(st.integers(1, window - 1))
    top_k = data.draw(st.none() | st.integers(1, 45))
    skip = data.draw(st.booleans())
    oracle = OracleWindow(window)
    sw = build_strategy("sliding", oracle, stride=stride, passes=None, top_k=top_k, skip_fixed=skip)
    k = len(rels) if top_k is None else min(top_k, len(rels))
    assert sw.rank("q", docs_with_relevance(rels)).indices[:k] == ideal(rels)[:k]
    assert oracle.calls == sw.last_stats["calls"]


def _prime_at_least(x: int) -> int:
    return next(p for p in range(max(x, 2), 2 * x + 3) if all(p % d for d in range(2, p)))


@settings(max_examples=60, deadline=None)
@given(
    rels=distinct_rels, window=st.integers(2, 12), aggregation=st.sampled_from(["winrate", "pagerank", "bt"])
)
def test_jointrank_complete_latin_design_is_exact(rels, window, aggregation):
    # the complete design covers every pair while its prime q fits in a window
    while _prime_at_least(max(math.ceil(len(rels) / window), math.ceil(math.sqrt(len(rels))))) > window:
        rels = rels[:-1]
    jr = build_strategy("jointrank", OracleWindow(window), replicates=None, aggregation=aggregation)
    assert jr.rank("q", docs_with_relevance(rels)).indices == ideal(rels)


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("setwise", {"method": "heapsort"}),
        ("setwise", {"method": "bubblesort"}),
        ("tournament", {}),
        ("pairwise", {"method": "heapsort"}),
        ("pairwise", {"method": "bubblesort"}),
        ("pairwise", {"method": "allpair"}),
    ],
)
@settings(max_examples=40, deadline=None)
@given(rels=distinct_rels, window=st.integers(2, 7), top_k=st.integers(1, 12))
def test_top_k_is_exact_with_an_oracle(name, options, rels, window, top_k):
    extra = {} if options.get("method") == "allpair" else {"top_k": top_k}
    if name == "tournament":
        extra["group_size"] = window
    elif name == "setwise":
        extra["num_child"] = window - 1
    s = build_strategy(name, OracleWindow(window), **options, **extra)
    k = min(top_k, len(rels))
    assert s.rank("q", docs_with_relevance(rels)).indices[:k] == ideal(rels)[:k]


@settings(max_examples=30, deadline=None)
@given(
    rels=distinct_rels, window=st.integers(2, 6), name=st.sampled_from(["sliding", "jointrank", "tournament"])
)
def test_async_path_matches_sync_path(rels, window, name):
    opts = {"replicates": None} if name == "jointrank" else {"passes": None} if name == "sliding" else {}
    s = build_strategy(name, OracleWindow(window), **opts)
    docs = docs_with_relevance(rels)
    sync = s.rank("q", docs).indices
    sync_stats = {k: v for k, v in s.last_stats.items() if k != "per_query"}
    assert asyncio.run(s.arank("q", docs)).indices == sync
    assert {k: v for k, v in s.last_stats.items() if k != "per_query"} == sync_stats
