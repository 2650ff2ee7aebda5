"""Ordering strategies driven by a *noisy* oracle window ranker: nDCG@10 and model calls, medians over seeds.

Every seed draws ``n`` documents with a hidden utility ``u ~ N(0, 1)``, graded labels from ``u``
(3 / 2 / 1 / 0 above 1.6 / 1.0 / 0.4), and a first-stage order by ``u + N(0, prior_noise)``. The window
ranker is the oracle with noise (less than the first stage's, as a re-ranker should be):

- ``pl-<beta>``: Plackett-Luce, the window is ordered by ``u + Gumbel(0, beta)``;
- ``swap-<p>``: the exact order, then every position is swapped with a random other one with probability p.

All strategies see the same documents, first-stage order and noise stream per seed. Run:

    .venv/bin/python benchmarks/strategies_noisy_oracle.py --seeds 20

With ``--latency-ms 20`` it first times ``arank`` per strategy against a simulated engine that takes
20 ms per window (windows of a round run concurrently, ``--concurrency`` bound). The figures it prints are
recorded in docs/strategies.md (not tuned to).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import time

import numpy as np

from unirank.strategies import build_strategy
from unirank.types import Document

CONFIGS: list[tuple[str, str, int, dict]] = [
    ("sliding w20 s10", "sliding", 20, {"stride": 10}),
    ("sliding w20 s10 x2 passes", "sliding", 20, {"stride": 10, "passes": 2, "skip_fixed": False}),
    ("setwise heapsort c3 k10", "setwise", 4, {"method": "heapsort", "num_child": 3, "top_k": 10}),
    ("setwise bubblesort c3 k10", "setwise", 4, {"method": "bubblesort", "num_child": 3, "top_k": 10}),
    ("setwise heapsort c19 k10", "setwise", 20, {"method": "heapsort", "num_child": 19, "top_k": 10}),
    ("pairwise allpair", "pairwise", 2, {"method": "allpair"}),
    ("pairwise heapsort k10", "pairwise", 2, {"method": "heapsort", "top_k": 10}),
    ("pairwise bubblesort k10", "pairwise", 2, {"method": "bubblesort", "top_k": 10}),
    ("tournament m5 k10", "tournament", 5, {"group_size": 5, "top_k": 10}),
    ("tournament m20 k10", "tournament", 20, {"group_size": 20, "top_k": 10}),
    ("jointrank latin r3 winrate", "jointrank", 20, {"aggregation": "winrate"}),
    ("jointrank latin r3 pagerank", "jointrank", 20, {"aggregation": "pagerank"}),
    ("jointrank latin r3 bt", "jointrank", 20, {"aggregation": "bt"}),
    ("jointrank random r3 bt", "jointrank", 20, {"aggregation": "bt", "design": "random"}),
    ("jointrank latin complete bt", "jointrank", 20, {"aggregation": "bt", "replicates": None}),
]


class NoisyOracle:
    """The oracle window ranker with Plackett-Luce (``pl``) or random-swap (``swap``) noise."""

    def __init__(self, window_size: int, kind: str, level: float, seed: int) -> None:
        self.window_size, self.kind, self.level = window_size, kind, level
        self.rng = np.random.default_rng(seed)

    def rank_window(self, query: str, docs: list[Document]) -> list[int]:
        u = np.array([d.metadata["u"] for d in docs])
        if self.kind == "pl":
            return np.argsort(-(u + self.rng.gumbel(0.0, self.level, len(u))), kind="stable").tolist()
        order = np.argsort(-u, kind="stable").tolist()
        for i in range(len(order)):
            if self.rng.random() < self.level:
                j = int(self.rng.integers(len(order)))
                order[i], order[j] = order[j], order[i]
        return order

    async def arank_window(self, query: str, docs: list[Document]) -> list[int]:
        if self.latency:
            await asyncio.sleep(self.latency)
        return self.rank_window(query, docs)

    latency = 0.0


def ndcg_at(labels: list[int], order: list[int], k: int = 10) -> float:
    """trec_eval's nDCG@k (linear gain), the same figure as ``ir_measures`` ``nDCG@10``."""
    dcg = sum(labels[i] / math.log2(r + 2) for r, i in enumerate(order[:k]))
    ideal = sum(lab / math.log2(r + 2) for r, lab in enumerate(sorted(labels, reverse=True)[:k]))
    return dcg / ideal if ideal > 0 else 0.0


