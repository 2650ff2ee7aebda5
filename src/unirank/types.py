"""Typed, JSON-serialisable result objects and the score contract.

Every ranker declares a :class:`ScoreKind`: what its raw scores *mean*. That is what makes
``normalize=...`` honest: a logit is squashed with a sigmoid, a probability is left alone, a cosine
similarity is mapped from [-1, 1], an unbounded lexical score can only be min-max scaled per query.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

__all__ = [
    "DocLike",
    "Document",
    "RankedResults",
    "Result",
    "ScoreKind",
    "to_documents",
]


class ScoreKind(str, Enum):
    """What a ranker's raw scores are.

    - ``LOGIT``: unbounded log-odds of relevance; ``sigmoid(score)`` is a probability.
    - ``PROBABILITY``: already a probability of relevance in [0, 1].
    - ``SIMILARITY``: cosine similarity in [-1, 1] (bi-encoders, MaxSim averaged per token).
    - ``UNBOUNDED``: a non-negative or unbounded score with no absolute meaning (BM25, dot products).
    - ``RANK``: only the order is meaningful (listwise rankers, fusion); scores are ``1/(rank)``-like.
    """

    LOGIT = "logit"
    PROBABILITY = "probability"
    SIMILARITY = "similarity"
    UNBOUNDED = "unbounded"
    RANK = "rank"


@dataclass
class Document:
    """A candidate document.

    >>> Document("Rain forms when water vapour condenses.", id="d1", metadata={"src": "wiki"}).id
    'd1'
    """

    text: str
    id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "text": self.text, "metadata": dict(self.metadata)}


DocLike = str | Document | Mapping[str, Any]

_TEXT_KEYS = ("text", "content", "document", "passage", "contents")
_ID_KEYS = ("id", "_id", "doc_id", "docid")


def _doc_from_mapping(obj: Mapping[str, Any], index: int) -> Document:
    text = None
    for key in _TEXT_KEYS:
        if obj.get(key) is not None:
            text = obj[key]
            break
    if text is None:
        raise TypeError(
            f"document at index {index} is a mapping without a text field "
            f"(expected one of {list(_TEXT_KEYS)}); got keys {sorted(obj)[:8]}"
        )
    title = obj.get("title")
    if not isinstance(text, str):
        raise TypeError(f"document at index {index} has a non-text 'text' field: {type(text).__name__}")
    if isinstance(title, str) and title.strip():
        text = f"{title.strip()} {text}"
    doc_id = next((obj[k] for k in _ID_KEYS if obj.get(k) is not None), None)
    meta = obj.get("metadata")
    metadata = dict(meta) if isinstance(meta, Mapping) else {}
    for key, value in obj.items():
        if key not in _TEXT_KEYS and key not in _ID_KEYS and key not in ("metadata",):
            metadata.setdefault(key, value)
    return Document(text=text, id=None if doc_id is None else str(doc_id), metadata=metadata)


def to_documents(docs: Sequence[DocLike] | None) -> list[Document]:
    """Normalise strings / dicts / :class:`Document` into Documents, with clear errors.

    Documents without an id get their position as id (``"0"``, ``"1"``...), so results always carry one.

    >>> [d.id for d in to_documents(["a", {"id": "x", "text": "b"}])]
    ['0', 'x']
    """
    if docs is None:
        raise TypeError("documents must be a sequence of str / Document / dict, not None")
    if isinstance(docs, (str, bytes)):
        raise TypeError("documents must be a sequence of documents, not a single string")
    if isinstance(docs, Mapping):
        raise TypeError(
            "documents must be a sequence, not a mapping; for {id: text} pass "
            "[{'id': k, 'text': v} for k, v in docs.items()]"
        )
    out: list[Document] = []
    for i, doc in enumerate(docs):
        if isinstance(doc, Document):
            if not isinstance(doc.text, str):
                raise TypeError(f"document at index {i} has non-text content: {type(doc.text).__name__}")
            if doc.id is None or not isinstance(doc.id, str):
                doc = Document(doc.text, str(i) if doc.id is None else str(doc.id), doc.metadata)
            out.append(doc)
        elif isinstance(doc, str):
            out.append(Document(doc, str(i)))
        elif isinstance(doc, Mapping):
            d = _doc_from_mapping(doc, i)
            out.append(d if d.id is not None else Document(d.text, str(i), d.metadata))
        else:
            raise TypeError(
                f"document at index {i} is a {type(doc).__name__}; expected str, Document or dict with 'text'"
            )
    if len({d.id for d in out}) != len(out):
        seen: dict[str | None, int] = {}
        for i, d in enumerate(out):
            if d.id in seen:
                raise ValueError(
                    f"duplicate document id {d.id!r} at index {seen[d.id]} and {i} (documents without an id "
                    "get their position as id); ids must be unique within a candidate list"
                )
            seen[d.id] = i
    return out


def check_query(query: Any) -> str:
    """Validate a query: a non-empty string."""
    if not isinstance(query, str):
        raise TypeError(f"query must be a str, got {type(query).__name__}")
    if not query.strip():
        raise ValueError("query is empty or whitespace; a re-ranker needs a query")
    return query


@dataclass
class Result:
    """One scored document: the document, its score, 1-based rank and index in the input list."""

    document: Document
    score: float
    rank: int
    index: int

    @property
    def id(self) -> str | None:
        return self.document.id

    @property
    def text(self) -> str:
        return self.document.text

    @property
    def metadata(self) -> dict[str, Any]:
        return self.document.metadata

    def to_dict(self, include_text: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.document.id,
            "score": _json_float(self.score),
            "rank": self.rank,
            "index": self.index,
        }
        if include_text:
            out["text"] = self.document.text
        if self.document.metadata:
            out["metadata"] = self.document.metadata
        return out


def _json_float(x: float) -> float | None:
    """JSON has no NaN / infinity: an unscorable document's score is written as ``null``."""
    x = float(x)
    return x if math.isfinite(x) else None


