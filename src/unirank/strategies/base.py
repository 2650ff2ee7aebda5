"""The primitive every ordering strategy is built on: "rank these <= w documents for this query".

Strategies (sliding window, setwise, pairwise, tournaments, JointRank) never know which model is behind the
primitive: a listwise LLM, a FIRST single-token scorer, a pairwise prompt, or a plain pointwise ranker wrapped
by :class:`PointwiseWindow`. That is what lets a test drive every strategy with an exact oracle.
"""

from __future__ import annotations

import asyncio
import logging
from abc import abstractmethod
from collections.abc import Callable, Generator, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..aio import run_sync
from ..base import Capabilities, Ranker
from ..types import DocLike, Document, RankedResults, ScoreKind

__all__ = [
    "Plan",
    "PointwiseWindow",
    "WindowRanker",
    "WindowStrategy",
    "ask",
    "check_int",
    "check_permutation",
    "parallel",
    "rank_window_batch",
]

logger = logging.getLogger(__name__)


@runtime_checkable
class WindowRanker(Protocol):
    """Orders a small window of documents.

    ``rank_window`` returns a permutation of ``range(len(docs))``, best first; it must accept any
    ``len(docs) <= window_size`` (and 1). ``arank_window`` is its async twin (HTTP engines run windows
    concurrently through it). Optionally, ``rank_windows(queries, windows)`` ranks many windows in one
    batched call; the strategies' sync path uses it when present (see :func:`rank_window_batch`). Without
    it, a window ranker whose ``native_async`` attribute is true (an HTTP engine) is driven through
    ``arank_window`` on the sync path too, so the windows of a round overlap (bounded by ``concurrency``).
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

    def rank_windows(self, queries: list[str], windows: list[list[Document]]) -> list[list[int]]:
        """Many windows in one ``rank_many`` call (the ranker batches across them)."""
        return [r.indices for r in self.ranker.rank_many(queries, windows)]


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


# -- strategies as plans ------------------------------------------------------------------------------------
#
# A strategy is written once, as a *plan*: a generator over document positions ``0..n-1`` that yields a
# list of windows (each a list of positions) that may be ranked independently, receives their permutations
# (local to each window, best first) and finally returns the order of all ``n`` positions. The driver in
# :class:`WindowStrategy` runs the plans of many queries in lock-step, so every round is one batch across
# queries (``rank_windows`` when the window ranker has it) or, on the async path, one bounded concurrent
# gather. Windows of fewer than two documents are answered without calling the model.

Plan = Generator[list[list[int]], list[list[int]], list[int]]


def ask(window: list[int]) -> Generator[list[list[int]], list[list[int]], list[int]]:
    """Sub-plan: rank one window; ``perm = yield from ask(window)``."""
    answers = yield [window]
    return answers[0]


def heap_top_k(n: int, k: int, arity: int, sift: Callable[[list[int], int, int], Plan]) -> Plan:
    """Heap-sort plan for the best ``k`` of positions ``0..n-1`` in an ``arity``-ary max-heap.

    ``sift(heap, node, size)`` is the strategy's sift-down (it asks the model which of a node and its children
    is best). The heap is built level by level, bottom up, with the sifts of one level run in lock-step
    (:func:`parallel`); then the root is popped ``k`` times. Returns the top ``k`` positions, best first.
    """
    heap = list(range(n))
    if n == 0:
        return []
    depth = [0] * n
    for v in range(1, n):
        depth[v] = depth[(v - 1) // arity] + 1
    internal = [v for v in range(n) if arity * v + 1 < n]
    for d in sorted({depth[v] for v in internal}, reverse=True):
        yield from parallel([sift(heap, v, n) for v in internal if depth[v] == d])
    top, size = [], n
    for j in range(k):
        top.append(heap[0])
        if j == k - 1:
            break
        size -= 1
        heap[0] = heap[size]
        yield from sift(heap, 0, size)
    return top


def parallel(subs: list[Generator[list[list[int]], list[list[int]], Any]]) -> Generator[Any, Any, list[Any]]:
    """Run independent sub-plans in lock-step (their windows share rounds); return their results in order."""
    results: list[Any] = [None] * len(subs)
    pending: dict[int, list[list[int]]] = {}
    for i, g in enumerate(subs):
        try:
            pending[i] = g.send(None)
        except StopIteration as stop:
            results[i] = stop.value
    while pending:
        keys = list(pending)
        answers = yield [w for k in keys for w in pending[k]]
        pos, nxt = 0, {}
        for k in keys:
            m = len(pending[k])
            try:
                nxt[k] = subs[k].send(answers[pos : pos + m])
            except StopIteration as stop:
                results[k] = stop.value
            pos += m
        pending = nxt
    return results


def rank_window_batch(
    window_ranker: WindowRanker, queries: list[str], windows: list[list[Document]]
) -> list[list[int]]:
    """Rank many (query, window) pairs at once.

    Uses the window ranker's optional ``rank_windows(queries, windows)`` (one batched model call, e.g. a
    padded batch of prompts) when it has one, else ``rank_window`` one by one. Every answer is checked.
    """
    batch = getattr(window_ranker, "rank_windows", None)
    if callable(batch):
        got = list(batch(queries, windows))
        if len(got) != len(windows):
            raise ValueError(f"rank_windows returned {len(got)} permutations for {len(windows)} windows")
    else:
        got = [window_ranker.rank_window(q, w) for q, w in zip(queries, windows)]
    return [check_permutation([int(x) for x in p], len(w)) for p, w in zip(got, windows)]


def check_int(name: str, value: Any, lo: int, hi: int | None = None, *, allow_none: bool = False) -> Any:
    """Validate an integer option (``lo <= value <= hi``); ``ValueError`` naming the option otherwise.

    >>> check_int("stride", 3, 1)
    3
    """
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an int, got {value!r}")
    if value < lo or (hi is not None and value > hi):
        bound = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return int(value)


class _Run:
    """One query's plan in flight, with its call statistics."""

    def __init__(self, plan: Plan, n: int, stats: dict[str, Any]) -> None:
        self.plan, self.n, self.stats = plan, n, stats
        self.order: list[int] | None = None
        self.pending: list[list[int]] = []
        self._step(None)

    def _step(self, answers: list[list[int]] | None) -> None:
        try:
            self.pending = self.plan.send(answers)  # type: ignore[arg-type]
        except StopIteration as stop:
            self.order = check_permutation(list(stop.value), self.n)
            self.pending = []

    def calls(self) -> list[int]:
        """Positions (in ``pending``) of windows that need the model."""
        for w in self.pending:
            if len(set(w)) != len(w) or any(not 0 <= i < self.n for i in w):
                raise RuntimeError(f"strategy bug: invalid window {w!r} for {self.n} documents")
        return [i for i, w in enumerate(self.pending) if len(w) > 1]

    def answer(self, got: dict[int, list[int]]) -> None:
        answers = [got.get(i, list(range(len(w)))) for i, w in enumerate(self.pending)]
        if got:
            self.stats["calls"] += len(got)
            self.stats["rounds"] += 1
            self.stats["window_docs"] += sum(len(self.pending[i]) for i in got)
        self._step(answers)


