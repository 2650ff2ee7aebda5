"""``irds:<id>`` datasets through the real ``ir_datasets`` package, offline: each test lays out, in a
temporary ``IR_DATASETS_HOME``, the exact cache files that an existing id reads (``beir/scifact/source.zip``;
``msmarco-passage/collection.tsv``, ``trec-dl-2019/{queries.tsv,qrels,ms.run}``), filled with slices of the
bundled SciFact and TREC DL 2019 data. Oracle: the same slices loaded from the bundled files, evaluated and
re-ranked in this process. ir_datasets fixes its cache folder when first imported, so the irds side runs in a
subprocess; its proxy points nowhere, so a download attempt fails instead of reaching the network."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest.importorskip("ir_datasets")
pytest.importorskip("ir_measures")

from unirank.errors import MissingExtraError
from unirank.eval import (
    Dataset,
    dataset_folder,
    eval_job,
    read_corpus,
    read_qrels,
    read_queries,
    read_trec_run,
    write_trec_run,
)
from unirank.eval.irds import default_rel_level
from unirank.eval.metrics import EVAL_TABLE_METRICS
from unirank.methods.lexical import BM25Ranker

SCIFACT = Path(str(dataset_folder("scifact")))
DL19 = Path(str(dataset_folder("trec-dl-2019")))
CORPUS = SCIFACT / "corpus.jsonl.gz"


def _run(home: Path, args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, IR_DATASETS_HOME=str(home), IR_DATASETS_SKIP_DISK_FREE="true", HF_HUB_OFFLINE="1")
    env.update(http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9", NO_PROXY="")
    return subprocess.run(
        [sys.executable, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=180
    )


def _cli(home: Path, cwd: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return _run(home, ["-m", "unirank.cli", "eval", "--no-progress", *argv], cwd)


def _rows(stdout: str) -> dict[str, list[float]]:
    """Table rows of ``unirank eval``'s output: label -> numbers."""
    rows = {}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) > len(EVAL_TABLE_METRICS) and all(p.replace(".", "").isdigit() for p in parts[-6:]):
            rows[" ".join(parts[:-6])] = [float(p) for p in parts[-6:]]
    return rows


@pytest.fixture(scope="module")
def scifact(tmp_path_factory):
    """12 judged SciFact queries, their relevant abstracts and 150 others, as beir/scifact/test's zip."""
    home = tmp_path_factory.mktemp("irds_home")
    qrels = read_qrels(SCIFACT / "qrels" / "test.tsv")
    qids = sorted(qrels)[:12]
    qrels = {q: qrels[q] for q in qids}
    queries = read_queries(SCIFACT / "queries.jsonl")
    lines = gzip.decompress(CORPUS.read_bytes()).decode("utf-8").splitlines()
    wanted = {d for q in qids for d in qrels[q]}
    kept = [ln for ln in lines if json.loads(ln)["_id"] in wanted] + lines[:150]
    kept = list(dict.fromkeys(kept))
    folder = home / "beir" / "scifact"
    folder.mkdir(parents=True)
    with zipfile.ZipFile(folder / "source.zip", "w") as z:
        z.writestr("scifact/corpus.jsonl", "\n".join(kept) + "\n")
        z.writestr(
            "scifact/queries.jsonl",
            "".join(json.dumps({"_id": q, "text": queries[q]}) + "\n" for q in queries),
        )
        z.writestr("scifact/qrels/test.tsv", "query-id\tcorpus-id\tscore\n" + "".join(
            f"{q}\t{d}\t{g}\n" for q in qids for d, g in qrels[q].items()))  # fmt: skip
        z.writestr("scifact/qrels/train.tsv", "query-id\tcorpus-id\tscore\n")
    corpus = {d.id: d for d in (read_corpus(CORPUS)[json.loads(ln)["_id"]] for ln in kept)}
    oracle = Dataset("scifact-slice", corpus, {q: queries[q] for q in qids}, qrels, rel_level=1)
    # A first-stage run over the slice: the judged documents and 20 others per query, scores decreasing.
    ids = list(corpus)
    run = {
        q: [(d, 100.0 - i) for i, d in enumerate(sorted(qrels[q]) + ids[i * 7 : i * 7 + 20])]
        for i, q in enumerate(qids)
    }
    run = {q: list(dict(r).items()) for q, r in run.items()}
    write_trec_run(run, home / "first.trec")
    return home, oracle, run


