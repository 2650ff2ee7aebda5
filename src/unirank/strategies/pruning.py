"""Progressive top-k pruning: when only the top ``k`` of ``n`` candidates are wanted, spend the full model
only on candidates that a cheaper stage could not rule out.

:class:`TopKPruner` runs one or more cheap stages over the candidates, keeps the best ``keep`` of each stage
(plus any candidate within ``margin`` of the last kept score), and scores the survivors with the full
ranker; with ``error_z`` a second full round re-checks the pruned candidates against the error the last
cheap stage made on this query's survivors (full minus cheap score: its median and spread), so the extra
work goes only where the measured error leaves the top-k boundary open. This is the GRATING idea (a
cheap, correlated estimate of every candidate's score, and full compute only where the top-k boundary is
still undecided) in its model-agnostic form: a stage is any :class:`~unirank.base.Ranker`.
:mod:`unirank.methods.cross_encoder_exit` builds the natural cheap stage of a cross-encoder: the same
model stopped after its first ``L`` transformer layers (``early_exit``), which costs ``L / num_layers`` of a
full forward, optionally with a linear head per early layer distilled from the full score
(``fit_exit_heads``). This module runs no model itself.

Exactness trade-off: the result is the exact top-k of the full ranker whenever every true top-k candidate
survives the cheap stages, which is guaranteed when a cheap stage orders candidates exactly like the full
ranker (and ``keep >= k``), and otherwise holds with a probability that grows with ``keep`` and with the
cheap stage's agreement; the pruned candidates are returned below the survivors with score ``-inf``.
``docs/benchmarks-speed.md`` measures it on TREC DL 2019. :attr:`TopKPruner.stats` counts compute in
"full-forward equivalents" (a cheap pair costs ``cost`` of a full pair).

>>> from unirank import Reranker
>>> bm25 = Reranker("bm25")
>>> p = TopKPruner(bm25, [(bm25, 2)], k=1)
>>> p.rank("rain", ["sun", "rain rain", "snow", "rain"]).top(1)[0].text
'rain rain'
>>> p.stats["full_pairs"], p.stats["cheap_pairs"]
(2, 4)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..base import Ranker
from ..types import Document

__all__ = ["TopKPruner"]

# the early-exit cheap stage lives with the cross-encoder (it runs the engine; a strategy never does):
# the old import path still works for a while, with a DeprecationWarning
_EXIT_NAMES = frozenset({"ExitHead", "early_exit", "fit_exit_head", "fit_exit_heads", "_exit_features"})


def __getattr__(name: str) -> Any:
    if name in _EXIT_NAMES:
        import importlib
        import warnings

        warnings.warn(
            f"unirank.strategies.pruning.{name} moved to unirank.methods.cross_encoder_exit.{name}; "
            "the old name will be removed",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module("unirank.methods.cross_encoder_exit"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


logger = logging.getLogger(__name__)


class TopKPruner(Ranker):
    """Score with cheap stages first, keep the likely top ``keep``, score only those with ``full``.

    Args:
        full: the ranker whose top-k is wanted.
        stages: ``[(cheap_ranker, keep), ...]`` applied in order; each keeps its best ``keep`` candidates
            (at least ``k``) of those still alive.
        k: the number of results that must be right; ``keep`` values below ``k`` are raised to ``k``.
        margin: also keep candidates whose cheap score is within ``margin`` of the last kept one.
        error_z: if set, a second full round checks the candidates the last cheap stage pruned against the
            error that stage made on this query: with ``d`` = full - cheap score over the survivors (their
            median ``mu``, standard deviation ``sd``) and ``t`` the ``k``-th best full score, every pruned
            candidate with ``cheap + mu + error_z * sd >= t`` is scored in full too. The extra work goes where
            the cheap stage's own measured error says the boundary is still open (DL19 / DL20 with an int8
            twin as cheap stage: ``keep=10, error_z=2`` ~13 full pairs per query, exact top-10 set on 95 %
            of the queries; docs/benchmarks-speed.md). The spread needs at least two survivors: with fewer
            (``keep=1``), or fewer than ``k`` successful full scores, every pruned candidate is re-checked.
        costs: cost of one cheap pair per stage relative to one full pair (for :attr:`stats`); by default a
            stage's ``pruning_cost`` attribute (set by ``early_exit``) or 1.0.
    """

    def __init__(
        self,
        full: Ranker,
        stages: Sequence[tuple[Ranker, int]],
        k: int = 10,
        margin: float = 0.0,
        costs: Sequence[float] | None = None,
        name: str | None = None,
        error_z: float | None = None,
    ) -> None:
        super().__init__(name or f"prune({full.name})")
        if k < 1:
            raise ValueError("k must be >= 1")
        if not stages:
            raise ValueError("at least one cheap stage is needed")
        if any(int(keep) < 1 for _, keep in stages):
            raise ValueError("every stage must keep >= 1 candidates")
        if margin < 0:
            raise ValueError("margin must be >= 0")
        if error_z is not None and not error_z >= 0:
            raise ValueError("error_z must be >= 0 (or None)")
        self.error_z = None if error_z is None else float(error_z)
        self.full = full
        self.stages = [(r, max(int(keep), k)) for r, keep in stages]
        self.k = k
        self.margin = margin
        if costs is not None and len(costs) != len(self.stages):
            raise ValueError("costs must have one value per stage")
        self.costs = (
            [float(c) for c in costs]
            if costs is not None
            else [float(getattr(r, "pruning_cost", 1.0)) for r, _ in self.stages]
        )
        self.score_kind = full.score_kind
        self.reset_stats()

    def reset_stats(self) -> None:
        self.stats: dict[str, float] = {
            "candidates": 0,
            "cheap_pairs": 0,
            "full_pairs": 0,
            "second_round_pairs": 0,
            "compute": 0.0,
        }

    @property
    def compute_saving(self) -> float:
        """Full-only compute / this compute (``> 1`` is a saving), over everything scored so far."""
        return self.stats["candidates"] / self.stats["compute"] if self.stats["compute"] else 1.0

    def _score_many(
        self, queries: list[str], docs_lists: list[list[Document]], show_progress: bool = False
    ) -> list[np.ndarray]:
        alive = [np.arange(len(d)) for d in docs_lists]
        self.stats["candidates"] += sum(len(d) for d in docs_lists)
        last_cheap: dict[int, np.ndarray] = {}  # query -> the last cheap stage's scores (nan: not scored)
        for (ranker, keep), cost in zip(self.stages, self.costs):
            todo = [i for i, a in enumerate(alive) if len(a) > keep]
            if not todo:
                continue
            got = ranker._score_nonempty(
                [queries[i] for i in todo], [[docs_lists[i][j] for j in alive[i]] for i in todo], False
            )
            n = sum(len(alive[i]) for i in todo)
            self.stats["cheap_pairs"] += n
            self.stats["compute"] += n * cost
            for i, s in zip(todo, got):
                last_cheap[i] = np.full(len(docs_lists[i]), np.nan)
                last_cheap[i][alive[i]] = s
                alive[i] = alive[i][_survivors(s, keep, self.margin)]
        scores = self._score_full(queries, docs_lists, alive, show_progress)
        if self.error_z is not None and last_cheap:
            extra = {
                i: _second_round(last_cheap[i], scores[i], alive[i], self.k, self.error_z) for i in last_cheap
            }
            extra = {i: e for i, e in extra.items() if len(e)}
            if extra:
                todo = list(extra)
                got = self._score_full(
                    [queries[i] for i in todo], [docs_lists[i] for i in todo], [extra[i] for i in todo], False
                )
                self.stats["second_round_pairs"] += sum(len(e) for e in extra.values())
                for i, s in zip(todo, got):
                    scores[i][extra[i]] = s[extra[i]]
        return scores

    def _score_full(
        self, queries: list[str], docs_lists: list[list[Document]], chosen: list[np.ndarray], progress: bool
    ) -> list[np.ndarray]:
        """Full scores of the ``chosen`` candidates of each query (``-inf`` elsewhere)."""
        full = self.full._score_nonempty(
            queries, [[docs_lists[i][j] for j in a] for i, a in enumerate(chosen)], progress
        )
        out = []
        for i, (a, s) in enumerate(zip(chosen, full)):
            self.stats["full_pairs"] += len(a)
            self.stats["compute"] += len(a)
            scores = np.full(len(docs_lists[i]), -np.inf)
            scores[a] = s
            out.append(scores)
        return out


def _second_round(cheap: np.ndarray, full: np.ndarray, alive: np.ndarray, k: int, z: float) -> np.ndarray:
    """The pruned candidates (scored by the last cheap stage, not in ``alive``) that could still reach the
    top ``k`` given the cheap stage's error on the survivors: ``cheap + median(d) + z * sd(d) >= t``, with
    ``d = full - cheap`` over the survivors and ``t`` the ``k``-th best full score. Where the error or the
    boundary cannot be measured (fewer than two usable survivors, fewer than ``k`` full scores, an infinite
    ``z``), every pruned candidate is re-checked."""
    pruned = np.setdiff1d(np.flatnonzero(~np.isnan(cheap)), alive)
    if not len(pruned):
        return pruned
    got = full[alive]
    scored = ~np.isnan(got) & (got > -np.inf)  # NaN / -inf: the full ranker failed on that candidate
    usable = np.isfinite(got) & np.isfinite(cheap[alive])
    if scored.sum() < k or usable.sum() < 2 or not np.isfinite(z):
        return pruned
    d = got[usable] - cheap[alive][usable]
    t = np.sort(got[scored])[-k]
    return pruned[cheap[pruned] + float(np.median(d)) + z * float(np.std(d, ddof=1)) >= t]


def _survivors(scores: np.ndarray, keep: int, margin: float) -> np.ndarray:
    """Indices (in input order) of the best ``keep`` scores, plus ties within ``margin`` of the last one."""
    scores = np.asarray(scores, dtype=np.float64)
    failed = ~np.isfinite(scores)  # a failed cheap score never prunes its candidate (nor takes a slot)
    s = np.where(failed, -np.inf, scores)
    order = np.argsort(-s, kind="stable")
    chosen = set(order[:keep].tolist()) | set(np.flatnonzero(failed).tolist())
    cut = s[order[min(keep, len(s)) - 1]]
    if np.isfinite(cut):
        chosen |= set(np.flatnonzero(s >= cut - margin).tolist())
    return np.array(sorted(chosen), dtype=np.int64)
