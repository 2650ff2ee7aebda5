"""``unirank serve``: a re-ranking HTTP service speaking the Cohere, Jina and TEI rerank APIs.

Needs the ``server`` extra (``pip install 'unirank[server]'``); nothing is imported until used.
"""

from __future__ import annotations

from typing import Any

__all__ = ["MicroBatcher", "ServeConfig", "add_subparser", "create_app", "uvicorn_config"]

_EXPORTS = {
    "create_app": ".app",
    "MicroBatcher": ".batcher",
    "ServeConfig": ".limits",
    "add_subparser": ".cli",
    "uvicorn_config": ".server",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
