"""Sliding-window listwise re-ranking (RankGPT, Sun et al. 2023), back to front, with several passes.

A window of ``window`` documents slides from the end of the list to the front in steps of ``stride``;
every window is re-ordered by the window ranker, so the best ``window - stride`` documents seen so far are
carried to the front. After one pass over ``n > window`` documents the top ``window - stride`` positions
hold, with an exact window ranker, the true top ``window - stride`` in order.

Calls: a pass over ``L`` documents sends ``1`` window when ``L <= window``, else
``1 + ceil((L - window) / stride)`` windows (the front window is anchored at the start of the range and
stays full). Windows within a pass are sequential (each depends on the last); queries are batched.

Passes and early stop: with ``skip_fixed=True`` (default) pass ``p`` (0-based) only re-ranks positions
``p * (window - stride)`` onwards, the prefix the earlier passes already settled. The loop stops after
``passes`` passes, or as soon as the settled prefix covers ``top_k`` (``top_k=None``: all ``n``), or when a
pass fitted in a single window (everything left is sorted). ``passes=None`` means "until that happens":
with an exact window ranker the result is then exactly the ideal order (of the top ``top_k``).
"""

from __future__ import annotations

from typing import Any

from .base import Plan, WindowRanker, WindowStrategy, ask, check_int

__all__ = ["SlidingWindow"]


class SlidingWindow(WindowStrategy):
    """RankGPT-style sliding window over a window ranker.

    >>> from unirank import Reranker
    >>> from unirank.strategies.base import PointwiseWindow
    >>> sw = SlidingWindow(PointwiseWindow(Reranker("bm25"), window_size=2), stride=1, passes=None)
    >>> sw.rank("rain", ["sun", "rain", "rain rain rain", "snow"]).indices[:2]
    [2, 1]
    >>> sw.last_stats["calls"]  # passes over 4, 3 and 2 documents: 3 + 2 + 1 windows
    6
    """

    def __init__(
        self,
        window_ranker: WindowRanker,
        window: int | None = None,
        stride: int | None = None,
        passes: int | None = 1,
        top_k: int | None = None,
        skip_fixed: bool = True,
        concurrency: int = 8,
        name: str = "",
    ) -> None:
        super().__init__(window_ranker, concurrency=concurrency, name=name or "sliding")
        size = window_ranker.window_size
        self.window = check_int("window", size if window is None else window, 2, size)
        self.stride = check_int("stride", self.window // 2 if stride is None else stride, 1, self.window - 1)
        self.passes = check_int("passes", passes, 1, allow_none=True)
        self.top_k = check_int("top_k", top_k, 1, allow_none=True)
        self.skip_fixed = bool(skip_fixed)

    def _plan(self, n: int, stats: dict[str, Any]) -> Plan:
        order = list(range(n))
        w, s = self.window, self.stride
        target = n if self.top_k is None else min(self.top_k, n)
        start = settled = done = 0
        while self.passes is None or done < self.passes:
            length = n - start
            if length <= 1 or settled >= target:
                break
            lo, hi = max(n - w, start), n
            while True:
                win = order[lo:hi]
                perm = yield from ask(win)
                order[lo:hi] = [win[i] for i in perm]
                if lo == start:
                    break
                lo = max(lo - s, start)
                hi = lo + w
            done += 1
            if length <= w:
                break
            settled += w - s
            if self.skip_fixed:
                start = settled
        stats["passes"] = done
        return order