def test_beir_scifact_test_from_the_irds_cache(scifact, tmp_path) -> None:
    home, oracle, _ = scifact
    code = (
        "import json; from unirank.eval import load_dataset\n"
        "ds = load_dataset('irds:beir/scifact/test')\n"
        "docs = {d: [ds.corpus[d].text, ds.corpus[d].metadata.get('title')] for d in sorted(ds.corpus)}\n"
        "print(json.dumps([ds.name, ds.rel_level, ds.queries, ds.qrels, docs, sorted(ds.runs)]))"
    )
    done = _run(home, ["-c", code], tmp_path)
    assert done.returncode == 0, done.stderr
    name, level, queries, qrels, docs, runs = json.loads(done.stdout.splitlines()[-1])
    assert (name, level, runs) == ("irds:beir/scifact/test", 1, [])
    assert queries == oracle.queries and qrels == oracle.qrels
    assert docs == {d: [doc.text, doc.metadata.get("title")] for d, doc in sorted(oracle.corpus.items())}


def test_cli_eval_and_rerank_equal_the_bundled_slice(scifact, tmp_path) -> None:
    home, oracle, run = scifact
    done = _cli(home, tmp_path, "--dataset", "irds:beir/scifact/test", "--run", str(home / "first.trec"),
                "--reranker", "bm25", "--depth", "15")  # fmt: skip
    assert done.returncode == 0, done.stderr
    _, expected = eval_job(BM25Ranker(), oracle, run, depth=15, show_progress=False)
    rows = _rows(done.stdout)
    assert list(rows) == ["first", "first >> bm25@15"]
    for got, res in zip(rows.values(), expected.values()):
        assert got == pytest.approx([round(res[m], 4) for m in EVAL_TABLE_METRICS], abs=1e-9)
    assert "irds:beir/scifact/test: 12 judged queries" in done.stdout and "rel_level 1" in done.stdout
    # No scoreddocs and no --run: refused, naming --run (no BM25 over a possibly huge corpus).
    refused = _cli(home, tmp_path, "--dataset", "irds:beir/scifact/test", "--reranker", "none")
    assert refused.returncode == 2 and "no scoreddocs" in refused.stderr and "--run" in refused.stderr


def _dl19_home(root: Path, scored: bool) -> tuple[Path, Dataset, dict]:
    """msmarco-passage/trec-dl-2019's cache files for 6 judged queries (plus an unjudged one)."""
    qrels = read_qrels(DL19 / "qrels" / "test.tsv")
    qids = sorted(qrels)[:6]
    qrels = {q: qrels[q] for q in qids}
    queries = read_queries(DL19 / "queries.jsonl")
    bm25 = read_trec_run(DL19 / "runs" / "bm25.top100.trec")
    run = {q: bm25[q][:30] for q in qids}
    full = read_corpus(DL19 / "corpus.jsonl.gz")
    corpus = {d: full[d] for q in qids for d, _ in run[q]}
    base = root / "msmarco-passage"
    (base / "trec-dl-2019").mkdir(parents=True)
    (base / "irds_version.txt").write_text("v2")
    (base / "collection.tsv").write_text("".join(f"{d}\t{doc.text}\n" for d, doc in corpus.items()))
    (base / "trec-dl-2019" / "queries.tsv").write_text(
        "".join(f"{q}\t{queries[q]}\n" for q in qids) + "99999\tan unjudged query\n"
    )
    (base / "trec-dl-2019" / "qrels").write_text(
        "".join(f"{q} Q0 {d} {g}\n" for q in qids for d, g in qrels[q].items()))  # fmt: skip
    rows = [(q, d, s) for q in [*qids] for d, s in run[q]] + [("99999", run[qids[0]][0][0], 1.0)]
    # The real ms.run has 'qid pid' (no score); the scored variant uses ir_datasets' 'qid did score' form.
    (base / "trec-dl-2019" / "ms.run").write_text(
        "".join(f"{q} {d} {s!r}\n" if scored else f"{q} {d}\n" for q, d, s in rows))  # fmt: skip
    return root, Dataset("dl19-slice", corpus, {q: queries[q] for q in qids}, qrels, rel_level=2), run


