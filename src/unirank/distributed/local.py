"""The local engine: worker processes (spawn context, one model per worker) scoring shards of queries.

The parent process owns the checkpoint: it hands shards to workers, commits each finished shard atomically
and draws the progress bar. Ctrl-C stops the workers and leaves every committed shard in place; a SIGKILL
of the parent makes the workers exit within a second (they watch their parent); a worker that dies (SIGKILL,
the OOM killer) stops the job with :class:`~.job.WorkerLostError`. Either way ``resume=True`` continues
with the shards not committed.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from ..cpus import available_cores
from .job import RerankJob, WorkerLostError, build_ranker, score_shard
from .runner import JobResult, Session

__all__ = ["run_local"]


_RANKER: Any = None


def _set_threads(threads: int | None) -> None:
    if threads and "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


def _watch_parent(parent: int) -> None:
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:  # parent died (SIGKILL): nobody will commit our work
            os._exit(1)


def _init_worker(spec: str, options: dict[str, Any], threads: int | None, parent: int) -> None:
    global _RANKER
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    if threads:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(threads)
    _RANKER = build_ranker(spec, options)
    _set_threads(threads)


def _score(payload: dict[str, Any]) -> tuple[int, Any, str, int, float]:
    t0 = time.perf_counter()
    run, tag = score_shard(_RANKER, payload)
    return payload["shard"], run, tag, os.getpid(), time.perf_counter() - t0


def _stop(ex: ProcessPoolExecutor) -> None:
    ex.shutdown(wait=False, cancel_futures=True)
    for proc in list((getattr(ex, "_processes", None) or {}).values()):
        if proc.is_alive():
            proc.terminate()
    for proc in list((getattr(ex, "_processes", None) or {}).values()):
        proc.join(timeout=5)


def run_local(
    job: RerankJob,
    out: str | os.PathLike[str],
    *,
    workers: int = 1,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
    keep_checkpoint: bool = False,
    show_progress: bool = True,
    threads: int | None = None,
) -> JobResult:
    """Score ``job``'s pending shards with ``workers`` processes and assemble ``out`` atomically.

    ``workers=0`` scores in this process (no model copies, easiest to debug). ``threads`` is the torch
    thread count per worker (default: usable CPU cores // workers, a container's CPU quota included;
    in-process: unchanged unless given). The checkpoint directory defaults to ``<out>.ckpt`` and is
    removed after assembly unless ``keep_checkpoint``. See :func:`unirank.distributed.runner.run_job` for
    an example.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ValueError(f"workers must be an integer >= 0, got {workers!r}")
    if threads is None and workers > 0:
        threads = max(1, available_cores() // workers)
    session = Session(job, out, "local", workers, checkpoint_dir, resume, show_progress)
    try:
        if session.pending and workers == 0:
            _in_process(job, session, threads)
        elif session.pending:
            _pool(job, session, workers, threads)
    except BaseException:
        session.abort()
        raise
    return session.finish(keep_checkpoint)


def _in_process(job: RerankJob, session: Session, threads: int | None) -> None:
    ranker = build_ranker(job.reranker, job.options)
    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if threads and torch is not None else None
    _set_threads(threads)
    try:
        for i in session.pending:
            t0 = time.perf_counter()
            run, tag = score_shard(ranker, job.shard_payload(i))
            session.commit(i, run, tag, pid=os.getpid(), seconds=time.perf_counter() - t0)
    finally:
        if before is not None and torch is not None:
            torch.set_num_threads(before)


def _pool(job: RerankJob, session: Session, workers: int, threads: int | None) -> None:
    ctx = mp.get_context("spawn")
    ex = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=ctx,
        initializer=_init_worker,
        initargs=(job.reranker, dict(job.options), threads, os.getpid()),
    )
    todo = list(reversed(session.pending))
    inflight: set[Future[Any]] = set()
    try:
        while todo or inflight:
            while todo and len(inflight) < 2 * workers:  # bounded: payloads are built just in time
                inflight.add(ex.submit(_score, job.shard_payload(todo.pop())))
            finished, inflight = wait(inflight, return_when=FIRST_COMPLETED)
            for fut in finished:
                index, run, tag, pid, seconds = fut.result()
                session.commit(index, run, tag, pid=pid, seconds=seconds)
    except BrokenProcessPool as exc:
        _stop(ex)
        raise WorkerLostError(
            f"a worker process died ({exc}); {len(session.ckpt.done())} of {len(job.shards)} shards are "
            f"committed in {session.ckpt.folder}: rerun with resume=True (--resume) to score the rest"
        ) from exc
    except BaseException:
        _stop(ex)
        raise
    ex.shutdown(wait=True)
