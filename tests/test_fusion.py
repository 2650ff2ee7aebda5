"""Rank fusion (unirank.strategies.fusion): hand-computed RRF / CombSUM / CombMNZ values and properties."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import asyncio
import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import unirank
from unirank.base import Ranker
from unirank.strategies.fusion import Fusion, combmnz, combsum, fuse, rrf
from unirank.types import Document, RankedResults, Result, ScoreKind

# Two runs: A ranks a > b > c, B ranks b > c > d.
A = {"a": 3.0, "b": 2.0, "c": 1.0}
B = {"b": 10.0, "c": 6.0, "d": 2.0}


def test_rrf_hand_computed() -> None:
    got = rrf([A, B], k=60)
    expected = {
        "b": 1 / (60 + 2) + 1 / (60 + 1),
        "c": 1 / (60 + 3) + 1 / (60 + 2),
        "a": 1 / (60 + 1),  # absent from B: contributes 0 there
        "d": 1 / (60 + 3),
    }
    assert list(got) == ["b", "c", "a", "d"]
    assert got == pytest.approx(expected)
    weighted = rrf([A, B], k=1, weights=[2.0, 0.5])
    assert weighted["a"] == pytest.approx(2 / 2) and weighted["d"] == pytest.approx(0.5 / 4)
    assert weighted["b"] == pytest.approx(2 / 3 + 0.5 / 2)


def test_combsum_minmax_hand_computed() -> None:
    # minmax: A -> a 1, b 0.5, c 0;  B -> b 1, c 0.5, d 0
    got = combsum([A, B])
    assert got == pytest.approx({"a": 1.0, "b": 1.5, "c": 0.5, "d": 0.0})
    assert list(got) == ["b", "a", "c", "d"]


def test_combmnz_hand_computed_and_tie_break_by_first_list() -> None:
    got = combmnz([A, B])
    # a: 1.0 * 1 list, b: 1.5 * 2, c: 0.5 * 2, d: 0.0 * 1
    assert got == pytest.approx({"a": 1.0, "b": 3.0, "c": 1.0, "d": 0.0})
    assert list(got) == ["b", "a", "c", "d"]  # a and c tie at 1.0: a comes first in the first list


def test_combsum_zscore_hand_computed() -> None:
    z = math.sqrt(3 / 2)  # (3 - 2) / std([3, 2, 1]) with the population std sqrt(2/3)
    got = combsum([A, B], norm="zscore")
    assert got == pytest.approx({"a": z, "b": z + 0.0, "c": 0.0 - z, "d": -z})
    assert list(got) == ["a", "b", "c", "d"]  # ties (a, b) and (c, d) in first-appearance order


def test_combsum_raw_and_weights() -> None:
    got = combsum([A, B], norm="none", weights=[1.0, 0.1])
    assert got == pytest.approx({"a": 3.0, "b": 2.0 + 1.0, "c": 1.0 + 0.6, "d": 0.2})


def test_rankedresults_match_by_id_and_equal_dict_inputs() -> None:
    docs = [Document(t, i) for i, t in [("a", "x"), ("b", "y"), ("c", "z"), ("d", "w")]]
    ra = RankedResults.from_scores("q", docs[:3], [3.0, 2.0, 1.0])
    rb = RankedResults.from_scores("q", docs[1:], [10.0, 6.0, 2.0])
    assert rrf([ra, rb]) == rrf([A, B])
    assert combmnz([ra, B]) == combmnz([A, B])


def test_nan_is_absent_and_duplicates_keep_first() -> None:
    got = combmnz([{"a": 1.0, "b": float("nan"), "c": 0.0}, {"b": 1.0}])
    assert got == pytest.approx({"a": 1.0, "b": 1.0, "c": 0.0})  # b counted once (NaN in list 1)
    repeated = [Result(Document("x", "a"), 2.0, 1, 0), Result(Document("x", "a"), 1.0, 2, 1)]
    rr = RankedResults("q", [*repeated, Result(Document("y", "b"), 0.5, 3, 2)], ScoreKind.UNBOUNDED)
    assert rrf([rr], k=0) == pytest.approx({"a": 1.0, "b": 0.5})  # b is at rank 2 after dropping the repeat


def test_errors() -> None:
    with pytest.raises(ValueError, match="method"):
        Fusion([_Len()], method="borda")
    with pytest.raises(ValueError, match="norm"):
        combsum([A], norm="rank")
    with pytest.raises(ValueError, match="weights"):
        rrf([A, B], weights=[1.0])
    with pytest.raises(TypeError):
        rrf([["a", "b"]])  # type: ignore[list-item]
    with pytest.raises(ValueError):
        Fusion([])
    assert rrf([]) == {}


def test_fuse_carries_documents() -> None:
    docs = [Document("rain text", "d1", {"src": 1}), Document("sun text", "d2"), Document("snow", "d3")]
    ra = RankedResults.from_scores("q", docs[:2], [1.0, 2.0])
    rb = RankedResults.from_scores("q", [docs[2], docs[0]], [5.0, 1.0])
    out = fuse([ra, rb], "rrf", k=0)
    # d1: 1/2 + 1/2 = 1.0, d2: 1/1 = 1.0, d3: 1/1 = 1.0 -> all tie; first appearance: d2, d1 (list A), d3
    assert out.ids == ["d2", "d1", "d3"]
    assert out[1].metadata == {"src": 1} and out[1].index == 0 and out[1].rank == 2
    assert out.score_kind is ScoreKind.RANK and out.query == "q"
    assert fuse([ra, rb], "combsum", top_k=1).score_kind is ScoreKind.UNBOUNDED
    assert len(fuse([ra, rb], "combsum", top_k=1)) == 1


# -- the Fusion ranker ---------------------------------------------------------------------------------------
class _Len(Ranker):
    """Longer text = better."""

    def _score_many(self, queries, docs_lists, show_progress=False):  # type: ignore[no-untyped-def]
        return [np.array([len(d.text) for d in docs], dtype=float) for docs in docs_lists]


class _Overlap(Ranker):
    """Number of query words in the text."""

    def _score_many(self, queries, docs_lists, show_progress=False):  # type: ignore[no-untyped-def]
        return [
            np.array([sum(w in d.text.split() for w in q.split()) for d in docs], dtype=float)
            for q, docs in zip(queries, docs_lists)
        ]


class _Short(Ranker):
    """Shorter text = better (the reverse of _Len)."""

    def _score_many(self, queries, docs_lists, show_progress=False):  # type: ignore[no-untyped-def]
        return [np.array([-len(d.text) for d in docs], dtype=float) for docs in docs_lists]


DOCS = ["rain", "heavy rain today", "sun", "rain and more rain and clouds"]


@pytest.mark.parametrize("method", ["rrf", "combsum", "combmnz"])
def test_fusion_ranker_equals_functions(method: str) -> None:
    f = Fusion([_Len(), _Overlap()], method=method)
    res = f.rank("heavy rain", DOCS)
    runs = [r.rank("heavy rain", DOCS) for r in (_Len(), _Overlap())]
    expected = {"rrf": rrf, "combsum": combsum, "combmnz": combmnz}[method](runs)
    assert res.ids == list(expected)
    assert res.scores == pytest.approx(list(expected.values()))
    assert f.score_kind is (ScoreKind.RANK if method == "rrf" else ScoreKind.UNBOUNDED)
    assert res.score_kind is f.score_kind
    assert f.score("heavy rain", DOCS) == pytest.approx([expected[str(i)] for i in range(len(DOCS))])


def test_fusion_ties_follow_first_ranker() -> None:
    docs = ["aa", "a"]  # _Len ranks 0 > 1, _Short ranks 1 > 0: RRF ties exactly
    assert Fusion([_Len(), _Short()]).rank("q", docs).ids == ["0", "1"]
    assert Fusion([_Short(), _Len()]).rank("q", docs).ids == ["1", "0"]


def test_fusion_rank_many_async_topk_and_normalize() -> None:
    f = Fusion([_Len(), _Overlap()], weights=[1.0, 2.0])
    queries, lists = ["heavy rain", "sun"], [DOCS, DOCS[:3]]
    many = f.rank_many(queries, lists, top_k=2)
    assert [len(r) for r in many] == [2, 2]
    assert many[1].ids == f.rank("sun", DOCS[:3]).ids[:2]
    got = asyncio.run(f.arank_many(queries, lists, top_k=2))
    assert [r.ids for r in got] == [r.ids for r in many]
    norm = f.rank("heavy rain", DOCS, normalize="auto")
    assert norm.normalized == "minmax" and max(norm.scores) == 1.0 and min(norm.scores) == 0.0
    assert f.rank_many(["q", "q"], [[], ["x"]])[0].results == []


def test_fusion_is_exported_and_accepts_specs() -> None:
    assert unirank.Fusion is Fusion
    f = Fusion(["bm25", "bm25:bm25+"], method="combmnz")
    assert f.rank("rain clouds", ["sunny day", "rain falls from clouds"]).ids == ["1", "0"]
    g = Fusion.from_spec("combsum", rankers=[_Len(), _Overlap()])
    assert g.method == "combsum" and g.score_kind is ScoreKind.UNBOUNDED


# -- properties ----------------------------------------------------------------------------------------------
ids = st.sampled_from([f"d{i}" for i in range(12)])
scores = st.floats(min_value=-100, max_value=100, allow_nan=False)
runs_st = st.lists(st.dictionaries(ids, scores, min_size=1, max_size=8), min_size=1, max_size=4)


@settings(max_examples=200, deadline=None)
@given(
    runs=runs_st,
    method=st.sampled_from(["rrf", "combsum", "combmnz"]),
    norm=st.sampled_from(["minmax", "zscore", "none"]),
)
def test_output_is_a_permutation_of_the_union(runs: list[dict[str, float]], method: str, norm: str) -> None:
    got = rrf(runs) if method == "rrf" else (combsum if method == "combsum" else combmnz)(runs, norm)
    union = set().union(*runs)
    assert sorted(got) == sorted(union) and len(got) == len(union)
    vals = list(got.values())
    assert all(x >= y for x, y in itertools.pairwise(vals))  # best first


@settings(max_examples=200, deadline=None)
@given(run=st.dictionaries(ids, scores, min_size=1, max_size=10))
def test_single_list_order_is_preserved(run: dict[str, float]) -> None:
    order = [key for key, _ in sorted(enumerate(run.items()), key=lambda x: (-x[1][1], x[0]))]
    order = [list(run)[i] for i in order]
    assert list(rrf([run])) == order
    assert list(combsum([run])) == order
    assert list(combmnz([run], norm="none")) == order  # MNZ of one list = CombSUM = the raw scores


@settings(max_examples=100, deadline=None)
@given(run=st.dictionaries(ids, scores, min_size=1, max_size=10), n=st.integers(1, 4))
def test_fusing_copies_of_one_list_preserves_its_order(run: dict[str, float], n: int) -> None:
    assert list(rrf([run] * n)) == list(rrf([run]))
    assert list(combmnz([run] * n)) == list(combsum([run]))
