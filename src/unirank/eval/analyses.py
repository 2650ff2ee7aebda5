"""Analyses over per-query metric values: significance against a baseline, depth sweeps, lexical overlap,
win / tie / loss.

- **Depth sweep**: effectiveness (and latency) against the number of candidates re-ranked; shows where a
  re-ranker stops helping or starts hurting (Jacob et al., "Drowning in Documents", 2024).
- **Lexical overlap**: queries split into equal-size buckets by the BM25 separation of their relevant
  documents, :func:`lexical_separation`; shows where LM re-rankers are fooled by lexical similarity
  (a separation in the spirit of Hagström et al., "Language Model Re-rankers are Fooled by Lexical
  Similarities", FEVER 2025).
- **Win / tie / loss**: per query, a system against the baseline on the main metric.
- **Comparisons**: per system and metric, the mean difference to the baseline with its 95 % paired bootstrap
  interval (queries resampled, seeded), the queries improved / degraded (PyTerrier's ``+`` / ``-``) and each
  test's corrected p-value; ``direction`` is ``"better"`` / ``"worse"`` when a test is significant.

>>> win_tie_loss({"q1": 0.5, "q2": 0.2, "q3": 0.3}, {"q1": 0.4, "q2": 0.2, "q3": 0.6})
{'wins': 1, 'ties': 1, 'losses': 1}
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import MissingExtraError
from .significance import adjust, bootstrap_ci, run_test

if TYPE_CHECKING:
    from ._experiment_run import Group, Unit
    from .experiment import ExperimentConfig
    from .io import Dataset, Run

__all__ = [
    "analyse_group",
    "bucket_queries",
    "depth_sweep",
    "lexical_separation",
    "win_tie_loss",
]

logger = logging.getLogger(__name__)


def win_tie_loss(
    system: Mapping[str, float], baseline: Mapping[str, float], tie: float = 0.0
) -> dict[str, int]:
    """Queries where ``system`` beats (``> tie``), ties (``|diff| <= tie``) or loses to ``baseline``."""
    if set(system) != set(baseline):
        raise ValueError("win/tie/loss needs the same queries in both systems")
    if tie < 0:
        raise ValueError(f"tie threshold must be >= 0, got {tie}")
    diffs = [system[q] - baseline[q] for q in baseline]
    eps = 1e-12
    wins = sum(1 for d in diffs if d > tie + eps)
    losses = sum(1 for d in diffs if d < -tie - eps)
    return {"wins": wins, "ties": len(diffs) - wins - losses, "losses": losses}


def lexical_separation(dataset: Dataset, run: Run, depth: int) -> dict[str, float | None]:
    """Per query, how much better its best relevant document matches the query lexically than any distractor.

    BM25 (statistics from the list: the top ``depth`` candidates of ``run`` plus every judged-relevant
    document of the corpus) scores each document; the separation is
    ``(max BM25 of relevant docs - max BM25 of non-relevant candidates) / max BM25 of the list``, in [-1, 1].
    Negative: a non-relevant candidate looks lexically closer than every relevant document. ``None`` when
    the query has no judged-relevant document in the corpus.

    >>> from unirank.eval.io import Dataset
    >>> from unirank.types import Document
    >>> ds = Dataset("t", {"a": Document("rain clouds", "a"), "b": Document("sunny sky", "b")},
    ...              {"q": "rain clouds"}, {"q": {"b": 1}})
    >>> lexical_separation(ds, {"q": [("a", 2.0), ("b", 1.0)]}, depth=2)["q"]
    -1.0
    """
    from ..methods.lexical import BM25Ranker

    bm25 = BM25Ranker()
    out: dict[str, float | None] = {}
    for qid, ranking in run.items():
        query = dataset.queries.get(qid, "")
        judged = dataset.qrels.get(qid, {})
        relevant = [d for d, g in judged.items() if g >= dataset.rel_level and d in dataset.corpus]
        if not query.strip() or not relevant:
            out[qid] = None
            continue
        rel_set = set(relevant)
        negatives = [d for d, _ in ranking[:depth] if d in dataset.corpus and d not in rel_set]
        ids = relevant + negatives
        scores = np.asarray(bm25.score(query, [dataset.corpus[d] for d in ids]), dtype=float)
        top = float(scores.max())
        best_rel = float(scores[: len(relevant)].max())
        best_neg = float(scores[len(relevant) :].max()) if negatives else 0.0
        out[qid] = 0.0 if top <= 0 else (best_rel - best_neg) / top
    return out


def bucket_queries(values: Mapping[str, float | None], buckets: int = 3) -> list[dict[str, Any]]:
    """Equal-size buckets of queries by value (ascending); queries with ``None`` form a last bucket.

    >>> [(b["label"], b["qids"]) for b in bucket_queries({"a": 0.1, "b": -0.2, "c": None}, 2)]
    [('[-0.20, -0.20]', ['b']), ('[0.10, 0.10]', ['a']), ('no relevant doc', ['c'])]
    """
    if buckets < 1:
        raise ValueError(f"buckets must be >= 1, got {buckets}")
    known = sorted(((v, q) for q, v in values.items() if v is not None), key=lambda x: (x[0], x[1]))
    out = []
    for part in np.array_split(np.arange(len(known)), min(buckets, max(1, len(known)))):
        if len(part):
            chunk = [known[i] for i in part]
            label = f"[{chunk[0][0]:.2f}, {chunk[-1][0]:.2f}]"
            out.append(
                {"label": label, "low": chunk[0][0], "high": chunk[-1][0], "qids": [q for _, q in chunk]}
            )
    none = sorted(q for q, v in values.items() if v is None)
    if none:
        out.append({"label": "no relevant doc", "low": math.nan, "high": math.nan, "qids": none})
    return out


def depth_sweep(units: list[Unit], evals: Mapping[str, Any], metric: str) -> dict[str, list[dict[str, Any]]]:
    """Per re-ranker, ``[{depth, value, latency_ms, candidates}, ...]`` sorted by depth."""
    out: dict[str, list[dict[str, Any]]] = {}
    for u in units:
        if u.reranker is None:
            continue
        out.setdefault(u.reranker, []).append(
            {
                "depth": u.depth,
                "value": evals[u.label].aggregate[metric],
                "latency_ms": _median_ms(u.latency),
                "candidates": float(np.mean(list(u.candidates.values()))) if u.candidates else 0.0,
            }
        )
    for points in out.values():
        points.sort(key=lambda p: p["depth"])
    return out


def _median_ms(latency: Mapping[str, float]) -> float:
    return float(np.median(list(latency.values()))) * 1000.0 if latency else math.nan


def _baseline_for(unit: Unit, units: list[Unit], baseline: str) -> Unit:
    first = next(u for u in units if u.reranker is None)
    if baseline == "first-stage":
        return first
    name, _, depth = baseline.partition("@")
    same = [u for u in units if u.reranker == name]
    if depth:
        match = [u for u in same if u.depth == int(depth)]
        if not match:
            raise ValueError(f"baseline {baseline!r}: re-ranker {name!r} was not run at depth {depth}")
        return match[0]
    at_depth = [u for u in same if u.depth == unit.depth]
    return at_depth[0] if at_depth else max(same, key=lambda u: u.depth or 0)


def analyse_group(group: Group, cfg: ExperimentConfig) -> dict[str, Any]:
    """Tables and analyses for one (dataset, first stage): the report's content."""
    units, evals, main = group.units, group.evals, cfg.main_metric
    table = []
    for u in units:
        lat = list(u.latency.values())
        table.append(
            {
                "system": u.label,
                "reranker": u.reranker,
                "depth": u.depth,
                "metrics": dict(evals[u.label].aggregate),
                "latency_ms_median": _median_ms(u.latency),
                "latency_ms_p95": float(np.percentile(lat, 95)) * 1000.0 if lat else math.nan,
                "candidates_mean": float(np.mean(list(u.candidates.values()))) if u.candidates else math.nan,
                "scored_mean": float(np.mean(list(u.scored.values()))) if u.scored else math.nan,
            }
        )
    pairs = [(u, _baseline_for(u, units, cfg.baseline)) for u in units]
    pairs = [(u, b) for u, b in pairs if u.label != b.label]
    sig: list[dict[str, Any]] = []
    for metric in cfg.metrics:
        for test in cfg.tests:
            rows = []
            for u, b in pairs:
                res = run_test(
                    test,
                    evals[u.label].per_query[metric],
                    evals[b.label].per_query[metric],
                    cfg.resamples,
                    cfg.seed,
                )
                rows.append({"system": u.label, "baseline": b.label, "metric": metric, **res.to_dict()})
            for row, p_adj in zip(rows, adjust([r["p_value"] for r in rows], cfg.correction)):
                row["p_adjusted"] = p_adj
                row["significant"] = bool(p_adj < cfg.alpha)
            sig.extend(rows)
    comparisons = _comparisons(pairs, evals, sig, cfg)
    wtl = []
    for u, b in pairs:
        counts = win_tie_loss(
            evals[u.label].per_query[main], evals[b.label].per_query[main], cfg.tie_threshold
        )
        wtl.append({"system": u.label, "baseline": b.label, **counts})
    first = units[0]
    depths = [u.depth for u in units if u.depth is not None]
    judged = evals[first.label].per_query[main]
    try:
        seps = lexical_separation(group.dataset, first.run, max(depths) if depths else 100)
    except MissingExtraError as exc:  # BM25 needs the [bm25] extra
        logger.warning("lexical-overlap analysis skipped: %s", exc)
        seps = {}
    seps = {q: v for q, v in seps.items() if q in judged}
    lexical = []
    for bucket in bucket_queries(seps, cfg.lexical_buckets) if seps else []:
        qids = bucket["qids"]
        means = {u.label: float(np.mean([evals[u.label].per_query[main][q] for q in qids])) for u in units}
        lexical.append({**bucket, "n": len(qids), "means": means})
    return {
        "main_metric": main,
        "baseline": cfg.baseline,
        "table": table,
        "significance": sig,
        "comparisons": comparisons,
        "wtl": wtl,
        "depth_sweep": depth_sweep(units, evals, main),
        "first_stage_value": evals[first.label].aggregate[main],
        "lexical": lexical,
        "separation": seps,
    }


