"""The primitive every ordering strategy is built on: "rank these <= w documents for this query".

Strategies (sliding window, setwise, pairwise, tournaments, JointRank) never know which model is behind the
primitive: a listwise LLM, a FIRST single-token scorer, a pairwise prompt, or a plain pointwise ranker wrapped
by :class:`PointwiseWindow`. That is what lets a test drive every strategy with an exact oracle.
"""

from __future__ import annotations

import asyncio
from typing import Protocol, runtime_checkable

import numpy as np

from ..base import Ranker
from ..types import Document

__all__ = ["PointwiseWindow", "WindowRanker", "check_permutation"]


@runtime_checkable
class WindowRanker(Protocol):
    """Orders a small window of documents.

    ``rank_window`` returns a permutation of ``range(len(docs))``, best first; it must accept any
    ``len(docs) <= window_size`` (and 1). ``arank_window`` is its async twin (HTTP engines run windows
    concurrently through it).
    """

    window_size: int

    def rank_window(self, query: str, docs: list[Document]) -> list[int]: ...

    async def arank_window(self, query: str, docs: list[Document]) -> list[int]: ...


def check_permutation(perm: list[int], n: int) -> list[int]:
    """Raise ``ValueError`` unless ``perm`` is a permutation of ``range(n)``; return it.

    >>> check_permutation([2, 0, 1], 3)
    [2, 0, 1]
    """
    if sorted(perm) != list(range(n)):
        raise ValueError(f"window ranker returned {perm!r}, not a permutation of range({n})")
    return perm


class PointwiseWindow:
    """Any :class:`~unirank.base.Ranker` as a window ranker (orders the window by its scores).

    >>> from unirank import Reranker
    >>> w = PointwiseWindow(Reranker("bm25"), window_size=3)
    >>> w.rank_window("rain", [Document("sun", "a"), Document("rain rain", "b"), Document("rain", "c")])[0]
    1
    """

    def __init__(self, ranker: Ranker, window_size: int = 20) -> None:
        if window_size < 1:
            raise ValueError("window_size must be >= 1")
        self.ranker = ranker
        self.window_size = window_size

    def rank_window(self, query: str, docs: list[Document]) -> list[int]:
        if not docs:
            return []
        return self.ranker.rank(query, docs).indices

    async def arank_window(self, query: str, docs: list[Document]) -> list[int]:
        if not docs:
            return []
        return (await self.ranker.arank(query, docs)).indices


async def gather_windows(
    window_ranker: WindowRanker, query: str, windows: list[list[Document]], concurrency: int = 8
) -> list[list[int]]:
    """Rank independent windows concurrently (bounded), keeping their order."""
    sem = asyncio.Semaphore(max(concurrency, 1))

    async def one(w: list[Document]) -> list[int]:
        async with sem:
            return check_permutation(await window_ranker.arank_window(query, w), len(w))

    return list(await asyncio.gather(*(one(w) for w in windows)))


def rank_scores(order: list[int], n: int) -> np.ndarray:
    """Rank-only scores for a final order (best first): ``1 - position / n``, as :class:`ScoreKind.RANK`."""
    scores = np.zeros(n)
    scores[order] = 1.0 - np.arange(len(order)) / max(n, 1)
    return scores
