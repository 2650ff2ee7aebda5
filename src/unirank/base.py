"""The :class:`Ranker` contract every method implements.

A ranker implements one primitive, :meth:`Ranker._score_many` (scores for many queries' candidate lists at
once, so that batches span queries), and inherits validation, ranking, normalisation, calibration and async
from here. Pointwise rankers implement the even smaller :meth:`PointwiseRanker._score_pairs` and get long
document handling (truncate, or split into passages and aggregate) for free.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from .normalize import PlattCalibrator, normalize_scores
from .types import DocLike, Document, RankedResults, ScoreKind, check_query, to_documents

__all__ = ["Capabilities", "PointwiseRanker", "Ranker"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Capabilities:
    """What a ranker can do; shown by ``unirank models``."""

    pointwise: bool = True
    listwise: bool = False
    needs_gpu: bool = False
    native_async: bool = False
    long_documents: bool = False


class Ranker(ABC):
    """Base class of every re-ranker.

    Subclasses set :attr:`score_kind` and implement :meth:`_score_many`.
    """

    score_kind: ScoreKind = ScoreKind.UNBOUNDED
    capabilities: Capabilities = Capabilities()
    #: rankers that read images (``Document.metadata["image"]``) set this; the others reject image documents
    accepts_images: bool = False

    def __init__(self, name: str = "", calibrator: PlattCalibrator | None = None) -> None:
        self.name = name or type(self).__name__
        self.calibrator = calibrator
        self._executor: ThreadPoolExecutor | None = None
        self._executor_lock = threading.Lock()

    @classmethod
    def from_spec(cls, arg: str | None, **options: Any) -> Ranker:
        """Build the ranker from the part of a spec after its prefix (``"ce:<arg>"``) and keyword options.

        The default passes ``arg`` as the first positional argument (a model id or path) when present.
        """
        return cls(arg, **options) if arg else cls(**options)  # type: ignore[call-arg]

    # -- the primitive ------------------------------------------------------------------------------------
    @abstractmethod
    def _score_many(
        self, queries: list[str], docs_lists: list[list[Document]], show_progress: bool = False
    ) -> list[np.ndarray]:
        """Scores for each (query, candidate list); lists are non-empty and validated."""

    async def _ascore_many(
        self, queries: list[str], docs_lists: list[list[Document]], show_progress: bool = False
    ) -> list[np.ndarray]:
        """Async variant. Local models run in a bounded (one-thread) executor; HTTP backends override."""
        loop = asyncio.get_running_loop()
        with self._executor_lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"unirank-{self.name}")
        return await loop.run_in_executor(self._executor, self._score_many, queries, docs_lists, False)

    # -- public API ---------------------------------------------------------------------------------------
    def score(self, query: str, docs: Sequence[DocLike]) -> list[float]:
        """Raw scores in input order (see :attr:`score_kind` for what they mean)."""
        q, d = self._validate([query], [docs])
        if not d[0]:
            return []
        scores = self._score_many(q, d)
        warn_unusable(self.name, scores)
        return [float(x) for x in scores[0]]

    def rank(
        self,
        query: str,
        docs: Sequence[DocLike],
        top_k: int | None = None,
        normalize: str | None = None,
    ) -> RankedResults:
        """Rank ``docs`` for ``query``, best first; ``normalize`` maps scores to 0..1 (``normalize.py``)."""
        return self.rank_many([query], [docs], top_k=top_k, normalize=normalize)[0]

    def rank_many(
        self,
        queries: Sequence[str],
        docs_lists: Sequence[Sequence[DocLike]],
        top_k: int | None = None,
        normalize: str | None = None,
        show_progress: bool = False,
    ) -> list[RankedResults]:
        """Rank many queries' candidate lists; model batches are built across queries."""
        check_rank_options(top_k, normalize)
        qs, ds = self._validate(queries, docs_lists)
        scores = self._score_for_ranking(qs, ds, top_k, show_progress)
        return self._finish(qs, ds, scores, top_k, normalize)

    async def arank(
        self,
        query: str,
        docs: Sequence[DocLike],
        top_k: int | None = None,
        normalize: str | None = None,
    ) -> RankedResults:
        """Async :meth:`rank`."""
        return (await self.arank_many([query], [docs], top_k=top_k, normalize=normalize))[0]

    async def arank_many(
        self,
        queries: Sequence[str],
        docs_lists: Sequence[Sequence[DocLike]],
        top_k: int | None = None,
        normalize: str | None = None,
    ) -> list[RankedResults]:
        """Async :meth:`rank_many`."""
        check_rank_options(top_k, normalize)
        qs, ds = self._validate(queries, docs_lists)
        scores = await self._ascore_for_ranking(qs, ds, top_k)
        return self._finish(qs, ds, scores, top_k, normalize)

    def _score_for_ranking(
        self, queries: list[str], docs_lists: list[list[Document]], top_k: int | None, show_progress: bool
    ) -> list[np.ndarray]:
        """The scores :meth:`rank_many` ranks by; a ranker whose engine can use ``top_k`` (a hosted API's
        ``top_n``) overrides this."""
        return self._score_nonempty(queries, docs_lists, show_progress)

    async def _ascore_for_ranking(
        self, queries: list[str], docs_lists: list[list[Document]], top_k: int | None
    ) -> list[np.ndarray]:
        """Async :meth:`_score_for_ranking` (empty candidate lists are never sent to the model)."""
        keep = [i for i, d in enumerate(docs_lists) if d]
        qs, ds = [queries[i] for i in keep], [docs_lists[i] for i in keep]
        got = await self._ascore_many(qs, ds) if keep else []
        scores: list[np.ndarray] = [np.zeros(0) for _ in queries]
        for i, s in zip(keep, got):
            scores[i] = np.asarray(s, dtype=np.float64)
        return scores

    def calibrate(
        self,
        queries: Sequence[str],
        docs_lists: Sequence[Sequence[DocLike]],
        labels: Sequence[Sequence[int | bool]],
    ) -> PlattCalibrator:
        """Fit a Platt calibrator on labelled candidates; afterwards ``normalize="calibrated"`` works."""
        qs, ds = self._validate(queries, docs_lists)
        if len(labels) != len(ds) or any(len(lab) != len(d) for lab, d in zip(labels, ds)):
            raise ValueError("labels must have the same shape as docs_lists")
        scores = self._score_nonempty(qs, ds, False)
        flat_s = np.concatenate([s for s in scores if len(s)]) if any(len(s) for s in scores) else np.zeros(0)
        flat_y = np.array([int(bool(x)) for lab in labels for x in lab])
        ok = np.isfinite(flat_s)
        self.calibrator = PlattCalibrator.fit(flat_s[ok], flat_y[ok])
        return self.calibrator

    def close(self) -> None:
        """Release threads and engine resources."""
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, score_kind={self.score_kind.value})"

    # -- helpers ------------------------------------------------------------------------------------------
    def _validate(
        self, queries: Sequence[str], docs_lists: Sequence[Sequence[DocLike]]
    ) -> tuple[list[str], list[list[Document]]]:
        if isinstance(queries, str):
            raise TypeError("queries must be a sequence of strings; use rank() for a single query")
        if len(queries) != len(docs_lists):
            raise ValueError(f"{len(queries)} queries but {len(docs_lists)} candidate lists; they must match")
        qs = [check_query(q) for q in queries]
        ds = [to_documents(d) for d in docs_lists]
        if not self.accepts_images:
            reject_image_documents(ds, self.name)
        return qs, ds

    def _score_nonempty(
        self, qs: list[str], ds: list[list[Document]], show_progress: bool
    ) -> list[np.ndarray]:
        keep = [i for i, d in enumerate(ds) if d]
        scores: list[np.ndarray] = [np.zeros(0) for _ in qs]
        if keep:
            got = self._score_many([qs[i] for i in keep], [ds[i] for i in keep], show_progress)
            for i, s in zip(keep, got):
                s = np.asarray(s, dtype=np.float64)
                if s.shape != (len(ds[i]),):
                    raise RuntimeError(f"{self.name} returned {s.shape} scores for {len(ds[i])} documents")
                scores[i] = s
        return scores

    def _finish(
        self,
        qs: list[str],
        ds: list[list[Document]],
        scores: list[np.ndarray],
        top_k: int | None,
        normalize: str | None,
    ) -> list[RankedResults]:
        warn_unusable(self.name, scores)
        out = []
        for q, d, s in zip(qs, ds, scores):
            s, applied = normalize_scores(s, self.score_kind, normalize, self.calibrator)
            out.append(
                RankedResults.from_scores(
                    q,
                    d,
                    s.tolist(),
                    top_k=top_k,
                    score_kind=self.score_kind,
                    method=self.name,
                    normalized=applied,
                )
            )
        return out


