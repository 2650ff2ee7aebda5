"""Evaluation input that used to give plausible, wrong numbers with no error (issue 14, items 3-8).

Oracle: ``pytrec_eval`` called directly with an explicit ``relevance_level``, on a small TREC-DL-like
collection built here (graded qrels 0-3), and on the shared TREC DL 2020 folder when ``../shared`` is present.
"""

from __future__ import annotations

import codecs
import gzip
import json
import math
import os
import random
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytrec_eval = pytest.importorskip("pytrec_eval")
pytest.importorskip("ir_measures")

from unirank.cli import main  # noqa: E402
from unirank.errors import EvalInputError  # noqa: E402
from unirank.eval import (  # noqa: E402
    eval_job,
    evaluate,
    load_dataset,
    read_corpus,
    read_qrels,
    read_queries,
    read_trec_run,
    write_qrels,
    write_trec_run,
)

SHARED_DL20 = Path(__file__).resolve().parents[2] / "shared" / "data" / "trec-dl-2020-passage"
WORDS = "rain cloud water storm wind snow river lake ocean sun heat cold ice fog".split()


def _collection(root: Path, n_queries: int = 6, n_docs: int = 40, seed: int = 7) -> Path:
    """A BEIR-style folder with TREC DL-like graded qrels (0-3) and a scored run, deterministic."""
    rng = random.Random(seed)
    (root / "qrels").mkdir(parents=True)
    (root / "runs").mkdir()
    docs = {f"{i}": " ".join(rng.choices(WORDS, k=8)) for i in range(n_docs)}  # numeric ids, as in MS MARCO
    with (root / "corpus.jsonl").open("w") as fh:
        fh.writelines(json.dumps({"_id": d, "title": "", "text": t}) + "\n" for d, t in docs.items())
    queries = {f"q{i}": " ".join(rng.sample(WORDS, 2)) for i in range(n_queries)}
    with (root / "queries.jsonl").open("w") as fh:
        fh.writelines(json.dumps({"_id": q, "text": t}) + "\n" for q, t in queries.items())
    qrels = {q: {d: rng.choice([0, 0, 1, 1, 2, 3]) for d in rng.sample(sorted(docs), 15)} for q in queries}
    for q in qrels:  # every query has a grade-1 and a grade-2 document, so the two levels differ
        judged = sorted(qrels[q])
        qrels[q][judged[0]], qrels[q][judged[1]] = 1, 2
    write_qrels(qrels, root / "qrels" / "test.tsv", fmt="beir")
    run = {
        q: [(d, 30.0 - i + rng.random()) for i, d in enumerate(rng.sample(sorted(docs), 25))] for q in queries
    }
    write_trec_run(run, root / "runs" / "bm25.top25.trec")
    return root


@pytest.fixture
def coll(tmp_path) -> Path:
    return _collection(tmp_path / "dl-like")


# pytrec_eval measure -> unirank metric name (RR@10 is checked through recip_rank below)
ORACLE_NAMES = {
    "infAP": "infAP",
    "map": "AP",
    "recip_rank": "RR",
    "P_10": "P@10",
    "recall_20": "R@20",
    "bpref": "Bpref",
    "Rprec": "Rprec",
    "num_rel_ret": "NumRelRet",
}


def _oracle(qrels, run, level):
    scored = {q: dict(r) for q, r in run.items()}
    per = pytrec_eval.RelevanceEvaluator(qrels, set(ORACLE_NAMES), relevance_level=level).evaluate(scored)
    out = {
        ours: math.fsum(per.get(q, {}).get(m, 0.0) for q in qrels) / len(qrels)
        for m, ours in ORACLE_NAMES.items()
    }
    out["RR@10"] = math.fsum(
        (v if (v := per.get(q, {}).get("recip_rank", 0.0)) >= 0.1 else 0.0) for q in qrels
    ) / len(qrels)
    return out


# -- item 3: rel_level everywhere ---------------------------------------------------------------------------
@pytest.mark.parametrize("level", [1, 2, 3])
def test_rel_level_reaches_every_binary_measure_passed_by_name(coll, level):
    qrels, run = read_qrels(coll / "qrels" / "test.tsv"), read_trec_run(coll / "runs" / "bm25.top25.trec")
    names = [*ORACLE_NAMES.values(), "RR@10"]
    got = evaluate(qrels, run, names, rel_level=level).aggregate
    want = _oracle(qrels, run, level)
    for name in names:
        assert got[name] == pytest.approx(want[name], abs=1e-9), name
    if level == 2:  # the levels really differ on this collection
        assert got["infAP"] != pytest.approx(_oracle(qrels, run, 1)["infAP"])


