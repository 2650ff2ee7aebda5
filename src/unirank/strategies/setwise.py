"""Setwise re-ranking (Zhuang et al., SIGIR 2024): sorting where one comparison picks the best of a set.

Each model call shows a set of up to ``num_child + 1`` documents and only its *best* one is used (the first
element of the window ranker's permutation). Two sorts, both stopping once the top ``top_k`` are known:

- ``sort="heapsort"``: a ``num_child``-ary max-heap. Building it sifts every internal node down (a
  comparison of a parent with its children per step); nodes of one depth have disjoint subtrees, so their
  sifts run concurrently (one round per sift step). Then ``top_k - 1`` extractions each sift the new root.
  Calls are data-dependent: at most ``sum_internal height(v) + (top_k - 1) * height`` with
  ``height = ceil(log_c((c - 1) n + 1)) - 1`` for ``c = num_child``.
- ``sort="bubblesort"``: ``top_k`` back-to-front passes of windows of ``num_child + 1`` documents that
  overlap by one; a pass over positions ``i..n-1`` moves their best to position ``i`` with
  ``ceil((n - i - 1) / num_child)`` calls. Total ``sum_{i < min(top_k, n - 1)} ceil((n - i - 1) / c)``.

Documents below the top ``top_k`` keep their input (prior) order. Aliases: ``"heap"``, ``"bubble"``.
``method=`` is the old name of ``sort=`` (still accepted when the strategy is built directly; a listwise LLM
ranker's own ``method=`` is its generate / FIRST switch, so from a spec the sort is ``sort=``).
"""

from __future__ import annotations

from typing import Any

from .base import Plan, WindowRanker, WindowStrategy, ask, check_int, heap_top_k

__all__ = ["SETWISE_METHODS", "Setwise", "pick_sort"]

SETWISE_METHODS = ("heapsort", "bubblesort")
_ALIASES = {"heap": "heapsort", "bubble": "bubblesort"}


def pick_sort(
    sort: str | None, method: str | None, default: str, known: tuple[str, ...], aliases: dict[str, str]
) -> str:
    """The sorting algorithm of a setwise / pairwise strategy: ``sort=``, else its old name ``method=``, else
    ``default`` (aliases resolved); ``ValueError`` for an unknown name or two names that disagree.

    >>> pick_sort("heap", None, "allpair", ("allpair", "heapsort"), {"heap": "heapsort"})
    'heapsort'
    """
    got = [aliases.get(x, x) for x in (sort, method) if x is not None]
    if len(set(got)) > 1:
        raise ValueError(f"sort={sort!r} and method={method!r} disagree; pass sort= only")
    name = got[0] if got else default
    if name not in known:
        raise ValueError(f"sort={name!r}; expected one of {known} (aliases: {sorted(aliases)})")
    return name


class Setwise(WindowStrategy):
    """Setwise heap sort / bubble sort over a window ranker.

    >>> from unirank import Reranker
    >>> from unirank.strategies.base import PointwiseWindow
    >>> sw = Setwise(PointwiseWindow(Reranker("bm25"), window_size=4), sort="bubblesort", top_k=1)
    >>> sw.rank("rain", ["sun", "snow", "hail", "rain", "fog"]).indices[0], sw.last_stats["calls"]
    (3, 2)
    """

    def __init__(
        self,
        window_ranker: WindowRanker,
        method: str | None = None,
        num_child: int | None = None,
        top_k: int | None = 10,
        concurrency: int = 8,
        name: str = "",
        sort: str | None = None,
    ) -> None:
        method = pick_sort(sort, method, "heapsort", SETWISE_METHODS, _ALIASES)
        super().__init__(window_ranker, concurrency=concurrency, name=name or f"setwise-{method}")
        size = window_ranker.window_size
        self.sort = self.method = method
        child = min(3, size - 1) if num_child is None else num_child
        self.num_child = check_int("num_child", child, 1, size - 1)
        self.top_k = check_int("top_k", top_k, 1, allow_none=True)

    def _plan(self, n: int, stats: dict[str, Any]) -> Plan:
        k = n if self.top_k is None else min(self.top_k, n)
        if self.method == "bubblesort":
            top = yield from self._bubble(n, k)
        else:
            top = yield from self._heap(n, k)
        chosen = set(top)
        return top + [i for i in range(n) if i not in chosen]

    def _bubble(self, n: int, k: int) -> Plan:
        order, c = list(range(n)), self.num_child
        for i in range(min(k, n - 1)):
            lo, hi = max(n - c - 1, i), n
            while True:
                win = order[lo:hi]
                best = (yield from ask(win))[0]
                order[lo:hi] = [win[best], *win[:best], *win[best + 1 :]]
                if lo == i:
                    break
                hi = lo + 1
                lo = max(hi - c - 1, i)
        return order[:k]

    def _sift(self, heap: list[int], node: int, size: int) -> Plan:
        c = self.num_child
        while True:
            kids = list(range(c * node + 1, min(c * node + c + 1, size)))
            if not kids:
                return []
            best = (yield from ask([heap[node]] + [heap[j] for j in kids]))[0]
            if best == 0:
                return []
            child = kids[best - 1]
            heap[node], heap[child] = heap[child], heap[node]
            node = child

    def _heap(self, n: int, k: int) -> Plan:
        return (yield from heap_top_k(n, k, self.num_child, self._sift))
