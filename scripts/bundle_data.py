"""Build the evaluation data shipped inside the package (``src/unirank/data``) from ``../shared/data``.

Reproducible: the output depends only on the input files (gzip written with mtime 0 and no file name; lines
are copied byte for byte). Re-run with::

    python scripts/bundle_data.py [--src ../shared/data] [--dst src/unirank/data]

What is built:

- ``trec-dl-2019/``: the 43 judged queries, the complete official qrels, the BM25 top-100 run, and a corpus
  that holds only the passages of that run.
- ``trec-dl-2020/``: the same for DL 2020: the 54 judged queries, the complete qrels, the BM25 top-100 run
  and its passages (checked to share no query id or text with DL 2019).
- ``scifact/``: the full corpus (5,183 abstracts), the 300 test queries only, and the test qrels.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import logging
import shutil
import sys
from pathlib import Path

logger = logging.getLogger("bundle_data")

ROOT = Path(__file__).resolve().parents[1]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise SystemExit(f"verification failed: {message}")


def _jsonl_id(line: bytes) -> str:
    return str(json.loads(line)["_id"])


def _write_gz_lines(lines: list[bytes], dest: Path) -> None:
    tmp = dest.with_name(dest.name + ".tmp")
    with (
        open(tmp, "wb") as raw,
        gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0, compresslevel=9) as gz,
    ):
        for line in lines:
            gz.write(line if line.endswith(b"\n") else line + b"\n")
    tmp.replace(dest)


def _qrels_queries(path: Path) -> set[str]:
    rows = path.read_text(encoding="utf-8").splitlines()[1:]
    return {row.split("\t")[0] for row in rows if row.strip()}


def _bundle_trec_dl(
    src: Path, dst: Path, name: str, n_queries_expected: int, n_qrels_expected: int, template: str
) -> dict[str, object]:
    """Queries, complete qrels and the BM25 top-100 run copied unchanged; the corpus cut to that run."""
    out = dst / name
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    run_src = src / "runs" / "bm25.top100.trec"
    shutil.copyfile(src / "queries.jsonl", out / "queries.jsonl")
    shutil.copyfile(src / "qrels" / "test.tsv", out / "qrels" / "test.tsv")
    shutil.copyfile(run_src, out / "runs" / "bm25.top100.trec")
    run_docs = {line.split()[2] for line in run_src.read_text(encoding="utf-8").splitlines() if line.strip()}
    with gzip.open(src / "corpus.jsonl.gz", "rb") as fh:
        all_lines = [line for line in fh if line.strip()]
    kept = [line for line in all_lines if _jsonl_id(line) in run_docs]
    _check(len(kept) == len(run_docs), f"{len(run_docs) - len(kept)} BM25 passages missing from the corpus")
    _write_gz_lines(kept, out / "corpus.jsonl.gz")
    n_queries = sum(1 for line in (out / "queries.jsonl").read_bytes().splitlines() if line.strip())
    n_qrels = len((out / "qrels" / "test.tsv").read_text(encoding="utf-8").splitlines()) - 1
    _check(n_queries == n_queries_expected, f"expected {n_queries_expected} queries, got {n_queries}")
    _check(n_qrels == n_qrels_expected, f"expected {n_qrels_expected:,} qrels lines, got {n_qrels}")
    _check(_qrels_queries(out / "qrels" / "test.tsv") == _query_ids(out), "qrels and queries differ")
    facts = {
        "docs": len(kept),
        "docs_source": len(all_lines),
        "queries": n_queries,
        "qrels": n_qrels,
        "run_lines": sum(1 for _ in run_src.open(encoding="utf-8")),
    }
    (out / "SOURCE.md").write_text(template.format(**facts, **_hashes(src, out)), encoding="utf-8")
    return facts


def _query_ids(folder: Path) -> set[str]:
    return {_jsonl_id(line) for line in (folder / "queries.jsonl").read_bytes().splitlines() if line.strip()}


def _query_texts(folder: Path) -> set[str]:
    lines = (folder / "queries.jsonl").read_bytes().splitlines()
    return {" ".join(str(json.loads(line)["text"]).lower().split()) for line in lines if line.strip()}


def bundle_dl19(src: Path, dst: Path) -> dict[str, object]:
    return _bundle_trec_dl(src, dst, "trec-dl-2019", 43, 9260, DL19_SOURCE)


def bundle_dl20(src: Path, dst: Path) -> dict[str, object]:
    facts = _bundle_trec_dl(src, dst, "trec-dl-2020", 54, 11386, DL20_SOURCE)
    dl19, dl20 = dst / "trec-dl-2019", dst / "trec-dl-2020"
    if dl19.is_dir():  # one can train on one year and test on the other only if they share no query
        _check(not (_query_ids(dl19) & _query_ids(dl20)), "DL19 and DL20 share query ids")
        _check(not (_query_texts(dl19) & _query_texts(dl20)), "DL19 and DL20 share query texts")
    return facts


def bundle_scifact(src: Path, dst: Path) -> dict[str, object]:
    out = dst / "scifact"
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src / "corpus.jsonl.gz", out / "corpus.jsonl.gz")
    shutil.copyfile(src / "qrels" / "test.tsv", out / "qrels" / "test.tsv")
    test_qids = _qrels_queries(src / "qrels" / "test.tsv")
    lines = [line for line in (src / "queries.jsonl").read_bytes().splitlines(keepends=True) if line.strip()]
    kept = [line for line in lines if _jsonl_id(line) in test_qids]
    (out / "queries.jsonl").write_bytes(
        b"".join(line if line.endswith(b"\n") else line + b"\n" for line in kept)
    )
    with gzip.open(out / "corpus.jsonl.gz", "rb") as fh:
        n_docs = sum(1 for line in fh if line.strip())
    n_qrels = len((out / "qrels" / "test.tsv").read_text(encoding="utf-8").splitlines()) - 1
    _check(n_docs == 5183, f"expected 5,183 documents, got {n_docs}")
    _check(len(kept) == 300 == len(test_qids), f"expected 300 test queries, got {len(kept)}")
    _check(n_qrels == 339, f"expected 339 qrels lines, got {n_qrels}")
    facts = {"docs": n_docs, "queries": len(kept), "queries_source": len(lines), "qrels": n_qrels}
    (out / "SOURCE.md").write_text(SCIFACT_SOURCE.format(**facts, **_hashes(src, out)), encoding="utf-8")
    return facts


def _hashes(src: Path, out: Path) -> dict[str, str]:
    rows = []
    for path in sorted(p for p in out.rglob("*") if p.is_file() and p.name != "SOURCE.md"):
        rows.append(f"| `{path.relative_to(out).as_posix()}` | {path.stat().st_size:,} | `{_sha256(path)}` |")
    return {"manifest": "\n".join(rows), "src": src.name}


DL19_SOURCE = """\
# trec-dl-2019 (TREC Deep Learning 2019, passage task) — bundled subset

