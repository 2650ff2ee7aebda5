"""Typed errors raised by unirank."""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["MissingExtraError", "SpecError", "UniRankError", "require"]


class UniRankError(Exception):
    """Base class of unirank's own errors."""


class SpecError(UniRankError, ValueError):
    """A reranker spec that cannot be resolved (unknown prefix, unknown model family...)."""


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