class WindowStrategy(Ranker):
    """Base class of the ordering strategies: a :class:`Ranker` (``ScoreKind.RANK``) over a window ranker.

    Subclasses implement :meth:`_plan`. After every ``rank``/``rank_many``/``arank`` call, :attr:`last_stats`
    holds ``calls`` (windows sent to the model), ``rounds`` (sequential steps; windows of one round run
    concurrently / batched), ``window_docs`` (documents sent), per query in ``per_query`` and summed
    (``rounds``: the maximum). It describes the latest call on this instance; concurrent calls on one
    instance overwrite each other's statistics (the rankings are unaffected).
    """

    score_kind = ScoreKind.RANK
    capabilities = Capabilities(pointwise=False, listwise=True, native_async=True)

    def __init__(self, window_ranker: WindowRanker, *, concurrency: int = 8, name: str = "") -> None:
        super().__init__(name)
        has_rank = callable(getattr(window_ranker, "rank_window", None))
        if not has_rank or not hasattr(window_ranker, "window_size"):
            kind = type(window_ranker).__name__
            raise TypeError(f"{kind} is not a WindowRanker (needs rank_window and window_size)")
        if not isinstance(window_ranker.window_size, int) or window_ranker.window_size < 1:
            raise ValueError(f"window_size must be a positive int, got {window_ranker.window_size!r}")
        if not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"concurrency must be an int >= 1, got {concurrency!r}")
        self.window_ranker = window_ranker
        self.concurrency = concurrency
        self.last_stats: dict[str, Any] = {}

    def rank_many(
        self,
        queries: Sequence[str],
        docs_lists: Sequence[Sequence[DocLike]],
        top_k: int | None = None,
        normalize: str | None = None,
        show_progress: bool = False,
    ) -> list[RankedResults]:
        """See :meth:`Ranker.rank_many`; also resets :attr:`last_stats`."""
        self.last_stats = {"calls": 0, "rounds": 0, "window_docs": 0, "per_query": []}
        return super().rank_many(queries, docs_lists, top_k, normalize, show_progress)

    async def arank_many(
        self,
        queries: Sequence[str],
        docs_lists: Sequence[Sequence[DocLike]],
        top_k: int | None = None,
        normalize: str | None = None,
    ) -> list[RankedResults]:
        """See :meth:`Ranker.arank_many`; also resets :attr:`last_stats`."""
        self.last_stats = {"calls": 0, "rounds": 0, "window_docs": 0, "per_query": []}
        return await super().arank_many(queries, docs_lists, top_k, normalize)

    @abstractmethod
    def _plan(self, n: int, stats: dict[str, Any]) -> Plan:
        """The strategy over positions ``0..n-1`` (input order is the prior); may add counters to stats."""

    def _start(self, docs_lists: list[list[Document]]) -> list[_Run]:
        runs = []
        for docs in docs_lists:
            stats: dict[str, Any] = {"calls": 0, "rounds": 0, "window_docs": 0}
            runs.append(_Run(self._plan(len(docs), stats), len(docs), stats))
        return runs

    def _finish_stats(self, runs: list[_Run]) -> list[np.ndarray]:
        per_query = [r.stats for r in runs]
        total: dict[str, Any] = {}
        for st in per_query:
            for key, val in st.items():
                total[key] = max(total.get(key, 0), val) if key == "rounds" else total.get(key, 0) + val
        total["per_query"] = per_query
        self.last_stats = total
        logger.debug("%s: %s", self.name, {k: v for k, v in total.items() if k != "per_query"})
        return [rank_scores(r.order or [], r.n) for r in runs]

    def _score_many(
        self, queries: list[str], docs_lists: list[list[Document]], show_progress: bool = False
    ) -> list[np.ndarray]:
        w = self.window_ranker
        if getattr(w, "native_async", False) and not callable(getattr(w, "rank_windows", None)):
            # an HTTP window ranker: overlap each round's windows (all queries) as arank does
            return run_sync(self._ascore_many(queries, docs_lists, show_progress))  # type: ignore[no-any-return]
        runs = self._start(docs_lists)
        while any(r.order is None for r in runs):
            need = [(r, q, d, r.calls()) for r, q, d in zip(runs, queries, docs_lists) if r.order is None]
            flat_q = [q for _, q, _, idx in need for _ in idx]
            flat_w = [[d[j] for j in r.pending[i]] for r, _, d, idx in need for i in idx]
            perms = rank_window_batch(self.window_ranker, flat_q, flat_w) if flat_w else []
            pos = 0
            for r, _, _, idx in need:
                r.answer(dict(zip(idx, perms[pos : pos + len(idx)])))
                pos += len(idx)
        return self._finish_stats(runs)

    async def _ascore_many(
        self, queries: list[str], docs_lists: list[list[Document]], show_progress: bool = False
    ) -> list[np.ndarray]:
        runs = self._start(docs_lists)
        sem = asyncio.Semaphore(self.concurrency)

        async def one(q: str, w: list[Document]) -> list[int]:
            async with sem:
                got = await self.window_ranker.arank_window(q, w)
                return check_permutation([int(x) for x in got], len(w))

        while any(r.order is None for r in runs):
            need = [(r, q, d, r.calls()) for r, q, d in zip(runs, queries, docs_lists) if r.order is None]
            windows = [(q, [d[j] for j in r.pending[i]]) for r, q, d, idx in need for i in idx]
            jobs = [asyncio.ensure_future(one(q, w)) for q, w in windows]
            try:
                perms = list(await asyncio.gather(*jobs))
            except BaseException:  # one window failed: cancel its siblings, then re-raise
                for job in jobs:
                    job.cancel()
                await asyncio.gather(*jobs, return_exceptions=True)
                raise
            pos = 0
            for r, _, _, idx in need:
                r.answer(dict(zip(idx, perms[pos : pos + len(idx)])))
                pos += len(idx)
        return self._finish_stats(runs)
