"""Rankers for server tests: a slow one (to fill queues and hit timeouts) and a failing one."""

from __future__ import annotations

import threading
import time

import numpy as np

from unirank.base import Ranker
from unirank.methods.lexical import BM25Ranker
from unirank.types import ScoreKind


class SlowRanker(Ranker):
    """Scores = document length, after sleeping ``delay`` seconds per batch; counts its batches."""

    score_kind = ScoreKind.UNBOUNDED

    def __init__(self, delay: float = 0.3) -> None:
        super().__init__("slow")
        self.delay = delay
        self.calls: list[int] = []
        self.lock = threading.Lock()

    def _score_many(self, queries, docs_lists, show_progress=False):
        time.sleep(self.delay)
        with self.lock:
            self.calls.append(sum(len(d) for d in docs_lists))
        return [np.array([float(len(d.text)) for d in docs]) for docs in docs_lists]


class BrokenRanker(Ranker):
    """Fails with an internal error whose text must never reach a client."""

    def _score_many(self, queries, docs_lists, show_progress=False):
        raise RuntimeError("SECRET-INTERNAL /etc/passwd stack detail")


class CountingBM25(BM25Ranker):
    """BM25 that records the size of every ``rank_many`` call (the batcher's merge unit)."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[tuple[int, int]] = []

    def rank_many(self, queries, docs_lists, *args, **kwargs):
        self.batches.append((len(queries), sum(len(d) for d in docs_lists)))
        return super().rank_many(queries, docs_lists, *args, **kwargs)
