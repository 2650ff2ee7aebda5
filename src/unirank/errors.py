"""Typed errors raised by unirank."""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["EvalInputError", "MissingExtraError", "SpecError", "UniRankError", "require"]


class UniRankError(Exception):
    """Base class of unirank's own errors."""


class SpecError(UniRankError, ValueError):
    """A reranker spec that cannot be resolved (unknown prefix, unknown model family...)."""


class EvalInputError(UniRankError, ValueError):
    """Evaluation input that would give wrong numbers: a bad run / qrels / queries / corpus file (``path`` and
    ``line`` say where, when known), or a run, qrels and queries that do not fit together (``qids``)."""

    def __init__(
        self, message: str, *, path: str | None = None, line: int | None = None, qids: list[str] | None = None
    ) -> None:
        super().__init__(message)
        self.path = path
        self.line = line
        self.qids = list(qids or [])


class MissingExtraError(UniRankError, ImportError):
    """An optional dependency is missing; the message names the exact ``pip install`` to run."""


def require(module: str, extra: str, package: str | None = None) -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtraError` naming the install command.

    >>> require("json", "core").__name__
    'json'
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised in tests through a fake module name
        pkg = package or module.split(".")[0]
        raise MissingExtraError(
            f"{pkg!r} is required for this feature but is not installed. "
            f"Install it with: pip install 'unirank[{extra}]'"
        ) from exc
