"""TREC / BEIR IO: round trips, atomic writes, malformed input, gzip, bundled datasets."""

from __future__ import annotations

import gzip
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from unirank.eval import (
    Dataset,
    atomic_write,
    available_datasets,
    load_beir,
    load_dataset,
    read_corpus,
    read_qrels,
    read_queries,
    read_trec_run,
    results_to_run,
    run_to_candidates,
    write_qrels,
    write_trec_run,
)
from unirank.types import Document, RankedResults

RUN = {
    "q1": [("d3", 12.5), ("d1", 3.0), ("d2", -0.25)],
    "q2": [("d9", 1e-300), ("d8", 0.1 + 0.2), ("d7", -1e30)],
}


def _only_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# -- runs -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["run.trec", "run.trec.gz"])
def test_run_round_trip_is_exact(tmp_path, name):
    path = tmp_path / name
    write_trec_run(RUN, path, tag="my-run")
    assert read_trec_run(path) == RUN
    assert _only_files(tmp_path) == [name]  # no temp file left behind
    if name.endswith(".gz"):
        with gzip.open(path, "rt") as fh:
            assert fh.readline().split() == ["q1", "Q0", "d3", "1", "12.5", "my-run"]


def test_gz_output_is_deterministic(tmp_path):
    write_trec_run(RUN, tmp_path / "a.trec.gz")
    write_trec_run(RUN, tmp_path / "b.trec.gz")
    assert (tmp_path / "a.trec.gz").read_bytes() == (tmp_path / "b.trec.gz").read_bytes()


def test_read_run_orders_by_rank_then_score_and_tolerates_whitespace(tmp_path):
    path = tmp_path / "run.trec"
    path.write_text(
        "q1 Q0 b 2 5.0 t\n"
        "\n"
        "  q1\tQ0   a   1 9.0 t   \n"
        "q2 Q0 x 1 1.0 t\r\n"
        "q1 Q0 c 2 7.0 t\n"  # same rank as b: the higher score comes first
    )
    assert read_trec_run(path) == {"q1": [("a", 9.0), ("c", 7.0), ("b", 5.0)], "q2": [("x", 1.0)]}


def test_read_gzipped_run_written_by_gzip(tmp_path):
    path = tmp_path / "run.trec.gz"
    with gzip.open(path, "wt") as fh:
        fh.write("q Q0 d 1 2.5 t\n")
    assert read_trec_run(path) == {"q": [("d", 2.5)]}


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ("q1 Q0 d2 2 1.0", "expected 6 fields"),
        ("q1 Q0 d2 two 1.0 t", "rank must be an integer"),
        ("q1 Q0 d2 2 high t", "rank must be an integer and score a number"),
        ("q1 Q0 d1 2 1.0 t", "repeated"),
    ],
)
def test_malformed_run_names_file_and_line(tmp_path, bad_line, message):
    path = tmp_path / "bad.trec"
    path.write_text(f"q1 Q0 d1 1 2.0 t\n\n{bad_line}\n")
    with pytest.raises(ValueError, match=message) as info:
        read_trec_run(path)
    assert "bad.trec:3" in str(info.value)


@pytest.mark.parametrize("bad", [{"q 1": [("d", 1.0)]}, {"q": [("d d", 1.0)]}, {"q": [("", 1.0)]}])
def test_write_run_rejects_ids_that_would_corrupt_the_file(tmp_path, bad):
    with pytest.raises(ValueError, match="whitespace"):
        write_trec_run(bad, tmp_path / "x.trec")
    assert _only_files(tmp_path) == []


class _ExplodingScore:
    def __float__(self) -> float:
        raise RuntimeError("disk full (simulated)")


@pytest.mark.parametrize("name", ["run.trec", "run.trec.gz"])
def test_error_mid_write_keeps_the_old_file_and_leaves_no_temp(tmp_path, name):
    path = tmp_path / name
    write_trec_run(RUN, path)
    before = path.read_bytes()
    # a large first part so the temp file really holds data when the error hits
    bad = {"q0": [(f"d{i}", float(-i)) for i in range(5000)], "q1": [("a", 1.0), ("b", _ExplodingScore())]}
    with pytest.raises(RuntimeError, match="disk full"):
        write_trec_run(bad, path)
    assert path.read_bytes() == before
    assert _only_files(tmp_path) == [name]


def test_error_mid_write_never_creates_the_destination(tmp_path):
    with pytest.raises(RuntimeError):
        write_trec_run({"q": [("a", 1.0), ("b", _ExplodingScore())]}, tmp_path / "new.trec")
    assert _only_files(tmp_path) == []


