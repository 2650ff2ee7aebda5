"""unirank: every re-ranking method behind one small API.

>>> from unirank import Document, RankedResults
>>> RankedResults.from_scores("q", [Document("a")], [1.0]).top(1)[0].text
'a'
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .types import Document, RankedResults, Result, ScoreKind

__version__ = "0.1.0"

__all__ = [
    "Document",
    "Fusion",
    "Pipeline",
    "RankedResults",
    "Ranker",
    "Reranker",
    "Result",
    "ScoreKind",
    "__version__",
]

if TYPE_CHECKING:
    from .base import Ranker
    from .pipeline import Pipeline
    from .reranker import Reranker
    from .strategies.fusion import Fusion

_LAZY = {
    "Ranker": ("unirank.base", "Ranker"),
    "Reranker": ("unirank.reranker", "Reranker"),
    "Pipeline": ("unirank.pipeline", "Pipeline"),
    "Fusion": ("unirank.strategies.fusion", "Fusion"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'unirank' has no attribute {name!r}")