def test_explicit_rel_and_graded_measures_are_left_alone(coll):
    qrels, run = read_qrels(coll / "qrels" / "test.tsv"), read_trec_run(coll / "runs" / "bm25.top25.trec")
    at2 = evaluate(qrels, run, ["AP(rel=3)", "nDCG@10", "NumRet"], rel_level=2).aggregate
    at1 = evaluate(qrels, run, ["AP(rel=3)", "nDCG@10", "NumRet"], rel_level=1).aggregate
    assert at2 == at1  # an explicit rel= wins; nDCG uses graded gains; NumRet counts every returned document
    assert at2["NumRet"] == 25
    assert at2["AP(rel=3)"] == pytest.approx(evaluate(qrels, run, ["AP"], rel_level=3)["AP"], abs=1e-12)


def test_dataset_folder_declares_its_rel_level(coll):
    assert load_dataset(coll).rel_level == 1
    (coll / "unirank.json").write_text('{"rel_level": 2, "description": "TREC DL-like"}')
    assert load_dataset(coll).rel_level == 2
    assert load_dataset(coll, rel_level=3).rel_level == 3  # an explicit level wins
    for bad, message in [
        ('{"rel_level": 0}', "rel_level"),
        ('{"rel_level": "2"}', "rel_level"),
        ('{"rel-level": 2}', "unknown"),
        ("[2]", "object"),
        ("{", "JSON"),
    ]:
        (coll / "unirank.json").write_text(bad)
        with pytest.raises(EvalInputError, match=message) as info:
            load_dataset(coll)
        assert "unirank.json" in str(info.value)


def _table(out: str) -> dict[str, dict[str, float]]:
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("run ") and ":" not in line)
    columns = lines[start].split()[1:]
    rows = {}
    for line in lines[start + 1 :]:
        parts = line.split()
        if len(parts) < len(columns) + 1:
            break
        rows[" ".join(parts[: -len(columns)])] = dict(zip(columns, map(float, parts[-len(columns) :])))
    return rows


def test_cli_rel_level_flag_and_folder_metadata(coll, capsys):
    qrels, run = read_qrels(coll / "qrels" / "test.tsv"), read_trec_run(coll / "runs" / "bm25.top25.trec")
    argv = ["eval", "--dataset", str(coll), "--run", "bm25", "--reranker", "none", "--no-progress"]
    argv += ["--metrics", "RR@10", "AP", "P@10", "infAP", "nDCG@10"]
    for extra, metadata, level in [
        ([], None, 1),
        (["--rel-level", "2"], None, 2),
        ([], 2, 2),
        (["--rel-level", "1"], 2, 1),
    ]:
        if metadata is not None:
            (coll / "unirank.json").write_text(json.dumps({"rel_level": metadata}))
        assert main(argv + extra) == 0
        out = capsys.readouterr().out
        assert f"grade >= {level}" in out
        row = _table(out)["bm25"]
        want = _oracle(qrels, run, level)
        for name in ("RR@10", "AP", "P@10", "infAP"):
            assert row[name] == pytest.approx(want[name], abs=5e-5), (extra, metadata, name)


@pytest.mark.skipif(not SHARED_DL20.is_dir(), reason="../shared/data is not available on this machine")
def test_shared_trec_dl_2020_at_grade_2_equals_trec_eval(capsys):
    ds = load_dataset(SHARED_DL20)
    run = ds.get_run("bm25")
    argv = ["eval", "--dataset", str(SHARED_DL20), "--run", "bm25", "--reranker", "none", "--rel-level", "2"]
    assert main([*argv, "--no-progress", "--metrics", "RR@10", "AP", "P@10", "infAP", "R@20"]) == 0
    out = capsys.readouterr().out
    row = _table(out)["bm25"]
    want = _oracle(ds.qrels, run, 2)
    for name in ("RR@10", "AP", "P@10", "infAP", "R@20"):
        assert row[name] == pytest.approx(want[name], abs=5e-5), name
    # measured: RR@10 0.6533, AP 0.2685, P@10 0.3500 at grade >= 2 (0.8241, 0.3027, 0.5389 at grade >= 1)
    assert (row["RR@10"], row["AP"], row["P@10"]) == (0.6533, 0.2685, 0.35)
    assert "grade >= 2" in out and "54 of 54 run queries judged" in out