def test_destination_is_replaced_only_at_the_end(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old\n")
    with atomic_write(path) as fh:
        fh.write("new\n")
        assert path.read_text() == "old\n"  # readers still see the complete old file while we write
        temps = [p for p in tmp_path.iterdir() if p.name != "out.txt"]
        assert len(temps) == 1 and temps[0].name.startswith(".out.txt.")
    assert path.read_text() == "new\n"
    assert _only_files(tmp_path) == ["out.txt"]


def test_atomic_write_keeps_an_existing_files_mode(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old")
    path.chmod(0o640)
    with atomic_write(path) as fh:
        fh.write("new")
    assert path.stat().st_mode & 0o777 == 0o640


# -- qrels ------------------------------------------------------------------------------------------------
QRELS = {"1": {"d1": 2, "d2": 0}, "2": {"d3": 1, "d4": -1}}


@pytest.mark.parametrize(("fmt", "name"), [("trec", "qrels.txt"), ("beir", "test.tsv"), ("trec", "q.txt.gz")])
def test_qrels_round_trip(tmp_path, fmt, name):
    write_qrels(QRELS, tmp_path / name, fmt=fmt)
    assert read_qrels(tmp_path / name) == QRELS
    assert _only_files(tmp_path) == [name]


def test_read_qrels_both_formats(tmp_path):
    (tmp_path / "a.txt").write_text("1 0 d1 2\n1  0\td2 0\n")
    (tmp_path / "b.tsv").write_text("query-id\tcorpus-id\tscore\n1\td1\t2\n1\td2\t0\n")
    assert read_qrels(tmp_path / "a.txt") == read_qrels(tmp_path / "b.tsv") == {"1": {"d1": 2, "d2": 0}}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("1 0 d1 2\n1 0 d2 high\n", "grade must be an integer"),
        ("1 0 d1 2\n1 0 d2 1 extra\n", "expected"),
        ("1 0 d1 2\n1 0 d1 1\n", "conflicting"),
    ],
)
def test_malformed_qrels(tmp_path, content, message):
    (tmp_path / "q.txt").write_text(content)
    with pytest.raises(ValueError, match=message) as info:
        read_qrels(tmp_path / "q.txt")
    assert "q.txt:2" in str(info.value)


# -- queries and corpus -----------------------------------------------------------------------------------
def test_read_queries_jsonl_and_tsv(tmp_path):
    (tmp_path / "queries.jsonl").write_text(
        '{"_id": "1", "text": "what is rain"}\n{"_id": 2, "text": "snow"}\n'
    )
    (tmp_path / "topics.tsv").write_text("1\twhat is rain\n2\tsnow\n")
    expected = {"1": "what is rain", "2": "snow"}
    assert read_queries(tmp_path / "queries.jsonl") == read_queries(tmp_path / "topics.tsv") == expected
    (tmp_path / "bad.tsv").write_text("1\tok\n2 no tab here\n")
    with pytest.raises(ValueError, match=r"bad\.tsv:2"):
        read_queries(tmp_path / "bad.tsv")


def test_read_corpus_titles_like_to_documents(tmp_path):
    rows = [
        {"_id": "a", "title": "Rain", "text": "Water falls.", "year": 2020},
        {"_id": "b", "title": "", "text": "No title."},
    ]
    path = tmp_path / "corpus.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)
    corpus = read_corpus(path)
    assert corpus["a"].text == "Rain Water falls."
    assert corpus["a"].metadata == {"title": "Rain", "year": 2020}
    assert corpus["b"].text == "No title." and corpus["b"].metadata["title"] == ""
    from unirank.types import to_documents

    assert to_documents(rows)[0].text == corpus["a"].text  # same convention as the core


def test_read_corpus_errors_and_tsv(tmp_path):
    (tmp_path / "c.jsonl").write_text('{"_id": "a", "text": "x"}\n{"_id": "b", "text": \n')
    with pytest.raises(ValueError, match=r"c\.jsonl:2: invalid JSON"):
        read_corpus(tmp_path / "c.jsonl")
    (tmp_path / "d.jsonl").write_text('{"_id": "a", "text": "x"}\n{"_id": "a", "text": "y"}\n')
    with pytest.raises(ValueError, match=r"d\.jsonl:2: document id .a. repeated"):
        read_corpus(tmp_path / "d.jsonl")
    (tmp_path / "e.jsonl").write_text('{"_id": "a", "body": "x"}\n')
    with pytest.raises(ValueError, match=r"e\.jsonl:1"):
        read_corpus(tmp_path / "e.jsonl")
    (tmp_path / "c.tsv").write_text("p1\tfirst passage\np2\tTitle\tsecond\n")
    corpus = read_corpus(tmp_path / "c.tsv")
    assert corpus["p1"].text == "first passage" and corpus["p2"].text == "Title second"


