"""Call counts against each strategy's formula, batching / concurrency, options and errors."""

from __future__ import annotations

import asyncio
import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from _strategies_fixtures import (
    BatchOracle,
    BrokenWindow,
    FirstPositionWindow,
    OracleWindow,
    docs_with_relevance,
    ideal,
)
from unirank.base import PointwiseRanker
from unirank.strategies import (
    JointRank,
    Pairwise,
    PointwiseWindow,
    Setwise,
    SlidingWindow,
    Tournament,
    build_strategy,
)
from unirank.strategies.jointrank import aggregate, block_design

shuffled = st.integers(0, 60).flatmap(lambda n: st.permutations(list(range(n))))


def _sliding_calls(n: int, w: int, s: int, passes: int | None, top_k: int | None) -> int:
    """RankGPT windows per pass over L docs: 1 if L <= w else 1 + ceil((L - w) / s); the prefix shrinks."""
    target = n if top_k is None else min(top_k, n)
    calls = start = p = 0
    while (passes is None or p < passes) and n - start > 1 and start < target:
        length = n - start
        calls += 1 if length <= w else 1 + math.ceil((length - w) / s)
        p += 1
        if length <= w:
            break
        start += w - s
    return calls


@settings(max_examples=60, deadline=None)
@given(rels=shuffled, w=st.integers(2, 10), data=st.data())
def test_sliding_window_call_count(rels, w, data):
    s = data.draw(st.integers(1, w - 1))
    passes = data.draw(st.none() | st.integers(1, 4))
    top_k = data.draw(st.none() | st.integers(1, 30))
    oracle = OracleWindow(w)
    sw = SlidingWindow(oracle, stride=s, passes=passes, top_k=top_k)
    sw.rank("q", docs_with_relevance(rels))
    assert oracle.calls == sw.last_stats["calls"] == _sliding_calls(len(rels), w, s, passes, top_k)
    assert sw.last_stats["rounds"] == oracle.calls  # sliding windows are sequential


def test_rankgpt_default_figures():
    # n=100, window 20, stride 10: 9 windows per pass (RankGPT's setting)
    oracle = OracleWindow(20)
    SlidingWindow(oracle, stride=10).rank("q", docs_with_relevance(list(range(100))))
    assert oracle.calls == 9 and Counter(oracle.sizes) == {20: 9}


@settings(max_examples=60, deadline=None)
@given(rels=shuffled, c=st.integers(1, 6), k=st.integers(1, 12))
def test_setwise_call_counts(rels, c, k):
    n = len(rels)
    bubble = OracleWindow(c + 1)
    Setwise(bubble, method="bubblesort", num_child=c, top_k=k).rank("q", docs_with_relevance(rels))
    assert bubble.calls == sum(math.ceil((n - i - 1) / c) for i in range(min(k, n - 1)))
    heap = OracleWindow(c + 1)
    s = Setwise(heap, method="heapsort", num_child=c, top_k=k)
    s.rank("q", docs_with_relevance(rels))
    height = lambda v: 0 if c * v + 1 >= n else 1 + height(c * v + 1)  # noqa: E731
    bound = sum(height(v) for v in range(n)) + (min(k, n) - 1) * height(0) if n else 0
    assert heap.calls == s.last_stats["calls"] <= bound


@settings(max_examples=60, deadline=None)
@given(rels=shuffled, k=st.integers(1, 12), both=st.booleans())
def test_pairwise_call_counts(rels, k, both):
    n, o = len(rels), 2 if both else 1
    allpair = OracleWindow(2)
    p = Pairwise(allpair, method="allpair", both_orders=both)
    p.rank("q", docs_with_relevance(rels))
    assert allpair.calls == o * n * (n - 1) // 2
    assert p.last_stats["rounds"] == (1 if n > 1 else 0)
    bubble = OracleWindow(2)
    Pairwise(bubble, method="bubblesort", top_k=k, both_orders=both).rank("q", docs_with_relevance(rels))
    assert bubble.calls == o * sum(n - 1 - i for i in range(min(k, n - 1)))
    heap = OracleWindow(2)
    Pairwise(heap, method="heapsort", top_k=k, both_orders=both).rank("q", docs_with_relevance(rels))
    depth = max(n.bit_length() - 1, 0)
    assert heap.calls <= o * 2 * depth * (n // 2 + min(k, n))


@pytest.mark.parametrize(("m", "h"), [(2, 4), (3, 3), (5, 2), (4, 3)])
def test_tournament_exact_formula_for_full_trees(m, h):
    n = m**h
    rels = [(i * 7919) % n for i in range(n)]  # a fixed shuffle
    for k in range(1, m):
        oracle = OracleWindow(m)
        t = Tournament(oracle, group_size=m, top_k=k)
        assert t.rank("q", docs_with_relevance(rels)).indices[:k] == ideal(rels)[:k]
        assert oracle.calls == t.last_stats["calls"] == (n - 1) // (m - 1) + (k - 1) * h


@settings(max_examples=60, deadline=None)
@given(rels=shuffled, m=st.integers(2, 6), k=st.integers(1, 10))
def test_tournament_first_round_formula_and_bound(rels, m, k):
    n = len(rels)
    sizes, first = [n], 0
    while sizes[-1] > 1:
        first += sizes[-1] // m + (1 if sizes[-1] % m >= 2 else 0)
        sizes.append(math.ceil(sizes[-1] / m))
    levels = len(sizes) - 1
    one = OracleWindow(m)
    Tournament(one, group_size=m, top_k=1).rank("q", docs_with_relevance(rels))
    assert one.calls == first
    oracle = OracleWindow(m)
    t = Tournament(oracle, group_size=m, top_k=k)
    t.rank("q", docs_with_relevance(rels))
    assert oracle.calls <= first + (min(k, n) - 1) * levels if n else oracle.calls == 0


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 120), w=st.integers(2, 20), r=st.none() | st.integers(1, 5), seed=st.integers(0, 9))
def test_jointrank_designs_are_equi_replicate_and_calls_match(n, w, r, seed):
    for design in ("latin", "random"):
        blocks = block_design(n, w, r, design, seed)
        assert all(1 <= len(b) <= w for b in blocks)
        counts = Counter(i for b in blocks for i in b)
        assert set(counts) == set(range(n))
        if n > w:
            reps = set(counts.values())
            assert len(reps) == 1
            if design == "random":
                assert reps == {3 if r is None else r}
                assert len(blocks) == (3 if r is None else r) * math.ceil(n / w)
        oracle = OracleWindow(w)
        jr = JointRank(oracle, replicates=r, design=design, seed=seed)
        jr.rank("q", docs_with_relevance(list(range(n))))
        assert oracle.calls == jr.last_stats["calls"] == sum(1 for b in blocks if len(b) > 1)
        assert jr.last_stats["rounds"] == (1 if n > 1 else 0)


