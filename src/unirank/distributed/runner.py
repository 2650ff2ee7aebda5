"""What both engines share: the session around a checkpoint (progress bar, commits, assembly, statistics)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..eval.io import Run
from .job import Checkpoint, RerankJob, ValidationReport

__all__ = ["JobResult", "run_job"]

logger = logging.getLogger(__name__)


@dataclass
class JobResult:
    """Outcome of one session of a job. ``shards_scored`` counts shards scored by *this* session;
    ``shards_resumed`` those found already committed."""

    out: Path
    engine: str
    workers: int
    shards: int
    shards_scored: int
    shards_resumed: int
    queries_scored: int
    docs_scored: int
    seconds: float
    report: ValidationReport = field(repr=False, default_factory=ValidationReport)

    @property
    def queries_per_s(self) -> float:
        return self.queries_scored / self.seconds if self.seconds > 0 else 0.0

    @property
    def docs_per_s(self) -> float:
        return self.docs_scored / self.seconds if self.seconds > 0 else 0.0


def default_checkpoint(out: str | os.PathLike[str]) -> Path:
    return Path(f"{os.fspath(out)}.ckpt")


class Session:
    """Opens the checkpoint, tracks progress (tqdm: ETA and throughput), commits shards, assembles."""

    def __init__(
        self,
        job: RerankJob,
        out: str | os.PathLike[str],
        engine: str,
        workers: int,
        checkpoint_dir: str | os.PathLike[str] | None,
        resume: bool,
        show_progress: bool,
    ) -> None:
        from tqdm.auto import tqdm

        self.job, self.out, self.engine, self.workers = job, Path(out), engine, workers
        self.ckpt = Checkpoint(checkpoint_dir or default_checkpoint(out), job, resume=resume)
        self.pending = self.ckpt.pending()
        done = [i for i in range(len(job.shards)) if i not in set(self.pending)]
        self.ckpt.log("session", engine=engine, workers=workers, pending=self.pending)
        if done:
            logger.info("resuming: %d of %d shards already committed", len(done), len(job.shards))
        self.resumed = len(done)
        self.queries = 0
        self.docs = 0
        self.scored = 0
        self.start = time.perf_counter()
        self.bar = tqdm(
            total=len(job.qids),
            initial=sum(len(job.shards[i]) for i in done),
            unit="query",
            desc=f"rerank-run [{engine} x{workers}]",
            disable=not show_progress,
            dynamic_ncols=True,
        )

    def commit(self, index: int, run: Run, tag: str, **info: Any) -> None:
        self.ckpt.commit(index, run, tag, engine=self.engine, **info)
        n_docs = sum(min(len(self.job.run[q]), self.job.depth) for q in run)
        self.scored += 1
        self.queries += len(run)
        self.docs += n_docs
        self.bar.update(len(run))
        elapsed = time.perf_counter() - self.start
        if elapsed > 0:
            self.bar.set_postfix(docs_s=f"{self.docs / elapsed:.0f}", refresh=False)

    def finish(self, keep_checkpoint: bool) -> JobResult:
        self.bar.close()
        self.ckpt.assemble(self.out)
        seconds = time.perf_counter() - self.start
        self.ckpt.log("assembled", out=str(self.out))
        if not keep_checkpoint:
            self.ckpt.remove()
        res = JobResult(
            self.out,
            self.engine,
            self.workers,
            len(self.job.shards),
            self.scored,
            self.resumed,
            self.queries,
            self.docs,
            seconds,
            self.job.report,
        )
        logger.info(
            "%s: %d shards scored (%d resumed), %.1f queries/s, %.0f docs/s",
            self.out,
            res.shards_scored,
            res.shards_resumed,
            res.queries_per_s,
            res.docs_per_s,
        )
        return res

    def close(self) -> None:
        self.bar.close()

    def abort(self) -> None:
        """Close the progress bar and say how to continue (the engines call this when a run stops early)."""
        self.close()
        logger.error(
            "stopped with %d of %d shards committed; rerun with resume=True (--resume) to continue",
            len(self.ckpt.done()),
            len(self.job.shards),
        )


def run_job(
    job: RerankJob,
    out: str | os.PathLike[str],
    *,
    engine: str = "local",
    workers: int = 1,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
    keep_checkpoint: bool = False,
    show_progress: bool = True,
    engine_options: Mapping[str, Any] | None = None,
) -> JobResult:
    """Run ``job`` with the ``"local"`` (:func:`~unirank.distributed.local.run_local`) or ``"ray"``
    (:func:`~unirank.distributed.ray_engine.run_ray`) engine; ``engine_options`` go to that function.

    >>> import tempfile, os
    >>> from unirank.eval.datasets import load_dataset
    >>> ds = load_dataset("trec-dl-2019")
    >>> job = RerankJob.from_dataset(ds, "bm25", "bm25", depth=10, shard_size=8)
    >>> out = os.path.join(tempfile.mkdtemp(), "bm25.trec")
    >>> res = run_job(job, out, workers=0, show_progress=False)
    >>> res.shards_scored, res.queries_scored
    (6, 43)
    """
    opts = dict(engine_options or {})
    common = {
        "checkpoint_dir": checkpoint_dir,
        "resume": resume,
        "keep_checkpoint": keep_checkpoint,
        "show_progress": show_progress,
    }
    if engine == "local":
        from .local import run_local

        return run_local(job, out, workers=workers, **common, **opts)
    if engine == "ray":
        from .ray_engine import run_ray

        return run_ray(job, out, actors=max(1, workers), **common, **opts)
    raise ValueError(f"engine must be 'local' or 'ray', got {engine!r}")
