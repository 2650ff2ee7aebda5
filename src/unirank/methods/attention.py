"""In-context re-ranking (ICR, Chen et al. 2024): relevance from the attention an LLM pays to each document.

All candidates go into ONE prompt, the query last::

    Here are some paragraphs:\\n\\n[document 1] <doc 1>\\n\\n...[document n] <doc n>\\n\\n
    Please find information that is relevant to the following query in the paragraphs above.\\n\\nQuery: <q>

The score of document ``i`` is the attention from the query's tokens to document ``i``'s tokens, summed over
heads and layers (optionally a subset, ``layers=[...]``) and averaged over query tokens. Attention that a
document draws whatever the query is (position, length) is removed by calibration: the same prompt with the
content-free query ``"N/A"`` is run, and its scores are subtracted. That is two forward passes per query, for
any number of documents that fit the context (documents are cut to ``max_doc_tokens`` and, if the list is
still too long, evenly; a context too small for even one token per document raises ``ValueError``).

Spec: ``icr:<model>`` with a local causal LM (HF id, folder, ``.gguf``, ``"gemma3-270m"``). Attention weights
are not exposed by OpenAI-compatible servers, so ``icr:openai:...`` raises a clear error. The model is
switched to eager attention (the only implementation that returns weights).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..base import Capabilities, Ranker
from ..errors import SpecError
from ..types import Document, ScoreKind
from .llm_pointwise import build_engine, is_local

__all__ = ["ICRRanker"]

HEAD = "Here are some paragraphs:\n\n"
DOC = "[document {i}] "
TAIL = (
    "\n\nPlease find information that is relevant to the following query in the paragraphs above.\n\nQuery:"
)
CONTENT_FREE = "N/A"


class ICRRanker(Ranker):
    """Attention-based in-context re-ranking with content-free calibration (two forward passes).

    >>> r = ICRRanker("gemma3-270m")                                              # doctest: +SKIP
    >>> r.rank("what causes rain", ["Rain is condensed vapour.", "Cats purr."]).ids  # doctest: +SKIP
    """

    score_kind = ScoreKind.UNBOUNDED
    capabilities = Capabilities(pointwise=False, listwise=True)

    def __init__(
        self,
        model: Any = None,
        *,
        layers: list[int] | None = None,
        max_doc_tokens: int = 300,
        calibrate: bool = True,
        name: str | None = None,
        **options: Any,
    ) -> None:
        super().__init__(name or f"icr:{model}", calibrator=options.pop("calibrator", None))
        if "engine" not in options:
            options.setdefault("attn_implementation", "eager")
        if str(model).startswith("openai:") or options.get("base_url"):
            raise SpecError(
                "icr needs attention weights, which OpenAI-compatible servers do not expose: "
                "use a local model"
            )
        self.engine = build_engine(model, options)
        if options:
            raise TypeError(f"unknown option(s) for icr: {sorted(options)}")
        if not is_local(self.engine):
            raise SpecError("icr needs a local causal LM engine (attention weights)")
        if max_doc_tokens < 1:
            raise ValueError("max_doc_tokens must be >= 1")
        self.layers, self.max_doc_tokens, self.calibrate = layers, max_doc_tokens, calibrate

    def build_input(
        self, query: str, docs: list[Document]
    ) -> tuple[list[int], list[tuple[int, int]], list[int]]:
        """``(token ids, [start, end) span of each document's text, positions of the query tokens)``.

        Segments are tokenised separately and concatenated, so the spans are exact.
        """
        e = self.engine
        enc = e.encode
        bos = enc("", special=True)
        fixed = len(bos) + len(enc(HEAD, False)) + len(enc(TAIL, False)) + len(enc(" " + query, False))
        fixed += sum(len(enc(DOC.format(i=i + 1), False)) + len(enc("\n\n", False)) for i in range(len(docs)))
        room = e.max_length - fixed
        budget = min(self.max_doc_tokens, room // max(len(docs), 1))
        if budget < 1:
            raise ValueError(
                f"the context limit of {e.max_length} tokens is too small for {len(docs)} documents in one "
                f"ICR prompt: the template and query alone take {fixed} tokens"
            )
        ids = bos + enc(HEAD, False)
        spans = []
        for i, d in enumerate(docs):
            ids += enc(DOC.format(i=i + 1), False)
            doc_ids = enc(d.text, False)[:budget] or enc(" ", False)[:1]
            spans.append((len(ids), len(ids) + len(doc_ids)))
            ids += doc_ids + enc("\n\n", False)
        ids += enc(TAIL, False)
        q = enc(" " + query, False)
        rows = list(range(len(ids), len(ids) + len(q)))
        return ids + q, spans, rows

    def raw_scores(self, query: str, docs: list[Document]) -> np.ndarray:
        """Uncalibrated scores: the mean over query tokens of the attention mass on each document
        (one forward pass)."""
        ids, spans, rows = self.build_input(query, docs)
        att = self.engine.attention_rows(ids, rows, self.layers).mean(0)
        return np.array([att[a:b].sum() for a, b in spans])

    def _score_one(self, query: str, docs: list[Document]) -> np.ndarray:
        s = self.raw_scores(query, docs)
        return s - self.raw_scores(CONTENT_FREE, docs) if self.calibrate else s

    def _score_many(
        self, queries: list[str], docs_lists: list[list[Document]], show_progress: bool = False
    ) -> list[np.ndarray]:
        return [self._score_one(q, d) for q, d in zip(queries, docs_lists)]