def test_jointrank_latin_figures_for_100_documents():
    # q = 11 (>= sqrt(100)), rows = 10: 5 chunks of 20, then 2 slopes of ceil(11 / 2) = 6 merged-line blocks
    assert len(block_design(100, 20, 3)) == 5 + 2 * 6
    oracle = OracleWindow(20)
    JointRank(oracle, replicates=None).rank("q", docs_with_relevance(list(range(100))))
    assert oracle.calls == 9 + 11 * 6  # 10 rows of <= 11 (one a singleton), 11 slopes


def test_batches_span_queries_and_async_runs_windows_concurrently():
    lists = [docs_with_relevance([(i * 37 + q) % 50 for i in range(50)]) for q in range(3)]
    oracle = BatchOracle(10)
    jr = JointRank(oracle)
    jr.rank_many(["a", "b", "c"], lists)
    assert oracle.batches == 1 and oracle.calls == jr.last_stats["calls"] == 3 * len(block_design(50, 10, 3))
    oracle = BatchOracle(10)
    sw = SlidingWindow(oracle, stride=5)
    sw.rank_many(["a", "b", "c"], lists)
    assert oracle.batches == sw.last_stats["rounds"] == 9 and oracle.calls == 27
    oracle = OracleWindow(10)
    jr = JointRank(oracle, concurrency=4)
    asyncio.run(jr.arank_many(["a", "b", "c"], lists))
    assert oracle.max_in_flight == 4


def test_pairwise_both_orders_cancels_position_bias():
    docs = docs_with_relevance([3, 1, 4, 0, 2])
    for method in ("allpair", "heapsort", "bubblesort"):
        p = Pairwise(FirstPositionWindow(2), method=method, top_k=None)
        assert p.rank("q", docs).indices == [0, 1, 2, 3, 4]  # every comparison is a tie: prior order
    biased = Pairwise(FirstPositionWindow(2), method="bubblesort", top_k=None, both_orders=False)
    assert biased.rank("q", docs).indices == [0, 1, 2, 3, 4]


def test_build_strategy_names_and_bad_options():
    w = OracleWindow(6)
    kinds = {"sliding": SlidingWindow, "setwise": Setwise, "pairwise": Pairwise}
    kinds |= {"tournament": Tournament, "jointrank": JointRank}
    for name, cls in kinds.items():
        assert type(build_strategy(name, w)) is cls
    assert build_strategy("setwise", w, method="bubble").method == "bubblesort"
    assert build_strategy("pairwise", w, method="sliding").method == "bubblesort"
    bad = [
        ("nope", {}),
        ("sliding", {"window": 7}),
        ("sliding", {"window": 1}),
        ("sliding", {"stride": 6}),
        ("sliding", {"passes": 0}),
        ("sliding", {"top_k": 0}),
        ("sliding", {"stride": 2.5}),
        ("sliding", {"colour": "red"}),
        ("setwise", {"method": "quicksort"}),
        ("setwise", {"num_child": 6}),
        ("pairwise", {"method": "tournament"}),
        ("tournament", {"group_size": 1}),
        ("jointrank", {"aggregation": "borda"}),
        ("jointrank", {"design": "bibd"}),
        ("jointrank", {"replicates": 0}),
        ("jointrank", {"concurrency": 0}),
    ]
    for name, options in bad:
        with pytest.raises(ValueError):
            build_strategy(name, w, **options)
    with pytest.raises(ValueError, match="window_size >= 2"):
        Pairwise(OracleWindow(1))
    with pytest.raises(TypeError, match="not a WindowRanker"):
        SlidingWindow(object())  # type: ignore[arg-type]


