"""m-ary tournament sort for the top k (ListT5, Yoon et al., ACL 2024), with output caching.

The ``n`` candidates sit in the leaves of a fixed tree: leaf groups are input positions ``[0, m)``,
``[m, 2m)``, ...; each group's winner (first element of the window ranker's permutation) advances to a slot
of the next level, grouped by ``m`` again, up to the root, whose winner is the best document. To find the
next one the winner is removed and the tournament is replayed on the same tree: every window whose
content did not change is answered from a cache, so only the windows on the winner's path are recomputed.
Windows of one level are independent and run concurrently (one round per level).

Calls (windows of a single document are free), with ``n_0 = n`` and ``n_{l+1} = ceil(n_l / m)``:

- first tournament: ``C_1 = sum_{l: n_l > 1} (floor(n_l / m) + [n_l mod m >= 2])``;
- each of the ``k - 1`` later extractions: at most ``L = #{l: n_l > 1}`` (= ``ceil(log_m n)``) windows;
- total ``<= C_1 + (k - 1) * L``; it is exactly ``(n - 1) / (m - 1) + (k - 1) * h`` when ``n = m ** h``
  and ``k <= m - 1`` (every window on the path then keeps two or more documents and changes content).

``last_stats["cache_hits"]`` counts windows answered from the cache. Documents below the top ``top_k`` keep
their input order.
"""

from __future__ import annotations

from typing import Any

from .base import Plan, WindowRanker, WindowStrategy, check_int

__all__ = ["Tournament"]


class Tournament(WindowStrategy):
    """ListT5-style m-ary tournament over a window ranker.

    >>> from unirank import Reranker
    >>> from unirank.strategies.base import PointwiseWindow
    >>> t = Tournament(PointwiseWindow(Reranker("bm25"), window_size=3), top_k=2)
    >>> docs = ["sun", "rain", "fog", "rain rain", "snow", "hail", "sleet", "mist", "dew"]
    >>> t.rank("rain", docs).indices[:2]
    [3, 1]
    >>> t.last_stats["calls"], t.last_stats["cache_hits"]  # 3 + 1 windows, then 2 on the winner's path
    (6, 2)
    """

    def __init__(
        self,
        window_ranker: WindowRanker,
        group_size: int | None = None,
        top_k: int | None = 10,
        concurrency: int = 8,
        name: str = "",
    ) -> None:
        super().__init__(window_ranker, concurrency=concurrency, name=name or "tournament")
        size = window_ranker.window_size
        self.group_size = check_int("group_size", min(5, size) if group_size is None else group_size, 2, size)
        self.top_k = check_int("top_k", top_k, 1, allow_none=True)

    def _plan(self, n: int, stats: dict[str, Any]) -> Plan:
        m = self.group_size
        k = n if self.top_k is None else min(self.top_k, n)
        alive = [True] * n
        cache: dict[tuple[int, ...], int] = {}
        stats["cache_hits"] = 0
        top: list[int] = []
        for _ in range(k):
            level: list[int | None] = list(range(n))
            level = [i if alive[i] else None for i in level]
            while len(level) > 1:
                groups = [
                    tuple(x for x in level[g : g + m] if x is not None) for g in range(0, len(level), m)
                ]
                todo = [g for g in groups if len(g) > 1 and g not in cache]
                stats["cache_hits"] += sum(1 for g in groups if len(g) > 1 and g in cache)
                if todo:
                    perms = yield [list(g) for g in todo]
                    for g, p in zip(todo, perms):
                        cache[g] = g[p[0]]
                level = [None if not g else g[0] if len(g) == 1 else cache[g] for g in groups]
            winner = level[0]
            if winner is None:  # pragma: no cover - k <= number of alive documents
                break
            top.append(winner)
            alive[winner] = False
        chosen = set(top)
        return top + [i for i in range(n) if i not in chosen]
