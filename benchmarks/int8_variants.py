"""int8 variants of a cross-encoder against its ONNX fp32 scores: per-query Kendall tau over DL19 BM25
top-100, the share of queries with the same top-10 set, nDCG@10 of both, max score change and time, for the
default int8 graph and with sensitive nodes kept in fp32.

    python benchmarks/int8_variants.py --model DIR --queries 10
    python benchmarks/int8_variants.py --model DIR --queries 43 --variants int8   # the shipped graph only
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

VARIANTS = {"int8": (), "int8 keep ffn_out": ("ffn_out",), "int8 keep attention": ("attention",)}


def ndcg10(ds, qids, run, scores) -> float:
    from unirank.eval import evaluate

    ranked = {q: {d: float(x) for (d, _), x in zip(run[q][:100], s)} for q, s in zip(qids, scores)}
    return float(
        evaluate({q: ds.qrels[q] for q in qids}, ranked, ["nDCG@10"], rel_level=ds.rel_level)["nDCG@10"]
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None, help="cross-encoder folder (default: MiniLM-L6 + random head)")
    ap.add_argument("--queries", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = ap.parse_args(argv)
    from scipy.stats import kendalltau

    from unirank import Reranker
    from unirank.backends.onnx import OnnxForward, onnx_model_file
    from unirank.bench import build_minilm_cross_encoder
    from unirank.eval.datasets import load_dataset

    model = args.model or str(build_minilm_cross_encoder(Path(tempfile.mkdtemp()) / "ce"))
    ds = load_dataset("trec-dl-2019")
    run = ds.get_run("bm25")
    qids = sorted(run)[: args.queries]
    fp = Reranker(f"ce:{model}", device="cpu", backend="onnx", onnx_threads=args.threads)
    rankers = {}
    for name, keep in VARIANTS.items():
        if name not in args.variants:
            continue
        r = Reranker(f"ce:{model}", device="cpu", backend="onnx", quantize="int8", onnx_threads=args.threads)
        if keep:
            path = onnx_model_file(model, "seqcls", quantize="int8", keep_fp32=keep)
            r._onnx = OnnxForward(path, r.tokenizer, threads=1, workers=args.threads)
        rankers[name] = r
    ref: list[np.ndarray] = []
    got: dict[str, list[np.ndarray]] = {k: [] for k in rankers}
    spent = {k: 0.0 for k in ["fp32", *rankers]}
    for q in qids:  # interleaved per query
        docs = [ds.corpus[d] for d, _ in run[q][:100]]
        t = time.perf_counter()
        ref.append(np.array(fp.score(ds.queries[q], docs)))
        spent["fp32"] += time.perf_counter() - t
        for k, r in rankers.items():
            t = time.perf_counter()
            got[k].append(np.array(r.score(ds.queries[q], docs)))
            spent[k] += time.perf_counter() - t
    print(f"fp32 within-query score sd (median over queries): {np.median([x.std() for x in ref]):.3f}")
    n_fp = ndcg10(ds, qids, run, ref)
    for k in rankers:
        taus = [kendalltau(a, b)[0] for a, b in zip(ref, got[k])]
        diff = max(float(np.abs(a - b).max()) for a, b in zip(ref, got[k]))
        top = sum(
            set(np.argsort(-a, kind="stable")[:10]) == set(np.argsort(-b, kind="stable")[:10])
            for a, b in zip(ref, got[k])
        )
        n_k = ndcg10(ds, qids, run, got[k])
        print(
            f"{k}: tau min {min(taus):.3f} median {np.median(taus):.3f} (>= 0.98 on "
            f"{sum(t >= 0.98 for t in taus)}/{len(taus)}), same top-10 set {top}/{len(taus)}, "
            f"nDCG@10 fp32 {n_fp:.4f} -> {n_k:.4f} ({n_k - n_fp:+.4f}), max |diff| {diff:.3f}, "
            f"{spent['fp32'] / spent[k]:.2f}x the speed of fp32"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
