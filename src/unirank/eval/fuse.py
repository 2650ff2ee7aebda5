"""Fuse TREC runs (``unirank fuse``), with weights optionally tuned on a dev split's qrels.

The fusion math is :mod:`unirank.strategies.fusion`'s (RRF, CombSUM, CombMNZ, CombMAX, CombMIN, CombANZ over
per-list normalised scores). Each query is fused over the runs that rank it; within a run, a query's documents
are ordered by score, best first (ties keep the file's order), which is the rank RRF uses.

Compared with ranx's ``fuse`` (the test oracle, ``tests/test_fuse_cli.py``), the fused scores and orders
are the same for ``rrf`` (k), ``combsum`` (ranx ``sum``, or ``wsum`` with weights), ``combmnz`` (``mnz``),
``combmax`` (``max``), ``combmin`` (``min``) and ``combanz`` (``anz``) under the norms ``minmax``
(``min-max``), ``max``, ``sum``, ``zscore`` (``zmuv``) and ``none``, except where the definitions differ on
purpose:

- a constant list (every score equal, e.g. a query with one document) normalises to 1.0 under ``minmax``
  and to 1/n under ``sum``; ranx divides by 1e-9 and gives 0.0, so a run's only document would add nothing;
- weighted CombMNZ is ``sum_i w_i s_i * (number of lists with d)``; ranx's ``wmnz`` (Wu & Crestani) is
  ``sum_i s_i * sum_i w_i`` over the lists containing ``d``. With equal weights of 1 both are CombMNZ;
- RRF takes weights too (``sum_i w_i / (k + rank_i)``); ranx's RRF has none;
- ranx refuses runs whose query sets differ; here a query is fused over the runs that have it;
- ``max`` needs scores >= 0 (a negative maximum would flip the order); ranx divides by max(max, 1e-9).

Tuning (:func:`tune_weights`) is ranx's ``optimize_fusion`` grid: every weight in ``{0, step, ..., 1}``, the
weights summing to 1, each combination evaluated on the dev qrels, the last best kept (ranx's ``>=``). ranx
drops combinations whose floating-point sum is not exactly 1.0 (e.g. 0.1 + 0.2 + 0.7); the grid here is exact.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import math
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import EvalInputError
from ..strategies.fusion import FUSION_METHODS, NORMS, _fuse_rankings, _ranking
from .io import Run, read_qrels, read_trec_run, write_trec_run
from .metrics import evaluate

__all__ = ["fuse_runs", "grid_weights", "tune_weights"]

logger = logging.getLogger(__name__)

# ranx's names -> ours, so either spelling works on the command line
_NORM_ALIASES = {"min-max": "minmax", "min_max": "minmax", "zmuv": "zscore"}
_METHOD_ALIASES = {"sum": "combsum", "wsum": "combsum", "mnz": "combmnz", "max": "combmax", "min": "combmin"}
_METHOD_ALIASES["anz"] = "combanz"

RunLike = Mapping[str, Sequence[tuple[str, float]]]


def _canonical(method: str, norm: str) -> tuple[str, str]:
    method = _METHOD_ALIASES.get(method.lower(), method.lower())
    norm = _NORM_ALIASES.get(norm.lower(), norm.lower())
    if method not in FUSION_METHODS:
        raise ValueError(f"unknown fusion method {method!r}; expected one of {FUSION_METHODS}")
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; expected one of {NORMS} (or ranx's min-max, zmuv)")
    return method, norm


def _prepared(runs: Sequence[RunLike]) -> tuple[list[str], list[dict[str, Any]]]:
    if len(runs) < 2:
        raise ValueError(f"fusion needs at least two runs, got {len(runs)}")
    qids: dict[str, None] = {}
    per_run = []
    for run in runs:
        per_run.append({str(q): _ranking(dict(r)) for q, r in run.items()})
        qids.update(dict.fromkeys(per_run[-1]))
    partial = sum(1 for q in qids if any(q not in r for r in per_run))
    if partial:
        logger.warning("%d of %d queries are missing from some runs; fused over the runs that have them",
                       partial, len(qids))  # fmt: skip
    return list(qids), per_run


def _fuse_prepared(
    qids: Sequence[str], per_run: Sequence[Mapping[str, Any]], method: str, k: float, norm: str,
    weights: Sequence[float] | None, top_k: int | None,
) -> Run:  # fmt: skip
    out: Run = {}
    for q in qids:
        rankings = [r.get(q, []) for r in per_run]
        fused = _fuse_rankings(rankings, method, k, norm, weights)
        out[q] = [(str(d), s) for d, s in list(fused.items())[:top_k]]
    return out


def fuse_runs(
    runs: Sequence[RunLike],
    method: str = "rrf",
    *,
    k: float = 60,
    norm: str = "minmax",
    weights: Sequence[float] | None = None,
    top_k: int | None = None,
) -> Run:
    """Fuse runs (``{qid: [(docid, score), ...]}``) query by query; see the module docstring.

    >>> a = {"q": [("d1", 3.0), ("d2", 2.0), ("d3", 1.0)]}
    >>> b = {"q": [("d2", 9.0), ("d3", 1.0)]}
    >>> fuse_runs([a, b], "combsum", norm="minmax")
    {'q': [('d2', 1.5), ('d1', 1.0), ('d3', 0.0)]}
    """
    method, norm = _canonical(method, norm)
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    qids, per_run = _prepared(runs)
    return _fuse_prepared(qids, per_run, method, k, norm, weights, top_k)


def grid_weights(n: int, step: float = 0.1) -> list[tuple[float, ...]]:
    """Every ``n`` weights in ``{0, step, ..., 1}`` summing to 1, in ranx's order (``itertools.product``).

    >>> grid_weights(2, 0.5)
    [(0.0, 1.0), (0.5, 0.5), (1.0, 0.0)]
    """
    units = round(1 / step)
    if not 0 < step <= 1 or not math.isclose(units * step, 1.0):
        raise ValueError(f"step must divide 1 into whole parts (0.1, 0.05, 0.25, ...), got {step}")
    digits = max(0, -math.floor(math.log10(step)) + 1)
    return [
        tuple(round(c * step, digits) for c in combo)
        for combo in itertools.product(range(units + 1), repeat=n)
        if sum(combo) == units
    ]


def tune_weights(
    runs: Sequence[RunLike],
    qrels: Mapping[str, Mapping[str, int]],
    method: str = "combsum",
    *,
    metric: str = "nDCG@10",
    rel_level: int = 1,
    k: float = 60,
    norm: str = "minmax",
    step: float = 0.1,
) -> tuple[tuple[float, ...], float]:
    """The weights (a :func:`grid_weights` point) whose fusion scores best on ``qrels``, and that score.

    Only the queries judged in ``qrels`` (the dev split) are fused while tuning.

    >>> a = {"q": [("d1", 3.0), ("d2", 2.0), ("d3", 0.0)]}
    >>> b = {"q": [("d3", 4.0), ("d2", 3.0), ("d1", 0.0)]}  # d2 is second in both: only equal weights lift it
    >>> tune_weights([a, b], {"q": {"d2": 1}}, "combsum", metric="RR@10", step=0.25)
    ((0.5, 0.5), 1.0)
    """
    method, norm = _canonical(method, norm)
    qids, per_run = _prepared(runs)
    dev = [q for q in qids if q in qrels]
    if not dev:
        raise EvalInputError(
            "no query of the runs is judged in the tuning qrels; wrong qrels file?", qids=qids
        )
    best: tuple[tuple[float, ...], float] | None = None
    for w in grid_weights(len(runs), step):
        fused = _fuse_prepared(dev, per_run, method, k, norm, w, None)
        score = evaluate(qrels, fused, [metric], rel_level)[metric]
        logger.debug("weights %s: %s %.4f", w, metric, score)
        if best is None or score >= best[1]:
            best = (w, score)
    assert best is not None
    return best


def cmd_fuse(args: argparse.Namespace) -> int:
    runs = [read_trec_run(p) for p in args.runs]
    method, norm = _canonical(args.method, args.norm)
    weights = args.weights
    if weights is not None and args.tune_on:
        raise ValueError("--weights and --tune-on exclude each other")
    if args.tune_on:
        qrels = read_qrels(args.tune_on)
        weights, score = tune_weights(
            runs, qrels, method, metric=args.metric, rel_level=args.rel_level, k=args.k, norm=norm,
            step=args.step,
        )  # fmt: skip
        sys.stdout.write(f"tuned weights {list(weights)}: {args.metric} {score:.4f} on {args.tune_on}\n")
    fused = fuse_runs(runs, method, k=args.k, norm=norm, weights=weights, top_k=args.top_k)
    write_trec_run(fused, args.out, tag=args.tag or f"fusion-{method}")
    n_docs = sum(len(v) for v in fused.values())
    how = f"k {args.k:g}" if method == "rrf" else f"norm {norm}"  # RRF uses ranks only
    sys.stdout.write(f"fused {len(runs)} runs ({method}, {how}): {len(fused)} queries, {n_docs} rows\n")
    sys.stdout.write(f"written to {os.fspath(args.out)}\n")
    return 0


def add_subparser(sub: Any) -> None:
    """Register ``unirank fuse``."""
    f = sub.add_parser(
        "fuse", help="fuse TREC run files (RRF, CombSUM, CombMNZ, ...), weights optionally tuned"
    )
    f.add_argument("runs", nargs="+", metavar="RUN", help="TREC run files (at least two)")
    f.add_argument("--method", default="rrf", help=f"one of {', '.join(FUSION_METHODS)} (default rrf)")
    f.add_argument(
        "--norm", default="minmax", help=f"score normalisation: {', '.join(NORMS)} (default minmax)"
    )
    f.add_argument("--k", type=float, default=60, help="RRF's k (default 60)")
    f.add_argument("--weights", type=float, nargs="+", default=None, help="one weight per run")
    f.add_argument("--tune-on", default=None, metavar="QRELS", help="tune the weights on these (dev) qrels")
    f.add_argument("--metric", default="nDCG@10", help="metric to tune (default nDCG@10)")
    f.add_argument(
        "--rel-level", type=int, default=1, metavar="N", help="binary metrics: grade >= N relevant"
    )
    f.add_argument("--step", type=float, default=0.1, help="weight grid step when tuning (default 0.1)")
    f.add_argument("--top-k", type=int, default=None, help="keep each query's top K fused documents")
    f.add_argument("--tag", default=None, help="run tag of the output (default fusion-METHOD)")
    f.add_argument("--out", "-o", required=True, help="fused TREC run to write (atomic)")
    f.set_defaults(func=cmd_fuse)
