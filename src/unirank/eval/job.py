"""Re-rank a first-stage run with any :class:`~unirank.base.Ranker` and compare the two.

Contract of a re-ranked run (what :func:`rerank_run` returns and :func:`eval_job` writes):

- For every query of the first-stage run that has query text, the top ``depth`` candidates are re-ordered
  by the ranker and carry its raw scores. Below them come, in first-stage order: top-``depth`` candidates
  the ranker could not score (missing from the corpus, or given a NaN / -inf score), then the first-stage
  documents ranked below ``depth``. Those get new, strictly decreasing scores lower than every re-ranked
  score, so the run stays complete (same documents as the input) and its score order is its list order.
  Exception: documents the ranker itself scored equal keep their first-stage order in the list, while
  trec_eval-style evaluation (:func:`~unirank.eval.metrics.evaluate`) breaks such ties by document id.
- Queries with no text in ``dataset.queries`` are left out, with a warning giving their count.

What :func:`eval_job` refuses, since each would bias the comparison (:class:`~unirank.errors.EvalInputError`):

- a judged query with no (or only blank) text, when a ranker is given: the first-stage row would score it
  and the re-ranked row give it 0. ``skip_queries_without_text=True`` leaves such queries out of every row
  (the means run over the rest; :func:`eval_header` says how many were skipped);
- a run none of whose queries is judged (see :func:`~unirank.eval.metrics.evaluate`).

With ``ranker=None`` the run is evaluated as it is: one row, no model, no query text needed.

Failure contract: queries are scored in batches of ``batch_queries``. If a batch raises, the queries of
earlier batches are kept: :func:`rerank_run` raises :class:`PartialRunError` whose ``.run`` holds them and
whose ``.failed_qids`` lists the rest; :func:`eval_job` additionally writes them (atomically) to
``out_path + ".partial"`` and never creates ``out_path`` itself. ``KeyboardInterrupt`` also triggers the
partial write in :func:`eval_job`, and is then re-raised unchanged.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from ..errors import EvalInputError, UniRankError
from .io import Dataset, Run, run_to_candidates, write_trec_run
from .metrics import EVAL_TABLE_METRICS, EvalResult, evaluate, format_table

if TYPE_CHECKING:
    from ..base import Ranker
    from ..types import Document, RankedResults

__all__ = [
    "PartialRunError",
    "check_query_text",
    "eval_header",
    "eval_job",
    "queries_without_text",
    "rerank_run",
]

logger = logging.getLogger(__name__)

RunArg = Union[str, "os.PathLike[str]", Mapping[str, Sequence[tuple[str, float]]]]


class PartialRunError(UniRankError, RuntimeError):
    """Scoring failed part-way. ``run`` holds the finished queries; ``failed_qids`` the queries not finished;
    ``partial_path`` the file they were written to (by :func:`eval_job` when given ``out_path``), else
    ``None``.
    The original exception is the ``__cause__``."""

    def __init__(
        self, message: str, run: Run, failed_qids: list[str], partial_path: Path | None = None
    ) -> None:
        super().__init__(message)
        self.run = run
        self.failed_qids = failed_qids
        self.partial_path = partial_path


class _Plan:
    """Everything decided before any scoring: which queries, their candidates, what is appended below."""

    def __init__(self, dataset: Dataset, run: Mapping[str, Sequence[tuple[str, float]]], depth: int) -> None:
        self.qids = [q for q in run if dataset.queries.get(q, "").strip()]
        skipped = len(run) - len(self.qids)
        if skipped:
            logger.warning(
                "%d of %d run queries have no query text in dataset %r; they are left out of the "
                "re-ranked run",
                skipped,
                len(run),
                dataset.name,
            )
        top = {q: list(run[q][:depth]) for q in self.qids}
        self.candidates, self.missing = run_to_candidates(top, dataset.corpus)
        self.queries = dataset.queries
        self.first_stage = run
        self.depth = depth


def _merge(ranked: RankedResults | None, plan: _Plan, qid: str) -> list[tuple[str, float]]:
    head: list[tuple[str, float]] = []
    demoted: list[str] = []
    for r in ranked.results if ranked is not None else []:
        score = float(r.score)
        if math.isnan(score) or score == -math.inf:
            demoted.append(str(r.id))
        else:
            head.append((str(r.id), score))
    if demoted:
        logger.warning(
            "query %s: %d documents got no usable score (NaN / -inf); kept below the scored ones",
            qid,
            len(demoted),
        )
    unscored = set(demoted)
    demoted = [d for d, _ in plan.first_stage[qid][: plan.depth] if d in unscored]  # first-stage order
    below = demoted + plan.missing[qid] + [d for d, _ in plan.first_stage[qid][plan.depth :]]
    finite = [s for _, s in head if math.isfinite(s)]
    floor = min(finite) if finite else 0.0
    step = max(1.0, abs(floor) * 2.0**-20)
    return head + [(d, floor - step * (i + 1)) for i, d in enumerate(below)]


def _iter_rerank(
    ranker: Ranker, plan: _Plan, batch_queries: int, show_progress: bool
) -> Iterator[tuple[str, list[tuple[str, float]]]]:
    from tqdm.auto import tqdm

    bar = tqdm(total=len(plan.qids), disable=not show_progress, unit="query", desc=f"re-rank {ranker.name}")
    try:
        for start in range(0, len(plan.qids), batch_queries):
            batch = plan.qids[start : start + batch_queries]
            nonempty = [q for q in batch if plan.candidates[q]]
            docs: list[list[Document]] = [plan.candidates[q] for q in nonempty]
            results = ranker.rank_many([plan.queries[q] for q in nonempty], docs) if nonempty else []
            if len(results) != len(nonempty):
                raise RuntimeError(
                    f"{ranker.name} returned {len(results)} results for {len(nonempty)} queries"
                )
            by_qid = dict(zip(nonempty, results))
            for q in batch:
                yield q, _merge(by_qid.get(q), plan, q)
            bar.update(len(batch))
    finally:
        bar.close()


def _prepare(dataset: Dataset | str, run: RunArg, depth: int, batch_queries: int) -> tuple[Dataset, Run, str]:
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be a positive integer, got {depth!r}")
    if isinstance(batch_queries, bool) or not isinstance(batch_queries, int) or batch_queries < 1:
        raise ValueError(f"batch_queries must be a positive integer, got {batch_queries!r}")
    if isinstance(dataset, str):
        from .datasets import load_dataset

        dataset = load_dataset(dataset)
    if isinstance(run, Mapping):
        return dataset, {str(q): list(v) for q, v in run.items()}, "run"
    label = str(run)
    if isinstance(run, os.PathLike) or (label not in dataset.runs and Path(label).is_file()):
        label = re.sub(r"(\.(trec|run|txt))?(\.gz)?$", "", Path(label).name)
    return dataset, dataset.get_run(run), label


def rerank_run(
    ranker: Ranker,
    dataset: Dataset | str,
    run: RunArg,
    depth: int = 100,
    batch_queries: int = 16,
    show_progress: bool = True,
) -> Run:
    """Re-rank the top ``depth`` candidates of every query of ``run`` with ``ranker`` (see the module
    docstring).

    ``run`` is a loaded run, a run name of the dataset (``"bm25"``) or a TREC run path. Raises
    :class:`PartialRunError` (finished queries in ``.run``) when a batch fails.

    >>> import numpy as np
    >>> from unirank.base import Ranker
    >>> from unirank.types import Document
    >>> class Length(Ranker):
    ...     def _score_many(self, queries, docs_lists, show_progress=False):
    ...         return [np.array([len(d.text) for d in docs], dtype=float) for docs in docs_lists]
    >>> ds = Dataset("toy", {"a": Document("short", "a"), "b": Document("much longer", "b"),
    ...                      "c": Document("c", "c")}, {"q": "anything"}, {"q": {"b": 1}})
    >>> rerank_run(Length(), ds, {"q": [("a", 3.0), ("b", 2.0), ("c", 1.0)]}, depth=2, show_progress=False)
    {'q': [('b', 11.0), ('a', 5.0), ('c', 4.0)]}
    """
    ds, first, _ = _prepare(dataset, run, depth, batch_queries)
    plan = _Plan(ds, first, depth)
    out: Run = {}
    try:
        for qid, ranking in _iter_rerank(ranker, plan, batch_queries, show_progress):
            out[qid] = ranking
    except Exception as exc:
        failed = [q for q in plan.qids if q not in out]
        raise PartialRunError(
            f"re-ranking failed after {len(out)} of {len(plan.qids)} queries ({type(exc).__name__}: {exc})",
            out,
            failed,
        ) from exc
    return out


def queries_without_text(dataset: Dataset) -> list[str]:
    """Judged queries (in ``dataset.qrels``) whose text is missing from ``dataset.queries`` or blank."""
    return [q for q in dataset.qrels if not dataset.queries.get(q, "").strip()]


def check_query_text(dataset: Dataset, skip: bool = False) -> list[str]:
    """The judged queries without text; raises :class:`EvalInputError` naming them unless ``skip``."""
    missing = queries_without_text(dataset)
    if missing and not skip:
        raise EvalInputError(
            f"{len(missing)} judged queries of dataset {dataset.name!r} have no text: {missing[:10]}"
            f"{' ...' if len(missing) > 10 else ''}; they cannot be re-ranked, and scoring them in one row "
            "but not the other biases the comparison. Add their text, or skip them in every row "
            "(--skip-queries-without-text, or skip_queries_without_text=True)",
            qids=missing,
        )
    return missing


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def eval_header(dataset: Dataset, label: str, result: EvalResult, depth: int | None = None) -> str:
    """Two lines that say what a table's numbers are over: judged queries, those with text, the queries the
    means run over, how many run queries were judged, the relevance level and the re-ranking depth.

    >>> ds = Dataset("toy", {}, {"q1": "rain", "q2": ""}, {"q1": {"d": 2}, "q2": {"d": 1}}, rel_level=2)
    >>> res = evaluate(ds.qrels, {"q1": [("d", 1.0)], "x": [("d", 1.0)]}, ["AP"], 2)
    >>> print(eval_header(ds, "bm25", res, 100))
    toy: 2 judged queries, 1 with text; means over 2 judged queries (1 not in the run: they score 0)
    run bm25: 1 of 2 run queries judged; binary metrics count grade >= 2 (rel_level 2); re-ranking depth 100
    """
    with_text = len(dataset.qrels) - len(queries_without_text(dataset))
    first = f"{dataset.name}: {len(dataset.qrels)} judged queries, {with_text} with text; "
    first += f"means over {_plural(result.num_queries, 'judged query', 'judged queries')}"
    notes = []
    if result.missing_queries:
        notes.append(f"{len(result.missing_queries)} not in the run: they score 0")
    if result.skipped_queries:
        n = len(result.skipped_queries)
        notes.append(f"{_plural(n, 'judged query', 'judged queries')} without text skipped in every row")
    first += f" ({'; '.join(notes)})" if notes else ""
    level = result.rel_level
    second = f"run {label}: {result.judged_run_queries} of {result.run_queries} run queries judged; "
    second += f"binary metrics count grade >= {level} (rel_level {level})"
    return first + "\n" + second + (f"; re-ranking depth {depth}" if depth is not None else "")


def _run_tag(ranker: Ranker) -> str:
    return re.sub(r"\s+", "_", ranker.name.strip()) or "unirank"


def eval_job(
    ranker: Ranker | None,
    dataset: Dataset | str,
    run_name_or_path: RunArg,
    depth: int = 100,
    metrics: Sequence[str] = EVAL_TABLE_METRICS,
    out_path: str | os.PathLike[str] | None = None,
    *,
    batch_queries: int = 16,
    show_progress: bool = True,
    rel_level: int | None = None,
    skip_queries_without_text: bool = False,
) -> tuple[str, dict[str, EvalResult]]:
    """Evaluate a first-stage run and its re-ranking by ``ranker``; return ``(table, results)``.

    ``results`` maps the row labels of the table (``"<run>"`` and ``"<run> >> <ranker>@<depth>"``) to
    :class:`~unirank.eval.metrics.EvalResult`. With ``ranker=None`` there is one row, the run as it is.
    ``rel_level`` overrides ``dataset.rel_level``. With ``out_path`` the re-ranked run is written atomically
    (a stale ``out_path + ".partial"`` is then removed); on failure see the module docstring, and for what is
    refused, and ``skip_queries_without_text``, too. :func:`eval_header` describes the table.
    """
    ds, first, label = _prepare(dataset, run_name_or_path, depth, batch_queries)
    level = ds.rel_level if rel_level is None else rel_level
    if ranker is None and out_path is not None:
        raise ValueError("out_path needs a ranker: with ranker=None nothing is re-ranked")
    no_text = check_query_text(ds, skip=skip_queries_without_text or ranker is None)
    skipped = no_text if skip_queries_without_text else []
    qrels = {q: v for q, v in ds.qrels.items() if q not in set(skipped)} if skipped else ds.qrels
    if skipped:
        logger.warning(
            "%d judged queries without text are left out of every row: %s", len(skipped), skipped[:10]
        )
    first_res = evaluate(qrels, first, metrics, level)
    first_res.skipped_queries = list(skipped)
    if ranker is None:
        table = format_table({label: first_res.aggregate})
        logger.info("%s\n%s\n%s", ds.name, eval_header(ds, label, first_res), table)
        return table, {label: first_res}
    plan = _Plan(ds, first, depth)
    tag = _run_tag(ranker)
    logger.info(
        "re-ranking %d queries of %s (%s) with %s, depth %d",
        len(plan.qids),
        label,
        ds.name,
        ranker.name,
        depth,
    )
    out: Run = {}
    try:
        for qid, ranking in _iter_rerank(ranker, plan, batch_queries, show_progress):
            out[qid] = ranking
    except BaseException as exc:
        partial = None
        if out_path is not None:
            partial = Path(f"{os.fspath(out_path)}.partial")
            write_trec_run(out, partial, tag=tag)
            logger.error(
                "re-ranking stopped after %d of %d queries; finished queries written to %s",
                len(out),
                len(plan.qids),
                partial,
            )
        if not isinstance(exc, Exception):
            raise
        failed = [q for q in plan.qids if q not in out]
        raise PartialRunError(
            f"re-ranking failed after {len(out)} of {len(plan.qids)} queries ({type(exc).__name__}: {exc})"
            + (f"; finished queries written to {partial}" if partial else ""),
            out,
            failed,
            partial,
        ) from exc
    if out_path is not None:
        write_trec_run(out, out_path, tag=tag)
        stale = Path(f"{os.fspath(out_path)}.partial")
        if stale.exists():
            stale.unlink()
            logger.info("removed stale partial run %s", stale)
    reranked_res = evaluate(qrels, out, metrics, level)
    reranked_res.skipped_queries = list(skipped)
    rows: dict[str, Any] = {label: first_res, f"{label} >> {ranker.name}@{depth}": reranked_res}
    table = format_table({name: res.aggregate for name, res in rows.items()})
    logger.info("%s\n%s", eval_header(ds, label, first_res, depth), table)
    return table, rows
