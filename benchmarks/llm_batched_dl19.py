"""Batched local LLM re-ranking vs one query at a time, on TREC DL 2019 x BM25 with the packaged Gemma 3 270M.

Two read-outs of the same ranker, timed alternately (``--reps`` times each, which one goes first alternating
too; medians) so that the noise of a shared machine hits both:

- ``one``: ``ranker.rank(q, docs)`` for each query in turn. FIRST sends one window per forward; pointwise
  already batches a query's own prompts (``batch_size`` per forward).
- ``many``: ``ranker.rank_many(queries, docs_lists)``. FIRST: the sliding-window strategy advances every
  query in lock-step and each step's windows (one per query) go to the engine as ONE padded batch (left
  padding, :mod:`unirank.backends.causal_batch`); pointwise: every query's prompts share batches.

``--modes`` adds ``one+share`` / ``many+share``: the same read-outs with the engine's ``share_prefix`` on (a
prompt prefix shared by several prompts, e.g. one query's pointwise prompts, runs once and its KV cache is
reused). Every mode must give the scores of ``one`` (checked to 1e-4: rank scores for FIRST, the yes/no logits
for pointwise). Each timed run prints one JSON line as it finishes (flushed): seconds, forwards, prompt
tokens, padded tokens and the padding fraction; then a summary with the medians and the throughput ratios
(queries per second, vs ``one``).

``--profile`` instead times single forwards of random prompts: prompt tokens per second vs batch size and
prompt length (one JSON line per configuration as it goes), the account of where batching stops paying.

    .venv/bin/python benchmarks/llm_batched_dl19.py --method first --queries 10 --depth 20 --window 20
    .venv/bin/python benchmarks/llm_batched_dl19.py --method pointwise --queries 10 --depth 20 \
        --modes one,many,one+share,many+share
    .venv/bin/python benchmarks/llm_batched_dl19.py --profile --lengths 128,256,512,1024 --batches 1,2,4,8
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from typing import Any

import numpy as np

from unirank import Reranker
from unirank.backends.causal_lm import CausalLM
from unirank.batching import token_budget_batches
from unirank.eval.datasets import load_dataset


def profile(engine: CausalLM, lengths: list[int], batches: list[int], reps: int) -> None:
    """Prompt tokens per second of ONE forward (next-token scores, left padding, head on the last column) vs
    batch size and prompt length; equal-length random prompts, so no padding; medians of ``reps``."""
    rng = random.Random(0)
    vocab = len(engine.tokenizer)
    engine.max_tokens_per_batch = 10**9
    for n in lengths:
        for b in batches:
            engine.batch_size = b
            prompts = [[rng.randrange(1000, vocab) for _ in range(n)] for _ in range(b)]
            times = []
            for _ in range(reps):
                t0 = time.perf_counter()
                engine.next_token_logprobs(prompts, [0])
                times.append(time.perf_counter() - t0)
            t = statistics.median(times)
            line = {"length": n, "batch": b, "seconds": round(t, 3), "tokens_per_s": round(n * b / t, 1)}
            print(json.dumps(line), flush=True)


def padding_spy(engine: CausalLM) -> dict[str, int]:
    """Count the real and padded prompt tokens of every forward the engine runs (its own batching rule)."""
    counts = {"tokens": 0, "padded": 0}
    real = engine._run

    def run(features: list[dict[str, list[int]]], forward: Any) -> Any:
        lengths = [len(f["input_ids"]) for f in features]
        for b in token_budget_batches(lengths, engine.max_tokens_per_batch, engine.batch_size):
            counts["tokens"] += sum(lengths[i] for i in b)
            counts["padded"] += len(b) * max(lengths[i] for i in b)
        return real(features, forward)

    engine._run = run  # type: ignore[method-assign]
    return counts


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
    ap.add_argument("--modes", default="one,many", help="comma list of one, many, one+share, many+share")
    ap.add_argument("--profile", action="store_true", help="tokens/s vs batch size and prompt length")
    ap.add_argument("--lengths", default="128,256,512,1024")
    ap.add_argument("--batches", default="1,2,4,8")
    ap.add_argument("--out", default=None, help="write the figures as JSON here")
    args = ap.parse_args()
    modes = args.modes.split(",")
    if modes[0] != "one" or not set(modes) <= {"one", "many", "one+share", "many+share"}:
        raise SystemExit("--modes must start with 'one' and name one, many, one+share, many+share")

    print(json.dumps({"loading": args.model}), flush=True)
    engine = CausalLM(
        args.model,
        max_length=4096,
        batch_size=args.batch_size,
        max_tokens_per_batch=args.max_tokens_per_batch,
        padding_side=args.padding_side,
    )
    if args.profile:
        lengths, batches = (
            [int(x) for x in args.lengths.split(",")],
            [int(x) for x in args.batches.split(",")],
        )
        return profile(engine, lengths, batches, args.reps)
    pad = padding_spy(engine)
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

    timings: dict[str, list[float]] = {m: [] for m in modes}
    forwards: dict[str, int] = {}
    padding: dict[str, float] = {}
    got: dict[str, list[np.ndarray]] = {}
    for rep in range(args.reps):
        for mode in modes[rep % len(modes) :] + modes[: rep % len(modes)]:  # rotate who goes first
            engine.share_prefix = mode.endswith("+share")
            before, pad["tokens"], pad["padded"] = engine.forward_calls, 0, 0
            t0 = time.perf_counter()
            if mode.startswith("one"):
                res = [ranker.rank(q, d) for q, d in zip(queries, docs)]
            else:
                res = ranker.rank_many(queries, docs)
            dt = time.perf_counter() - t0
            timings[mode].append(dt)
            forwards[mode] = engine.forward_calls - before
            padding[mode] = round(1 - pad["tokens"] / max(pad["padded"], 1), 3)
            got[mode] = scores(res)
            line = {"rep": rep, "mode": mode, "seconds": round(dt, 2), "forwards": forwards[mode]}
            line.update(tokens_run=pad["tokens"], padded_tokens=pad["padded"], padding_fraction=padding[mode])
            print(json.dumps(line), flush=True)
    diffs = {m: max(float(np.max(np.abs(a - b))) for a, b in zip(got["one"], got[m])) for m in modes}
    diff = max(diffs.values())
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
        "median_s": {m: round(med[m], 2) for m in modes},
        "forwards": forwards,
        "padding_fraction": padding,
        "throughput_vs_one": {m: round(med["one"] / med[m], 2) for m in modes},
        "max_abs_score_diff_vs_one": diffs,
    }
    print(json.dumps(summary, indent=2), flush=True)
    if diff > 1e-4:
        raise SystemExit(f"batched scores differ from one-at-a-time scores by {diff:.2e} (> 1e-4)")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            json.dump({"summary": summary, "timings": timings}, fh, indent=2)


if __name__ == "__main__":
    main()
