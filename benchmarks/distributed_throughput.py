"""Throughput of ``unirank.distributed`` vs number of workers, against a single-process peer in the same run.

Workload: TREC DL 2019 (bundled: 43 queries, BM25 top-100), re-ranked to ``--depth`` by a MiniLM-L6
cross-encoder (the packaged all-MiniLM-L6-v2 weights with a seeded random 1-logit head: the compute of
``cross-encoder/ms-marco-MiniLM-L-6-v2``; scores are meaningless, speed is representative).

Peer: :func:`unirank.eval.job.rerank_run` in this process (what ``unirank eval`` does), then the local engine
with N worker processes and the Ray engine with N actors over the same shards. Reported per configuration:
end-to-end wall time (start-up of workers and model loading included), docs/s end to end, and steady-state
docs/s (commits after the first, over the time between the first and last commit), and each engine's
output against the peer's: byte-identical or not, and the largest score difference (model batches are the
same when the shard size equals ``batch_queries``; torch thread counts per worker differ, which can move
scores in the last bits).

    .venv/bin/python benchmarks/distributed_throughput.py --depth 50 --workers 1 2 --engines local ray
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path


def build_minilm_ce(folder: Path) -> str:
    """MiniLM-L6 + the seeded random head (``unirank.bench.build_minilm_cross_encoder``) as a ``ce:`` spec."""
    from unirank.bench import build_minilm_cross_encoder

    return f"ce:{build_minilm_cross_encoder(folder)}"


def steady_docs_per_s(ckpt: Path, job) -> float:
    from unirank.distributed.job import Checkpoint

    commits = [e for e in Checkpoint(ckpt, job, resume=True).events() if e["event"] == "commit"]
    commits.sort(key=lambda e: e["time"])
    if len(commits) < 2:
        return float("nan")
    docs = sum(min(len(job.run[q]), job.depth) for e in commits[1:] for q in job.shards[e["shard"]])
    return docs / (commits[-1]["time"] - commits[0]["time"])


def driver_overhead(depth: int, shard_size: int, repeats: int = 5) -> dict[str, float]:
    """What the driver does per shard besides scoring: build the payload, JSON round trip (what the Ray
    engine ships), commit the shard file. Scoring is replaced by the first-stage order (no model)."""
    from unirank.distributed import RerankJob
    from unirank.distributed.job import Checkpoint
    from unirank.eval.datasets import load_dataset

    ds = load_dataset("trec-dl-2019")
    job = RerankJob.from_dataset(ds, "bm25", "bm25", depth=depth, shard_size=shard_size)
    times, size = [], 0
    for _ in range(repeats):
        folder = Path(tempfile.mkdtemp(prefix="unirank-driver-"))
        ckpt = Checkpoint(folder, job)
        t0 = time.perf_counter()
        size = 0
        for i in range(len(job.shards)):
            blob = json.dumps(job.shard_payload(i), default=str)
            size += len(blob)
            payload = json.loads(blob)
            run = {q: [(d, float(s)) for d, s in payload["run"][q]] for q in payload["qids"]}
            ckpt.commit(i, run, "x")
        ckpt.assemble(folder / "out.trec")
        times.append(time.perf_counter() - t0)
        shutil.rmtree(folder, ignore_errors=True)
    sec = statistics.median(times)
    return {"queries_s": len(job.qids) / sec, "payload_bytes_per_query": size / len(job.qids)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--depth", type=int, default=50)
    ap.add_argument("--shard-size", type=int, default=2)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--engines", nargs="+", default=["local", "ray"], choices=["local", "ray"])
    ap.add_argument("--repeats", type=int, default=1, help="runs per configuration; the median is reported")
    ap.add_argument("--json", default=None, help="also write the rows here")
    ap.add_argument("--driver-only", action="store_true", help="only measure the driver's per-query overhead")
    args = ap.parse_args()
    if args.driver_only:
        d = driver_overhead(args.depth, args.shard_size)
        print(
            f"driver (payload + JSON round trip + atomic commit + assembly), depth {args.depth}: "
            f"{d['queries_s']:.0f} queries/s, {d['payload_bytes_per_query']:.0f} payload bytes/query"
        )
        return

    import torch

    from unirank import Reranker
    from unirank.distributed import RerankJob, run_job
    from unirank.eval.datasets import load_dataset
    from unirank.eval.io import read_trec_run, write_trec_run
    from unirank.eval.job import rerank_run

    tmp = Path(tempfile.mkdtemp(prefix="unirank-bench-"))
    spec = build_minilm_ce(tmp / "minilm-ce")
    ds = load_dataset("trec-dl-2019")
    run = ds.get_run("bm25")
    bq = args.shard_size  # same model batches in the peer and in every shard
    job = RerankJob.from_dataset(ds, "bm25", spec, depth=args.depth, shard_size=bq, batch_queries=bq)
    n_docs = sum(min(len(run[q]), args.depth) for q in job.qids)
    cores = os.cpu_count() or 1
    print(f"DL19: {len(job.qids)} queries, {n_docs} (query, doc) pairs, depth {args.depth}, {cores} cores")
    rows: list[dict] = []
    print(f"{'configuration':34} {'wall s':>8} {'docs/s':>8} {'steady docs/s':>14}  same bytes (max |diff|)")

    def show(row: dict) -> None:
        rows.append(row)
        print(
            f"{row['config']:34} {row['seconds']:8.1f} {row['docs_s']:8.1f} {row['steady_docs_s']:14.1f}"
            f"  {row['same']} ({row['max_diff']:.1e})",
            flush=True,
        )

    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        ranker = Reranker(spec)
        torch.set_num_threads(cores)
        out = rerank_run(ranker, ds, run, depth=args.depth, batch_queries=bq, show_progress=False)
        times.append(time.perf_counter() - t0)
    write_trec_run(out, tmp / "peer.trec", tag=ranker.name)
    peer = (tmp / "peer.trec").read_bytes()
    show(
        {
            "config": "peer: rerank_run, 1 process",
            "workers": 1,
            "seconds": statistics.median(times),
            "docs_s": n_docs / statistics.median(times),
            "steady_docs_s": float("nan"),
            "same": True,
            "max_diff": 0.0,
        }
    )

    for engine in args.engines:
        for n in args.workers:
            times, steady, same, diff = [], [], True, 0.0
            for r in range(args.repeats):
                dest, ckpt = tmp / f"{engine}{n}-{r}.trec", tmp / f"{engine}{n}-{r}.ckpt"
                opts = {"init_num_cpus": cores, "num_cpus": max(1, cores // n)} if engine == "ray" else {}
                t0 = time.perf_counter()
                run_job(
                    job,
                    dest,
                    engine=engine,
                    workers=n,
                    checkpoint_dir=ckpt,
                    keep_checkpoint=True,
                    show_progress=False,
                    engine_options=opts,
                )
                times.append(time.perf_counter() - t0)
                steady.append(steady_docs_per_s(ckpt, job))
                same = same and dest.read_bytes() == peer
                got = read_trec_run(dest)
                diff = max(diff, max(abs(s - dict(got[q])[d]) for q in out for d, s in out[q]))
            sec = statistics.median(times)
            show(
                {
                    "config": f"{engine} engine, {n} worker(s)",
                    "workers": n,
                    "seconds": sec,
                    "docs_s": n_docs / sec,
                    "steady_docs_s": statistics.median(steady),
                    "same": same,
                    "max_diff": diff,
                }
            )

    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