def check_rank_options(top_k: Any, normalize: Any) -> None:
    """Check ``top_k`` / ``normalize`` before any scoring (also used by rankers that override rank_many)."""
    from .normalize import NORMALIZATIONS

    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0):
        raise ValueError(f"top_k must be None or an integer >= 0, got {top_k!r}")
    if normalize is not None and normalize not in NORMALIZATIONS:
        raise ValueError(f"unknown normalize={normalize!r}; expected one of {NORMALIZATIONS}")


def warn_unusable(name: str, scores: Sequence[Any]) -> int:
    """Warn when scores are NaN (the model or server returned nothing usable); return how many. A NaN
    score ranks last: it is never replaced by a number that looks like a real score."""
    bad = sum(int(np.isnan(np.asarray(s, dtype=np.float64)).sum()) for s in scores)
    if bad:
        n = sum(len(s) for s in scores)
        logger.warning("%s: %d of %d scores are NaN: nothing usable came back for them", name, bad, n)
    return bad


def has_image(doc: Document) -> bool:
    """Whether a document carries an image (``metadata["image"]``: a path, bytes or a PIL image)."""
    return doc.metadata.get("image") is not None


def reject_image_documents(docs_lists: Sequence[Sequence[Document]], ranker: str) -> None:
    """Raise ``TypeError`` if any document carries an image: a text-only model would silently ignore it."""
    for docs in docs_lists:
        for i, d in enumerate(docs):
            if has_image(d):
                raise TypeError(
                    f"{ranker} reads text only but got an image document at index {i} "
                    "(metadata['image']); use a vision-language ranker such as 'vlm:<model>'"
                )


