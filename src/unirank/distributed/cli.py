"""``unirank rerank-run``: wire with ``add_subparser(sub)`` from :mod:`unirank.cli`."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..cli import parse_options

__all__ = ["add_subparser", "cmd_rerank_run"]


def cmd_rerank_run(args: argparse.Namespace) -> int:
    """Run the job described by parsed arguments; prints a one-line JSON summary on stdout."""
    from .job import RerankJob
    from .runner import run_job

    job = RerankJob.from_files(
        args.run,
        args.corpus,
        args.queries,
        args.reranker,
        depth=args.depth,
        options=parse_options(args.option),
        shard_size=args.shard_size,
        batch_queries=args.batch_queries,
        strict=args.strict,
    )
    engine_options: dict[str, Any] = {}
    if args.engine == "ray":
        engine_options = {
            "num_cpus": args.cpus_per_worker,
            "num_gpus": args.gpus_per_worker,
            "window": args.ray_window,
            "max_retries": args.max_retries,
        }
        if args.ray_address:
            engine_options["address"] = args.ray_address
    elif args.threads is not None:
        engine_options["threads"] = args.threads
    res = run_job(
        job,
        args.out,
        engine=args.engine,
        workers=args.workers,
        checkpoint_dir=args.checkpoint_dir,
        resume=args.resume,
        keep_checkpoint=args.keep_checkpoint,
        show_progress=not args.no_progress,
        engine_options=engine_options,
    )
    summary = {
        "out": str(res.out),
        "engine": res.engine,
        "workers": res.workers,
        "shards": res.shards,
        "shards_scored": res.shards_scored,
        "shards_resumed": res.shards_resumed,
        "queries_per_s": round(res.queries_per_s, 3),
        "docs_per_s": round(res.docs_per_s, 1),
        "validation": res.report.to_dict(),
    }
    sys.stdout.write(json.dumps(summary) + "\n")
    return 0


def add_subparser(sub: Any) -> argparse.ArgumentParser:
    """Add ``rerank-run`` to the ``unirank`` sub-command parsers ``sub``."""
    p = sub.add_parser("rerank-run", help="re-rank a whole run file; resumable, local processes or Ray")
    p.add_argument("--run", required=True, help="TREC run to re-rank (or a run name of a BEIR --corpus)")
    p.add_argument(
        "--corpus", required=True, help="corpus / doc store (JSONL or tsv), BEIR folder or bundled dataset"
    )
    p.add_argument(
        "--queries", default=None, help="queries file (JSONL or tsv); inside a BEIR folder if omitted"
    )
    p.add_argument("--reranker", "-r", required=True, help="reranker spec, e.g. ce:my/model or bm25")
    p.add_argument("--depth", type=int, default=100, help="re-rank the top DEPTH candidates per query")
    p.add_argument("--out", required=True, help="output TREC run (written atomically)")
    p.add_argument("--workers", type=int, default=1, help="worker processes / Ray actors (0: in-process)")
    p.add_argument("--engine", choices=("local", "ray"), default="local")
    p.add_argument(
        "--resume", action="store_true", help="continue a stopped job; recomputes nothing finished"
    )
    p.add_argument(
        "--strict", action="store_true", help="unknown queries, missing docs, duplicates are errors"
    )
    p.add_argument("--checkpoint-dir", default=None, help="shard checkpoints (default OUT.ckpt)")
    p.add_argument("--keep-checkpoint", action="store_true", help="keep the checkpoint after assembly")
    p.add_argument("--shard-size", type=int, default=16, help="queries per shard (unit of commit)")
    p.add_argument("--batch-queries", type=int, default=16, help="queries per model call within a shard")
    p.add_argument("--threads", type=int, default=None, help="torch threads per local worker")
    p.add_argument("--ray-address", default=None, help="existing Ray cluster (e.g. auto, ray://head:10001)")
    p.add_argument("--cpus-per-worker", type=float, default=1, help="Ray: CPUs per actor")
    p.add_argument("--gpus-per-worker", type=float, default=0, help="Ray: GPUs per actor")
    p.add_argument("--ray-window", type=int, default=2048, help="Ray: shards per Dataset (bounds memory)")
    p.add_argument(
        "--max-retries", type=int, default=3, help="Ray: retries of a shard whose worker died (then stop)"
    )
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--option", "-o", action="append", metavar="KEY=VALUE", help="ranker option, repeatable")
    p.set_defaults(func=cmd_rerank_run)
    return p
