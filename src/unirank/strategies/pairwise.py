"""Pairwise ranking prompting (PRP, Qin et al., NAACL 2024 findings) over a window ranker of two documents.

A comparison of ``a`` and ``b`` asks the window ranker about the window ``[a, b]`` and, with
``both_orders=True`` (default, as PRP does to cancel position bias), also ``[b, a]``; the two calls are
independent and run concurrently. ``a`` beats ``b`` when it wins more of the asked orders; a split decision
is a tie, broken for sorting by the prior (input) order.

- ``sort="allpairs"`` (PRP-Allpair): every pair is compared, all at once (one round); documents are ordered
  by their number of wins (ties: input order). Calls: ``n (n - 1)`` (``n (n - 1) / 2`` with one order).
- ``sort="heapsort"`` (PRP-Sorting): a binary max-heap built level by level (sifts of one depth run
  concurrently), then ``top_k - 1`` extractions. A sift step compares the two children, then the winner
  with the parent: at most ``2 * o`` calls per step, ``o`` the orders per comparison.
- ``sort="bubblesort"`` (PRP-Sliding-K): ``top_k`` back-to-front passes of adjacent comparisons, swapping
  when the lower one wins. Calls: ``o * sum_{i < min(top_k, n - 1)} (n - 1 - i)``.

Aliases: ``"allpair"``, ``"heap"``, ``"bubble"`` / ``"sliding"`` (PRP-Sliding-K); ``method=`` is the old name
of ``sort=`` (see :mod:`unirank.strategies.setwise`). Documents below the
top ``top_k`` keep their input order (heap sort) or their partially sorted order
(bubble sort); ``top_k`` does not apply to ``allpair``, which orders everything.
"""

from __future__ import annotations

from typing import Any

from .base import Plan, WindowRanker, WindowStrategy, check_int, heap_top_k
from .setwise import pick_sort

__all__ = ["PAIRWISE_METHODS", "Pairwise"]

PAIRWISE_METHODS = ("allpair", "heapsort", "bubblesort")
_ALIASES = {"allpairs": "allpair", "heap": "heapsort", "bubble": "bubblesort", "sliding": "bubblesort"}


class Pairwise(WindowStrategy):
    """PRP all-pairs / heap sort / bubble sort over a window ranker.

    >>> from unirank import Reranker
    >>> from unirank.strategies.base import PointwiseWindow
    >>> prp = Pairwise(PointwiseWindow(Reranker("bm25"), window_size=2), sort="allpairs")
    >>> prp.rank("rain", ["sun", "rain", "rain rain"]).indices, prp.last_stats["calls"]
    ([2, 1, 0], 6)
    """

    def __init__(
        self,
        window_ranker: WindowRanker,
        method: str | None = None,
        top_k: int | None = 10,
        both_orders: bool = True,
        concurrency: int = 8,
        name: str = "",
        sort: str | None = None,
    ) -> None:
        method = pick_sort(sort, method, "allpair", PAIRWISE_METHODS, _ALIASES)
        super().__init__(window_ranker, concurrency=concurrency, name=name or f"pairwise-{method}")
        if window_ranker.window_size < 2:
            raise ValueError(f"pairwise needs window_size >= 2, got {window_ranker.window_size}")
        self.sort = self.method = method
        self.top_k = check_int("top_k", top_k, 1, allow_none=True)
        self.both_orders = bool(both_orders)

    def _windows(self, a: int, b: int) -> list[list[int]]:
        return [[a, b], [b, a]] if self.both_orders else [[a, b]]

    @staticmethod
    def _wins_of_first(a: int, perms: list[list[int]]) -> int:
        """How many of the asked orders ``a`` (the first element of the first window) won."""
        return sum(1 for j, p in enumerate(perms) if p[0] == (0 if j == 0 else 1))

    def _compare(self, a: int, b: int) -> Plan:
        """Sub-plan returning the better of ``a`` and ``b`` (ties: the smaller input position)."""
        perms = yield self._windows(a, b)
        wins = self._wins_of_first(a, perms)
        half = len(perms) / 2
        if wins == half:
            return [min(a, b)]
        return [a] if wins > half else [b]

    def _plan(self, n: int, stats: dict[str, Any]) -> Plan:
        k = n if self.top_k is None else min(self.top_k, n)
        if self.method == "allpair":
            return (yield from self._allpair(n))
        if self.method == "bubblesort":
            order = list(range(n))
            for i in range(min(k, n - 1)):
                for j in range(n - 2, i - 1, -1):
                    better = (yield from self._compare(order[j], order[j + 1]))[0]
                    if better == order[j + 1]:
                        order[j], order[j + 1] = order[j + 1], order[j]
            return order
        top = yield from self._heap(n, k)
        chosen = set(top)
        return top + [i for i in range(n) if i not in chosen]

    def _allpair(self, n: int) -> Plan:
        pairs = [(a, b) for a in range(n) for b in range(a + 1, n)]
        perms = yield [w for a, b in pairs for w in self._windows(a, b)]
        wins = [0.0] * n
        per = 2 if self.both_orders else 1
        for p, (a, b) in enumerate(pairs):
            won = self._wins_of_first(a, perms[p * per : (p + 1) * per])
            wins[a] += won
            wins[b] += per - won
        return sorted(range(n), key=lambda i: (-wins[i], i))

    def _sift(self, heap: list[int], node: int, size: int) -> Plan:
        while True:
            kids = [j for j in (2 * node + 1, 2 * node + 2) if j < size]
            if not kids:
                return []
            child = kids[0]
            if len(kids) == 2:
                best = (yield from self._compare(heap[kids[0]], heap[kids[1]]))[0]
                child = kids[0] if best == heap[kids[0]] else kids[1]
            best = (yield from self._compare(heap[node], heap[child]))[0]
            if best == heap[node]:
                return []
            heap[node], heap[child] = heap[child], heap[node]
            node = child

    def _heap(self, n: int, k: int) -> Plan:
        return (yield from heap_top_k(n, k, 2, self._sift))