def test_trec_dl_2019_judged_scoreddocs_and_rel_level(tmp_path) -> None:
    home, oracle, run = _dl19_home(tmp_path / "scored", scored=True)
    ds_id = "irds:msmarco-passage/trec-dl-2019/judged"
    done = _cli(home, tmp_path, "--dataset", ds_id, "--reranker", "none")
    assert done.returncode == 0, done.stderr
    assert "run scoreddocs: 6 of 6 run queries judged" in done.stdout and "(rel_level 2)" in done.stdout
    _, expected = eval_job(None, oracle, run, show_progress=False)
    assert _rows(done.stdout)["scoreddocs"] == pytest.approx(
        [round(expected["run"][m], 4) for m in EVAL_TABLE_METRICS], abs=1e-9
    )
    level1 = _cli(home, tmp_path, "--dataset", ds_id, "--reranker", "none", "--rel-level", "1")
    assert level1.returncode == 0 and "(rel_level 1)" in level1.stdout
    _, expected1 = eval_job(None, oracle, run, show_progress=False, rel_level=1)
    assert _rows(level1.stdout)["scoreddocs"][2] == pytest.approx(round(expected1["run"]["RR@10"], 4))
    rerank = _cli(home, tmp_path, "--dataset", ds_id, "--reranker", "bm25", "--depth", "10")
    assert rerank.returncode == 0, rerank.stderr
    _, expected_rr = eval_job(BM25Ranker(), oracle, run, depth=10, show_progress=False)
    got = _rows(rerank.stdout)["scoreddocs >> bm25@10"]
    assert got == pytest.approx([round(expected_rr["run >> bm25@10"][m], 4) for m in EVAL_TABLE_METRICS])


def test_scoreddocs_without_scores_are_refused(tmp_path) -> None:
    """The real MS MARCO top-1000 files have no scores (ir_datasets gives 0 to all): no order to cut."""
    home, _, run = _dl19_home(tmp_path / "unscored", scored=False)
    ds_id = "irds:msmarco-passage/trec-dl-2019/judged"
    done = _cli(home, tmp_path, "--dataset", ds_id, "--reranker", "none")
    assert done.returncode == 2 and "carry no scores" in done.stderr and "--run" in done.stderr
    write_trec_run(run, tmp_path / "bm25.trec")
    ok = _cli(home, tmp_path, "--dataset", ds_id, "--reranker", "none", "--run", str(tmp_path / "bm25.trec"))
    assert ok.returncode == 0, ok.stderr


def test_rel_level_convention_missing_package_and_unknown_id(monkeypatch) -> None:
    assert default_rel_level("msmarco-passage/trec-dl-2020/judged") == 2
    assert default_rel_level("msmarco-passage-v2/trec-dl-2021") == 2
    assert default_rel_level("beir/scifact/test") == default_rel_level("msmarco-passage/dev/small") == 1
    from unirank.eval import load_dataset

    monkeypatch.setitem(sys.modules, "ir_datasets", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'unirank\[irds\]'"):
        load_dataset("irds:beir/scifact/test")
