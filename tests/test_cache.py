"""Score cache: hits and misses are counted, cached results equal fresh ones, the disk store persists."""

from __future__ import annotations

import numpy as np
import pytest

from unirank.base import PointwiseRanker
from unirank.cache import ScoreCache, as_cache
from unirank.types import ScoreKind


class Overlap(PointwiseRanker):
    """Word-overlap scorer that records every pair it is asked to score (the oracle is the formula)."""

    score_kind = ScoreKind.UNBOUNDED

    def __init__(self, **kw):
        super().__init__("overlap", **kw)
        self.seen: list[tuple[str, str]] = []

    def _score_pairs(self, queries, texts, show_progress=False):
        self.seen += list(zip(queries, texts))
        return np.array(
            [len(set(q.split()) & set(t.split())) + len(t) / 1000 for q, t in zip(queries, texts)]
        )


DOCS = ["rain falls", "cats purr", "rain and snow fall", "nothing here"]


def test_hits_misses_and_equal_results():
    cache = ScoreCache()
    fresh = Overlap().rank_many(["rain fall", "cats"], [DOCS, DOCS])
    r = Overlap(cache=cache)
    first = r.rank_many(["rain fall", "cats"], [DOCS, DOCS])
    assert cache.stats()["misses"] == 8 and cache.hits == 0 and len(r.seen) == 8
    second = r.rank_many(["rain fall", "cats"], [DOCS[::-1], DOCS])
    assert cache.hits == 8 and len(r.seen) == 8  # nothing new reached the model
    assert cache.hit_rate == pytest.approx(0.5)
    for a, b in zip(fresh, first):
        assert a.ids == b.ids and a.scores == b.scores
    assert second[0].scores == first[0].scores and second[1].scores == first[1].scores
    # a partly new list: only the new pair is scored, and results still match a fresh ranker
    third = r.rank("rain fall", [*DOCS, "heavy rain"])
    assert r.seen[-1] == ("rain fall", "heavy rain") and len(r.seen) == 9
    assert third.scores == Overlap().rank("rain fall", [*DOCS, "heavy rain"]).scores


def test_lru_bound_and_nan_not_cached():
    c = ScoreCache(max_items=2)
    c.put_many([("a", 1.0), ("b", 2.0), ("c", float("nan"))])
    assert len(c) == 2 and c.get_many(["c"]) == [None]
    c.put_many([("d", 4.0)])
    assert c.get_many(["a", "b", "d"]) == [None, 2.0, 4.0]  # "a" was least recently used


def test_disk_store_survives_a_new_process_cache(tmp_path):
    path = tmp_path / "scores.sqlite"
    r1 = Overlap(cache=ScoreCache(path=path))
    s1 = r1.score("rain fall", DOCS)
    r1.score_cache.close()
    cache2 = ScoreCache(path=path)
    r2 = Overlap(cache=cache2)
    assert r2.score("rain fall", DOCS) == s1 and r2.seen == [] and cache2.hits == 4
    cache2.clear()
    assert r2.score("rain fall", DOCS) == s1 and len(r2.seen) == 4


def test_configuration_changes_do_not_share_entries():
    cache = ScoreCache()
    a = Overlap(cache=cache)
    b = Overlap(cache=cache, long_docs="max", passage_tokens=2, passage_overlap=1)
    a.score("rain", DOCS)
    b.score("rain", DOCS)
    assert len(b.seen) > 0 and cache.hits == 0


def test_as_cache_validates():
    assert as_cache(None) is None and as_cache(False) is None
    assert isinstance(as_cache(True), ScoreCache)
    with pytest.raises(TypeError):
        as_cache("yes")
    with pytest.raises(ValueError):
        ScoreCache(max_items=-1)


def test_cross_encoder_cache_equals_fresh(make_tiny_bert):
    from unirank import Reranker

    path = make_tiny_bert("seqcls", seed=11)
    fresh = Reranker(f"ce:{path}", device="cpu").score("what causes rain", DOCS)
    r = Reranker(f"ce:{path}", device="cpu", cache=True)
    assert r.score("what causes rain", DOCS) == fresh
    assert r.score("what causes rain", DOCS) == fresh and r.score_cache.hits == len(DOCS)