def make_query(n: int, prior_noise: float, seed: int) -> tuple[list[Document], list[int]]:
    rng = np.random.default_rng(10_000 + seed)
    u = rng.normal(size=n)
    labels = [3 if x > 1.6 else 2 if x > 1.0 else 1 if x > 0.4 else 0 for x in u]
    first_stage = np.argsort(-(u + rng.normal(0.0, prior_noise, n)), kind="stable")
    docs = [Document(f"d{i}", id=str(i), metadata={"u": float(u[i])}) for i in first_stage]
    return docs, [labels[i] for i in first_stage]


def latency_table(latency_ms: float, concurrency: int, n: int, seeds: int) -> None:
    """Wall-clock of ``arank`` with a simulated engine latency per window (async, bounded concurrency)."""
    print(f"\n### simulated engine: {latency_ms:g} ms per window, concurrency {concurrency}, n={n}\n")
    print("| strategy | calls | rounds | wall-clock s (median) |")
    print("|---|---|---|---|")
    for label, name, window, options in CONFIGS:
        if name == "pairwise" and options["method"] != "heapsort":
            continue  # thousands of calls: minutes of simulated latency
        walls, calls, rounds = [], [], []
        for seed in range(seeds):
            docs, _ = make_query(n, 1.0, seed)
            oracle = NoisyOracle(window, "pl", 0.5, seed)
            oracle.latency = latency_ms / 1000
            strategy = build_strategy(name, oracle, concurrency=concurrency, **options)
            start = time.perf_counter()
            asyncio.run(strategy.arank("q", docs))
            walls.append(time.perf_counter() - start)
            calls.append(strategy.last_stats["calls"])
            rounds.append(strategy.last_stats["rounds"])
        med = statistics.median
        print(f"| {label} | {med(calls):g} | {med(rounds):g} | {med(walls):.3f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--prior-noise", type=float, default=1.0)
    ap.add_argument("--noise", nargs="+", default=["pl-0.25", "pl-0.5", "swap-0.1"])
    ap.add_argument("--latency-ms", type=float, default=0.0, help="also time arank with this latency")
    ap.add_argument("--concurrency", type=int, default=8)
    args = ap.parse_args()
    if args.latency_ms > 0:
        latency_table(args.latency_ms, args.concurrency, args.n, min(args.seeds, 5))
    for noise in args.noise:
        kind, level = noise.split("-")
        rows = {"first stage (no re-ranking)": ([], [], [])}
        start = time.perf_counter()
        for seed in range(args.seeds):
            docs, labels = make_query(args.n, args.prior_noise, seed)
            rows["first stage (no re-ranking)"][0].append(ndcg_at(labels, list(range(args.n))))
            for label, name, window, options in CONFIGS:
                strategy = build_strategy(name, NoisyOracle(window, kind, float(level), seed), **options)
                order = strategy.rank("q", docs).indices
                got = rows.setdefault(label, ([], [], []))
                got[0].append(ndcg_at(labels, order))
                got[1].append(strategy.last_stats["calls"])
                got[2].append(strategy.last_stats["rounds"])
        secs = time.perf_counter() - start
        head = f"noise {noise}: n={args.n}, {args.seeds} seeds, prior noise {args.prior_noise}"
        print(f"\n### {head} ({secs:.1f}s)\n")
        print("| strategy | window | nDCG@10 (median) | calls (median) | rounds (median) |")
        print("|---|---|---|---|---|")
        windows = {label: w for label, _, w, _ in CONFIGS}
        ranked = sorted(rows.items(), key=lambda kv: -statistics.median(kv[1][0]))
        for label, (nd, calls, rounds) in ranked:
            c = f"{statistics.median(calls):g}" if calls else "0"
            r = f"{statistics.median(rounds):g}" if rounds else "0"
            print(f"| {label} | {windows.get(label, '-')} | {statistics.median(nd):.3f} | {c} | {r} |")


if __name__ == "__main__":
    main()