AGGREGATIONS = ("max", "first", "sum", "mean")
LONG_DOC_MODES = ("truncate", *AGGREGATIONS)


class PointwiseRanker(Ranker):
    """A ranker that scores each (query, document) pair independently.

    Subclasses implement :meth:`_score_pairs`. ``long_docs`` chooses what happens to a document longer than
    the model's window: ``"truncate"`` (default; token-accurate) or split into passages of
    ``passage_tokens`` tokens (``passage_overlap`` shared) and aggregate passage scores by ``"max"``
    (MaxP), ``"first"``, ``"sum"`` or ``"mean"``. At most ``max_passages`` passages are scored per document.
    ``cache`` (a :class:`~unirank.cache.ScoreCache`, or ``True`` for an in-memory LRU) answers pairs this
    configuration already scored; it is kept as :attr:`score_cache`.
    """

    capabilities = Capabilities(pointwise=True, long_documents=True)

    def __init__(
        self,
        name: str = "",
        *,
        long_docs: str = "truncate",
        passage_tokens: int | None = None,
        passage_overlap: int = 32,
        max_passages: int = 128,
        calibrator: PlattCalibrator | None = None,
        cache: Any = None,
    ) -> None:
        super().__init__(name, calibrator=calibrator)
        from .cache import as_cache

        self.score_cache = as_cache(cache)
        if long_docs not in LONG_DOC_MODES:
            raise ValueError(f"long_docs={long_docs!r}; expected one of {LONG_DOC_MODES}")
        if max_passages < 1:
            raise ValueError("max_passages must be >= 1")
        if passage_tokens is not None and passage_tokens < 1:
            raise ValueError(f"passage_tokens must be None or >= 1, got {passage_tokens}")
        if passage_overlap < 0 or (passage_tokens is not None and passage_overlap >= passage_tokens):
            raise ValueError(f"passage_overlap must be >= 0 and < passage_tokens, got {passage_overlap}")
        self.long_docs = long_docs
        self.passage_tokens = passage_tokens
        self.passage_overlap = passage_overlap
        # "first" uses only the head passage: never split further than that
        self.max_passages = 1 if long_docs == "first" else max_passages

    @abstractmethod
    def _score_pairs(self, queries: list[str], texts: list[str], show_progress: bool = False) -> np.ndarray:
        """Scores for aligned (query, text) pairs."""

    def _split_passages(self, text: str) -> list[str]:
        """Split a text into passages; subclasses with a tokenizer make this token-accurate."""
        from .text import split_words

        size = self.passage_tokens or 128
        return split_words(text, size, self.passage_overlap, self.max_passages)

    def _score_many(
        self, queries: list[str], docs_lists: list[list[Document]], show_progress: bool = False
    ) -> list[np.ndarray]:
        if getattr(self, "score_cache", None) is not None:
            from .cache import cached_score_many, ranker_fingerprint

            return cached_score_many(
                self.score_cache,
                ranker_fingerprint(self),
                queries,
                docs_lists,
                lambda q, d: self._score_many_uncached(q, d, show_progress),
            )
        return self._score_many_uncached(queries, docs_lists, show_progress)

    def _score_many_uncached(
        self, queries: list[str], docs_lists: list[list[Document]], show_progress: bool = False
    ) -> list[np.ndarray]:
        pair_q: list[str] = []
        pair_t: list[str] = []
        owner: list[tuple[int, int]] = []  # (list index, doc index) per pair
        for li, (q, docs) in enumerate(zip(queries, docs_lists)):
            for di, doc in enumerate(docs):
                pieces = [doc.text] if self.long_docs == "truncate" else self._split_passages(doc.text)
                for piece in pieces or [""]:
                    pair_q.append(q)
                    pair_t.append(piece)
                    owner.append((li, di))
        flat = np.asarray(self._score_pairs(pair_q, pair_t, show_progress), dtype=np.float64)
        if flat.shape != (len(pair_q),):
            raise RuntimeError(f"{self.name} returned {flat.shape} scores for {len(pair_q)} pairs")
        if self.long_docs == "truncate":
            out, start = [], 0
            for docs in docs_lists:
                out.append(flat[start : start + len(docs)])
                start += len(docs)
            return out
        return _aggregate(flat, owner, [len(d) for d in docs_lists], self.long_docs)


def _aggregate(
    flat: np.ndarray, owner: list[tuple[int, int]], sizes: list[int], how: str
) -> list[np.ndarray]:
    groups: list[list[list[float]]] = [[[] for _ in range(n)] for n in sizes]
    for s, (li, di) in zip(flat.tolist(), owner):
        groups[li][di].append(s)
    out = []
    for lists in groups:
        vals = []
        for g in lists:
            arr = np.asarray(g, dtype=np.float64)
            fin = arr[np.isfinite(arr)]
            if fin.size == 0:
                vals.append(float("nan"))
            else:  # "first", or fin.max() / fin.sum() / fin.mean()
                vals.append(float(arr[0] if how == "first" else getattr(fin, how)()))
        out.append(np.asarray(vals))
    return out


def describe(ranker: Ranker) -> dict[str, Any]:
    """A JSON-able description of a ranker (used by the CLI)."""
    return {
        "name": ranker.name,
        "class": type(ranker).__name__,
        "score_kind": ranker.score_kind.value,
        "capabilities": ranker.capabilities.__dict__,
    }
