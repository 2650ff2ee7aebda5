"""In-context re-ranking (ICR, Chen et al. 2024): relevance from the attention an LLM pays to each document.

All candidates go into ONE prompt, the query last::

    Here are some paragraphs:\\n\\n[document 1] <doc 1>\\n\\n...[document n] <doc n>\\n\\n
    Please find information that is relevant to the following query in the paragraphs above.\\n\\nQuery: <q>

The score of document ``i`` is the attention from the query's tokens to document ``i``'s tokens, summed over
heads and layers (optionally a subset, ``layers=[...]``) and averaged over query tokens. Attention that a
document draws whatever the query is (position, length) is removed by calibration: the same prompt with the
content-free query ``"N/A"`` is run, and its scores are subtracted. Documents are cut to
``max_doc_tokens`` and, if the list is still too long, evenly (a context too small for even one token per
document raises ``ValueError``); the cut counts the longer of the query and ``"N/A"``, so both passes see
the same documents.

The two passes share every token before the query, so that prefix runs ONCE with its KV cache kept and the
query and ``"N/A"`` suffixes continue from it as ONE batch of two rows
(:func:`unirank.backends.causal_attention.prefix_attention`: exact, sliding-window layers included): two
model forwards per query (``engine.forward_calls``: the prefix, then the two-row batch), for any number of
documents that fit the context; ``engine.usage`` counts two prompts, the prefix's tokens once. A model
whose forward takes no ``position_ids`` or cache runs the two prompts whole (two forwards; three when the
prefix's cache turns out not to expand to a batch). Speed vs two whole forwards per query:
``benchmarks/icr_prefix.py``.
``calibrate=False`` is one forward over the one prompt. Tokenisation is one batched tokenizer call per query
(the query, ``"N/A"`` and every document; the template pieces once per ranker).

Spec: ``icr:<model>`` with a local causal LM (HF id, folder, ``.gguf``, ``"gemma3-270m"``). Attention weights
are not exposed by OpenAI-compatible servers, so ``icr:openai:...`` raises a clear error. The model is
switched to eager attention (the only implementation that returns weights).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backends.causal_attention import prefix_attention
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
    """Attention-based in-context re-ranking with content-free calibration (a shared prefix, two forwards).

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

    def _fixed(self, n_docs: int) -> dict[str, Any]:
        """Token ids of the template pieces, encoded once per ranker (the document labels as needed)."""
        e, cache = self.engine, self.__dict__.setdefault("_pieces", {})
        if not cache:
            bos = e.encode("", special=True)
            head, tail, sep, space = e.encode_many([HEAD, TAIL, "\n\n", " "], special=False)
            cache.update(bos=bos, head=head, tail=tail, sep=sep, space=space, labels=[])
        labels = cache["labels"]
        if len(labels) < n_docs:
            labels += e.encode_many([DOC.format(i=i + 1) for i in range(len(labels), n_docs)], special=False)
        return cache

    def _layout(
        self, docs: list[Document], doc_ids: list[list[int]], query_len: int
    ) -> tuple[list[int], list[tuple[int, int]]]:
        """``(prompt ids up to and including the TAIL, document spans)`` for a query of ``query_len`` tokens:
        documents cut to ``max_doc_tokens`` and, if the prompt is still over the context, evenly."""
        e, p = self.engine, self._fixed(len(docs))
        labels, sep = p["labels"][: len(docs)], p["sep"]
        fixed = len(p["bos"]) + len(p["head"]) + len(p["tail"]) + query_len
        fixed += sum(len(lab) for lab in labels) + len(sep) * len(docs)
        budget = min(self.max_doc_tokens, (e.max_length - fixed) // max(len(docs), 1))
        if budget < 1:
            raise ValueError(
                f"the context limit of {e.max_length} tokens is too small for {len(docs)} documents in one "
                f"ICR prompt: the template and query alone take {fixed} tokens"
            )
        ids = p["bos"] + p["head"]
        spans = []
        for lab, d in zip(labels, doc_ids):
            ids += lab
            d = d[:budget] or p["space"][:1]
            spans.append((len(ids), len(ids) + len(d)))
            ids += d + sep
        return ids + p["tail"], spans

    def _encode(self, queries: list[str], docs: list[Document]) -> tuple[list[list[int]], list[list[int]]]:
        """Token ids of ``" " + query`` for each query and of each document's text: ONE tokenizer call."""
        got = self.engine.encode_many([" " + q for q in queries] + [d.text for d in docs], special=False)
        for q, ids in zip(queries, got):
            if not ids:
                raise ValueError(f"the query {q!r} encodes to no tokens; ICR needs query tokens")
        return got[: len(queries)], got[len(queries) :]

    def build_input(
        self, query: str, docs: list[Document]
    ) -> tuple[list[int], list[tuple[int, int]], list[int]]:
        """``(token ids, [start, end) span of each document's text, positions of the query tokens)``.

        Segments are tokenised separately (the documents and the query in one batched call, the template
        pieces once per ranker) and concatenated, so the spans are exact.
        """
        (q,), doc_ids = self._encode([query], docs)
        ids, spans = self._layout(docs, doc_ids, len(q))
        return ids + q, spans, list(range(len(ids), len(ids) + len(q)))

    def raw_scores(self, query: str, docs: list[Document]) -> np.ndarray:
        """Uncalibrated scores: the mean over query tokens of the attention mass on each document
        (one forward pass)."""
        ids, spans, rows = self.build_input(query, docs)
        att = self.engine.attention_rows(ids, rows, self.layers).mean(0)
        return _span_sums(att, spans)

    def _score_one(self, query: str, docs: list[Document]) -> np.ndarray:
        if not self.calibrate:
            return self.raw_scores(query, docs)
        (q, cf), doc_ids = self._encode([query, CONTENT_FREE], docs)
        prefix, spans = self._layout(docs, doc_ids, max(len(q), len(cf)))
        att_q, att_cf = prefix_attention(self.engine, prefix, [q, cf], self.layers)
        return _span_sums(att_q.mean(0), spans) - _span_sums(att_cf.mean(0), spans)

    def _score_many(
        self, queries: list[str], docs_lists: list[list[Document]], show_progress: bool = False
    ) -> list[np.ndarray]:
        return [self._score_one(q, d) for q, d in zip(queries, docs_lists)]


def _span_sums(att: np.ndarray, spans: list[tuple[int, int]]) -> np.ndarray:
    return np.array([att[a:b].sum() for a, b in spans])