class _FailingWindow(OracleWindow):
    started = 0

    async def arank_window(self, query, docs):
        self.started += 1
        if self.started == 3:
            await asyncio.sleep(0.005)
            raise RuntimeError("server gave up")
        if self.started > 3:  # still running when the third fails: must be cancelled, not left behind
            await asyncio.sleep(5)
        return await super().arank_window(query, docs)


def test_a_failing_async_window_propagates_and_cancels_its_round():
    async def go():
        jr = JointRank(_FailingWindow(5), concurrency=2)
        with pytest.raises(RuntimeError, match="server gave up"):
            await jr.arank("q", docs_with_relevance(list(range(40))))
        await asyncio.sleep(0.01)
        return [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]

    assert asyncio.run(go()) == []


def test_a_window_ranker_returning_garbage_is_a_value_error():
    for name in ("sliding", "setwise", "pairwise", "tournament", "jointrank"):
        with pytest.raises(ValueError, match="not a permutation"):
            build_strategy(name, BrokenWindow(4)).rank("q", docs_with_relevance([1, 2, 3, 4, 5]))
        with pytest.raises(ValueError, match="not a permutation"):
            asyncio.run(build_strategy(name, BrokenWindow(4)).arank("q", docs_with_relevance([1, 2, 3])))


class _TextValue(PointwiseRanker):
    """Scores a document by the number written in its text: a consistent pointwise ranker."""

    batches = 0

    def _score_pairs(self, queries, texts, show_progress=False):
        self.batches += 1
        return np.array([float(t) for t in texts])


def test_pointwise_window_drives_strategies_like_the_ranker_itself():
    docs = [str((i * 37) % 41) for i in range(41)]
    direct = _TextValue().rank("q", docs).indices
    for name, opts in [("sliding", {"passes": None}), ("jointrank", {"replicates": None})]:
        s = build_strategy(name, PointwiseWindow(_TextValue(), window_size=7), **opts)
        assert s.rank("q", docs).indices == direct
        assert asyncio.run(s.arank("q", docs)).indices == direct
    ranker = _TextValue()
    jr = build_strategy("jointrank", PointwiseWindow(ranker, window_size=7))
    jr.rank_many(["a", "b"], [docs, docs[::-1]])
    assert ranker.batches == 1 and jr.last_stats["calls"] == 2 * len(block_design(41, 7, 3))
    for name in ("setwise", "tournament", "pairwise"):
        s = build_strategy(name, PointwiseWindow(_TextValue(), window_size=7), top_k=5)
        assert s.rank("q", docs).indices[:5] == direct[:5]


def test_heap_build_runs_sifts_of_one_level_concurrently():
    oracle = OracleWindow(4)
    s = Setwise(oracle, method="heapsort", num_child=3, top_k=1)
    s.rank("q", docs_with_relevance([(i * 37) % 100 for i in range(100)]))
    assert s.last_stats["rounds"] < s.last_stats["calls"] == oracle.calls
    assert s.last_stats["rounds"] <= 1 + 2 + 3 + 4  # sift steps per internal level, deepest first


def test_aggregations_match_independent_solvers():
    from scipy.optimize import minimize

    rng = np.random.default_rng(0)
    n = 30
    blocks = block_design(n, 8, 3, "random", seed=1)
    u = rng.normal(size=n)
    wins = np.zeros((n, n))
    for b in blocks:
        ranked = sorted(b, key=lambda i: -(u[i] + rng.gumbel(0, 1.0)))
        for a in range(len(ranked)):
            for c in range(a + 1, len(ranked)):
                wins[ranked[a], ranked[c]] += 1
    games = wins + wins.T
    p = np.divide(wins, games, out=np.zeros_like(wins), where=games > 0)

    def nll(theta):  # fractional BT games per compared pair + one win and one loss vs a virtual 0
        diff = theta[:, None] - theta[None, :]
        return -(p * -np.logaddexp(0, -diff)).sum() + (np.logaddexp(0, -theta) + np.logaddexp(0, theta)).sum()

    theta = minimize(nll, np.zeros(n), method="BFGS", options={"gtol": 1e-10}).x
    np.testing.assert_allclose(aggregate(wins, "bt"), theta, atol=1e-4)

    out = p.sum(0)
    google = np.where(out > 0, p / np.where(out > 0, out, 1), 1.0 / n)  # dangling columns: uniform
    google = 0.85 * google + 0.15 / n
    vals, vecs = np.linalg.eig(google)
    lead = np.real(vecs[:, np.argmax(np.real(vals))])
    np.testing.assert_allclose(aggregate(wins, "pagerank"), lead / lead.sum(), atol=1e-9)
    rate = [np.mean([p[i, j] for j in range(n) if games[i, j] > 0]) for i in range(n)]
    np.testing.assert_allclose(aggregate(wins, "winrate"), rate)
