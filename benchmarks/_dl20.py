"""TREC DL 2020 passage (from ``../shared/data``): queries, corpus, BM25 top-100 run and qrels.

Used by the benchmarks that need judged data disjoint from the bundled DL 2019 evaluation queries.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path


def load_dl20(root: Path) -> tuple[dict, dict, dict, dict]:
    """``(queries, corpus, run, qrels)``: id -> text, id -> text, qid -> [(docid, score)] and
    qid -> {docid: grade} (in file order)."""
    queries = {}
    for line in open(root / "queries.jsonl", encoding="utf-8"):
        o = json.loads(line)
        queries[o["_id"]] = o["text"]
    corpus = {}
    with gzip.open(root / "corpus.jsonl.gz", "rt", encoding="utf-8") as fh:
        for line in fh:
            o = json.loads(line)
            corpus[o["_id"]] = o["text"]
    run: dict[str, list[tuple[str, float]]] = {}
    for line in open(root / "runs" / "bm25.top100.trec"):
        q, _, d, _, score, _ = line.split()
        run.setdefault(q, []).append((d, float(score)))
    qrels: dict[str, dict[str, int]] = {}
    with open(root / "qrels" / "test.tsv") as fh:
        next(fh)
        for line in fh:
            q, d, g = line.split()
            qrels.setdefault(q, {})[d] = int(g)
    return queries, corpus, run, qrels
