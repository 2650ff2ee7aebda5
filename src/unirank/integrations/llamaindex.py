"""LlamaIndex: ``UnirankPostprocessor``, a ``BaseNodePostprocessor`` that re-ranks with any unirank spec.

Put it in a query engine's ``node_postprocessors`` or call ``postprocess_nodes`` directly; it returns new
``NodeWithScore`` objects (the same nodes) scored by the reranker, best first, at most ``top_n``. The text
scored is ``node.get_content(metadata_mode=...)``, ``MetadataMode.EMBED`` by default as LlamaIndex's own
rerankers do::

    from llama_index.core.schema import NodeWithScore, TextNode
    from unirank.integrations.llamaindex import UnirankPostprocessor

    post = UnirankPostprocessor("bm25", top_n=1)
    texts = ["rain falls from clouds", "cats purr"]
    nodes = [NodeWithScore(node=TextNode(text=t)) for t in texts]
    post.postprocess_nodes(nodes, query_str="what causes rain")[0].score

``pip install 'unirank[llamaindex]'`` installs ``llama-index-core``; the class is built on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._common import DEFAULT_SPEC, LazyClass, build_ranker, check_top, require_framework, spec_of

__all__ = ["UnirankPostprocessor"]

if TYPE_CHECKING:
    from llama_index.core.postprocessor.types import BaseNodePostprocessor as UnirankPostprocessor


def _build() -> type:
    types = require_framework("llama_index.core.postprocessor.types", "llamaindex", "llama-index-core")
    from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle
    from pydantic import Field, PrivateAttr, field_validator

    def _query(query_bundle: QueryBundle | None) -> str:
        if query_bundle is None:
            raise ValueError("UnirankPostprocessor needs a query: pass query_bundle= or query_str=")
        return query_bundle.query_str

    class UnirankPostprocessor(types.BaseNodePostprocessor):  # type: ignore[misc, name-defined]
        """Re-rank LlamaIndex nodes with a unirank reranker; keeps the best ``top_n`` (``None``: all).

        ``reranker``: a spec string or a built :class:`~unirank.base.Ranker`; ``normalize``: as in
        ``Ranker.rank``; ``metadata_mode``: what of the node is scored; ``options``: constructor options.
        """

        reranker: str = Field(default=DEFAULT_SPEC, description="unirank spec (or the built ranker's name)")
        top_n: int | None = Field(default=2, description="how many nodes to keep; None keeps all")
        normalize: str | None = Field(default=None, description="score map, as in Ranker.rank")
        metadata_mode: MetadataMode = Field(default=MetadataMode.EMBED)
        options: dict[str, Any] = Field(default_factory=dict)
        _ranker: Any = PrivateAttr(default=None)

        def __init__(self, reranker: Any = DEFAULT_SPEC, **data: Any) -> None:
            ranker = build_ranker(reranker, data.get("options"))
            super().__init__(reranker=spec_of(reranker), **data)
            self._ranker = ranker

        @field_validator("top_n", mode="before")
        @classmethod
        def _check_top_n(cls, value: Any) -> int | None:
            return check_top("top_n", value)

        @classmethod
        def class_name(cls) -> str:
            return "UnirankPostprocessor"

        @property
        def ranker(self) -> Any:
            """The :class:`~unirank.base.Ranker` behind this postprocessor."""
            return self._ranker

        def _texts(self, nodes: list[NodeWithScore]) -> list[str]:
            return [n.node.get_content(metadata_mode=self.metadata_mode) for n in nodes]

        @staticmethod
        def _keep(nodes: list[NodeWithScore], results: Any) -> list[NodeWithScore]:
            return [NodeWithScore(node=nodes[hit.index].node, score=hit.score) for hit in results]

        def _postprocess_nodes(
            self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
        ) -> list[NodeWithScore]:
            res = self._ranker.rank(
                _query(query_bundle), self._texts(nodes), top_k=self.top_n, normalize=self.normalize
            )
            return self._keep(nodes, res)

        async def _apostprocess_nodes(
            self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
        ) -> list[NodeWithScore]:
            res = await self._ranker.arank(
                _query(query_bundle), self._texts(nodes), top_k=self.top_n, normalize=self.normalize
            )
            return self._keep(nodes, res)

    return UnirankPostprocessor


_LAZY = LazyClass("UnirankPostprocessor", __name__, _build)


def __getattr__(name: str) -> Any:
    if name == "UnirankPostprocessor":
        return _LAZY.get()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
