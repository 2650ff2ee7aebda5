"""Batched local LLM re-ranking vs one query at a time, on TREC DL 2019 x BM25 with the packaged Gemma 3 270M.

Two read-outs of the same ranker, timed alternately (``--reps`` times each, which one goes first alternating
too; medians) so that the noise of a shared machine hits both:

- ``one``: ``ranker.rank(q, docs)`` for each query in turn. FIRST sends one window per forward; pointwise
  already batches a query's own prompts (``batch_size`` per forward).
- ``many``: ``ranker.rank_many(queries, docs_lists)``. FIRST: the sliding-window strategy advances every
  query in lock-step and each step's windows (one per query) go to the engine as ONE padded batch (left
  padding, :mod:`unirank.backends.causal_batch`); pointwise: every query's prompts share batches.

Both must give the same scores (checked to 1e-4: rank scores for FIRST, the yes/no logits for pointwise).
Each timed run prints one JSON line as it finishes (flushed), then a summary with the medians and the
throughput ratio (queries per second, many / one).

    .venv/bin/python benchmarks/llm_batched_dl19.py --method first --queries 10 --depth 20 --window 20
    .venv/bin/python benchmarks/llm_batched_dl19.py --method pointwise --queries 10 --depth 20
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from unirank import Reranker
from unirank.backends.causal_lm import CausalLM
from unirank.eval.datasets import load_dataset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="gemma3-270m")
    ap.add_argument("--method", choices=["first", "pointwise"], default="first")
    ap.add_argument("--queries", type=int, default=10)
    ap.add_argument("--depth", type=int, default=20, help="BM25 candidates re-ranked per query")
    ap.add_argument("--window", type=int, default=20)
    ap.add_argument("--stride", type=int, default=10)
    ap.add_argument("--max-doc-tokens", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=16, help="prompts per forward (engine batch_size)")
    ap.add_argument("--max-tokens-per-batch", type=int, default=None, help="engine token budget per forward")
    ap.add_argument("--padding-side", default="left")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--out", default=None, help="write the figures as JSON here")
    args = ap.parse_args()

    print(json.dumps({"loading": args.model}), flush=True)
    engine = CausalLM(
        args.model,
        max_length=4096,
        batch_size=args.batch_size,
        max_tokens_per_batch=args.max_tokens_per_batch,
        padding_side=args.padding_side,
    )
    ds = load_dataset("trec-dl-2019")
    run = ds.get_run("bm25.top100")
    qids = [q for q in ds.queries if q in run][: args.queries]
    queries = [ds.queries[q] for q in qids]
    docs = [[ds.corpus[d] for d, _ in run[q][: args.depth]] for q in qids]
    if args.method == "first":
        ranker = Reranker(
            "llm-listwise",
            engine=engine,
            method="first",
            window_size=args.window,
            stride=args.stride,
            max_doc_tokens=args.max_doc_tokens,
        )
    else:
        ranker = Reranker("llm-pointwise", engine=engine)
    ranker.rank(queries[0], docs[0][:2])  # load kernels once

    def scores(results: list) -> list[np.ndarray]:
        return [np.array([r.score for r in sorted(res, key=lambda r: r.index)]) for res in results]

    timings: dict[str, list[float]] = {"one": [], "many": []}
    forwards: dict[str, int] = {}
    got: dict[str, list[np.ndarray]] = {}
    for rep in range(args.reps):
        for mode in ("one", "many") if rep % 2 == 0 else ("many", "one"):  # alternate who goes first
            before = engine.forward_calls
            t0 = time.perf_counter()
            if mode == "one":
                res = [ranker.rank(q, d) for q, d in zip(queries, docs)]
            else:
                res = ranker.rank_many(queries, docs)
            dt = time.perf_counter() - t0
            timings[mode].append(dt)
            forwards[mode] = engine.forward_calls - before
            got[mode] = scores(res)
            line = {"rep": rep, "mode": mode, "seconds": round(dt, 2), "forwards": forwards[mode]}
            print(json.dumps(line), flush=True)
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(got["one"], got["many"]))
    med = {k: statistics.median(v) for k, v in timings.items()}
    summary = {
        "model": args.model,
        "method": args.method,
        "queries": len(qids),
        "depth": args.depth,
        "window": args.window if args.method == "first" else None,
        "stride": args.stride if args.method == "first" else None,
        "max_doc_tokens": args.max_doc_tokens,
        "batch_size": engine.batch_size,
        "max_tokens_per_batch": engine.max_tokens_per_batch,
        "padding_side": engine.padding_side,
        "reps": args.reps,
        "median_one_s": round(med["one"], 2),
        "median_many_s": round(med["many"], 2),
        "forwards_one": forwards["one"],
        "forwards_many": forwards["many"],
        "throughput_ratio_many_over_one": round(med["one"] / med["many"], 2),
        "max_abs_score_diff": diff,
    }
    print(json.dumps(summary, indent=2), flush=True)
    if diff > 1e-4:
        raise SystemExit(f"batched scores differ from one-at-a-time scores by {diff:.2e} (> 1e-4)")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            json.dump({"summary": summary, "timings": timings}, fh, indent=2)


if __name__ == "__main__":
    main()
