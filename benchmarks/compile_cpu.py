"""Eager vs ``compile="inductor"`` for the MiniLM-L6 cross-encoder on the CPU.

The packaged MiniLM-L6 weights with a seeded 1-logit head (:func:`unirank.bench.build_minilm_cross_encoder`)
rank DL19 queries x BM25 top-100 with ``rank_many``, once with the eager forward and once with
``compile="inductor"`` (``torch.compile(dynamic=True)``, widths bucketed to multiples of 32 tokens). The
first compiled call (the compile itself, plus one ranking) is timed on its own; then both paths run
interleaved in a rotating order after one warm-up each, and each figure is the median of ``--repeats``
rounds. The load average is printed before and after, since the machine may be shared.

    nice -n 10 python benchmarks/compile_cpu.py --queries 8 --repeats 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


def timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one call."""
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--queries", type=int, default=8)
    ap.add_argument("--depth", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all usable cores)")
    args = ap.parse_args(argv)

    import logging

    import numpy as np
    import torch

    from unirank import Reranker
    from unirank.bench import build_minilm_cross_encoder
    from unirank.cpus import available_cores
    from unirank.eval.datasets import load_dataset

    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("transformers").setLevel(logging.ERROR)
    torch.set_num_threads(args.threads or available_cores())
    ds = load_dataset("trec-dl-2019")
    run = ds.get_run("bm25")
    qids = sorted(run)[: args.queries]
    queries = [ds.queries[q] for q in qids]
    docs = [[ds.corpus[d].text for d, _ in run[q][: args.depth]] for q in qids]
    n_pairs = sum(len(d) for d in docs)
    model_dir = build_minilm_cross_encoder(Path(tempfile.mkdtemp(prefix="unirank-compile-")) / "minilm-ce")
    print(f"load average before: {os.getloadavg()}; torch threads {torch.get_num_threads()}, "
          f"{os.cpu_count()} CPUs; torch {torch.__version__}")  # fmt: skip
    print(f"{n_pairs} pairs ({len(queries)} DL19 queries x BM25 top-{args.depth}), MiniLM-L6 cross-encoder")

    eager = Reranker(f"ce:{model_dir}", device="cpu")
    fast = Reranker(f"ce:{model_dir}", device="cpu", compile="inductor")

    def scores(r):
        out = r.rank_many(queries, docs)
        return np.concatenate([np.array([h.score for h in sorted(x, key=lambda h: h.index)]) for x in out])

    first, _ = timed(lambda: scores(fast))
    e_first, _ = timed(lambda: scores(eager))
    print(f"first call: compiled {first:.1f} s (compile + one ranking), eager {e_first:.1f} s")
    if fast._fast.failure:
        print(f"compile failed, eager fallback: {fast._fast.failure}")
    diff = float(np.max(np.abs(scores(fast) - scores(eager))))
    paths = {"eager": lambda: scores(eager), "inductor": lambda: scores(fast)}
    times: dict[str, list[tuple[float, float]]] = {p: [] for p in paths}
    names = list(paths)
    for r in range(args.repeats):
        k = r % len(names)
        for p in names[k:] + names[:k]:
            times[p].append(timed(paths[p]))
    med = {p: (statistics.median(w for w, _ in t), statistics.median(c for _, c in t))
           for p, t in times.items()}  # fmt: skip
    for p, (w, c) in med.items():
        runs = ", ".join(f"{x:.2f}" for x, _ in times[p])
        print(f"{p}: median {w:.2f} s wall ({n_pairs / w:.0f} pairs/s), {c:.2f} s CPU; runs [{runs}]")
    (ew, ec), (iw, ic) = med["eager"], med["inductor"]
    print(f"inductor / eager speed: {ew / iw:.2f}x wall, {ec / ic:.2f}x CPU; max |score diff| {diff:.2e}; "
          f"{len(fast._fast.shapes)} distinct padded shapes")  # fmt: skip
    print(f"load average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