Built by `scripts/bundle_data.py` from the `{src}` folder of the project's shared evaluation data (whose own
SOURCE.md traces every file to its public origin; summarised below).

## What is here, and what was subset
- `queries.jsonl` — the {queries} judged DL19 queries (`_id` = TREC qid), unchanged.
- `qrels/test.tsv` — the **complete** official DL19 passage qrels ({qrels:,} judgments, grades 0–3),
  unchanged. Kept complete on purpose: nDCG@10 then equals the published numbers (BM25: 0.5058).
- `runs/bm25.top100.trec` — Pyserini BM25 (k1=0.9, b=0.4) top-100 on MS MARCO v1 passages, TREC run format,
  unchanged ({run_lines:,} lines). This is the re-ranking input.
- `corpus.jsonl.gz` — **subset**: only the {docs:,} passages that appear in the BM25 top-100 run (the
  shared copy has {docs_source:,}: the union of six first-stage runs). Lines are copied byte for byte
  (`_id`, `title` = "", `text`). Judged passages outside this run are absent, which is harmless: they are
  never candidates, and the qrels keep them.

For binary metrics (RR, AP, R@k, P@k) TREC DL counts grade >= 2 as relevant (`Dataset.rel_level = 2`).

## Origin
- Passages and the BM25 run: castorini/rank_llm, `retrieve_results/BM25/retrieve_results_dl19.json`
  (commit 381a6f0e71b58baf73bd2165f611e016b9bece02), whitespace-normalised.
- Queries: castorini/anserini-tools `topics/topics.dl19-passage.txt`; qrels: castorini/anserini-tools
  `qrels/qrels.dl19-passage.txt` (commit 43add835e20bd66b48f9a640be9bad95a4762d82).

## Licence
MS MARCO passage v1 (Microsoft) is available for **non-commercial research purposes only**, under its terms
of use; TREC 2019 Deep Learning Track judgments are from NIST. The BM25 run was produced by Castorini with
Pyserini; rank_llm is Apache-2.0. This subset is shipped for evaluation, tests and demos; it carries the
same terms.

## Files
| file | bytes | sha256 |
|---|---|---|
{manifest}
"""


DL20_SOURCE = """\
# trec-dl-2020 (TREC Deep Learning 2020, passage task) — bundled subset

Built by `scripts/bundle_data.py` from the `{src}` folder of the project's shared evaluation data (whose own
SOURCE.md traces every file to its public origin; summarised below), exactly as `trec-dl-2019` is built.