def _comparisons(
    pairs: list[tuple[Unit, Unit]], evals: Mapping[str, Any], sig: list[dict[str, Any]], cfg: ExperimentConfig
) -> list[dict[str, Any]]:
    """One row per (system, metric): difference to the baseline, its bootstrap CI, +/- queries, tests."""
    tests = {(r["system"], r["metric"], r["test"]): r for r in sig}
    out = []
    for metric in cfg.metrics:
        for u, b in pairs:
            a, base = evals[u.label].per_query[metric], evals[b.label].per_query[metric]
            low, high = bootstrap_ci(a, base, cfg.resamples, cfg.seed, 0.95)
            counts = win_tie_loss(a, base, cfg.tie_threshold)
            diff = float(np.mean([a[q] - base[q] for q in base]))
            per_test = {t: tests[(u.label, metric, t)] for t in cfg.tests}
            significant = [t for t, r in per_test.items() if r["significant"]]
            direction = ("better" if diff > 0 else "worse") if significant and diff != 0 else None
            out.append(
                {
                    "system": u.label,
                    "baseline": b.label,
                    "metric": metric,
                    "mean_diff": diff,
                    "ci_low": low,
                    "ci_high": high,
                    "confidence": 0.95,
                    "improved": counts["wins"],
                    "degraded": counts["losses"],
                    "unchanged": counts["ties"],
                    "p": {t: r["p_value"] for t, r in per_test.items()},
                    "p_adjusted": {t: r["p_adjusted"] for t, r in per_test.items()},
                    "significant_by": significant,
                    "direction": direction,
                }
            )
    return out
