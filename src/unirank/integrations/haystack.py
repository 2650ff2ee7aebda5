"""Haystack 2.x: ``UnirankRanker``, a ``@component`` that re-ranks documents with any unirank spec.

``warm_up()`` loads the model (a pipeline calls it; ``run`` calls it too when needed); ``run(query,
documents, top_k=None)`` returns ``{"documents": [...]}``: copies of the input documents with ``score`` set,
best first, at most ``top_k``. Given as a spec string, the reranker round-trips through ``to_dict`` /
``from_dict`` and so through YAML pipelines (``Pipeline.dumps`` / ``Pipeline.loads``; Haystack 3 loads
classes only from trusted modules, so name this one in ``allowed_modules=``)::

    from haystack import Document, Pipeline
    from unirank.integrations.haystack import UnirankRanker

    pipe = Pipeline()
    pipe.add_component("ranker", UnirankRanker("bm25", top_k=2))
    docs = [Document(content="Rain forms when vapour condenses."), Document(content="Cats purr.")]
    pipe.run({"ranker": {"query": "what causes rain", "documents": docs}})["ranker"]["documents"]
    Pipeline.loads(pipe.dumps(), allowed_modules=["unirank.integrations.haystack"])  # the same, from YAML

``pip install 'unirank[haystack]'`` installs ``haystack-ai``; the class is built on first use.
"""

# No ``from __future__ import annotations``: Haystack reads ``run``'s annotations as types for its sockets.
import dataclasses
import logging
from typing import TYPE_CHECKING, Any

from ._common import DEFAULT_SPEC, LazyClass, build_ranker, check_top, require_framework

__all__ = ["UnirankRanker"]

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    UnirankRanker: Any


def _build() -> type:
    haystack = require_framework("haystack", "haystack", "haystack-ai")
    Document = haystack.Document
    component = haystack.component

    def _texts(documents: list[Any]) -> list[str]:
        if not isinstance(documents, list):
            raise TypeError(f"documents must be a list of haystack Documents, got {type(documents).__name__}")
        texts = []
        for i, doc in enumerate(documents):
            if not isinstance(doc, Document):
                raise TypeError(f"document at index {i} is a {type(doc).__name__}, not a haystack Document")
            if not isinstance(doc.content, str):
                raise ValueError(f"document at index {i} (id {doc.id!r}) has no text content to re-rank")
            texts.append(doc.content)
        return texts

    @component
    class UnirankRanker:
        """Re-rank Haystack documents with a unirank reranker; keeps the best ``top_k`` (``None``: all).

        ``reranker``: a spec string (serialisable) or a built :class:`~unirank.base.Ranker` (not
        serialisable); ``normalize``: as in ``Ranker.rank``; ``options``: constructor options for a spec.
        """

        def __init__(
            self,
            reranker: Any = DEFAULT_SPEC,
            top_k: int | None = 10,
            normalize: str | None = None,
            options: dict[str, Any] | None = None,
        ) -> None:
            if not isinstance(reranker, str):
                build_ranker(reranker, options)  # type check: a Ranker, and no options with it
            self.reranker = reranker
            self.top_k = check_top("top_k", top_k)
            self.normalize = normalize
            self.options = dict(options or {})
            self._ranker = None if isinstance(reranker, str) else reranker

        def warm_up(self) -> None:
            """Build the ranker (loads the model weights) once."""
            if self._ranker is None:
                self._ranker = build_ranker(self.reranker, self.options)

        def to_dict(self) -> dict[str, Any]:
            if not isinstance(self.reranker, str):
                raise TypeError(
                    "UnirankRanker built from a Ranker object cannot be serialised; "
                    "give reranker= as a spec string"
                )
            return haystack.default_to_dict(
                self, reranker=self.reranker, top_k=self.top_k, normalize=self.normalize, options=self.options
            )

        @classmethod
        def from_dict(cls, data: dict[str, Any]) -> Any:
            return haystack.default_from_dict(cls, data)

        def _ready(self, documents: list[Any], top_k: int | None) -> tuple[list[str], int | None]:
            texts = _texts(documents)
            if self._ranker is None:
                logger.info("UnirankRanker.run before warm_up(): loading %r now", self.reranker)
                self.warm_up()
            return texts, check_top("top_k", self.top_k if top_k is None else top_k)

        @staticmethod
        def _keep(documents: list[Any], results: Any) -> dict[str, list[Any]]:
            return {"documents": [dataclasses.replace(documents[h.index], score=h.score) for h in results]}

        @component.output_types(documents=list[Document])
        def run(
            self, query: str, documents: list[Document], top_k: int | None = None
        ) -> dict[str, list[Any]]:
            """The ``top_k`` best documents for ``query`` (``top_k`` overrides the instance's)."""
            texts, k = self._ready(documents, top_k)
            assert self._ranker is not None
            return self._keep(documents, self._ranker.rank(query, texts, top_k=k, normalize=self.normalize))

        @component.output_types(documents=list[Document])
        async def run_async(
            self, query: str, documents: list[Document], top_k: int | None = None
        ) -> dict[str, list[Any]]:
            """Async :meth:`run` (``Ranker.arank``)."""
            texts, k = self._ready(documents, top_k)
            assert self._ranker is not None
            res = await self._ranker.arank(query, texts, top_k=k, normalize=self.normalize)
            return self._keep(documents, res)

    return UnirankRanker  # type: ignore[no-any-return]


_LAZY = LazyClass("UnirankRanker", __name__, _build)


def __getattr__(name: str) -> Any:
    if name == "UnirankRanker":
        return _LAZY.get()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
