"""Datasets from the ``ir_datasets`` package: ``load_dataset("irds:msmarco-passage/trec-dl-2019/judged")``.

Needs the ``irds`` extra (``pip install 'unirank[irds]'``); ``ir_datasets`` is imported on the first load, and
downloads (or reads from its cache, ``IR_DATASETS_HOME``, default ``~/.ir_datasets``) as it always does.

What comes across:

- documents: read lazily through the dataset's docstore (:class:`IrdsCorpus`), so only the candidates that
  are re-ranked are read, even from the 8.8M passages of MS MARCO. A document with ``title`` and ``text``
  fields becomes ``Document("title text", metadata={"title": ...})`` as a BEIR folder's does; any other
  shape uses the dataset's own ``default_text()``;
- queries: ``default_text()`` of each query, restricted to the judged ones (as :func:`~unirank.eval.io.
  load_beir` does); the split is part of the id (``irds:beir/scifact/test``);
- qrels: as graded in the dataset; the relevance level is 2 for TREC DL ids (any id with a ``trec-dl...``
  part, as the bundled DL19) and 1 otherwise, unless ``rel_level`` is given;
- a first-stage run named ``"scoreddocs"`` where the dataset has scoreddocs (restricted to the judged
  queries, each ranked by score). ir_datasets has no scores for some of them (MS MARCO's top-1000 sets: every
  score is 0); such a run has no order, so using it raises :class:`~unirank.errors.EvalInputError` asking
  for a run file (``--run``) rather than cutting an arbitrary top ``depth``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any

from ..errors import EvalInputError, require
from ..types import Document, _doc_from_mapping
from .io import Dataset, Run

__all__ = ["IRDS_PREFIX", "IrdsCorpus", "default_rel_level", "load_irds"]

logger = logging.getLogger(__name__)

IRDS_PREFIX = "irds:"


def default_rel_level(dataset_id: str) -> int:
    """2 for TREC DL ids (their binary metrics count grade >= 2), 1 for any other.

    >>> default_rel_level("msmarco-passage/trec-dl-2019/judged"), default_rel_level("beir/scifact/test")
    (2, 1)
    """
    return 2 if any(part.startswith("trec-dl") for part in dataset_id.split("/")) else 1


def _to_document(doc: Any) -> Document:
    fields = dict(doc._asdict())
    doc_id = str(fields.pop("doc_id"))
    if isinstance(fields.get("text"), str):
        return _doc_from_mapping({"_id": doc_id, **fields}, 0)
    meta = {k: v for k, v in fields.items() if isinstance(v, str)}
    return Document(doc.default_text(), doc_id, meta)


class IrdsCorpus(Mapping[str, Document]):
    """A read-only ``{doc_id: Document}`` view of an ir_datasets docstore; documents read are kept."""

    def __init__(self, dataset: Any, dataset_id: str) -> None:
        self._dataset = dataset
        self._id = dataset_id
        self._store: Any = None
        self._cache: dict[str, Document] = {}

    def _docstore(self) -> Any:
        if self._store is None:
            self._store = self._dataset.docs_store()
        return self._store

    def __getitem__(self, doc_id: str) -> Document:
        doc = self._cache.get(doc_id)
        if doc is None:
            found = self._docstore().get_many([doc_id])
            if doc_id not in found:
                raise KeyError(doc_id)
            doc = self._cache[doc_id] = _to_document(found[doc_id])
        return doc

    def __contains__(self, doc_id: object) -> bool:
        if not isinstance(doc_id, str):
            return False
        try:
            self[doc_id]
        except KeyError:
            return False
        return True

    def __iter__(self) -> Iterator[str]:
        for doc in self._dataset.docs_iter():
            yield str(doc.doc_id)

    def __len__(self) -> int:
        count = self._dataset.docs_count()
        return int(count) if count is not None else sum(1 for _ in self)

    def __repr__(self) -> str:
        return f"IrdsCorpus({self._id!r})"


def _qrels(dataset: Any, dataset_id: str) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    for row in dataset.qrels_iter():
        qid, did, grade = str(row.query_id), str(row.doc_id), int(row.relevance)
        old = qrels.setdefault(qid, {}).get(did)
        if old is not None and old != grade:
            raise EvalInputError(f"{dataset_id}: conflicting grades {old} and {grade} for ({qid}, {did})")
        qrels[qid][did] = grade
    return qrels


def _scoreddocs_loader(dataset: Any, dataset_id: str, judged: Mapping[str, Any]) -> Any:
    def load() -> Run:
        rows: dict[str, dict[str, float]] = {}
        for row in dataset.scoreddocs_iter():
            qid, did = str(row.query_id), str(row.doc_id)
            if qid not in judged:
                continue
            if did in rows.setdefault(qid, {}):
                raise EvalInputError(f"{dataset_id} scoreddocs: document {did!r} repeated for query {qid!r}")
            rows[qid][did] = float(row.score)
        if any(len(set(docs.values())) > 1 for docs in rows.values()) or not rows:
            return {q: sorted(docs.items(), key=lambda x: -x[1]) for q, docs in rows.items()}
        raise EvalInputError(
            f"the scoreddocs of {dataset_id} carry no scores (every document of every query scores the same, "
            "as ir_datasets documents for MS MARCO's top-1000 sets): they have no order, so neither a "
            "first-stage row nor a top-DEPTH cut would mean anything. Pass a scored first-stage run file "
            "(--run FILE, or a run mapping in Python)",
            qids=sorted(rows)[:10],
        )

    return load


def load_irds(dataset_id: str, rel_level: int | None = None) -> Dataset:
    """Load an ir_datasets dataset (id with or without the ``irds:`` prefix); see the module docstring."""
    irds = require("ir_datasets", "irds", "ir_datasets")
    name = dataset_id[len(IRDS_PREFIX) :] if dataset_id.startswith(IRDS_PREFIX) else dataset_id
    name = name.strip()
    if rel_level is not None and (
        isinstance(rel_level, bool) or not isinstance(rel_level, int) or rel_level < 1
    ):
        raise ValueError(f"rel_level must be an integer >= 1, got {rel_level!r}")
    try:
        dataset = irds.load(name)
    except KeyError:
        raise EvalInputError(
            f"unknown ir_datasets id {name!r} (see https://ir-datasets.com for the ids)"
        ) from None
    missing = [part for part in ("docs", "queries", "qrels") if not getattr(dataset, f"has_{part}")()]
    if missing:
        raise EvalInputError(f"ir_datasets {name!r} has no {' / '.join(missing)}: it cannot be evaluated on")
    qrels = _qrels(dataset, name)
    if not qrels:
        raise EvalInputError(f"ir_datasets {name!r} has empty qrels")
    queries: dict[str, str] = {}
    for query in dataset.queries_iter():
        qid = str(query.query_id)
        if qid in qrels:
            text = query.default_text() if hasattr(query, "default_text") else query.text
            queries[qid] = str(text).strip()
    runs: dict[str, Any] = {}
    if dataset.has_scoreddocs():
        runs["scoreddocs"] = _scoreddocs_loader(dataset, name, qrels)
    level = default_rel_level(name) if rel_level is None else rel_level
    logger.info(
        "ir_datasets %s: %d judged queries, runs %s, rel_level %d", name, len(qrels), sorted(runs), level
    )
    return Dataset(f"irds:{name}", IrdsCorpus(dataset, name), queries, qrels, runs, level)  # type: ignore[arg-type]
