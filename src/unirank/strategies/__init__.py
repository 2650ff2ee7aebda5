"""Model-agnostic ordering strategies over a "rank these <= w documents" primitive (:class:`WindowRanker`).

Every strategy is a :class:`~unirank.base.Ranker` with ``ScoreKind.RANK`` wrapping a window ranker; build one
by name with :func:`build_strategy`. Submodules are imported on first use, so ``import unirank.strategies``
stays light.

>>> from unirank import Reranker
>>> from unirank.strategies import PointwiseWindow, build_strategy
>>> s = build_strategy("jointrank", PointwiseWindow(Reranker("bm25"), window_size=3), aggregation="bt")
>>> s.rank("rain", ["sun", "rain", "fog", "rain rain"]).indices[0]
3
"""

from __future__ import annotations

import importlib
import inspect
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from ..base import Ranker
    from .base import WindowRanker

__all__ = [
    "STRATEGIES",
    "JointRank",
    "Pairwise",
    "PointwiseWindow",
    "Setwise",
    "SlidingWindow",
    "Tournament",
    "WindowRanker",
    "WindowStrategy",
    "build_strategy",
]

#: strategy name -> "module:Class" (relative to this package)
STRATEGIES: dict[str, str] = {
    "sliding": "sliding_window:SlidingWindow",
    "setwise": "setwise:Setwise",
    "pairwise": "pairwise:Pairwise",
    "tournament": "tournament:Tournament",
    "jointrank": "jointrank:JointRank",
}

_LAZY = {
    "SlidingWindow": "sliding_window",
    "Setwise": "setwise",
    "Pairwise": "pairwise",
    "Tournament": "tournament",
    "JointRank": "jointrank",
    "PointwiseWindow": "base",
    "WindowRanker": "base",
    "WindowStrategy": "base",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_strategy(name: str, window_ranker: WindowRanker, **options: Any) -> Ranker:
    """Build the strategy ``name`` (one of :data:`STRATEGIES`) over ``window_ranker``.

    Unknown names and unknown or invalid options raise ``ValueError`` (naming what is accepted).

    >>> from unirank import Reranker
    >>> from unirank.strategies import PointwiseWindow
    >>> build_strategy("sliding", PointwiseWindow(Reranker("bm25"), window_size=4), stride=2).stride
    2
    """
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; expected one of {sorted(STRATEGIES)}")
    module, cls_name = STRATEGIES[name].split(":")
    cls = getattr(importlib.import_module(f".{module}", __name__), cls_name)
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "window_ranker")]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"strategy {name!r} got unknown options {unknown}; accepted: {accepted}")
    return cls(window_ranker, **options)
