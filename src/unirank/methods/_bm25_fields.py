"""Field handling for :mod:`unirank.methods.lexical`: flat vs multi-field BM25, one bm25s index per field.

``fields="flat"`` indexes the document text as one field. ``fields="multi"`` indexes the title
(``metadata["title"]``) and the body (the text less a leading ``title + " "``) as two fields, each with its
own BM25 statistics (document frequencies, N, average field length), and scores a document with
``sum_f w_f * BM25_f(query, doc)``: a Lucene multi-field query (one SHOULD clause per field, boost ``w_f``).
Statistics follow bm25s in both modes: N is the corpus size and the average field length is taken over all
documents, an empty field counting as length 0 (Lucene counts only the documents that have the field).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import require
from ..types import Document

FIELD_MODES = ("flat", "multi")
MULTI_FIELDS = ("title", "body")  # the field order of field_weights and of the saved sub-folders


def check_fields(fields: str, field_weights: Sequence[float] | None) -> tuple[str, tuple[float, ...] | None]:
    """Validated ``(fields, field_weights)``: weights ``None`` for flat, (title, body) boosts for multi."""
    mode = str(fields).strip().lower()
    if mode not in FIELD_MODES:
        raise ValueError(f"unknown fields {fields!r}; expected one of {FIELD_MODES}")
    if mode == "flat":
        if field_weights is not None:
            raise ValueError("field_weights applies to fields='multi' only")
        return mode, None
    weights = (1.0, 1.0) if field_weights is None else tuple(float(w) for w in field_weights)
    if len(weights) != len(MULTI_FIELDS):
        raise ValueError(f"field_weights must be {len(MULTI_FIELDS)} numbers {MULTI_FIELDS}, got {weights}")
    if not all(math.isfinite(w) and w >= 0 for w in weights) or not any(w > 0 for w in weights):
        raise ValueError(f"field_weights must be finite, >= 0 and not all 0, got {weights}")
    return mode, weights


def split_title(doc: Document) -> tuple[str, str]:
    """``(title, body)``; the body is the text less a leading ``title + " "`` (how ``to_documents`` joins)."""
    title = doc.metadata.get("title", "") if doc.metadata else ""
    title = title if isinstance(title, str) else ""
    head = title.strip()
    text = doc.text
    if head and text.startswith(head + " "):
        return title, text[len(head) + 1 :]
    return title, text


def field_texts(doc: Document, mode: str) -> tuple[str, ...]:
    """The texts of ``doc``'s fields: ``(text,)`` for flat, ``(title, body)`` for multi."""
    return (doc.text,) if mode == "flat" else split_title(doc)


def field_dirs(path: Path, mode: str) -> list[Path]:
    """Where each field's bm25s index is saved: the folder itself (flat) or one sub-folder per field."""
    return [path] if mode == "flat" else [path / name for name in MULTI_FIELDS]


class FieldIndex:
    """One field's bm25s index and average length."""

    def __init__(self, model: Any, avgdl: float) -> None:
        self.model, self.avgdl = model, float(avgdl)

    @classmethod
    def build(
        cls, tokens: list[list[str]], params: dict[str, Any], dtype: str, show_progress: bool = False
    ) -> FieldIndex:
        bm25s = require("bm25s", "bm25")
        vocab: dict[str, int] = {}
        ids = [[vocab.setdefault(t, len(vocab)) for t in toks] for toks in tokens]
        if not vocab:  # every document's field is empty after analysis: all its scores will be 0
            vocab[""] = 0
        model = bm25s.BM25(
            k1=params["k1"], b=params["b"], delta=params["delta"], method=params["method"], dtype=dtype
        )
        with np.errstate(divide="ignore", invalid="ignore"):  # avgdl = 0 when every field is empty
            model.index((ids, vocab), show_progress=show_progress)
        return cls(model, float(np.mean([len(x) for x in ids])) if ids else 0.0)

    def doc_freqs(self, terms: Sequence[str]) -> np.ndarray:
        indptr = self.model.scores["indptr"]
        out = np.zeros(len(terms))
        for j, t in enumerate(terms):
            i = self.model.vocab_dict.get(t)
            if i is not None and i + 1 < len(indptr):
                out[j] = indptr[i + 1] - indptr[i]
        return out

    def scores(self, terms: Sequence[str], n_docs: int) -> np.ndarray:
        """BM25 of every document for the analysed query ``terms`` (repeats count, as in bm25s)."""
        vocab, n_terms = self.model.vocab_dict, len(self.model.scores["indptr"]) - 1
        ids = [vocab[t] for t in terms if t in vocab and vocab[t] < n_terms]
        if not ids:
            return np.zeros(n_docs)
        return np.asarray(self.model.get_scores_from_ids(ids), dtype=np.float64)

    def save(self, path: Path, corpus: list[dict[str, Any]] | None = None) -> None:
        self.model.save(path, corpus=corpus, show_progress=False, raise_on_serialization_error=True)

    @classmethod
    def load(cls, path: Path, avgdl: float, load_corpus: bool = False) -> tuple[FieldIndex, list[Any]]:
        """The index saved in ``path`` and, with ``load_corpus``, the corpus saved with it."""
        bm25s = require("bm25s", "bm25")
        model = bm25s.BM25.load(path, load_corpus=load_corpus, show_progress=False)
        corpus = list(model.corpus or []) if load_corpus else []
        model.corpus = None
        return cls(model, avgdl), corpus


def save_indexes(path: Path, mode: str, indexes: list[FieldIndex], corpus: list[dict[str, Any]]) -> Any:
    """Save each field's index (the corpus with the first); returns the average lengths to record."""
    for i, (fi, where) in enumerate(zip(indexes, field_dirs(path, mode))):
        fi.save(where, corpus=corpus if i == 0 else None)
    return indexes[0].avgdl if mode == "flat" else [fi.avgdl for fi in indexes]


def load_indexes(path: Path, mode: str, avgdl: Any) -> tuple[list[FieldIndex], list[Any]]:
    """What :func:`save_indexes` wrote: the field indexes and the corpus."""
    dirs = field_dirs(path, mode)
    avgdls = avgdl if isinstance(avgdl, list) else [avgdl]
    if len(avgdls) != len(dirs):
        raise ValueError(f"{path}: {len(avgdls)} field lengths stored for {len(dirs)} fields ({mode})")
    loaded = [FieldIndex.load(d, a, load_corpus=i == 0) for i, (d, a) in enumerate(zip(dirs, avgdls))]
    return [fi for fi, _ in loaded], loaded[0][1]


def fields_options(obj: Any) -> dict[str, Any]:
    """The ``fields`` / ``field_weights`` constructor options of a BM25 retriever or ranker (JSON-ready)."""
    fw = obj.field_weights
    return {"fields": obj.fields, "field_weights": None if fw is None else list(fw)}


def fields_repr(obj: Any) -> str:
    return "" if obj.fields == "flat" else f", fields='multi', field_weights={obj.field_weights}"