@dataclass
class RankedResults:
    """Results for one query, sorted best first.

    >>> rr = RankedResults.from_scores("q", [Document("a", "1"), Document("b", "2")], [0.1, 0.9])
    >>> rr.ids, rr.top(1)[0].index
    (['2', '1'], 1)
    """

    query: str
    results: list[Result]
    score_kind: ScoreKind = ScoreKind.UNBOUNDED
    method: str = ""
    normalized: str | None = None

    @classmethod
    def from_scores(
        cls,
        query: str,
        docs: Sequence[Document],
        scores: Sequence[float],
        *,
        top_k: int | None = None,
        score_kind: ScoreKind = ScoreKind.UNBOUNDED,
        method: str = "",
        normalized: str | None = None,
    ) -> RankedResults:
        if len(docs) != len(scores):
            raise ValueError(f"{len(docs)} documents but {len(scores)} scores")
        # Stable sort: ties keep input order; NaN (a document that could not be scored) goes last.
        order = sorted(
            range(len(docs)),
            key=lambda i: (math.isnan(scores[i]), -scores[i] if not math.isnan(scores[i]) else 0.0, i),
        )
        if top_k is not None:
            if top_k < 0:
                raise ValueError(f"top_k must be >= 0, got {top_k}")
            order = order[:top_k]
        results = [Result(docs[i], float(scores[i]), r + 1, i) for r, i in enumerate(order)]
        return cls(query, results, score_kind, method, normalized)

    def top(self, k: int) -> list[Result]:
        return self.results[:k]

    def __iter__(self) -> Iterator[Result]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, i: int) -> Result:
        return self.results[i]

    @property
    def scores(self) -> list[float]:
        return [r.score for r in self.results]

    @property
    def ids(self) -> list[str | None]:
        return [r.id for r in self.results]

    @property
    def indices(self) -> list[int]:
        return [r.index for r in self.results]

    def to_dict(self, include_text: bool = True) -> dict[str, Any]:
        return {
            "query": self.query,
            "method": self.method,
            "score_kind": self.score_kind.value,
            "normalized": self.normalized,
            "results": [r.to_dict(include_text) for r in self.results],
        }

    def to_json(self, include_text: bool = True, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(include_text), ensure_ascii=False, **kwargs)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RankedResults:
        results = [
            Result(
                Document(r.get("text", ""), r.get("id"), dict(r.get("metadata") or {})),
                float("nan") if r["score"] is None else float(r["score"]),
                int(r["rank"]),
                int(r["index"]),
            )
            for r in data["results"]
        ]
        return cls(
            data["query"],
            results,
            ScoreKind(data.get("score_kind", "unbounded")),
            data.get("method", ""),
            data.get("normalized"),
        )

    def __repr__(self) -> str:
        head = ", ".join(f"{r.id}:{r.score:.4g}" for r in self.results[:3])
        more = ", ..." if len(self.results) > 3 else ""
        return f"RankedResults(query={self.query!r}, n={len(self)}, [{head}{more}])"
