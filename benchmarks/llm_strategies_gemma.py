"""LLM ordering strategies on one real model and one set of inputs, in one run: sliding window vs JointRank
(latency, model calls, rounds), ICR vs listwise, FIRST vs generation.

For each of the first ``--queries`` TREC DL 2019 queries the candidates are the BM25 top ``--depth`` passages
(bundled run), each cut to ``--max-doc-tokens`` tokens. All rankers share one engine (``CausalLM.shared``) and
see the same candidates in the same order:

- ``sliding``: FIRST window ranker (RankZephyr prompt, letters), window ``--window``, stride ``--stride``,
  one pass;
- ``jointrank-winrate`` / ``jointrank-bt``: the same FIRST window ranker on a Latin-square block design
  (blocks of ``--window``, every candidate in ``--replicates`` blocks), aggregated by win rate and by
  Bradley-Terry;
- ``icr``: attention-based in-context re-ranking over all candidates at once (two forward passes);
- ``first@w`` / ``generate@w``: FIRST vs full permutation generation on the BM25 top ``--window`` only (one
  window, no strategy), for reference.

Reported per method: median latency per query (wall clock, and process CPU seconds, which a busy shared
machine distorts less), model calls and rounds (strategies' ``last_stats``), nDCG@10
against the graded qrels (``unirank.eval.metrics.evaluate`` with the dataset's ``rel_level``; the one-window
methods keep BM25's order below the window) and the median Kendall tau of the full order against ``sliding``.
The sync path runs windows one after another on the local engine, so latency follows ``calls``, not ``rounds``
(rounds is what bounds latency behind a concurrent server).

    .venv/bin/python benchmarks/llm_strategies_gemma.py --queries 5 --depth 20 --window 10 --max-doc-tokens 48
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

from scipy.stats import kendalltau

from unirank.backends.causal_lm import CausalLM
from unirank.eval.datasets import load_dataset
from unirank.eval.metrics import evaluate
from unirank.methods.attention import ICRRanker
from unirank.methods.llm_listwise import FirstWindow, GenerationWindow
from unirank.strategies import build_strategy


def tau(order: list[int], ref: list[int]) -> float:
    n = len(ref)
    pos_a, pos_b = [0] * n, [0] * n
    for r, i in enumerate(order):
        pos_a[i] = r
    for r, i in enumerate(ref):
        pos_b[i] = r
    return float(kendalltau(pos_a, pos_b).statistic)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="gemma3-270m")
    ap.add_argument("--queries", type=int, default=5)
    ap.add_argument("--depth", type=int, default=20)
    ap.add_argument("--window", type=int, default=10)
    ap.add_argument("--stride", type=int, default=5)
    ap.add_argument("--replicates", type=int, default=2)
    ap.add_argument("--max-doc-tokens", type=int, default=48)
    ap.add_argument("--out", default=None, help="write the figures as JSON here")
    args = ap.parse_args()

    engine = CausalLM.shared(args.model, max_length=4096)
    ds = load_dataset("trec-dl-2019")
    run = ds.get_run("bm25.top100")
    common: dict[str, Any] = dict(
        prompt="rankzephyr", window_size=args.window, max_doc_tokens=args.max_doc_tokens
    )
    first = FirstWindow(engine, **common)
    gen = GenerationWindow(engine, identifiers="alpha", **common)
    strategies = {
        "sliding": build_strategy("sliding", first, stride=args.stride, passes=1),
        "jointrank-winrate": build_strategy(
            "jointrank", first, replicates=args.replicates, aggregation="winrate"
        ),
        "jointrank-bt": build_strategy("jointrank", first, replicates=args.replicates, aggregation="bt"),
    }
    icr = ICRRanker(engine=engine, max_doc_tokens=args.max_doc_tokens)
    qids = [q for q in ds.queries if q in run][: args.queries]
    first.rank_window("warm up", [ds.corpus[d] for d, _ in run[qids[0]][:2]])  # load kernels once

    names = [*strategies, "icr", "first@w", "generate@w"]
    lat: dict[str, list[float]] = {k: [] for k in names}
    cpu: dict[str, list[float]] = {k: [] for k in names}  # process CPU seconds: less hurt by a busy machine
    calls: dict[str, list[int]] = {k: [] for k in names}
    rounds: dict[str, list[int]] = {k: [] for k in names}
    orders: dict[str, dict[str, list[int]]] = {k: {} for k in ["bm25", *names]}
    for qid in qids:
        ids = [d for d, _ in run[qid][: args.depth]]
        docs = [ds.corpus[d] for d in ids]
        query = ds.queries[qid]
        orders["bm25"][qid] = list(range(len(docs)))
        for name, strat in strategies.items():
            t0, c0 = time.perf_counter(), time.process_time()
            orders[name][qid] = strat.rank(query, docs).indices
            lat[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
            calls[name].append(strat.last_stats["calls"])
            rounds[name].append(strat.last_stats["rounds"])
        t0, c0 = time.perf_counter(), time.process_time()
        orders["icr"][qid] = icr.rank(query, docs).indices
        lat["icr"].append(time.perf_counter() - t0)
        cpu["icr"].append(time.process_time() - c0)
        calls["icr"].append(2)  # the query pass and the content-free calibration pass
        rounds["icr"].append(1)
        w = min(args.window, len(docs))
        for name, ranker in (("first@w", first), ("generate@w", gen)):
            t0, c0 = time.perf_counter(), time.process_time()
            perm = ranker.rank_window(query, docs[:w])
            lat[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
            orders[name][qid] = perm + list(range(w, len(docs)))
            calls[name].append(1)
            rounds[name].append(1)
        print(json.dumps({"qid": qid, **{k: round(v[-1], 2) for k, v in lat.items() if v}}), flush=True)

    qrels = {q: ds.qrels.get(q, {}) for q in qids}
    summary: dict[str, Any] = {
        "model": args.model,
        "queries": len(qids),
        "depth": args.depth,
        "window": args.window,
        "stride": args.stride,
        "replicates": args.replicates,
        "max_doc_tokens": args.max_doc_tokens,
        "rel_level": ds.rel_level,
        "generated_outputs_repaired": f"{gen.stats['repaired']}/{gen.stats['windows']}",
        "methods": {},
    }
    for name in ["bm25", *names]:
        ranked = {}
        for qid in qids:
            ids = [d for d, _ in run[qid][: args.depth]]
            order = orders[name][qid]
            ranked[qid] = [(ids[i], float(len(order) - r)) for r, i in enumerate(order)]
        res = evaluate(qrels, ranked, ["nDCG@10"], rel_level=ds.rel_level)
        row: dict[str, Any] = {"ndcg@10": round(float(res["nDCG@10"]), 4)}
        if name != "bm25":
            row["median_s_per_query"] = round(statistics.median(lat[name]), 3)
            row["median_cpu_s_per_query"] = round(statistics.median(cpu[name]), 3)
            row["calls_per_query"] = statistics.median(calls[name])
            row["rounds_per_query"] = statistics.median(rounds[name])
            row["median_tau_vs_sliding"] = round(
                statistics.median(tau(orders[name][q], orders["sliding"][q]) for q in qids), 3
            )
        summary["methods"][name] = row
    print(json.dumps(summary, indent=2))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            json.dump({"summary": summary, "latency_s": lat, "cpu_s": cpu, "orders": orders}, fh, indent=2)


if __name__ == "__main__":
    main()