# -- datasets ---------------------------------------------------------------------------------------------
def _toy_beir(root: Path) -> Path:
    (root / "qrels").mkdir(parents=True)
    (root / "runs").mkdir()
    (root / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": d, "title": "", "text": f"text {d}"}) + "\n" for d in ("d1", "d2", "d3"))
    )
    (root / "queries.jsonl").write_text('{"_id": "1", "text": "one"}\n{"_id": "2", "text": "two"}\n')
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n1\td1\t1\n")
    write_trec_run({"1": [("d2", 2.0), ("d1", 1.0)]}, root / "runs" / "bm25.top100.trec.gz")
    return root


def test_load_beir_folder(tmp_path):
    ds = load_beir(_toy_beir(tmp_path / "toy"))
    assert ds.name == "toy" and ds.rel_level == 1
    assert ds.queries == {"1": "one"}  # restricted to judged queries, as BEIR does
    assert sorted(ds.corpus) == ["d1", "d2", "d3"]
    assert list(ds.runs) == ["bm25.top100"]
    assert ds.get_run("bm25") is ds.get_run("bm25.top100")  # prefix lookup, loaded once
    assert ds.get_run("bm25") == {"1": [("d2", 2.0), ("d1", 1.0)]}
    assert ds.get_run(tmp_path / "toy" / "runs" / "bm25.top100.trec.gz") == ds.get_run("bm25")
    with pytest.raises(KeyError, match="no run"):
        ds.get_run("splade")
    assert "docs=3" in repr(ds)
    assert load_dataset(tmp_path / "toy", rel_level=2).rel_level == 2


def test_bundled_trec_dl_2019():
    ds = load_dataset("trec-dl-2019")
    assert isinstance(ds, Dataset) and ds.rel_level == 2
    assert len(ds.queries) == 43 and len(ds.qrels) == 43
    assert sum(len(v) for v in ds.qrels.values()) == 9260  # complete official qrels
    run = ds.get_run("bm25")
    run_docs = {d for ranking in run.values() for d, _ in ranking}
    assert set(ds.corpus) == run_docs and len(run_docs) == 4297  # corpus = exactly the BM25 candidates
    assert all(len(r) == 100 for r in run.values())
    assert load_dataset("dl19").queries == ds.queries


def test_bundled_scifact():
    ds = load_dataset("scifact")
    assert ds.rel_level == 1 and not ds.runs
    assert len(ds.corpus) == 5183 and len(ds.queries) == 300
    assert sum(len(v) for v in ds.qrels.values()) == 339
    assert all(d in ds.corpus for docs in ds.qrels.values() for d in docs)
    doc = next(iter(ds.corpus.values()))
    assert doc.metadata["title"] and doc.text.startswith(doc.metadata["title"] + " ")


def test_available_and_unknown_datasets():
    assert available_datasets() == ["scifact", "trec-dl-2019", "trec-dl-2020"]
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("msmarco-full")


def test_import_is_light():
    code = (
        "import sys, unirank.eval; "
        "heavy = [m for m in ('ir_measures', 'pytrec_eval', 'torch', 'tqdm') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- glue -------------------------------------------------------------------------------------------------
def test_results_to_run():
    docs = [Document("a", "d1"), Document("b", "d2"), Document("c", "d3")]
    rr = RankedResults.from_scores("q", docs, [0.5, 2.0, 1.0])
    assert results_to_run(["q1"], [rr]) == {"q1": [("d2", 2.0), ("d3", 1.0), ("d1", 0.5)]}
    with pytest.raises(ValueError):
        results_to_run(["q1", "q2"], [rr])


def test_run_to_candidates_counts_missing_documents(caplog):
    corpus = {"d1": Document("one", "d1"), "d3": Document("three", "d3")}
    run = {"q1": [("d1", 3.0), ("dX", 2.0), ("d3", 1.0)], "q2": [("dY", 1.0), ("d3", 0.5)]}
    with caplog.at_level(logging.WARNING, logger="unirank.eval.io"):
        cands, missing = run_to_candidates(run, corpus, depth=2)
    assert [d.id for d in cands["q1"]] == ["d1"] and [d.id for d in cands["q2"]] == ["d3"]
    assert missing == {"q1": ["dX"], "q2": ["dY"]}
    assert "2 candidate documents in 2 queries are missing" in caplog.text
