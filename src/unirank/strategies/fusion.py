"""Rank fusion: Reciprocal Rank Fusion, CombSUM and CombMNZ, and the :class:`Fusion` ranker.

The functions take rankings of (mostly) the same documents, each a :class:`~unirank.types.RankedResults`
(documents matched by id, order as given) or a plain ``{doc_id: score}`` mapping (order by score, best
first; equal scores keep insertion order). They return ``{doc_id: fused score}`` ordered best first; equal
fused scores are ordered by first appearance (the first list's order, then the second's new documents...).

- RRF (Cormack et al., SIGIR 2009): ``sum_i w_i / (k + rank_i(d))``; a list without ``d`` adds 0.
- CombSUM (Fox & Shaw, TREC-2 1994): ``sum_i w_i * norm(s_i)(d)``, scores normalised per list
  (``"minmax"``, ``"zscore"`` or ``"none"``); a list without ``d`` adds 0.
- CombMNZ: CombSUM times the number of lists that contain ``d``.
- CombMAX / CombMIN / CombANZ: the largest / smallest / mean weighted normalised score over the lists that
  contain ``d``.

Normalisations (per list, ranx's names in brackets): ``"minmax"`` (``min-max``), ``"max"`` (score / max;
scores must be >= 0), ``"sum"`` ((score - min) / sum(score - min)), ``"zscore"`` (``zmuv``: population
standard deviation) and ``"none"``. Where a list is constant (every score equal), ``minmax`` gives 1.0
(every document is equally the best), ``sum`` 1/n, ``max`` 0.0 (all zero) and ``zscore`` 0.0; ranx divides
by 1e-9 instead and so gives 0.0 under ``min-max`` and ``sum`` (a single-document list then adds nothing).

Documents whose score in a list is NaN (could not be scored) count as absent from that list for
CombSUM / CombMNZ; for RRF they keep their (last) ranks.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np

from ..base import Capabilities, Ranker, check_rank_options
from ..normalize import minmax, normalize_scores, zscore
from ..types import DocLike, Document, RankedResults, Result, ScoreKind

__all__ = ["FUSION_METHODS", "Fusion", "combmnz", "combsum", "fuse", "rrf"]

FUSION_METHODS = ("rrf", "combsum", "combmnz", "combmax", "combmin", "combanz")
NORMS = ("minmax", "max", "sum", "zscore", "none")

Run = RankedResults | Mapping[Any, float]
Ranking = list[tuple[Hashable, float]]  # best first, one entry per document


def _ranking(run: Run) -> Ranking:
    if isinstance(run, RankedResults):
        pairs: list[tuple[Hashable, float]] = []
        for r in run.results:
            if r.id is None:
                raise ValueError("fusion matches documents by id, but a result has id None")
            pairs.append((r.id, float(r.score)))
    elif isinstance(run, Mapping):
        items = [(key, float(s)) for key, s in run.items()]
        nan_last = [(math.isnan(s), 0.0 if math.isnan(s) else -s, i) for i, (_, s) in enumerate(items)]
        pairs = [items[i] for *_, i in sorted(nan_last)]
    else:
        kind = type(run).__name__
        raise TypeError(f"a run must be RankedResults or a {{doc_id: score}} mapping, not {kind}")
    seen: set[Hashable] = set()
    out = []
    for key, s in pairs:  # a document listed twice keeps its best (first) position
        if key not in seen:
            seen.add(key)
            out.append((key, s))
    return out


def _weights(weights: Sequence[float] | None, n: int) -> list[float]:
    if weights is None:
        return [1.0] * n
    w = [float(x) for x in weights]
    if len(w) != n:
        raise ValueError(f"{len(w)} weights for {n} rankings; they must match")
    if not all(math.isfinite(x) for x in w):
        raise ValueError("weights must be finite numbers")
    return w


def _fuse_rankings(
    rankings: Sequence[Ranking], method: str, k: float, norm: str, weights: Sequence[float] | None
) -> dict[Hashable, float]:
    if method not in FUSION_METHODS:
        raise ValueError(f"unknown fusion method {method!r}; expected one of {FUSION_METHODS}")
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; expected one of {NORMS}")
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    w = _weights(weights, len(rankings))
    first_seen: dict[Hashable, int] = {}
    parts: dict[Hashable, list[float]] = {}
    for ranking, wi in zip(rankings, w):
        for key, _ in ranking:
            first_seen.setdefault(key, len(first_seen))
            parts.setdefault(key, [])
        if method == "rrf":
            for rank, (key, _) in enumerate(ranking, start=1):
                parts[key].append(wi / (k + rank))
            continue
        normed = _normalise(np.array([s for _, s in ranking], dtype=np.float64), norm)
        for (key, _), s in zip(ranking, normed.tolist()):
            if math.isfinite(s):
                parts[key].append(wi * s)
    total = {key: _combine(method, v) for key, v in parts.items()}
    order = sorted(total, key=lambda key: (-total[key], first_seen[key]))
    return {key: total[key] for key in order}


def _normalise(raw: np.ndarray, norm: str) -> np.ndarray:
    if norm == "minmax":
        return minmax(raw)
    if norm == "zscore":
        return zscore(raw)
    finite = raw[np.isfinite(raw)]
    if norm == "none" or finite.size == 0:
        return raw
    if norm == "max":
        if finite.min() < 0:
            raise ValueError("norm 'max' needs scores >= 0 (it divides by the largest); use 'minmax'")
        top = finite.max()
        return raw / top if top > 0 else np.where(np.isfinite(raw), 0.0, raw)
    shifted = raw - finite.min()  # "sum"
    mass = shifted[np.isfinite(shifted)].sum()
    return shifted / mass if mass > 0 else np.where(np.isfinite(raw), 1.0 / finite.size, raw)


def _combine(method: str, parts: list[float]) -> float:
    if not parts:
        return 0.0
    if method == "combmax":
        return max(parts)
    if method == "combmin":
        return min(parts)
    total = math.fsum(parts)
    if method == "combmnz":
        return total * len(parts)
    if method == "combanz":
        return total / len(parts)
    return total  # rrf, combsum


def rrf(runs: Sequence[Run], k: float = 60, weights: Sequence[float] | None = None) -> dict[Hashable, float]:
    """Reciprocal Rank Fusion.

    >>> rrf([{"a": 3.0, "b": 2.0}, {"b": 9.0, "c": 1.0}], k=60)  # doctest: +ELLIPSIS
    {'b': 0.0325..., 'a': 0.0163..., 'c': 0.0161...}
    """
    return _fuse_rankings([_ranking(r) for r in runs], "rrf", k, "none", weights)


def combsum(
    runs: Sequence[Run], norm: str = "minmax", weights: Sequence[float] | None = None
) -> dict[Hashable, float]:
    """CombSUM of per-list normalised scores.

    >>> combsum([{"a": 3.0, "b": 2.0, "c": 1.0}, {"b": 5.0, "c": 4.0, "d": 0.0}])
    {'b': 1.5, 'a': 1.0, 'c': 0.8, 'd': 0.0}
    """
    return _fuse_rankings([_ranking(r) for r in runs], "combsum", 0, norm, weights)


def combmnz(
    runs: Sequence[Run], norm: str = "minmax", weights: Sequence[float] | None = None
) -> dict[Hashable, float]:
    """CombMNZ: CombSUM times the number of lists containing the document.

    >>> combmnz([{"a": 3.0, "b": 1.0}, {"b": 5.0, "c": 4.0}])
    {'b': 2.0, 'a': 1.0, 'c': 0.0}
    """
    return _fuse_rankings([_ranking(r) for r in runs], "combmnz", 0, norm, weights)


def fuse(
    runs: Sequence[RankedResults],
    method: str = "rrf",
    *,
    k: float = 60,
    norm: str = "minmax",
    weights: Sequence[float] | None = None,
    top_k: int | None = None,
) -> RankedResults:
    """Fuse result lists into one :class:`RankedResults` that carries the documents.

    A document keeps the :class:`Document` and ``index`` of the first list that contains it.

    >>> a = RankedResults.from_scores("q", [Document("x", "1"), Document("y", "2")], [2.0, 1.0])
    >>> b = RankedResults.from_scores("q", [Document("x", "1"), Document("y", "2")], [0.0, 5.0])
    >>> fuse([a, b], "rrf").ids
    ['1', '2']
    """
    if not runs:
        raise ValueError("fuse needs at least one result list")
    fused = _fuse_rankings([_ranking(r) for r in runs], method, k, norm, weights)
    first: dict[Hashable, Result] = {}
    for run in runs:
        for r in run.results:
            first.setdefault(r.id, r)
    keys = list(fused)[:top_k] if top_k is not None else list(fused)
    results = [Result(first[key].document, fused[key], i + 1, first[key].index) for i, key in enumerate(keys)]
    kind = ScoreKind.RANK if method == "rrf" else ScoreKind.UNBOUNDED
    return RankedResults(runs[0].query, results, kind, f"fusion:{method}")


def _resolve(ranker: Any) -> Any:
    if isinstance(ranker, str):
        from ..reranker import Reranker

        ranker = Reranker(ranker)
    if not callable(getattr(ranker, "rank_many", None)):
        raise TypeError(f"Fusion needs rankers (or spec strings), got {type(ranker).__name__}")
    return ranker


class Fusion(Ranker):
    """Fuse several rankers' rankings of the same candidates (matched by position in the candidate list).

    ``method`` is ``"rrf"`` (scores are rank-only: :attr:`score_kind` ``RANK``), ``"combsum"`` or
    ``"combmnz"`` (``UNBOUNDED``). Ties keep the first ranker's order.

    >>> from unirank.methods.lexical import BM25Ranker
    >>> f = Fusion([BM25Ranker(), BM25Ranker("bm25+")], method="rrf")
    >>> f.rank("rain clouds", ["sunny day", "rain falls from clouds"]).ids
    ['1', '0']
    """

    def __init__(
        self,
        rankers: Sequence[Ranker | str],
        method: str = "rrf",
        *,
        weights: Sequence[float] | None = None,
        k: float = 60,
        norm: str = "minmax",
        name: str = "",
    ) -> None:
        if method not in FUSION_METHODS:
            raise ValueError(f"unknown fusion method {method!r}; expected one of {FUSION_METHODS}")
        if norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r}; expected one of {NORMS}")
        if isinstance(rankers, (str, Ranker)) or not rankers:
            raise ValueError("Fusion needs a non-empty list of rankers")
        self.rankers = [_resolve(r) for r in rankers]
        self.method, self.k, self.norm = method, float(k), norm
        self.weights = _weights(weights, len(self.rankers))
        parts = ",".join(getattr(r, "name", "?") for r in self.rankers)
        super().__init__(name or f"fusion:{method}({parts})")
        self.score_kind = ScoreKind.RANK if method == "rrf" else ScoreKind.UNBOUNDED
        caps = [getattr(r, "capabilities", Capabilities()) for r in self.rankers]
        self.capabilities = Capabilities(
            pointwise=False,
            listwise=any(c.listwise for c in caps),
            needs_gpu=any(c.needs_gpu for c in caps),
            native_async=any(c.native_async for c in caps),
            long_documents=all(c.long_documents for c in caps),
        )

    @classmethod
    def from_spec(cls, arg: str | None, **options: Any) -> Fusion:
        """``"fusion:rrf"`` / ``"fusion:combsum"`` / ``"fusion:combmnz"`` with ``rankers=[...]`` as option."""
        if "rankers" not in options:
            raise ValueError("a fusion spec needs rankers=[...] among its options")
        return cls(options.pop("rankers"), arg or options.pop("method", "rrf"), **options)

    def _fuse_one(self, per_ranker: Sequence[RankedResults], n: int) -> tuple[list[int], np.ndarray]:
        rankings = [[(r.index, r.score) for r in rr.results] for rr in per_ranker]
        fused = _fuse_rankings(rankings, self.method, self.k, self.norm, self.weights)
        scores = np.zeros(n)
        for i, s in fused.items():
            scores[int(i)] = s  # type: ignore[call-overload]
        order = [int(i) for i in fused]  # type: ignore[call-overload]
        order += [i for i in range(n) if i not in fused]
        return order, scores

    def _build(
        self,
        query: str,
        docs: list[Document],
        per_ranker: Sequence[RankedResults],
        top_k: int | None,
        normalize: str | None,
    ) -> RankedResults:
        if top_k is not None and top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {top_k}")
        order, raw = self._fuse_one(per_ranker, len(docs))
        scores, applied = normalize_scores(raw, self.score_kind, normalize, self.calibrator)
        keep = order[:top_k] if top_k is not None else order
        results = [Result(docs[i], float(scores[i]), r + 1, i) for r, i in enumerate(keep)]
        return RankedResults(query, results, self.score_kind, self.name, applied)

    def _score_many(
        self, queries: list[str], docs_lists: list[list[Document]], show_progress: bool = False
    ) -> list[np.ndarray]:
        per = [r.rank_many(queries, docs_lists, show_progress=show_progress) for r in self.rankers]
        return [self._fuse_one([p[i] for p in per], len(d))[1] for i, d in enumerate(docs_lists)]

    def rank_many(
        self,
        queries: Sequence[str],
        docs_lists: Sequence[Sequence[DocLike]],
        top_k: int | None = None,
        normalize: str | None = None,
        show_progress: bool = False,
    ) -> list[RankedResults]:
        """Rank with every ranker (each batched across queries), then fuse per query."""
        check_rank_options(top_k, normalize)
        qs, ds = self._validate(queries, docs_lists)
        per = [r.rank_many(qs, ds, show_progress=show_progress) for r in self.rankers]
        return [self._build(qs[i], ds[i], [p[i] for p in per], top_k, normalize) for i in range(len(qs))]

    async def arank_many(
        self,
        queries: Sequence[str],
        docs_lists: Sequence[Sequence[DocLike]],
        top_k: int | None = None,
        normalize: str | None = None,
    ) -> list[RankedResults]:
        """Async :meth:`rank_many`: the rankers run concurrently."""
        check_rank_options(top_k, normalize)
        qs, ds = self._validate(queries, docs_lists)
        per = await asyncio.gather(*(r.arank_many(qs, ds) for r in self.rankers))
        return [self._build(qs[i], ds[i], [p[i] for p in per], top_k, normalize) for i in range(len(qs))]

    async def _ascore_many(
        self, queries: list[str], docs_lists: list[list[Document]], show_progress: bool = False
    ) -> list[np.ndarray]:
        per = await asyncio.gather(*(r.arank_many(queries, docs_lists) for r in self.rankers))
        return [self._fuse_one([p[i] for p in per], len(d))[1] for i, d in enumerate(docs_lists)]

    def close(self) -> None:
        for r in self.rankers:
            if callable(getattr(r, "close", None)):
                r.close()
        super().close()
