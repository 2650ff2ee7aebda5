"""Retrieval metrics through ``ir_measures`` (trec_eval semantics), and a plain-text results table.

Conventions (the same as ``trec_eval -c``):

- Every query in the qrels counts. A judged query absent from the run (or with an empty ranking) scores 0 on
  every metric and is included in the mean. Queries in the run but not in the qrels are ignored.
- Documents are ordered by score, descending, ties broken by document id descending (what trec_eval does);
  the run's list order is not used, so a run should carry strictly decreasing scores when order matters.
- Graded metrics (nDCG) use the qrels grades as gains. Binary metrics (RR, AP, R, P) count a document as
  relevant when its grade is ``>= rel_level`` (2 for TREC DL, 1 for BEIR).
- ``RR@k`` is reciprocal rank computed on each query's top ``k`` (0 when no relevant document is in the top
  ``k``), with the same tie-breaking as the other metrics.

Metric names: ``nDCG@k``, ``RR@k`` / ``MRR@k`` / ``RR``, ``AP`` / ``MAP`` / ``AP@k``, ``R@k`` / ``Recall@k``,
``P@k`` / ``Precision@k`` (case-insensitive), or any other ``ir_measures`` measure string such as ``"infAP"``,
``"Bpref"``, ``"Judged@10"`` or ``"AP(rel=3)"``. ``rel_level`` reaches every measure whose relevance threshold
defaults to 1 (``infAP`` becomes ``infAP(rel=2)`` at level 2), unless the name sets ``rel=`` itself; graded
measures (nDCG, and RBP / NumRet, whose ``rel`` is unset by default) are left as they are.

A run none of whose queries is judged is an error (:class:`~unirank.errors.EvalInputError`), never a table of
zeros; :class:`EvalResult` records how many run queries were judged.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import EvalInputError, require

__all__ = ["DEFAULT_METRICS", "EVAL_TABLE_METRICS", "EvalResult", "evaluate", "format_table", "parse_metric"]

logger = logging.getLogger(__name__)

DEFAULT_METRICS: tuple[str, ...] = ("nDCG@10", "RR@10", "AP", "R@100", "P@10")
#: What ``unirank eval`` / :func:`~unirank.eval.job.eval_job` show by default: ``Judged@10`` (the share of
#: each query's top 10 that the qrels judge) beside nDCG@10, since unjudged documents in the top 10 count as
#: non-relevant, which is how re-ranking results on partial qrels mislead.
EVAL_TABLE_METRICS: tuple[str, ...] = ("nDCG@10", "Judged@10", "RR@10", "AP", "R@100", "P@10")

# user name (lower case) -> (ir_measures measure name, binary?, needs a cutoff?)
_ALIASES: dict[str, tuple[str, bool, bool]] = {
    "ndcg": ("nDCG", False, False),
    "rr": ("RR", True, False),
    "mrr": ("RR", True, False),
    "recip_rank": ("RR", True, False),
    "ap": ("AP", True, False),
    "map": ("AP", True, False),
    "r": ("R", True, True),
    "recall": ("R", True, True),
    "p": ("P", True, True),
    "precision": ("P", True, True),
}
_NAME_RE = re.compile(r"^\s*([A-Za-z_]+)\s*(?:@\s*(\d+))?\s*$")


def parse_metric(name: str, rel_level: int = 1) -> tuple[Any, int | None]:
    """Map a metric name to ``(ir_measures measure, truncation depth or None)``.

    The truncation depth is set for ``RR@k``, which is computed as ``RR`` on the run cut to its top ``k``.

    >>> m, k = parse_metric("MRR@10", rel_level=2)
    >>> str(m), k
    ('RR(rel=2)', 10)
    >>> str(parse_metric("Recall@100")[0])
    'R@100'
    """
    irm = require("ir_measures", "eval", "ir-measures")
    if isinstance(rel_level, bool) or not isinstance(rel_level, int) or rel_level < 1:
        raise ValueError(f"rel_level must be an integer >= 1, got {rel_level!r}")
    match = _NAME_RE.match(name)
    if "(" in name or not match or match.group(1).lower() not in _ALIASES:
        try:  # any other ir_measures measure
            measure = irm.parse_measure(name)
        except Exception:
            raise ValueError(
                f"unknown metric {name!r}; use e.g. nDCG@10, RR@10, MRR@10, AP, MAP, R@100, P@10, "
                "or an ir_measures measure such as 'infAP', 'AP(rel=3)' or 'Judged@10'"
            ) from None
        return _with_rel_level(measure, name, rel_level), None
    base, binary, needs_cutoff = _ALIASES[match.group(1).lower()]
    cutoff = int(match.group(2)) if match.group(2) else None
    if cutoff is not None and cutoff < 1:
        raise ValueError(f"metric {name!r}: the cutoff must be >= 1")
    if needs_cutoff and cutoff is None:
        raise ValueError(f"metric {name!r} needs a cutoff, e.g. {base}@100")
    measure = getattr(irm, base)
    if binary and rel_level != 1:
        measure = measure(rel=rel_level)
    if base == "RR":
        return measure, cutoff
    return (measure @ cutoff if cutoff is not None else measure), None


_EXPLICIT_REL = re.compile(r"\brel\s*=")


def _with_rel_level(measure: Any, name: str, rel_level: int) -> Any:
    """``measure`` with ``rel=rel_level`` where its relevance threshold is the default 1 and ``name`` does not
    set ``rel=`` itself. Measures whose ``rel`` is unset by default (RBP: graded; NumRet: every document)
    keep their meaning."""
    param = measure.SUPPORTED_PARAMS.get("rel")
    if rel_level == 1 or param is None or _EXPLICIT_REL.search(name):
        return measure
    current = measure.params.get("rel", param.default)
    if isinstance(current, int) and not isinstance(current, bool) and current == 1:
        return measure(rel=rel_level)
    return measure


@dataclass
class EvalResult:
    """Aggregate (mean over judged queries) and per-query metric values.

    ``per_query[metric][qid]`` holds each judged query's value (the means run over these
    :attr:`num_queries` queries); ``missing_queries`` lists judged queries that the run did not rank (they
    count as 0). ``run_queries`` is the number of queries in the run, ``judged_run_queries`` how many of them
    are judged. ``skipped_queries`` lists judged queries the caller left out of the means (see
    :func:`~unirank.eval.job.eval_job`'s ``skip_queries_without_text``).
    """

    aggregate: dict[str, float]
    per_query: dict[str, dict[str, float]]
    rel_level: int = 1
    missing_queries: list[str] = field(default_factory=list)
    run_queries: int = 0
    judged_run_queries: int = 0
    skipped_queries: list[str] = field(default_factory=list)

    def __getitem__(self, metric: str) -> float:
        return self.aggregate[metric]

    @property
    def metrics(self) -> list[str]:
        return list(self.aggregate)

    @property
    def num_queries(self) -> int:
        return len(next(iter(self.per_query.values()), {}))

    def to_dict(self) -> dict[str, Any]:
        return {
            "aggregate": dict(self.aggregate),
            "per_query": {m: dict(v) for m, v in self.per_query.items()},
            "rel_level": self.rel_level,
            "missing_queries": list(self.missing_queries),
            "run_queries": self.run_queries,
            "judged_run_queries": self.judged_run_queries,
            "skipped_queries": list(self.skipped_queries),
        }


def _as_score_dict(run: Mapping[str, Any], judged: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for qid, ranking in run.items():
        qid = str(qid)
        if qid not in judged:
            continue
        items = list(ranking.items()) if isinstance(ranking, Mapping) else list(ranking)
        docs: dict[str, float] = {}
        for docid, score in items:
            score = float(score)
            if math.isnan(score):
                raise ValueError(f"run has a NaN score for query {qid!r}, document {docid!r}")
            docs[str(docid)] = score
        if len(docs) != len(items):
            raise ValueError(f"run lists a document more than once for query {qid!r}")
        if docs:
            out[qid] = docs
    return out


def _truncate(run: dict[str, dict[str, float]], k: int) -> dict[str, dict[str, float]]:
    """Each query's top ``k`` in trec_eval order: score descending, then document id descending."""
    out = {}
    for qid, docs in run.items():
        by_id = sorted(docs.items(), key=lambda kv: kv[0], reverse=True)
        out[qid] = dict(sorted(by_id, key=lambda kv: -kv[1])[:k])
    return out


def evaluate(
    qrels: Mapping[str, Mapping[str, int]],
    run: Mapping[str, Any],
    metrics: Sequence[str] | str = DEFAULT_METRICS,
    rel_level: int = 1,
) -> EvalResult:
    """Evaluate ``run`` against graded ``qrels`` (see the module docstring for the conventions).

    ``run`` is ``{qid: [(docid, score), ...]}`` or ``{qid: {docid: score}}``.

    >>> qrels = {"q1": {"d1": 2, "d2": 1}, "q2": {"d3": 1}}
    >>> run = {"q1": [("d2", 2.0), ("d1", 1.0)]}          # q2 is not ranked: it scores 0
    >>> res = evaluate(qrels, run, ["RR@10", "P@1"], rel_level=2)
    >>> res["RR@10"], res.per_query["RR@10"], res.missing_queries
    (0.25, {'q1': 0.5, 'q2': 0.0}, ['q2'])
    """
    irm = require("ir_measures", "eval", "ir-measures")
    names = [metrics] if isinstance(metrics, str) else list(metrics)
    if not names:
        raise ValueError("no metrics requested")
    if len(set(names)) != len(names):
        raise ValueError(f"metric names repeated: {names}")
    judged = {str(q): {str(d): int(g) for d, g in docs.items()} for q, docs in qrels.items()}
    if not judged:
        raise EvalInputError("qrels are empty; nothing to evaluate")
    run_qids = [str(q) for q in run]
    n_judged = sum(1 for q in run_qids if q in judged)
    if not run_qids:
        raise EvalInputError("the run has no queries; nothing to evaluate")
    if n_judged == 0:
        raise EvalInputError(
            f"none of the run's {len(run_qids)} queries is judged: no run query id (e.g. {run_qids[:3]}) is "
            f"in the qrels (e.g. {sorted(judged)[:3]}); wrong qrels file, or query ids written differently?",
            qids=run_qids,
        )
    if n_judged < len(run_qids):
        logger.info("%d of %d run queries are judged; the others are ignored", n_judged, len(run_qids))
    scores = _as_score_dict(run, judged)

    groups: dict[int | None, dict[Any, list[str]]] = {}
    for name in names:
        measure, depth = parse_metric(name, rel_level)
        groups.setdefault(depth, {}).setdefault(measure, []).append(name)

    per_query = {name: dict.fromkeys(judged, 0.0) for name in names}
    for depth, by_measure in groups.items():
        measures = list(by_measure)
        provider = irm.pytrec_eval if all(irm.pytrec_eval.supports(m) for m in measures) else irm
        scored = scores if depth is None else _truncate(scores, depth)
        for metric in provider.iter_calc(measures, judged, scored):
            if metric.query_id in judged:
                for name in by_measure[metric.measure]:
                    per_query[name][metric.query_id] = float(metric.value)
    n = len(judged)
    aggregate = {name: math.fsum(per_query[name].values()) / n for name in names}
    missing = sorted(q for q in judged if q not in scores)
    return EvalResult(aggregate, per_query, rel_level, missing, len(run_qids), n_judged)


def format_table(rows: Mapping[str, Mapping[str, float]], label: str = "run") -> str:
    """An aligned plain-text table: one row per name, one column per metric, 4-decimal numbers.

    >>> print(format_table({"bm25": {"nDCG@10": 0.50583}, "bm25 >> ce": {"nDCG@10": 0.7}}))
    run         nDCG@10
    bm25         0.5058
    bm25 >> ce   0.7000
    """
    columns: list[str] = []
    for values in rows.values():
        columns.extend(m for m in values if m not in columns)
    cells = [[name] + [_fmt(values.get(m)) for m in columns] for name, values in rows.items()]
    header = [label, *columns]
    widths = [max(len(r[i]) for r in [header, *cells]) for i in range(len(header))]
    lines = []
    for row in [header, *cells]:
        first = row[0].ljust(widths[0])
        rest = [cell.rjust(w) for cell, w in zip(row[1:], widths[1:])]
        lines.append("  ".join([first, *rest]).rstrip())
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{float(value):.4f}"
