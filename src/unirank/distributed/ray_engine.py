"""The Ray engine: Ray Data over the job's shards, scored by an actor pool (one model per actor).

Pending shards become a Ray Dataset of ``{"shard", "payload"}`` rows; ``map_batches`` runs
:class:`ShardScorer` (a stateful class: the model is built once per actor) on a pool of ``actors`` actors
(``compute=ActorPoolStrategy(size=actors)``, spelled ``concurrency=actors`` before Ray 2.51), each
reserving ``num_cpus`` / ``num_gpus``. The driver streams results back and commits each shard to the same
checkpoint directory as the local engine (so a job may be started with one engine and resumed with the
other), then assembles the output atomically. Ray schedules everything: no home-made scheduler or RPC.

A worker killed mid-run (SIGKILL, the OOM killer, a lost node) costs only its in-flight shards: the actor is
restarted (``max_restarts=-1``) and each of its shards is retried up to ``max_retries`` times
(``max_task_retries``), so the job finishes with the same bytes as an uninterrupted run. A shard that still
fails (one that kills its worker every time) stops the job with :class:`~.job.WorkerLostError`; every
committed shard stays, and ``resume=True`` scores the rest.

``address=None`` starts a local Ray (``init_num_cpus`` caps it) unless one is already initialised; pass
``address="auto"`` or ``"ray://head:10001"`` to use an existing cluster, whose nodes need unirank and the
model installed (or a ``runtime_env``). Only the driver touches the checkpoint directory, so workers need no
shared filesystem.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import numpy as np

from ..errors import require
from .job import RerankJob, WorkerLostError, build_ranker, score_shard
from .runner import JobResult, Session

__all__ = ["ShardScorer", "run_ray"]


class ShardScorer:
    """Ray Data UDF: builds the ranker once, then scores one shard payload (JSON) per row."""

    def __init__(self, spec: str, options: dict[str, Any], threads: int | None = None) -> None:
        if threads:
            os.environ.setdefault("OMP_NUM_THREADS", str(threads))
        self.ranker = build_ranker(spec, options)
        if threads and "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(threads)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        shards, results, seconds = [], [], []
        for index, payload in zip(batch["shard"], batch["payload"]):
            t0 = time.perf_counter()
            run, tag = score_shard(self.ranker, json.loads(payload))
            seconds.append(time.perf_counter() - t0)
            shards.append(int(index))
            results.append(json.dumps({"tag": tag, "run": list(run.items())}))
        return {
            "shard": np.asarray(shards, dtype=np.int64),
            "result": np.asarray(results, dtype=object),
            "pid": np.full(len(shards), os.getpid(), dtype=np.int64),
            "seconds": np.asarray(seconds, dtype=np.float64),
        }


def run_ray(
    job: RerankJob,
    out: str | os.PathLike[str],
    *,
    actors: int = 1,
    num_cpus: float = 1,
    num_gpus: float = 0,
    address: str | None = None,
    init_num_cpus: int | None = None,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
    keep_checkpoint: bool = False,
    show_progress: bool = True,
    ray_remote_args: dict[str, Any] | None = None,
    window: int = 2048,
    max_retries: int = 3,
) -> JobResult:
    """Score ``job``'s pending shards on Ray with ``actors`` actors of ``num_cpus`` / ``num_gpus`` each.

    Pending shards go to Ray ``window`` at a time (each window is one Dataset, so one actor pool and one
    model load per actor per window), which bounds the payloads held by the driver and the object store.
    A dead actor is restarted and its shards retried up to ``max_retries`` times each; after that the
    job stops with :class:`~unirank.distributed.job.WorkerLostError` (``ray_remote_args`` may set
    ``max_restarts`` / ``max_task_retries`` directly).
    Ray is initialised here when it is not already (``address``, and ``init_num_cpus`` for a local
    start) and shut down again afterwards in that case only. Same checkpoint and resume contract as
    :func:`unirank.distributed.local.run_local`.

    >>> run_ray(job, "out.trec", actors=4, num_gpus=1, address="auto")  # doctest: +SKIP
    """
    ray = require("ray", "ray", "ray[data]")
    require("ray.data", "ray", "ray[data]")
    for name, value in (("actors", actors), ("window", window)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise ValueError(f"max_retries must be an integer >= 0, got {max_retries!r}")
    remote = {"max_restarts": -1, "max_task_retries": max_retries, **(ray_remote_args or {})}
    session = Session(job, out, "ray", actors, checkpoint_dir, resume, show_progress)
    started = False
    try:
        if session.pending:
            if not ray.is_initialized():
                init: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
                if address is None and init_num_cpus is not None:
                    init["num_cpus"] = init_num_cpus
                ray.init(address=address, **init)
                started = True
            try:
                _score_on_ray(ray, job, session, actors, num_cpus, num_gpus, remote, window)
            except _worker_death_errors(ray) as exc:
                first_line = str(exc).splitlines()[0] if str(exc) else ""
                raise WorkerLostError(
                    "a Ray worker died and a shard still failed after "
                    f"max_retries={remote['max_task_retries']} ({type(exc).__name__}: {first_line}); "
                    f"{len(session.ckpt.done())} of {len(job.shards)} shards are committed in "
                    f"{session.ckpt.folder}: rerun with resume=True (--resume) to score the rest"
                ) from exc
    except BaseException:
        session.abort()
        raise
    finally:
        if started:
            ray.shutdown()
    return session.finish(keep_checkpoint)


def _worker_death_errors(ray: Any) -> tuple[type[BaseException], ...]:
    """Ray's errors for a dead worker, actor or node (not those raised by the ranker's own code)."""
    names = ("RayActorError", "WorkerCrashedError", "NodeDiedError", "ObjectLostError")
    return tuple(getattr(ray.exceptions, n) for n in names if hasattr(ray.exceptions, n))


def _score_on_ray(
    ray: Any,
    job: RerankJob,
    session: Session,
    actors: int,
    num_cpus: float,
    num_gpus: float,
    remote_args: dict[str, Any],
    window: int,
) -> None:
    ctx = ray.data.DataContext.get_current()
    bars, ctx.enable_progress_bars = ctx.enable_progress_bars, False
    try:
        threads = max(1, int(num_cpus)) if not num_gpus else None
        for start in range(0, len(session.pending), window):  # bounds driver and object-store memory
            items = [
                {"shard": i, "payload": json.dumps(job.shard_payload(i), default=str)}
                for i in session.pending[start : start + window]
            ]
            ds = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
                ShardScorer,
                fn_constructor_kwargs={
                    "spec": job.reranker,
                    "options": dict(job.options),
                    "threads": threads,
                },
                batch_size=1,
                compute=ray.data.ActorPoolStrategy(size=min(actors, len(items))),  # was concurrency=
                num_cpus=num_cpus,
                num_gpus=num_gpus,
                **remote_args,
            )
            for row in ds.iter_rows():
                res = json.loads(row["result"])
                run = {str(q): [(str(d), float(s)) for d, s in ranking] for q, ranking in res["run"]}
                session.commit(
                    int(row["shard"]), run, res["tag"], pid=int(row["pid"]), seconds=float(row["seconds"])
                )
    finally:
        ctx.enable_progress_bars = bars