# -- item 3: --reranker none ------------------------------------------------------------------------------
def test_reranker_none_scores_the_run_as_it_is(coll, capsys, monkeypatch):
    import unirank.reranker

    def no_model(*args, **kwargs):
        raise AssertionError("no model may be built for --reranker none")

    monkeypatch.setattr(unirank.reranker, "Reranker", no_model)
    assert main(["eval", "--dataset", str(coll), "--run", "bm25", "--reranker", "none", "--no-progress"]) == 0
    rows = _table(capsys.readouterr().out)
    assert list(rows) == ["bm25"]  # one row: the run itself
    qrels, run = read_qrels(coll / "qrels" / "test.tsv"), read_trec_run(coll / "runs" / "bm25.top25.trec")
    assert rows["bm25"]["AP"] == pytest.approx(_oracle(qrels, run, 1)["AP"], abs=5e-5)
    table, results = eval_job(None, load_dataset(coll), "bm25", metrics=["AP"], show_progress=False)
    assert list(results) == ["bm25"] and len(table.splitlines()) == 2
    assert (
        main(["eval", "--dataset", str(coll), "--run", "bm25", "--reranker", "none", "--out", "x.trec"]) == 2
    )
    assert "--out" in capsys.readouterr().err


# -- item 4: byte-order marks --------------------------------------------------------------------------------
@pytest.mark.parametrize("gz", [False, True])
def test_utf8_bom_is_stripped_from_every_file(tmp_path, gz):
    def write(name: str, text: str) -> Path:
        path = tmp_path / (name + (".gz" if gz else ""))
        data = codecs.BOM_UTF8 + text.encode()
        path.write_bytes(gzip.compress(data) if gz else data)
        return path

    run = read_trec_run(write("run.trec", "q1 Q0 d1 1 2.0 x\nq1 Q0 d2 2 1.0 x\nq2 Q0 d3 1 1.0 x\n"))
    assert list(run) == ["q1", "q2"]
    assert read_qrels(write("qrels.txt", "q1 0 d1 1\nq2 0 d3 1\n")) == {"q1": {"d1": 1}, "q2": {"d3": 1}}
    beir = read_qrels(write("test.tsv", "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td3\t1\n"))
    assert beir == {"q1": {"d1": 1}, "q2": {"d3": 1}}  # the header is recognised behind the BOM
    assert evaluate(beir, run, ["nDCG@10"])["nDCG@10"] == 1.0
    assert read_queries(write("queries.jsonl", '{"_id": "q1", "text": "rain"}\n')) == {"q1": "rain"}
    assert read_queries(write("topics.tsv", "q1\train\n")) == {"q1": "rain"}
    assert list(read_corpus(write("corpus.jsonl", '{"_id": "d1", "text": "x"}\n'))) == ["d1"]
    assert list(read_corpus(write("corpus.tsv", "d1\tx\n"))) == ["d1"]
    # two files concatenated, each with its own mark
    both = read_trec_run(write("cat.trec", "q1 Q0 d1 1 2.0 x\n\ufeffq2 Q0 d3 1 1.0 x\n"))
    assert list(both) == ["q1", "q2"]


# -- item 5: a run that matches no judged query --------------------------------------------------------------
def test_run_with_no_judged_query_is_an_error(coll, capsys):
    qrels = read_qrels(coll / "qrels" / "test.tsv")
    with pytest.raises(EvalInputError, match="none of the run's 2 queries is judged"):
        evaluate(qrels, {"Q1": [("1", 1.0)], "Q2": [("2", 1.0)]}, ["AP"])
    with pytest.raises(EvalInputError, match="run has no queries"):
        evaluate(qrels, {}, ["AP"])
    write_trec_run({"x1": [("1", 1.0)], "x2": [("2", 1.0)]}, coll / "runs" / "other.trec")
    argv = ["eval", "--dataset", str(coll), "--reranker", "none", "--no-progress"]
    assert main([*argv, "--run", "other"]) != 0
    captured = capsys.readouterr()
    assert "none of the run's 2 queries is judged" in captured.err and "bm25" not in captured.out
    write_trec_run({"q0": [("1", 1.0)], "x2": [("2", 1.0)]}, coll / "runs" / "half.trec")
    assert main([*argv, "--run", "half"]) == 0
    out = capsys.readouterr().out
    assert "1 of 2 run queries judged" in out
    assert "means over 6 judged queries (5 not in the run: they score 0)" in out


# -- item 6: judged queries without text ------------------------------------------------------------------
def _blank_query(coll: Path, qid: str) -> None:
    path = coll / "queries.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    path.write_text(
        "".join(json.dumps({**r, "text": "  " if r["_id"] == qid else r["text"]}) + "\n" for r in rows)
    )


