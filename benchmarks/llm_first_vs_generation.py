"""FIRST (one forward pass, first-identifier logits) vs full permutation generation, on the same model,
prompt, identifiers and DL19 windows, in one run.

For each of the first ``--queries`` TREC DL 2019 queries, the window is the BM25 top ``--window`` passages
(bundled run), cut to ``--max-doc-tokens`` tokens each. Both methods use the RankZephyr prompt with letter
identifiers ``[A]..`` so they differ only in how the order is read out. Reported: median latency per window,
the ratio, Kendall tau between the two orders (per window and median), how many generated outputs needed
repair, and nDCG@10 within the window (graded DL19 qrels) of BM25, FIRST and generation. ICR (two forward
passes with attention, same window) is timed alongside as a third read-out of the same model (``--no-icr``
skips it).

Where the time goes: each window's line also gives the prompt length (prefill tokens, the same for both
methods), the number of tokens generation decoded, and the decode cost per token,
``(generate_s - first_s) / generated_tokens`` (generation = the same prefill + that many decode steps), so
the ratio is ``1 + generated_tokens * decode_s_per_token / first_s``. Every window's figures are printed as
soon as it is done (flushed), so an interrupted run still leaves them.

    .venv/bin/python benchmarks/llm_first_vs_generation.py --queries 4 --window 10 --max-doc-tokens 48
    .venv/bin/python benchmarks/llm_first_vs_generation.py --queries 6 --window 20 --no-icr
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time

from scipy.stats import kendalltau

from unirank.backends.causal_lm import CausalLM
from unirank.eval.datasets import load_dataset
from unirank.methods.attention import ICRRanker
from unirank.methods.llm_listwise import FirstWindow, GenerationWindow


def ndcg(order: list[int], gains: list[int], k: int = 10) -> float:
    dcg = sum((2 ** gains[i] - 1) / math.log2(r + 2) for r, i in enumerate(order[:k]))
    ideal = sorted(gains, reverse=True)
    idcg = sum((2**g - 1) / math.log2(r + 2) for r, g in enumerate(ideal[:k]))
    return dcg / idcg if idcg > 0 else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="gemma3-270m")
    ap.add_argument("--queries", type=int, default=4)
    ap.add_argument("--window", type=int, default=10)
    ap.add_argument("--max-doc-tokens", type=int, default=48)
    ap.add_argument("--prompt", default="rankzephyr")
    ap.add_argument("--out", default=None, help="write the figures as JSON here")
    ap.add_argument("--no-icr", action="store_true", help="do not time ICR alongside")
    ap.add_argument(
        "--no-stop", action="store_true", help="generate the full token budget (no stop at a newline)"
    )
    args = ap.parse_args()

    print(json.dumps({"loading": args.model}), flush=True)
    engine = CausalLM.shared(args.model, max_length=4096)
    generated: list[str] = []
    plain_generate = engine.generate

    def counting_generate(*a, **kw):  # record the decoded text, to count the decode steps
        out = plain_generate(*a, **kw)
        generated.extend(out)
        return out

    engine.generate = counting_generate  # type: ignore[method-assign]
    ds = load_dataset("trec-dl-2019")
    run = ds.get_run("bm25.top100")
    common = dict(prompt=args.prompt, window_size=args.window, max_doc_tokens=args.max_doc_tokens)
    first = FirstWindow(engine, **common)
    gen = GenerationWindow(engine, identifiers="alpha", stop_at_newline=not args.no_stop, **common)
    icr = ICRRanker(engine=engine, max_doc_tokens=args.max_doc_tokens)
    rows = []
    qids = [q for q in ds.queries if q in run][: args.queries]
    first.rank_window("warm up", [ds.corpus[d] for d, _ in run[qids[0]][:2]])  # load kernels once
    for qid in qids:
        docs = [ds.corpus[d] for d, _ in run[qid][: args.window]]
        query = ds.queries[qid]
        t0 = time.perf_counter()
        o_first = first.rank_window(query, docs)
        t1 = time.perf_counter()
        o_gen = gen.rank_window(query, docs)
        t2 = time.perf_counter()
        o_icr = icr.rank(query, docs).indices if not args.no_icr else o_first
        t3 = time.perf_counter()
        prompt_tokens = len(first.local_prompt(query, docs, 1, "["))
        gen_tokens = len(engine.encode(generated[-1], special=False)) if generated else 0
        pos_f = [o_first.index(i) for i in range(len(docs))]
        pos_g = [o_gen.index(i) for i in range(len(docs))]
        tau = float(kendalltau(pos_f, pos_g).statistic)
        gains = [int(ds.qrels.get(qid, {}).get(d.id, 0)) for d in docs]
        rows.append(
            {
                "qid": qid,
                "first_s": t1 - t0,
                "generate_s": t2 - t1,
                "icr_s": t3 - t2,
                "ratio": (t2 - t1) / (t1 - t0),
                "prompt_tokens": prompt_tokens,
                "generated_tokens": gen_tokens,
                "decode_s_per_token": (t2 - t1 - (t1 - t0)) / max(gen_tokens, 1),
                "tau": tau,
                "ndcg_bm25": ndcg(list(range(len(docs))), gains),
                "ndcg_first": ndcg(o_first, gains),
                "ndcg_generate": ndcg(o_gen, gains),
                "ndcg_icr": ndcg(o_icr, gains),
            }
        )
        print(
            json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in rows[-1].items()}),
            flush=True,
        )
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0] if k != "qid"}
    summary = {
        "model": args.model,
        "windows": len(rows),
        "window": args.window,
        "max_doc_tokens": args.max_doc_tokens,
        "stop_at_newline": not args.no_stop,
        "median_first_s": round(med["first_s"], 3),
        "median_generate_s": round(med["generate_s"], 3),
        "median_icr_s": round(med["icr_s"], 3) if not args.no_icr else None,
        "speedup_generate_over_first": round(med["generate_s"] / med["first_s"], 2),
        "median_per_window_ratio": round(med["ratio"], 2),
        "median_prompt_tokens": med["prompt_tokens"],
        "median_generated_tokens": med["generated_tokens"],
        "median_decode_s_per_token": round(med["decode_s_per_token"], 4),
        "median_kendall_tau": round(med["tau"], 3),
        "generated_outputs_repaired": f"{gen.stats['repaired']}/{gen.stats['windows']}",
        "mean_ndcg10_bm25": round(statistics.mean(r["ndcg_bm25"] for r in rows), 4),
        "mean_ndcg10_first": round(statistics.mean(r["ndcg_first"] for r in rows), 4),
        "mean_ndcg10_generate": round(statistics.mean(r["ndcg_generate"] for r in rows), 4),
        "mean_ndcg10_icr": None if args.no_icr else round(statistics.mean(r["ndcg_icr"] for r in rows), 4),
    }
    print(json.dumps(summary, indent=2))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            json.dump({"summary": summary, "windows": rows}, fh, indent=2)


if __name__ == "__main__":
    main()