## What is here, and what was subset
- `queries.jsonl` — the {queries} judged DL20 queries (`_id` = TREC qid; the DL20 topic file has 200, only the
  judged ones are kept), unchanged.
- `qrels/test.tsv` — the **complete** official DL20 passage qrels ({qrels:,} judgments, grades 0–3),
  unchanged. Kept complete on purpose: nDCG@10 then equals the published numbers (BM25: 0.4796).
- `runs/bm25.top100.trec` — Pyserini BM25 (k1=0.9, b=0.4) top-100 on MS MARCO v1 passages, TREC run format,
  unchanged ({run_lines:,} lines). This is the re-ranking input.
- `corpus.jsonl.gz` — **subset**: only the {docs:,} passages that appear in the BM25 top-100 run (the
  shared copy has {docs_source:,}: the union of five first-stage runs). Lines are copied byte for byte
  (`_id`, `title` = "", `text`). Judged passages outside this run are absent, which is harmless: they are
  never candidates, and the qrels keep them.

For binary metrics (RR, AP, R@k, P@k) TREC DL counts grade >= 2 as relevant (`Dataset.rel_level = 2`).
## Verified
- By `scripts/bundle_data.py` at build time: {queries} queries, {qrels:,} qrels lines over the same {queries}
  queries, every one of the {docs:,} distinct passages of the run present in the corpus, and no query id or
  query text (case and whitespace folded) shared with `trec-dl-2019`, so one can train on one year and
  evaluate on the other.
- By `tests/test_train_bundled_dl20.py`: BM25 nDCG@10 = 0.4796 (the published figure) through
  `unirank eval --dataset trec-dl-2020 --run bm25 --reranker none`, with pytrec_eval as the oracle.

## Origin
- Passages and the BM25 run: castorini/rank_llm, `retrieve_results/BM25/retrieve_results_dl20.json`
  (commit 381a6f0e71b58baf73bd2165f611e016b9bece02), whitespace-normalised.
- Queries: castorini/anserini-tools `topics/topics.dl20.txt`; qrels: castorini/anserini-tools
  `qrels/qrels.dl20-passage.txt` (commit 43add835e20bd66b48f9a640be9bad95a4762d82).

## Licence
MS MARCO passage v1 (Microsoft) is available for **non-commercial research purposes only**, under its terms
of use; TREC 2020 Deep Learning Track judgments are from NIST. The BM25 run was produced by Castorini with
Pyserini; rank_llm is Apache-2.0. This subset is shipped for evaluation, tests and demos; it carries the
same terms.

## Files
| file | bytes | sha256 |
|---|---|---|
{manifest}
"""

SCIFACT_SOURCE = """\
# scifact (BEIR SciFact, test split)

Built by `scripts/bundle_data.py` from the `{src}` folder of the project's shared evaluation data (whose own
SOURCE.md traces every file to its public origin; summarised below).

## What is here, and what was subset
- `corpus.jsonl.gz` — the full BEIR SciFact corpus: {docs:,} abstracts (`_id`, `title`, `text`), unchanged.
- `queries.jsonl` — **subset**: only the {queries} test claims (of {queries_source:,}: train + test), lines
  copied byte for byte.
- `qrels/test.tsv` — the BEIR test qrels ({qrels} judgments, all grade 1), unchanged. No train split is
  shipped.

## Origin
SciFact (Wadden et al., EMNLP 2020) as packaged in BEIR (Thakur et al., 2021). Corpus converted from the
Hugging Face `allenai/scifact` export (BEIR construction: sentences joined by a space, titles stripped);
queries and qrels are the BEIR files; the test queries and qrels are identical to castorini/anserini-tools
`topics.beir-v1.0.0-scifact.test` / `qrels.beir-v1.0.0-scifact.test.txt`.

## Licence
Per allenai/scifact LICENSE.md: claims and evidence annotations are **CC BY 4.0**; the abstracts (corpus)
come from S2ORC under **ODC-By 1.0**. Attribution: Wadden et al., "Fact or Fiction: Verifying Scientific
Claims", EMNLP 2020; Thakur et al., "BEIR", NeurIPS 2021 Datasets and Benchmarks. (The BEIR paper's table
lists SciFact as CC BY-NC 2.0.)

## Files
| file | bytes | sha256 |
|---|---|---|
{manifest}
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--dst", type=Path, default=ROOT / "src" / "unirank" / "data")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    dl19 = bundle_dl19(args.src / "trec-dl-2019-passage", args.dst)
    logger.info("trec-dl-2019: %s", dl19)
    dl20 = bundle_dl20(args.src / "trec-dl-2020-passage", args.dst)
    logger.info("trec-dl-2020: %s", dl20)
    scifact = bundle_scifact(args.src / "scifact", args.dst)
    logger.info("scifact: %s", scifact)
    return 0


if __name__ == "__main__":
    sys.exit(main())