def test_judged_query_without_text_is_refused_or_skipped_in_every_row(coll, capsys):
    _blank_query(coll, "q3")
    ds = load_dataset(coll)
    with pytest.raises(EvalInputError, match="q3") as info:
        eval_job(_bm25(), ds, "bm25", depth=10, show_progress=False)
    assert info.value.qids == ["q3"]
    _, results = eval_job(
        _bm25(),
        ds,
        "bm25",
        depth=10,
        metrics=["AP", "nDCG@10"],
        show_progress=False,
        skip_queries_without_text=True,
    )
    first, reranked = results.values()
    assert first.num_queries == reranked.num_queries == 5  # q3 is out of both rows
    assert "q3" not in first.per_query["AP"] and first.skipped_queries == ["q3"]
    kept = {q: v for q, v in ds.qrels.items() if q != "q3"}
    assert first["AP"] == pytest.approx(evaluate(kept, ds.get_run("bm25"), ["AP"])["AP"], abs=1e-12)

    argv = ["eval", "--dataset", str(coll), "--run", "bm25", "--reranker", "bm25", "--no-progress"]
    assert main(argv) == 2
    assert "q3" in capsys.readouterr().err
    assert main([*argv, "--skip-queries-without-text"]) == 0
    out = capsys.readouterr().out
    assert "1 judged query without text skipped in every row" in out
    assert "means over 5 judged queries" in out


def test_no_run_given_bm25_first_stage_also_refuses_queries_without_text(coll, capsys):
    (coll / "runs" / "bm25.top25.trec").unlink()
    _blank_query(coll, "q1")
    argv = ["eval", "--dataset", str(coll), "--reranker", "none", "--no-progress"]
    assert main(argv) == 2
    assert "q1" in capsys.readouterr().err
    assert main([*argv, "--skip-queries-without-text"]) == 0
    assert "means over 5 judged queries" in capsys.readouterr().out


def _bm25():
    """A real, cheap ranker (BM25 over each query's candidates)."""
    from unirank import Reranker

    return Reranker("bm25")


# -- item 7: unreadable files name file and line ------------------------------------------------------------
def test_truncated_gzip_corpus_names_the_file(tmp_path):
    rows = "".join(json.dumps({"_id": str(i), "text": "word " * 50}) + "\n" for i in range(2000))
    data = gzip.compress(rows.encode())
    path = tmp_path / "corpus.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(EvalInputError, match=r"corpus\.jsonl\.gz.*(truncated|corrupt)") as info:
        read_corpus(path)
    assert info.value.path == str(path)
    path.write_bytes(b"not gzip at all\n")
    with pytest.raises(EvalInputError, match=r"corpus\.jsonl\.gz"):
        read_corpus(path)


def test_latin1_corpus_names_file_and_line(tmp_path):
    path = tmp_path / "corpus.tsv"
    path.write_bytes("d1\tplain\nd2\tcaf\u00e9 au lait\n".encode("latin-1"))
    with pytest.raises(EvalInputError, match=r"corpus\.tsv:2: not valid UTF-8") as info:
        read_corpus(path)
    assert (info.value.path, info.value.line) == (str(path), 2)
    # the error is on the right line even deep inside a large file (decoding is not done in big chunks)
    big = tmp_path / "corpus.jsonl"
    body = "".join(json.dumps({"_id": str(i), "text": "x" * 100}) + "\n" for i in range(500))
    big.write_bytes(body.encode() + '{"_id": "bad", "text": "na\u00efve"}\n'.encode("latin-1"))
    with pytest.raises(EvalInputError, match=r"corpus\.jsonl:501:"):
        read_corpus(big)


@pytest.mark.parametrize(
    "content",
    [
        "q1 0 101\nq1 0 102\n",  # TREC qrels with the grade column missing, numeric document ids
        "q1 0 d1 1\nq1 0 102\n",  # one line lost its grade
        "q1\t101\t1\nq1\t0\t102\t2\n",  # mixed formats
    ],
)
def test_qrels_missing_grade_column_names_file_and_line(tmp_path, content):
    path = tmp_path / "qrels.txt"
    path.write_text(content)
    with pytest.raises(EvalInputError, match=r"qrels\.txt:[12]:") as info:
        read_qrels(path)
    assert info.value.line in (1, 2)


def test_beir_qrels_without_header_still_read(tmp_path):
    path = tmp_path / "test.tsv"
    path.write_text("q1\t101\t1\nq1\t102\t0\n")
    assert read_qrels(path) == {"q1": {"101": 1, "102": 0}}
    path.write_text("query-id\tcorpus-id\tscore\nq1\t0\t1\n")  # with the header, a document id "0" is fine
    assert read_qrels(path) == {"q1": {"0": 1}}


# -- item 8: the header prints both counts ----------------------------------------------------------------
def test_header_counts_queries_with_text_and_the_queries_the_means_run_over(coll, capsys):
    # a judged query with no entry in queries.jsonl at all (BEIR folders can lack one)
    lines = (coll / "queries.jsonl").read_text().splitlines()
    (coll / "queries.jsonl").write_text("\n".join(lines[1:]) + "\n")  # q0 has no text now
    argv = ["eval", "--dataset", str(coll), "--run", "bm25", "--reranker", "none", "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "6 judged queries, 5 with text" in out
    assert "means over 6 judged queries" in out
    assert "6 of 6 run queries judged" in out
