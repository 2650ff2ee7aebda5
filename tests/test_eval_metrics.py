"""Metrics must equal trec_eval (pytrec_eval used directly as the oracle), per query and on the mean.

Convention under test (also the oracle's): every query in the qrels counts, a judged query the run does not
rank scores 0, queries not in the qrels are ignored. nDCG uses graded gains; RR / AP / R / P count grade >=
rel_level.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

pytrec_eval = pytest.importorskip("pytrec_eval")
pytest.importorskip("ir_measures")

from unirank.eval import (  # noqa: E402
    DEFAULT_METRICS,
    EvalResult,
    dataset_folder,
    evaluate,
    format_table,
    parse_metric,
    read_qrels,
    read_trec_run,
)

SHARED_DL19 = Path(__file__).resolve().parents[2] / "shared" / "data" / "trec-dl-2019-passage"
SHARED_RUNS = sorted((SHARED_DL19 / "runs").glob("*.trec")) if SHARED_DL19.is_dir() else []
BUNDLED_DL19 = Path(str(dataset_folder("trec-dl-2019")))
BUNDLED_BM25 = BUNDLED_DL19 / "runs" / "bm25.top100.trec"
# Published nDCG@10 (Pyserini / rank_llm) for the shared DL19 runs.
PUBLISHED_NDCG10 = {
    "bm25": 0.5058,
    "bm25_rm3": 0.5216,
    "splade_pp_ed": 0.7308,
    "tasb": 0.7210,
    "openai_ada2": 0.7035,
    "repllama": 0.7384,
}
METRICS = ("nDCG@10", "RR", "RR@10", "AP", "R@100", "P@10")
TOL = 1e-9


def _oracle_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    for line in path.read_text().splitlines()[1:]:
        qid, docid, grade = line.split("\t")
        qrels.setdefault(qid, {})[docid] = int(grade)
    return qrels


def _oracle_run(path: Path) -> dict[str, dict[str, float]]:
    run: dict[str, dict[str, float]] = {}
    for line in path.read_text().splitlines():
        qid, _, docid, _, score, _ = line.split()
        run.setdefault(qid, {})[docid] = float(score)
    return run


def oracle(qrels, run, rel_level):
    """pytrec_eval per query (0 for judged queries absent from the run) and the mean over judged queries."""
    graded = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut_10"}).evaluate(run)
    binary = pytrec_eval.RelevanceEvaluator(
        qrels, {"recip_rank", "map", "recall_100", "P_10"}, relevance_level=rel_level
    ).evaluate(run)
    per = {m: {} for m in METRICS}
    for qid in qrels:
        g, b = graded.get(qid, {}), binary.get(qid, {})
        rr = b.get("recip_rank", 0.0)
        per["nDCG@10"][qid] = g.get("ndcg_cut_10", 0.0)
        per["RR"][qid] = rr
        # the first relevant document is in the top 10 exactly when 1/rank >= 1/10
        per["RR@10"][qid] = rr if rr >= 0.1 else 0.0
        per["AP"][qid] = b.get("map", 0.0)
        per["R@100"][qid] = b.get("recall_100", 0.0)
        per["P@10"][qid] = b.get("P_10", 0.0)
    mean = {m: math.fsum(v.values()) / len(qrels) for m, v in per.items()}
    return per, mean


def _assert_equal(res: EvalResult, per, mean):
    for m in METRICS:
        assert res[m] == pytest.approx(mean[m], abs=TOL), m
        assert set(res.per_query[m]) == set(per[m])
        for qid, value in per[m].items():
            assert res.per_query[m][qid] == pytest.approx(value, abs=TOL), (m, qid)


@pytest.fixture(scope="module")
def dl19_qrels():
    return _oracle_qrels(BUNDLED_DL19 / "qrels" / "test.tsv")


@pytest.mark.skipif(not SHARED_RUNS, reason="../shared/data is not available on this machine")
@pytest.mark.parametrize("run_path", SHARED_RUNS, ids=lambda p: p.name)
def test_equals_pytrec_eval_on_shared_dl19_runs(run_path, dl19_qrels):
    qrels = _oracle_qrels(SHARED_DL19 / "qrels" / "test.tsv")
    assert qrels == dl19_qrels  # the bundled qrels are the complete official ones
    res = evaluate(
        read_qrels(SHARED_DL19 / "qrels" / "test.tsv"), read_trec_run(run_path), METRICS, rel_level=2
    )
    per, mean = oracle(qrels, _oracle_run(run_path), 2)
    _assert_equal(res, per, mean)
    name = run_path.name.split(".")[0]
    assert round(res["nDCG@10"], 4) == PUBLISHED_NDCG10[name]


@pytest.mark.parametrize("rel_level", [2, 1])
def test_equals_pytrec_eval_on_bundled_bm25(rel_level, dl19_qrels):
    res = evaluate(
        read_qrels(BUNDLED_DL19 / "qrels" / "test.tsv"), read_trec_run(BUNDLED_BM25), METRICS, rel_level
    )
    per, mean = oracle(dl19_qrels, _oracle_run(BUNDLED_BM25), rel_level)
    _assert_equal(res, per, mean)
    assert res.missing_queries == []
    assert res.num_queries == 43


def test_bundled_bm25_ndcg10_is_the_published_figure():
    res = evaluate(read_qrels(BUNDLED_DL19 / "qrels" / "test.tsv"), read_trec_run(BUNDLED_BM25), ["nDCG@10"])
    assert round(res["nDCG@10"], 4) == 0.5058


def test_missing_queries_count_as_zero_and_unjudged_are_ignored(dl19_qrels):
    run = read_trec_run(BUNDLED_BM25)
    dropped = sorted(run)[:5]
    partial = {q: v for q, v in run.items() if q not in dropped}
    partial["not-a-judged-query"] = [("x", 1.0)]
    partial[sorted(run)[5]] = []  # an empty ranking is the same as a missing query
    res = evaluate(dl19_qrels, partial, METRICS, rel_level=2)
    oracle_run = {q: dict(v) for q, v in partial.items() if v}
    per, mean = oracle(dl19_qrels, oracle_run, 2)
    _assert_equal(res, per, mean)
    assert res.missing_queries == sorted([*dropped, sorted(run)[5]])
    for m in METRICS:
        assert all(res.per_query[m][q] == 0.0 for q in dropped)
        assert "not-a-judged-query" not in res.per_query[m]
    full = evaluate(dl19_qrels, run, ["nDCG@10"], rel_level=2)
    assert res["nDCG@10"] < full["nDCG@10"]


def test_accepts_dict_of_dict_runs(dl19_qrels):
    run = read_trec_run(BUNDLED_BM25)
    as_lists = evaluate(dl19_qrels, run, rel_level=2)
    as_dicts = evaluate(dl19_qrels, {q: dict(v) for q, v in run.items()}, rel_level=2)
    assert as_lists.aggregate == as_dicts.aggregate
    assert list(as_lists.aggregate) == list(DEFAULT_METRICS)


def test_order_comes_from_scores_with_trec_eval_tie_breaking():
    qrels = {"q": {"a": 1, "b": 0}}
    # list order says b first, but the scores say a first
    assert evaluate(qrels, {"q": [("b", 1.0), ("a", 2.0)]}, ["RR@1"])["RR@1"] == 1.0
    # tie: trec_eval ranks document ids in descending order, so "b" comes before "a"
    assert evaluate(qrels, {"q": [("a", 1.0), ("b", 1.0)]}, ["RR@1", "RR"]).aggregate == {
        "RR@1": 0.0,
        "RR": 0.5,
    }


@pytest.mark.parametrize(
    ("alias", "canonical"),
    [("MRR@10", "RR@10"), ("MAP", "AP"), ("Recall@100", "R@100"), ("precision@10", "P@10")],
)
def test_aliases(alias, canonical, dl19_qrels):
    run = read_trec_run(BUNDLED_BM25)
    res = evaluate(dl19_qrels, run, [alias, canonical], rel_level=2)
    assert res[alias] == res[canonical]
    assert res.per_query[alias] == res.per_query[canonical]


def test_parse_metric_and_passthrough(dl19_qrels):
    assert str(parse_metric("nDCG@10", rel_level=2)[0]) == "nDCG@10"  # graded: no rel level
    assert str(parse_metric("AP", rel_level=2)[0]) == "AP(rel=2)"
    assert parse_metric("RR@10", rel_level=1) == (parse_metric("RR")[0], 10)
    run = read_trec_run(BUNDLED_BM25)
    res = evaluate(dl19_qrels, run, ["AP(rel=2)", "AP", "Judged@10"], rel_level=2)
    assert res["AP(rel=2)"] == res["AP"]
    assert res["Judged@10"] == 1.0  # not a pytrec_eval measure: computed by ir_measures' other providers


@pytest.mark.parametrize("bad", ["nDCG@0", "foo@10", "P", "R", "ndcg@ten", ""])
def test_bad_metric_names(bad):
    with pytest.raises(ValueError):
        evaluate({"q": {"d": 1}}, {"q": [("d", 1.0)]}, [bad])


def test_input_errors():
    with pytest.raises(ValueError, match="NaN"):
        evaluate({"q": {"d": 1}}, {"q": [("d", float("nan"))]}, ["P@1"])
    with pytest.raises(ValueError, match="more than once"):
        evaluate({"q": {"d": 1}}, {"q": [("d", 2.0), ("d", 1.0)]}, ["P@1"])
    with pytest.raises(ValueError, match="empty"):
        evaluate({}, {"q": [("d", 1.0)]}, ["P@1"])
    with pytest.raises(ValueError, match="repeated"):
        evaluate({"q": {"d": 1}}, {"q": [("d", 1.0)]}, ["P@1", "P@1"])


def test_format_table():
    table = format_table(
        {"bm25": {"nDCG@10": 0.50583, "AP": 0.3}, "bm25 >> cross-encoder@100": {"nDCG@10": 0.7, "R@100": 1}}
    )
    lines = table.splitlines()
    assert lines[0].split() == ["run", "nDCG@10", "AP", "R@100"]
    assert lines[1].split() == ["bm25", "0.5058", "0.3000", "-"]
    assert lines[2].split() == ["bm25", ">>", "cross-encoder@100", "0.7000", "-", "1.0000"]
    assert len({len(line) for line in lines[:2]}) == 1  # aligned: the header and full rows have equal width
    assert (
        lines[1].index("0.5058") + 6 == lines[0].index("nDCG@10") + 7
    )  # numbers right-aligned under headers


def test_judged_at_10_is_in_the_eval_table_and_equals_ir_measures(dl19_qrels):
    """Judged@10 stands beside nDCG@10 by default (eval tables only; DEFAULT_METRICS, the experiment's, keeps
    its five). Oracle: ir_measures' own Judged@10 per query, on a run whose top 10 are partly unjudged."""
    import ir_measures

    from unirank.eval import Dataset, eval_job
    from unirank.eval.metrics import EVAL_TABLE_METRICS

    assert EVAL_TABLE_METRICS[:2] == ("nDCG@10", "Judged@10") and "Judged@10" not in DEFAULT_METRICS
    run = read_trec_run(BUNDLED_BM25)
    # Half the queries get two unjudged documents on top, so Judged@10 drops below 1 there.
    top = {q: [(f"x{q}a", 1e9), (f"x{q}b", 1e9 - 1)] for q in list(run)[::2]}
    holed = {q: top.get(q, []) + r for q, r in run.items()}
    table, rows = eval_job(None, Dataset("dl19", {}, {}, dl19_qrels, rel_level=2), holed, show_progress=False)
    res = rows["run"]
    assert list(res.aggregate) == list(EVAL_TABLE_METRICS)
    assert table.splitlines()[0].split()[1:3] == ["nDCG@10", "Judged@10"]
    scored = {q: {d: s for d, s in r} for q, r in holed.items()}
    calc = ir_measures.iter_calc([ir_measures.Judged @ 10], dl19_qrels, scored)
    expected = {m.query_id: m.value for m in calc}
    assert res.per_query["Judged@10"] == pytest.approx(expected, abs=TOL)
    assert 0.8 < res["Judged@10"] < 1.0
