"""A re-ranking job: inputs, validation, sharding by query, the checkpoint directory and final assembly.

The layout of the re-ranked run is :mod:`unirank.eval.job`'s (re-ranked head, then the rest); every shard is
scored by :func:`unirank.eval.job.rerank_run` on that shard's queries, so the assembled output is
byte-identical to ``write_trec_run(rerank_run(...))`` over the whole (validated) run.

Checkpoint directory (``<out>.ckpt`` unless given)::

    manifest.json          the job's fingerprint (reranker, options, depth, shards and their content hash)
    shards/00000042.trec   one committed shard: written to a temp file, fsync-ed, renamed (atomic)
    log.jsonl              one JSON line per event: a session's pending shards, each shard committed

A shard file exists only once it is complete, so a crash (Ctrl-C, SIGKILL, power loss) at any point loses
at most the shards being scored; ``resume=True`` scores only shards without a file. The final output is
assembled atomically from the shard files in shard order.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UniRankError
from ..eval._files import _lines
from ..eval.io import Dataset, Run, atomic_write, load_beir, read_corpus, read_queries, write_trec_run
from ..types import Document

__all__ = [
    "Checkpoint",
    "JobInputError",
    "RerankJob",
    "ValidationReport",
    "WorkerLostError",
    "read_run_lenient",
    "score_shard",
]

logger = logging.getLogger(__name__)

_FORMAT = 1


class JobInputError(UniRankError, ValueError):
    """Invalid job input under ``strict=True`` (unknown queries, missing documents, duplicates)."""


class WorkerLostError(UniRankError, RuntimeError):
    """A worker process died (SIGKILL, OOM killer, lost node) and its shards could not be scored: the Ray
    engine after its retries are used up, the local engine at once. Committed shards stay in the checkpoint;
    ``resume=True`` (``--resume``) scores the rest."""


# -- input ------------------------------------------------------------------------------------------------
def read_run_lenient(path: Any) -> tuple[Run, list[tuple[str, str]]]:
    """Read a TREC run like :func:`unirank.eval.io.read_trec_run`, but keep the first of repeated
    ``(qid, docid)`` lines instead of raising; returns ``(run, duplicates)``.

    >>> import os, tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "r.trec")
    >>> _ = open(p, "w").write("q1 Q0 d1 1 2.0 x\\nq1 Q0 d2 2 1.0 x\\nq1 Q0 d1 3 0.5 x\\n")
    >>> read_run_lenient(p)
    ({'q1': [('d1', 2.0), ('d2', 1.0)]}, [('q1', 'd1')])
    """
    rows: dict[str, list[tuple[int, float, int, str]]] = {}
    seen: set[tuple[str, str]] = set()
    dups: list[tuple[str, str]] = []
    for where, lineno, line in _lines(path):
        parts = line.split()
        if len(parts) != 6:
            raise ValueError(f"{where}:{lineno}: expected 6 fields 'qid Q0 docid rank score tag'")
        qid, _, docid, rank_s, score_s, _ = parts
        try:
            rank, score = int(rank_s), float(score_s)
        except ValueError:
            raise ValueError(f"{where}:{lineno}: bad rank {rank_s!r} or score {score_s!r}") from None
        if (qid, docid) in seen:
            dups.append((qid, docid))
            continue
        seen.add((qid, docid))
        rows.setdefault(qid, []).append((rank, -score, lineno, docid))
    return {q: [(d, -neg) for _, neg, _, d in sorted(items)] for q, items in rows.items()}, dups


def _dedupe(run: Mapping[str, Sequence[tuple[str, float]]]) -> tuple[Run, list[tuple[str, str]]]:
    out: Run = {}
    dups: list[tuple[str, str]] = []
    for qid, ranking in run.items():
        seen: set[str] = set()
        kept = []
        for docid, score in ranking:
            if docid in seen:
                dups.append((str(qid), str(docid)))
                continue
            seen.add(docid)
            kept.append((str(docid), float(score)))
        out[str(qid)] = kept
    return out, dups


@dataclass
class ValidationReport:
    """What up-front validation found. Unknown queries are skipped; missing documents (within ``depth``)
    are kept unscored below the re-ranked head; repeated ``(qid, docid)`` entries keep the first."""

    run_queries: int = 0
    run_entries: int = 0
    unknown_queries: list[str] = field(default_factory=list)
    missing_docs: int = 0
    queries_with_missing: int = 0
    missing_examples: list[tuple[str, str]] = field(default_factory=list)
    duplicates: list[tuple[str, str]] = field(default_factory=list)

    @property
    def problems(self) -> int:
        return len(self.unknown_queries) + self.missing_docs + len(self.duplicates)

    def summary(self) -> str:
        return (
            f"{self.run_queries} queries, {self.run_entries} entries; "
            f"{len(self.unknown_queries)} unknown query ids (e.g. {self.unknown_queries[:3]}), "
            f"{self.missing_docs} documents missing from the store in {self.queries_with_missing} queries "
            f"(e.g. {self.missing_examples[:3]}), {len(self.duplicates)} duplicate entries "
            f"(e.g. {self.duplicates[:3]})"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_queries": self.run_queries,
            "run_entries": self.run_entries,
            "unknown_queries": len(self.unknown_queries),
            "missing_docs": self.missing_docs,
            "queries_with_missing": self.queries_with_missing,
            "duplicates": len(self.duplicates),
        }


@dataclass
class RerankJob:
    """A validated re-ranking job: which queries, split into shards of ``shard_size`` queries.

    ``reranker`` is a spec (each worker builds its own model from it with ``options``); ``tag`` is the run
    tag written (default: the ranker's name, as :func:`unirank.eval.job.eval_job` does).

    >>> from unirank.types import Document
    >>> job = RerankJob({"q1": [("a", 1.0), ("zz", 0.5)], "q9": [("a", 1.0)]}, {"q1": "rain"},
    ...                 {"a": Document("rain falls", "a")}, "bm25", depth=10)
    >>> job.report.to_dict()["unknown_queries"], job.report.missing_docs, job.qids
    (1, 1, ['q1'])
    """

    run: Mapping[str, Sequence[tuple[str, float]]]
    queries: Mapping[str, str]
    corpus: Mapping[str, Document]
    reranker: str
    depth: int = 100
    options: dict[str, Any] = field(default_factory=dict)
    shard_size: int = 16
    batch_queries: int = 16
    tag: str | None = None
    strict: bool = False
    duplicates: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name in ("depth", "shard_size", "batch_queries"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.reranker, str) or not self.reranker.strip():
            raise TypeError("reranker must be a non-empty spec string (each worker builds its own model)")
        self.run, more = _dedupe(self.run)
        self.duplicates = list(self.duplicates) + more
        self.report = self._validate()
        if self.strict and self.report.problems:
            raise JobInputError(f"invalid job input (strict): {self.report.summary()}")
        if self.report.problems:
            logger.warning("job input: %s; skipped / kept unscored as documented", self.report.summary())
        self.qids = [q for q in self.run if self.queries.get(q, "").strip()]
        self.shards = [self.qids[i : i + self.shard_size] for i in range(0, len(self.qids), self.shard_size)]

    def _validate(self) -> ValidationReport:
        rep = ValidationReport(len(self.run), sum(len(v) for v in self.run.values()))
        rep.duplicates = self.duplicates
        for qid, ranking in self.run.items():
            if not self.queries.get(qid, "").strip():
                rep.unknown_queries.append(qid)
                continue
            missing = [d for d, _ in ranking[: self.depth] if d not in self.corpus]
            if missing:
                rep.missing_docs += len(missing)
                rep.queries_with_missing += 1
                rep.missing_examples.extend((qid, d) for d in missing[:2])
        return rep

    # -- constructors -------------------------------------------------------------------------------------
    @classmethod
    def from_dataset(
        cls, dataset: Dataset, run: Any = "bm25", reranker: str = "bm25", **kw: Any
    ) -> RerankJob:
        """A job over a :class:`~unirank.eval.io.Dataset` (a run name of it, a run path or a loaded run)."""
        dups: list[tuple[str, str]] = []
        if isinstance(run, Mapping):
            loaded = run
        elif str(run) in dataset.runs or any(k.split(".")[0] == str(run) for k in dataset.runs):
            loaded = dataset.get_run(str(run))
        else:
            loaded, dups = read_run_lenient(run)
        return cls(loaded, dataset.queries, dataset.corpus, reranker, duplicates=dups, **kw)

    @classmethod
    def from_files(
        cls, run: Any, corpus: Any, queries: Any = None, reranker: str = "bm25", **kw: Any
    ) -> RerankJob:
        """A job from files: ``corpus`` is a BEIR folder (queries and runs inside; ``run`` may name one), a
        bundled dataset name, or a corpus / doc-store file (JSONL or tsv) with ``queries`` a queries file."""
        if isinstance(corpus, Dataset):
            ds = corpus
        elif Path(str(corpus)).is_dir() or not Path(str(corpus)).exists():
            if Path(str(corpus)).is_dir():
                ds = load_beir(corpus)
            else:
                from ..eval.datasets import available_datasets, load_dataset

                try:
                    ds = load_dataset(str(corpus))
                except ValueError:
                    raise FileNotFoundError(
                        f"corpus {corpus!s} is not a file, a BEIR folder or a bundled dataset "
                        f"({available_datasets()})"
                    ) from None
            if queries is not None:
                ds.queries = read_queries(queries)
        else:
            if queries is None:
                raise ValueError("a corpus file needs a queries file (queries=...)")
            ds = Dataset(Path(str(corpus)).name, read_corpus(corpus), read_queries(queries), {})
        return cls.from_dataset(ds, run, reranker, **kw)

    # -- shards -------------------------------------------------------------------------------------------
    def shard_payload(self, index: int) -> dict[str, Any]:
        """Everything a worker needs to score shard ``index`` (plain data; JSON-able)."""
        qids = self.shards[index]
        docs: dict[str, dict[str, Any]] = {}
        for q in qids:
            for d, _ in self.run[q][: self.depth]:
                doc = self.corpus.get(d)
                if doc is not None and d not in docs:
                    docs[d] = {"text": doc.text, "metadata": doc.metadata}
        return {
            "shard": index,
            "qids": qids,
            "queries": {q: self.queries[q] for q in qids},
            "run": {q: [[d, s] for d, s in self.run[q]] for q in qids},
            "docs": docs,
            "depth": self.depth,
            "batch_queries": self.batch_queries,
            "tag": self.tag,
        }

    def fingerprint(self) -> str:
        """A hash of everything that decides the output, except document texts."""
        h = hashlib.sha256()
        head = [
            _FORMAT,
            self.reranker,
            self.options,
            self.depth,
            self.shard_size,
            self.batch_queries,
            self.tag,
        ]
        h.update(json.dumps(head, sort_keys=True, default=repr).encode())
        for q in self.qids:
            h.update(json.dumps([q, self.queries[q], self.run[q]]).encode())
        return h.hexdigest()


def build_ranker(spec: str, options: Mapping[str, Any]) -> Any:
    from ..reranker import Reranker

    return Reranker(spec, **dict(options))


def score_shard(ranker: Any, payload: Mapping[str, Any]) -> tuple[Run, str]:
    """Re-rank one shard with :func:`unirank.eval.job.rerank_run`; returns ``(run, tag)``."""
    from ..eval.job import _run_tag, rerank_run

    qids = list(payload["qids"])
    docs = {d: Document(v["text"], d, dict(v.get("metadata") or {})) for d, v in payload["docs"].items()}
    shard_ds = Dataset(f"shard-{payload['shard']}", docs, dict(payload["queries"]), {})
    first = {q: [(str(d), float(s)) for d, s in payload["run"][q]] for q in qids}
    run = rerank_run(
        ranker,
        shard_ds,
        first,
        depth=payload["depth"],
        batch_queries=payload["batch_queries"],
        show_progress=False,
    )
    return run, payload.get("tag") or _run_tag(ranker)


# -- checkpoint -------------------------------------------------------------------------------------------
class Checkpoint:
    """The shard checkpoint directory of one job (see the module docstring)."""

    def __init__(self, folder: str | os.PathLike[str], job: RerankJob, resume: bool = False) -> None:
        self.folder = Path(folder)
        self.job = job
        self.session = f"{os.getpid()}-{time.time_ns()}"
        manifest = self.folder / "manifest.json"
        want = {
            "format": _FORMAT,
            "fingerprint": job.fingerprint(),
            "reranker": job.reranker,
            "depth": job.depth,
            "shard_size": job.shard_size,
            "shards": len(job.shards),
            "queries": len(job.qids),
        }
        if manifest.exists():
            have = json.loads(manifest.read_text(encoding="utf-8"))
            if not resume:
                raise FileExistsError(
                    f"checkpoint {self.folder} exists; pass resume=True (--resume) to continue it, "
                    "or remove it to start over"
                )
            if have.get("fingerprint") != want["fingerprint"]:
                raise ValueError(
                    f"checkpoint {self.folder} belongs to a different job (reranker, options, depth, shard "
                    "size or input run changed); use another checkpoint directory"
                )
        else:
            self.shard_dir.mkdir(parents=True, exist_ok=True)
            with atomic_write(manifest) as fh:
                json.dump(want, fh, indent=1)
        self.shard_dir.mkdir(parents=True, exist_ok=True)
        for stale in self.shard_dir.glob(".*.tmp"):  # temp files of a crashed writer
            with contextlib.suppress(OSError):
                stale.unlink()

    @property
    def shard_dir(self) -> Path:
        return self.folder / "shards"

    def shard_path(self, index: int) -> Path:
        return self.shard_dir / f"{index:08d}.trec"

    def done(self) -> set[int]:
        return {i for i in range(len(self.job.shards)) if self.shard_path(i).exists()}

    def pending(self) -> list[int]:
        done = self.done()
        return [i for i in range(len(self.job.shards)) if i not in done]

    def log(self, event: str, **data: Any) -> None:
        line = json.dumps({"event": event, "session": self.session, "time": time.time(), **data}) + "\n"
        fd = os.open(self.folder / "log.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)

    def commit(self, index: int, run: Run, tag: str, **info: Any) -> None:
        """Write shard ``index`` atomically (temp file, fsync, rename), then log it."""
        if list(run) != self.job.shards[index]:
            raise RuntimeError(f"shard {index}: worker returned queries {list(run)[:3]}..., not the plan's")
        write_trec_run(run, self.shard_path(index), tag=tag)
        self.log("commit", shard=index, queries=len(run), **info)

    def assemble(self, out: str | os.PathLike[str]) -> None:
        """Concatenate every shard, in order, into ``out`` atomically."""
        missing = self.pending()
        if missing:
            raise RuntimeError(f"cannot assemble: {len(missing)} shards not committed (e.g. {missing[:5]})")
        with atomic_write(out) as fh:
            for i in range(len(self.job.shards)):
                fh.write(self.shard_path(i).read_text(encoding="utf-8"))

    def events(self) -> Iterator[dict[str, Any]]:
        path = self.folder / "log.jsonl"
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    yield json.loads(line)

    def remove(self) -> None:
        for p in self.shard_dir.glob("*"):
            p.unlink()
        self.shard_dir.rmdir()
        for name in ("manifest.json", "log.jsonl"):
            with contextlib.suppress(FileNotFoundError):
                (self.folder / name).unlink()
        with contextlib.suppress(OSError):
            self.folder.rmdir()
