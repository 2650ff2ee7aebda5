"""Experiment input (see :mod:`unirank.eval.experiment`): datasets loaded at their relevance level, and the
checks that refuse input which would bias a comparison, each naming the dataset / first stage / system."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import EvalInputError
from .io import Dataset, Run, read_corpus, read_qrels, read_queries
from .job import check_query_text
from .metrics import EvalResult, evaluate

if TYPE_CHECKING:
    from .experiment import DatasetSpec, ExperimentConfig

__all__ = ["Hashes", "digest", "evaluate_in", "fold_note", "judged", "prepare_dataset", "real_depths"]

logger = logging.getLogger("unirank.eval.experiment")


def _load(spec: DatasetSpec, rel_level: int | None) -> Dataset:
    from .datasets import load_dataset

    if spec.source is not None:
        ds = load_dataset(spec.source, split=spec.split, rel_level=rel_level)
        ds.name = spec.name
    else:
        qrels = read_qrels(spec.qrels)
        queries = {q: t for q, t in read_queries(spec.topics).items() if q in qrels}
        ds = Dataset(spec.name, read_corpus(spec.corpus), queries, qrels, {}, rel_level or 1)
    for name, path in spec.runs.items():
        ds.runs[name] = path
    if spec.max_queries is not None:
        keep = [q for q in ds.queries if q in ds.qrels][: spec.max_queries]
        ds.queries = {q: ds.queries[q] for q in keep}
        ds.qrels = {q: ds.qrels[q] for q in keep}
    return ds


def prepare_dataset(
    spec: DatasetSpec, cfg: ExperimentConfig, rel_level: int | None = None, skip: bool | None = None
) -> tuple[Dataset, list[str]]:
    """Load ``spec`` and check it; return the dataset and the judged queries skipped for lack of text.

    ``rel_level`` / ``skip`` (the ``run_experiment`` arguments, i.e. the CLI flags) win over the config.
    Skipped queries are removed from ``dataset.queries`` (so no first stage or re-ranker sees them) and
    stay in ``dataset.qrels``: evaluate over :func:`judged` to leave them out of every row.
    """
    if rel_level is not None and (
        isinstance(rel_level, bool) or not isinstance(rel_level, int) or rel_level < 1
    ):
        raise ValueError(f"rel_level must be an integer >= 1, got {rel_level!r}")
    level = rel_level if rel_level is not None else spec.rel_level or cfg.rel_level
    ds = _load(spec, level)
    if not ds.qrels:
        raise EvalInputError(f"dataset {ds.name!r}: no judged query (empty qrels); nothing to evaluate")
    skipped = check_query_text(ds, skip=cfg.skip_queries_without_text if skip is None else skip)
    if skipped:
        logger.warning(
            "dataset %r: %d judged queries without text are left out of every row: %s",
            ds.name,
            len(skipped),
            skipped[:10],
        )
        if len(skipped) == len(ds.qrels):
            raise EvalInputError(
                f"dataset {ds.name!r}: none of its {len(ds.qrels)} judged queries has text; nothing to "
                "evaluate",
                qids=skipped,
            )
        ds.queries = {q: t for q, t in ds.queries.items() if q not in set(skipped)}
    return ds, skipped


def judged(ds: Dataset, skipped: Sequence[str]) -> dict[str, dict[str, int]]:
    """``ds.qrels`` without the ``skipped`` queries."""
    drop = set(skipped)
    return {q: v for q, v in ds.qrels.items() if q not in drop} if drop else ds.qrels


def evaluate_in(
    where: str,
    qrels: Mapping[str, Mapping[str, int]],
    run: Run,
    metrics: Sequence[str],
    rel_level: int,
    skipped: Sequence[str] = (),
) -> EvalResult:
    """:func:`~unirank.eval.metrics.evaluate`, its :class:`EvalInputError` (an empty run, a run with no
    judged query) prefixed with ``where`` (dataset, first stage, system)."""
    try:
        res = evaluate(qrels, run, metrics, rel_level)
    except EvalInputError as exc:
        raise EvalInputError(f"{where}: {exc}", qids=exc.qids) from exc
    res.skipped_queries = list(skipped)
    return res


class Hashes:
    """Per-dataset content fingerprints (document texts hashed once)."""

    def __init__(self, ds: Dataset) -> None:
        self.ds = ds
        self._docs: dict[str, str] = {}

    def doc(self, docid: str) -> str:
        h = self._docs.get(docid)
        if h is None:
            d = self.ds.corpus.get(docid)
            text = "\x00missing" if d is None else d.text + "\x00" + str(d.metadata.get("title", ""))
            h = self._docs[docid] = hashlib.sha1(text.encode()).hexdigest()[:16]
        return h

    def corpus(self) -> str:
        return digest(sorted((d, self.doc(d)) for d in self.ds.corpus))


def digest(obj: Any) -> str:
    """SHA-256 of ``obj``'s canonical JSON: the cache keys of units."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def real_depths(depths: list[int], candidates: int) -> tuple[list[int], list[int]]:
    """The depths worth evaluating over lists of at most ``candidates`` documents, and those folded.

    A depth beyond the longest candidate list re-ranks exactly what depth ``candidates`` does: it is folded
    into that depth (run once, labelled ``@candidates``) rather than reported as another system.

    >>> real_depths([10, 50, 200, 500], 100)
    ([10, 50, 100], [200, 500])
    >>> real_depths([10, 100, 200], 100)
    ([10, 100], [200])
    """
    limit = max(1, candidates)
    folded = [d for d in depths if d > limit]
    return sorted({min(d, limit) for d in depths}), folded


def fold_note(name: str, folded: list[int], wanted: list[int], candidates: int, first_stage: str) -> str:
    """The report's note for depths :func:`real_depths` folded."""
    what = ", ".join(map(str, folded))
    head = (
        f"{name}: depth {what} exceeds the {candidates} candidates per query of first stage {first_stage!r}"
    )
    if candidates in wanted:
        return f"{head}; not evaluated (the same re-ranking as {name}@{candidates})"
    return f"{head}; evaluated once as {name}@{candidates} (every candidate)"
