"""The bundled TREC DL 2020 set: the published BM25 figure through ``unirank eval`` (pytrec_eval as the
oracle), no query shared with DL 2019, and files that match the sha256 table of its SOURCE.md."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from unirank.cli import main
from unirank.eval import available_datasets, dataset_folder, load_dataset, read_qrels, read_trec_run

DL20 = Path(str(dataset_folder("trec-dl-2020")))
DL19 = Path(str(dataset_folder("trec-dl-2019")))
PUBLISHED_BM25_NDCG10 = 0.4796  # Pyserini BM25 (k1=0.9, b=0.4), TREC DL 2020 passage


def _table(stdout: str) -> dict[str, dict[str, float]]:
    lines = [line.split() for line in stdout.splitlines() if line.strip()]
    header = next(i for i, parts in enumerate(lines) if parts[:2] == ["run", "nDCG@10"])
    names = lines[header][1:]
    return {parts[0]: dict(zip(names, map(float, parts[1:]))) for parts in lines[header + 1 :]}


def _oracle(rel_level: int) -> dict[str, float]:
    import pytrec_eval

    qrels = {q: dict(d) for q, d in read_qrels(DL20 / "qrels" / "test.tsv").items()}
    run = {q: dict(r) for q, r in read_trec_run(DL20 / "runs" / "bm25.top100.trec").items()}
    measures = ("ndcg_cut_10", "P_10", "map", "recall_100")
    per = pytrec_eval.RelevanceEvaluator(qrels, set(measures), relevance_level=rel_level).evaluate(run)
    assert len(per) == 54
    return {m: sum(v[m] for v in per.values()) / len(per) for m in measures}


def test_cli_bm25_gives_the_published_ndcg10_and_equals_pytrec_eval(capsys):
    code = main(["eval", "--no-progress", "--dataset", "trec-dl-2020", "--run", "bm25", "--reranker", "none"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "trec-dl-2020: 54 judged queries" in out
    row = _table(out)["bm25"]
    assert row["nDCG@10"] == PUBLISHED_BM25_NDCG10
    oracle = _oracle(rel_level=2)
    assert round(oracle["ndcg_cut_10"], 4) == PUBLISHED_BM25_NDCG10
    pairs = {"nDCG@10": "ndcg_cut_10", "P@10": "P_10", "AP": "map", "R@100": "recall_100"}
    for ours, theirs in pairs.items():
        assert row[ours] == pytest.approx(oracle[theirs], abs=5e-5), ours


def test_registered_with_aliases_and_rel_level_2():
    assert "trec-dl-2020" in available_datasets()
    ds = load_dataset("trec-dl-2020")
    assert (len(ds.queries), len(ds.qrels), ds.rel_level, sorted(ds.runs)) == (54, 54, 2, ["bm25.top100"])
    assert sum(len(v) for v in ds.qrels.values()) == 11386
    run = ds.get_run("bm25")
    # the corpus is exactly the run's passages
    assert {d for r in run.values() for d, _ in r} == set(ds.corpus)
    for alias in ("dl20", "trec-dl-2020-passage", "msmarco-passage/trec-dl-2020", " DL20 "):
        assert load_dataset(alias).name == "trec-dl-2020"


def test_no_query_overlap_with_dl19():
    dl19, dl20 = load_dataset("trec-dl-2019"), load_dataset("trec-dl-2020")

    def fold(text: str) -> str:
        return " ".join(text.lower().split())

    assert not set(dl19.queries) & set(dl20.queries)
    assert not set(dl19.qrels) & set(dl20.qrels)
    assert not {fold(t) for t in dl19.queries.values()} & {fold(t) for t in dl20.queries.values()}


@pytest.mark.parametrize("folder", [DL19, DL20], ids=["dl19", "dl20"])
def test_files_match_the_sha256_table_of_source_md(folder):
    source = (folder / "SOURCE.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `([^`]+)` \| ([\d,]+) \| `([0-9a-f]{64})` \|$", source, flags=re.M)
    on_disk = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert sorted(r[0] for r in rows) == [p for p in on_disk if p != "SOURCE.md"]
    for name, size, digest in rows:
        data = (folder / name).read_bytes()
        assert len(data) == int(size.replace(",", "")), name
        assert hashlib.sha256(data).hexdigest() == digest, name
    assert "non-commercial research purposes only" in source
