"""unirank engines vs sentence-transformers and FlashRank on TREC DL 2019 x BM25 top-100, one process.

Prints the ``unirank bench`` table, the measured fp32 / int8 matmul peaks of this CPU (onnxruntime MLAS
kernels, the ones the ONNX paths use) and the fraction of that peak each path's forward reaches.

    python benchmarks/speed_dl19.py --queries 5 --repeats 3 --threads 2
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--queries", type=int, default=5)
    ap.add_argument("--depth", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--paths", default="torch,onnx,onnx-int8,st,flashrank")
    ap.add_argument("--json", default=None, help="also write the rows here")
    ap.add_argument("--model", default=None, help="cross-encoder folder (default: MiniLM-L6 + random head)")
    args = ap.parse_args(argv)
    from unirank.bench import format_rows, matmul_peaks, run_bench

    rows = run_bench(args.model, args.queries, args.depth, args.repeats, args.paths.split(","), args.threads)
    print(format_rows(rows))
    peaks = matmul_peaks(threads=args.threads)
    print(
        f"\nmatmul peak (onnxruntime, {args.threads} threads): fp32 {peaks['fp32']:.0f} GFLOP/s, "
        f"int8 {peaks['int8']:.0f} GOP/s; torch bf16 {peaks['bf16']:.0f} GFLOP/s"
    )
    for r in rows:
        if r["gflops"] is None:  # the pruned path does less than a full forward
            continue
        kind = "int8" if r["path"].endswith("int8") else "bf16" if r["path"].endswith("bf16") else "fp32"
        share = 100 * r["gflops"] / peaks[kind]
        print(f"{r['path']}: {r['gflops']:.1f} GFLOP/s = {share:.0f}% of the {kind} peak")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"rows": rows, "peaks": peaks, "args": vars(args)}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
