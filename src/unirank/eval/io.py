"""Readers and writers for TREC / BEIR evaluation files, and the :class:`Dataset` they load into.

Formats:

- run (TREC): ``qid Q0 docid rank score tag``, any whitespace between fields.
- qrels: TREC ``qid 0 docid grade`` or BEIR tsv ``query-id<TAB>corpus-id<TAB>score`` (header optional).
- queries: BEIR ``queries.jsonl`` (``_id`` / ``text``) or a TREC topics tsv ``qid<TAB>text``.
- corpus: BEIR ``corpus.jsonl`` (``_id`` / ``title`` / ``text``), or a tsv ``id<TAB>text`` /
  ``id<TAB>title<TAB>text``.

Any of them may be gzip-compressed (name ending in ``.gz``). Writers are atomic: the data goes to a temporary
file in the destination folder, is fsync-ed and then renamed over the destination, so a reader never sees a
half-written file and an error mid-write leaves the previous file (if any) untouched.

In memory, a run is ``dict[qid, list[(docid, score)]]`` in rank order (best first).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..types import Document, RankedResults, _doc_from_mapping
from ._files import PathArg, _as_path, _bad, _check_token, _lines, atomic_write, read_metadata

__all__ = [
    "Dataset",
    "PathArg",
    "Run",
    "atomic_write",
    "load_beir",
    "read_corpus",
    "read_qrels",
    "read_queries",
    "read_trec_run",
    "results_to_run",
    "run_to_candidates",
    "write_qrels",
    "write_trec_run",
]

logger = logging.getLogger(__name__)

Run = dict[str, list[tuple[str, float]]]


# -- runs -------------------------------------------------------------------------------------------------
def read_trec_run(path: PathArg) -> Run:
    """Read a TREC run: per query, documents in the file's rank order (ties by score, descending).

    >>> import os, tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "run.trec")
    >>> write_trec_run({"q1": [("d1", 2.0), ("d2", 1.5)]}, p)
    >>> read_trec_run(p)
    {'q1': [('d1', 2.0), ('d2', 1.5)]}
    """
    rows: dict[str, list[tuple[int, float, int, str]]] = {}
    seen: dict[tuple[str, str], int] = {}
    for where, lineno, line in _lines(path):
        parts = line.split()
        if len(parts) != 6:
            raise _bad(
                where,
                lineno,
                f"expected 6 fields 'qid Q0 docid rank score tag', got {len(parts)}: {line[:80]!r}",
            )
        qid, _, docid, rank_s, score_s, _ = parts
        try:
            rank, score = int(rank_s), float(score_s)
        except ValueError:
            raise _bad(
                where, lineno, f"rank must be an integer and score a number, got {rank_s!r} and {score_s!r}"
            ) from None
        if (qid, docid) in seen:
            raise _bad(
                where,
                lineno,
                f"document {docid!r} repeated for query {qid!r} (first at line {seen[qid, docid]})",
            )
        seen[qid, docid] = lineno
        rows.setdefault(qid, []).append((rank, -score, lineno, docid))
    return {qid: [(d, -neg) for _, neg, _, d in sorted(items)] for qid, items in rows.items()}


def write_trec_run(
    run: Mapping[str, Sequence[tuple[str, float]]], path: str | os.PathLike[str], tag: str = "unirank"
) -> None:
    """Write ``run`` (per query, ``(docid, score)`` best first; rank = position + 1) atomically.

    Scores are written with ``repr`` so they read back exactly. See :func:`read_trec_run` for an example.
    """
    tag = _check_token(tag, "run tag")
    with atomic_write(path) as fh:
        for qid, ranking in run.items():
            q = _check_token(qid, "query id")
            for pos, (docid, score) in enumerate(ranking):
                fh.write(f"{q} Q0 {_check_token(docid, 'document id')} {pos + 1} {float(score)!r} {tag}\n")


# -- qrels ------------------------------------------------------------------------------------------------
def read_qrels(path: PathArg) -> dict[str, dict[str, int]]:
    """Read TREC qrels (``qid 0 docid grade``) or BEIR tsv qrels (``query-id corpus-id score``, header
    optional).

    Every line of a file must have the same number of fields. A 3-field line whose second field is ``0`` (or
    ``Q0``) in a file without the BEIR header is refused: it is what a TREC qrels line with its grade missing
    looks like, and with numeric document ids it would otherwise be misread. (A BEIR file with a document
    really called ``0`` needs its header line.)

    >>> import os, tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "test.tsv")
    >>> _ = open(p, "w").write("query-id\\tcorpus-id\\tscore\\nq1\\td1\\t2\\n")
    >>> read_qrels(p)
    {'q1': {'d1': 2}}
    """
    qrels: dict[str, dict[str, int]] = {}
    width: tuple[int, int] | None = None  # (fields per line, first line with that many)
    header = False
    for where, lineno, line in _lines(path):
        parts = line.split()
        if width is None and not header and len(parts) == 3 and parts[0].lower() in _QRELS_HEADER:
            header = True
            continue
        n = len(parts)
        if n not in (3, 4):
            msg = f"expected 'qid 0 docid grade' or 'qid docid grade', got {n} fields: {line[:80]!r}"
            raise _bad(where, lineno, msg)
        if width is None:
            width = (n, lineno)
        elif n != width[0]:
            msg = (
                f"{n} fields, but line {width[1]} has {width[0]}: a qrels file is either 'qid 0 docid grade' "
            )
            raise _bad(
                where, lineno, msg + f"or 'qid docid grade' on every line (grade missing?): {line[:80]!r}"
            )
        if n == 3 and not header and parts[1] in ("0", "Q0"):
            msg = f"{line[:80]!r} looks like a TREC qrels line 'qid 0 docid grade' with its grade missing; "
            msg += "a BEIR qrels line is 'query-id corpus-id score' (if the document id really is "
            raise _bad(where, lineno, msg + f"{parts[1]!r}, start the file with the BEIR header line)")
        qid, docid, grade_s = (parts[0], parts[1], parts[2]) if len(parts) == 3 else (parts[0], *parts[2:])
        try:
            grade = int(grade_s)
        except ValueError:
            raise _bad(where, lineno, f"relevance grade must be an integer, got {grade_s!r}") from None
        old = qrels.setdefault(qid, {}).get(docid)
        if old is not None and old != grade:
            raise _bad(where, lineno, f"conflicting grades {old} and {grade} for ({qid}, {docid})")
        qrels[qid][docid] = grade
    return qrels


_QRELS_HEADER = ("query-id", "query_id", "qid")


def write_qrels(
    qrels: Mapping[str, Mapping[str, int]], path: str | os.PathLike[str], fmt: str = "trec"
) -> None:
    """Write qrels atomically, as TREC (``fmt="trec"``: ``qid 0 docid grade``) or BEIR tsv
    (``fmt="beir"``)."""
    if fmt not in ("trec", "beir"):
        raise ValueError(f"fmt must be 'trec' or 'beir', got {fmt!r}")
    with atomic_write(path) as fh:
        if fmt == "beir":
            fh.write("query-id\tcorpus-id\tscore\n")
        for qid, docs in qrels.items():
            q = _check_token(qid, "query id")
            for docid, grade in docs.items():
                d = _check_token(docid, "document id")
                fh.write(f"{q}\t{d}\t{int(grade)}\n" if fmt == "beir" else f"{q} 0 {d} {int(grade)}\n")


# -- queries and corpus -----------------------------------------------------------------------------------
def _is_jsonl(path: PathArg) -> bool:
    name = _as_path(path).name
    return name.endswith((".jsonl", ".jsonl.gz", ".json", ".json.gz"))


def _json_line(where: str, lineno: int, line: str) -> dict[str, Any]:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise _bad(where, lineno, f"invalid JSON ({exc.msg})") from None
    if not isinstance(obj, dict):
        raise _bad(where, lineno, f"expected a JSON object, got {type(obj).__name__}")
    return obj


def read_queries(path: PathArg) -> dict[str, str]:
    """Read queries from BEIR ``queries.jsonl`` (``_id``/``text``) or a TREC topics tsv (``qid<TAB>text``)."""
    out: dict[str, str] = {}
    jsonl = _is_jsonl(path)
    for where, lineno, line in _lines(path):
        if jsonl:
            obj = _json_line(where, lineno, line)
            qid = next((obj[k] for k in ("_id", "id", "qid", "query_id") if k in obj), None)
            text = next((obj[k] for k in ("text", "query") if k in obj), None)
            if qid is None or not isinstance(text, str):
                raise _bad(where, lineno, "a query needs '_id' and a string 'text'")
        else:
            if "\t" not in line:
                raise _bad(where, lineno, f"expected 'qid<TAB>text', got {line[:80]!r}")
            qid, text = line.split("\t", 1)
        qid = str(qid)
        if qid in out:
            raise _bad(where, lineno, f"query id {qid!r} repeated")
        out[qid] = text.strip()
    return out


def read_corpus(path: PathArg) -> dict[str, Document]:
    """Read a corpus into ``{docid: Document}``.

    Titles follow :func:`unirank.types.to_documents`: ``metadata['title']`` keeps the title and the
    document text is ``title + " " + text`` when the title is non-empty.
    """
    out: dict[str, Document] = {}
    jsonl = _is_jsonl(path)
    for where, lineno, line in _lines(path):
        if jsonl:
            obj = _json_line(where, lineno, line)
            try:
                doc = _doc_from_mapping(obj, lineno)
            except TypeError as exc:
                raise _bad(where, lineno, f"{exc}") from None
        else:
            parts = line.split("\t")
            if len(parts) == 2:
                doc = _doc_from_mapping({"_id": parts[0], "text": parts[1]}, lineno)
            elif len(parts) == 3:
                doc = _doc_from_mapping({"_id": parts[0], "title": parts[1], "text": parts[2]}, lineno)
            else:
                raise _bad(where, lineno, "expected 'id<TAB>text' or 'id<TAB>title<TAB>text'")
        if doc.id is None:
            raise _bad(where, lineno, "document without an id ('_id')")
        if doc.id in out:
            raise _bad(where, lineno, f"document id {doc.id!r} repeated")
        out[doc.id] = doc
    return out


# -- dataset ----------------------------------------------------------------------------------------------
@dataclass(repr=False)
class Dataset:
    """An evaluation set: corpus, queries, graded qrels and first-stage runs to re-rank.

    ``runs`` maps a run name to a path or a loader (a callable; either is loaded on first use by
    :meth:`get_run`), or a loaded run.
    ``rel_level`` is the minimum grade counted relevant by binary metrics (2 for TREC DL, 1 otherwise).
    """

    name: str
    corpus: dict[str, Document]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    runs: dict[str, Any] = field(default_factory=dict)
    rel_level: int = 1

    def get_run(self, name_or_path: str | os.PathLike[str]) -> Run:
        """A run by name (``"bm25.top100"``, or the unique name starting with ``"bm25."``) or by file path."""
        key = str(name_or_path)
        if key not in self.runs:
            prefixed = [k for k in self.runs if k.split(".")[0] == key]
            if len(prefixed) == 1:
                key = prefixed[0]
            elif isinstance(name_or_path, os.PathLike) or Path(key).is_file():
                return read_trec_run(name_or_path)
            else:
                raise KeyError(
                    f"dataset {self.name!r} has no run {key!r}; runs: {sorted(self.runs)} "
                    "(or pass the path of a TREC run file)"
                )
        value = self.runs[key]
        if not isinstance(value, dict):  # a path, or a loader (a callable returning the run)
            value = self.runs[key] = value() if callable(value) else read_trec_run(value)
        return value

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, docs={len(self.corpus)}, queries={len(self.queries)}, "
            f"judged_queries={len(self.qrels)}, runs={sorted(self.runs)}, rel_level={self.rel_level})"
        )


def _first_existing(folder: Any, names: Sequence[str]) -> Any | None:
    for name in names:
        candidate = folder / name
        if candidate.is_file():
            return candidate
    return None


_RUN_SUFFIXES = (".trec.gz", ".run.gz", ".trec", ".run")


def load_beir(
    folder: PathArg, split: str = "test", rel_level: int | None = None, name: str | None = None
) -> Dataset:
    """Load a BEIR-style folder: ``corpus.jsonl[.gz]``, ``queries.jsonl``, ``qrels/<split>.tsv``,
    ``runs/*.trec``, and the folder's own ``unirank.json`` if present.

    ``rel_level`` (the minimum grade binary metrics count as relevant) is, in order: the argument, the
    ``rel_level`` of the folder's ``unirank.json`` (e.g. ``{"rel_level": 2}`` for a TREC DL folder), 1.

    Queries are restricted to those judged in the split's qrels (as BEIR does); without a qrels file every
    query is kept. Runs are registered by file name without suffix (``runs/bm25.top100.trec`` ->
    ``"bm25.top100"``) and read lazily by :meth:`Dataset.get_run`.
    """
    root = _as_path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {folder}")
    if rel_level is None:
        rel_level = int(read_metadata(root).get("rel_level", 1))
    elif isinstance(rel_level, bool) or not isinstance(rel_level, int) or rel_level < 1:
        raise ValueError(f"rel_level must be an integer >= 1, got {rel_level!r}")
    else:
        read_metadata(root)  # still validated: a broken metadata file is never ignored
    corpus_file = _first_existing(root, ["corpus.jsonl", "corpus.jsonl.gz", "corpus.tsv", "corpus.tsv.gz"])
    queries_file = _first_existing(root, ["queries.jsonl", "queries.jsonl.gz", "queries.tsv", "topics.tsv"])
    if corpus_file is None or queries_file is None:
        raise FileNotFoundError(f"{folder}: a BEIR folder needs corpus.jsonl[.gz] and queries.jsonl")
    qrels_file = (
        _first_existing(root / "qrels", [f"{split}.tsv", f"{split}.txt"])
        if (root / "qrels").is_dir()
        else None
    )
    qrels = read_qrels(qrels_file) if qrels_file is not None else {}
    queries = read_queries(queries_file)
    if qrels_file is None:
        logger.warning(
            "%s: no qrels/%s.tsv; keeping all %d queries, metrics unavailable", folder, split, len(queries)
        )
    else:
        unknown = [q for q in qrels if q not in queries]
        if unknown:
            logger.warning("%s: %d judged queries have no text (e.g. %s)", folder, len(unknown), unknown[:3])
        queries = {q: t for q, t in queries.items() if q in qrels}
    runs: dict[str, Any] = {}
    if (root / "runs").is_dir():
        for entry in sorted(root.joinpath("runs").iterdir(), key=lambda e: e.name):
            suffix = next((s for s in _RUN_SUFFIXES if entry.name.endswith(s)), None)
            if suffix and entry.is_file():
                runs[entry.name[: -len(suffix)]] = entry
    return Dataset(name or root.name, read_corpus(corpus_file), queries, qrels, runs, rel_level)


# -- glue between runs and rankers ------------------------------------------------------------------------
def results_to_run(qids: Sequence[str], results: Sequence[RankedResults]) -> Run:
    """Turn ``rank_many`` output into a run (ids and scores, best first).

    >>> from unirank.types import Document
    >>> rr = RankedResults.from_scores("q", [Document("a", "d1"), Document("b", "d2")], [0.1, 0.9])
    >>> results_to_run(["q1"], [rr])
    {'q1': [('d2', 0.9), ('d1', 0.1)]}
    """
    if len(qids) != len(results):
        raise ValueError(f"{len(qids)} query ids but {len(results)} results")
    return {str(q): [(str(r.id), float(r.score)) for r in res.results] for q, res in zip(qids, results)}


def run_to_candidates(
    run: Mapping[str, Sequence[tuple[str, float]]], corpus: Mapping[str, Document], depth: int | None = None
) -> tuple[dict[str, list[Document]], dict[str, list[str]]]:
    """Candidate documents for each query: the top ``depth`` of the run (all if ``None``) found in ``corpus``.

    Returns ``(candidates, missing)``; ``missing[qid]`` lists the run's document ids absent from the
    corpus, in rank order. Missing documents are counted and logged as a warning, never dropped silently.

    >>> corpus = {"d1": Document("a", "d1")}
    >>> cands, missing = run_to_candidates({"q": [("d1", 2.0), ("d9", 1.0)]}, corpus)
    >>> [d.id for d in cands["q"]], missing
    (['d1'], {'q': ['d9']})
    """
    if depth is not None and depth < 0:
        raise ValueError(f"depth must be >= 0, got {depth}")
    candidates: dict[str, list[Document]] = {}
    missing: dict[str, list[str]] = {}
    for qid, ranking in run.items():
        top = ranking if depth is None else ranking[:depth]
        candidates[qid] = [corpus[d] for d, _ in top if d in corpus]
        missing[qid] = [d for d, _ in top if d not in corpus]
    n_missing = sum(len(m) for m in missing.values())
    if n_missing:
        n_queries = sum(1 for m in missing.values() if m)
        logger.warning(
            "%d candidate documents in %d queries are missing from the corpus (they cannot be scored)",
            n_missing,
            n_queries,
        )
    return candidates, missing
