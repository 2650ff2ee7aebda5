"""BM25 re-ranker and retriever (unirank.methods.lexical).

Oracles: hand-computed Lucene BM25 on a toy corpus, bm25s's own retrieval scores (for the variants), and the
published SciFact figure.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import gzip
import importlib.resources
import json
import logging
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from unirank.errors import MissingExtraError, SpecError
from unirank.methods.lexical import METHODS, BM25Ranker, BM25Retriever
from unirank.types import Document, ScoreKind

PLAIN = {"stemmer": None, "stopwords": None}  # whitespace-like tokens, so the arithmetic below is exact

TOY = {"d1": "rain rain cloud", "d2": "sun cloud", "d3": "snow"}


def lucene(
    tf: float, df: float, n: float, dl: float, avgdl: float, k1: float = 1.2, b: float = 0.75
) -> float:
    """Lucene BM25 term weight.

    ln(1 + (N - df + 0.5) / (df + 0.5)) * tf / (tf + k1 * (1 - b + b * dl / avgdl))
    """
    return math.log(1 + (n - df + 0.5) / (df + 0.5)) * tf / (tf + k1 * (1 - b + b * dl / avgdl))


# Corpus statistics of TOY: N = 3, avgdl = (3 + 2 + 1) / 3 = 2; df(rain) = 1, df(cloud) = 2.
TOY_EXPECTED = {
    "d1": lucene(2, 1, 3, 3, 2) + lucene(1, 2, 3, 3, 2),  # ln(8/3)*2/3.65 + ln(1.6)/2.65
    "d2": lucene(1, 2, 3, 2, 2),  # ln(1.6)/2.2
    "d3": 0.0,
}


def test_hand_computed_oracle_values() -> None:
    assert TOY_EXPECTED["d1"] == pytest.approx(math.log(8 / 3) * 2 / 3.65 + math.log(1.6) / 2.65)
    assert TOY_EXPECTED["d2"] == pytest.approx(math.log(1.6) / 2.2)


def test_retriever_matches_hand_computed_lucene() -> None:
    res = BM25Retriever(**PLAIN).index(TOY).retrieve("rain cloud", k=3)
    assert res.ids == ["d1", "d2", "d3"]
    for r in res:
        assert r.score == pytest.approx(TOY_EXPECTED[r.id], rel=1e-6)
    assert res.score_kind is ScoreKind.UNBOUNDED


def test_ranker_with_corpus_matches_hand_computed_lucene() -> None:
    ranker = BM25Ranker(corpus=TOY, **PLAIN)
    docs = [Document(TOY[i], i) for i in ("d3", "d2", "d1")]
    assert ranker.score("rain cloud", docs) == pytest.approx([TOY_EXPECTED[i] for i in ("d3", "d2", "d1")])
    assert ranker.capabilities.pointwise


def test_ranker_candidate_idf_hand_computed() -> None:
    # Without a corpus the statistics come from the candidate list: [d1, d2] gives N = 2, avgdl = 2.5.
    ranker = BM25Ranker(**PLAIN)
    got = ranker.score("rain cloud", ["rain rain cloud", "sun cloud"])
    d1 = lucene(2, 1, 2, 3, 2.5) + lucene(1, 2, 2, 3, 2.5)  # ln(2)*2/3.38 + ln(1.2)/2.38
    d2 = lucene(1, 2, 2, 2, 2.5)  # ln(1.2)/2.02
    assert d1 == pytest.approx(math.log(2) * 2 / 3.38 + math.log(1.2) / 2.38)
    assert got == pytest.approx([d1, d2])
    # with the whole toy corpus as candidates, candidate statistics equal corpus statistics
    assert ranker.score("rain cloud", list(TOY.values())) == pytest.approx(list(TOY_EXPECTED.values()))
    assert not ranker.capabilities.pointwise


WORDS = "rain cloud storm sunny weather forecast winds raining clouds snowing cold warm front air".split()


def _synthetic_corpus(n: int = 40, seed: int = 0) -> dict[str, str]:
    rng = np.random.default_rng(seed)
    return {f"doc{i}": " ".join(rng.choice(WORDS, size=int(rng.integers(1, 25)))) for i in range(n)}


@pytest.mark.parametrize("method", METHODS)
def test_ranker_with_corpus_equals_retriever(method: str) -> None:
    corpus = _synthetic_corpus()
    retriever = BM25Retriever(method).index(corpus)
    queries = ["rain clouds and storm", "cold front air warm", "forecast"]
    ranker = BM25Ranker(method, corpus=corpus)
    from_ret = BM25Ranker.from_retriever(retriever)
    for q in queries:
        expected = {r.id: r.score for r in retriever.retrieve(q, k=len(corpus))}
        subset = [Document(corpus[i], i) for i in ("doc7", "doc3", "doc19", "doc0", "doc33")]
        want = [expected[d.id] for d in subset]
        assert ranker.score(q, subset) == pytest.approx(want, rel=1e-5, abs=1e-6)
        assert from_ret.score(q, subset) == pytest.approx(want, rel=1e-5, abs=1e-6)


def test_rank_many_equals_rank_per_query() -> None:
    corpus = _synthetic_corpus()
    docs = list(corpus.values())
    queries = ["rain storm", "sunny warm", "pressure"]
    lists = [docs[:10], docs[5:25], docs[30:]]
    ranker = BM25Ranker()
    batched = ranker.rank_many(queries, lists)
    for q, d, got in zip(queries, lists, batched):
        single = ranker.rank(q, d)
        assert got.ids == single.ids and got.scores == pytest.approx(single.scores)


def test_empty_and_stopword_only_documents_score_zero() -> None:
    ranker = BM25Ranker()
    assert ranker.score("rain", ["", "the of and", "rain today"])[:2] == [0.0, 0.0]
    assert ranker.score("rain", ["", "   "]) == [0.0, 0.0]
    assert ranker.score("the", ["rain", "the rain"]) == [0.0, 0.0]  # query empty after analysis
    retriever = BM25Retriever().index(["", "the of", "rain falls"])
    assert retriever.retrieve("rain", k=3).scores[1:] == [0.0, 0.0]
    empty = BM25Retriever().index(["", "and the"])
    assert empty.retrieve("rain", k=2).scores == [0.0, 0.0]
    assert BM25Ranker(corpus=["", "and the"]).score("rain", ["rain", ""]) == [0.0, 0.0]


def test_non_english_text() -> None:
    texts = ["雨が降っている", "Идёт сильный дождь", "المطر يهطل", "Es regnet stark", "🌧️🌧️", "ñandú ümlaut"]
    assert len(BM25Ranker().score("дождь", texts)) == len(texts)
    BM25Retriever().index(texts).retrieve("regnet", k=3)
    ru = BM25Ranker(stemmer="russian", stopwords="ru")
    assert ru.rank("дождь", ["солнце светит", "идёт дождя"]).ids[0] == "1"  # stemmed: дождь ~ дождя


def test_stemming_and_stopwords_options() -> None:
    assert BM25Ranker().score("raining", ["it rains", "sun"])[0] > 0  # english stemming: rain
    assert BM25Ranker(stemmer=None).score("raining", ["it rains", "sun"]) == [0.0, 0.0]
    assert BM25Ranker(stopwords=None, stemmer=None).score("the", ["the cat", "dog"])[0] > 0
    assert BM25Ranker(stopwords=["cat"]).score("cat", ["the cat", "dog"]) == [0.0, 0.0]
    with pytest.raises(ValueError, match="stemmer"):
        BM25Ranker(stemmer="klingon")
    with pytest.raises(ValueError, match="method"):
        BM25Ranker("bm99")


def test_from_spec() -> None:
    assert BM25Ranker.from_spec(None).method == "lucene"
    assert BM25Ranker.from_spec("bm25").method == "lucene"
    assert BM25Ranker.from_spec("bm25+", k1=0.9).method == "bm25+"
    assert BM25Ranker.from_spec("bm25plus").method == "bm25+"
    assert BM25Ranker.from_spec("robertson").k1 == 1.2
    with pytest.raises(SpecError):
        BM25Ranker.from_spec("nonsense")


def test_retriever_results_carry_corpus_documents() -> None:
    corpus = {
        "a": {"title": "Rain", "text": "Water falls from clouds.", "metadata": {"year": 2020}},
        "b": Document("The sun is a star."),
        "c": "Snow is frozen rain.",
    }
    res = BM25Retriever().index(corpus).retrieve_many(["rain clouds", "star"], k=2)
    top = res[0][0]
    assert top.id == "a" and top.text == "Rain Water falls from clouds." and top.metadata["year"] == 2020
    assert top.index == 0 and top.rank == 1
    assert res[1].ids[0] == "b"
    assert BM25Retriever().index(["xx yy", "yy zz"]).retrieve("zz", k=1).ids == ["1"]  # list: ids = positions
    # tokens are runs of >= 2 word characters (the bm25s / scikit-learn pattern): "z" matches nothing
    assert BM25Retriever().index(["x y", "y z"]).retrieve("z", k=2).scores == [0.0, 0.0]


def test_k_larger_than_corpus_is_clipped(caplog: pytest.LogCaptureFixture) -> None:
    retriever = BM25Retriever().index(TOY)
    with caplog.at_level(logging.WARNING, logger="unirank.methods.lexical"):
        res = retriever.retrieve("rain", k=100)
    assert len(res) == 3
    assert "larger than the corpus" in caplog.text
    assert len(retriever.retrieve("rain", k=0)) == 0
    with pytest.raises(ValueError):
        retriever.retrieve("rain", k=-1)


def test_ties_are_broken_by_corpus_order() -> None:
    retriever = BM25Retriever().index({f"d{i}": "rain" for i in range(6)})
    assert retriever.retrieve("rain", k=4).ids == ["d0", "d1", "d2", "d3"]


def test_save_load_roundtrip(tmp_path: Path) -> None:
    corpus = {k: {"text": v, "metadata": {"n": i}} for i, (k, v) in enumerate(_synthetic_corpus().items())}
    retriever = BM25Retriever("bm25+", k1=1.0, b=0.5).index(corpus)
    retriever.save(tmp_path / "idx")
    files = {p.name for p in (tmp_path / "idx").iterdir()}
    assert "unirank_bm25.json" in files and not any(f.endswith((".pkl", ".pickle")) for f in files)
    loaded = BM25Retriever.load(tmp_path / "idx")
    assert (loaded.method, loaded.k1, loaded.b, len(loaded)) == ("bm25+", 1.0, 0.5, len(corpus))
    for q in ["rain storm", "cold warm"]:
        a, b = retriever.retrieve(q, k=10), loaded.retrieve(q, k=10)
        assert a.ids == b.ids and a.scores == pytest.approx(b.scores)
        assert [r.metadata for r in a] == [r.metadata for r in b]
    ranker = BM25Ranker.from_retriever(loaded)
    docs = [Document(corpus["doc1"]["text"], "doc1")]
    assert ranker.score("rain", docs) == pytest.approx(
        BM25Ranker("bm25+", k1=1.0, b=0.5, corpus=corpus).score("rain", docs)
    )
    with pytest.raises(FileNotFoundError):
        BM25Retriever.load(tmp_path)


# -- multi-field BM25 (fields="multi") ----------------------------------------------------------------------
# Title and body are two fields, each with its own statistics; a document scores the sum over fields
# (a Lucene multi-field query, boosts w_f = 1 unless field_weights says otherwise):
#   score(q, d) = sum_{f in (title, body)} w_f * sum_{t in q} idf_f(t) * tf / (tf + k1 * norm_f(d))
#   tf = tf_f(t, d),  norm_f(d) = 1 - b + b * dl_f(d) / avgdl_f
#   idf_f(t) = ln(1 + (N - df + 0.5) / (df + 0.5)),  df = df_f(t)
# with df_f and avgdl_f counted in field f only (N = 4 documents). The body is the text less the leading
# "title " that to_documents joins on; "c" has no title (an empty title field, length 0).
FIELDED = {
    "a": {"title": "rain cloud", "text": "sun sun"},  # title len 2, body len 2
    "b": {"title": "sun", "text": "rain rain snow"},  # title 1, body 3
    "c": {"text": "cloud snow"},  # title 0, body 2
    "d": {"title": "rain", "text": "rain cloud"},  # title 1, body 2
}
# title: avgdl = (2 + 1 + 0 + 1) / 4 = 1, df(rain) = 2 (a, d), df(cloud) = 1 (a)
# body: avgdl = (2 + 3 + 2 + 2) / 4 = 2.25, df(rain) = 2 (b, d), df(cloud) = 2 (c, d)
FIELDED_TITLE = {
    "a": lucene(1, 2, 4, 2, 1) + lucene(1, 1, 4, 2, 1),
    "b": 0.0,
    "c": 0.0,
    "d": lucene(1, 2, 4, 1, 1),
}
FIELDED_BODY = {
    "a": 0.0,
    "b": lucene(2, 2, 4, 3, 2.25),
    "c": lucene(1, 2, 4, 2, 2.25),
    "d": lucene(1, 2, 4, 2, 2.25) + lucene(1, 2, 4, 2, 2.25),
}
FIELDED_EXPECTED = {i: FIELDED_TITLE[i] + FIELDED_BODY[i] for i in FIELDED}


def test_multi_field_oracle_values() -> None:
    ln2, ln10_3 = math.log(2), math.log(10 / 3)  # idf for df = 2 and df = 1 with N = 4
    assert FIELDED_EXPECTED["a"] == pytest.approx((ln2 + ln10_3) / 3.1)  # 1 + 1.2 * (0.25 + 0.75 * 2 / 1)
    assert FIELDED_EXPECTED["b"] == pytest.approx(ln2 * 2 / 3.5)  # 2 + 1.2 * (0.25 + 0.75 * 3 / 2.25)
    assert FIELDED_EXPECTED["c"] == pytest.approx(ln2 / 2.1)  # 1 + 1.2 * (0.25 + 0.75 * 2 / 2.25)
    assert FIELDED_EXPECTED["d"] == pytest.approx(ln2 / 2.2 + 2 * ln2 / 2.1)


def test_multi_field_matches_hand_computed_lucene() -> None:
    retriever = BM25Retriever(fields="multi", **PLAIN).index(FIELDED)
    res = retriever.retrieve("rain cloud", k=4)
    assert res.ids == ["d", "a", "b", "c"]
    assert res.scores == pytest.approx([FIELDED_EXPECTED[i] for i in res.ids], rel=1e-6)
    assert res[0].text == "rain rain cloud"  # results still carry the joined text
    flat = BM25Retriever(**PLAIN).index(FIELDED).retrieve("rain cloud", k=4)
    assert flat.scores != pytest.approx(res.scores)  # one field: different statistics
    docs = [retriever.documents[i] for i in (2, 0, 3, 1)]  # c, a, d, b
    want = [FIELDED_EXPECTED[d.id] for d in docs]
    assert BM25Ranker(fields="multi", corpus=FIELDED, **PLAIN).score("rain cloud", docs) == pytest.approx(
        want
    )
    # candidate statistics: with the whole corpus as the candidate list they equal corpus statistics
    assert BM25Ranker(fields="multi", **PLAIN).score("rain cloud", docs) == pytest.approx(want)


def test_multi_field_weights() -> None:
    retriever = BM25Retriever(fields="multi", field_weights=(2.0, 0.5), **PLAIN).index(FIELDED)
    got = {r.id: r.score for r in retriever.retrieve("rain cloud", k=4)}
    assert got == pytest.approx(
        {i: 2.0 * FIELDED_TITLE[i] + 0.5 * FIELDED_BODY[i] for i in FIELDED}, rel=1e-6
    )
    title_only = BM25Retriever(fields="multi", field_weights=[1, 0], **PLAIN).index(FIELDED)
    assert title_only.retrieve("rain cloud", k=2).scores == pytest.approx(
        [FIELDED_TITLE["a"], FIELDED_TITLE["d"]]
    )
    ranker = BM25Ranker.from_retriever(retriever)
    assert (ranker.fields, ranker.field_weights) == ("multi", (2.0, 0.5))
    assert ranker.score("rain cloud", retriever.documents) == pytest.approx(
        [got[i] for i in FIELDED], rel=1e-6
    )


def test_multi_field_title_body_split() -> None:
    # the body is the text less a leading "title " only when the text starts with it
    docs = {
        "x": Document("storm warning issued today", "x", {"title": "storm warning"}),  # body "issued today"
        "y": Document("unrelated text", "y", {"title": "storm"}),  # no prefix: body is the whole text
        "z": Document("storm", "z"),  # no title: empty title field
    }
    ranker = BM25Ranker(fields="multi", field_weights=(0.0, 1.0), corpus=docs, **PLAIN)
    assert ranker.score("warning", list(docs.values()))[0] == 0.0  # "warning" is only in x's title
    title_only = BM25Ranker(fields="multi", field_weights=(1.0, 0.0), corpus=docs, **PLAIN)
    assert title_only.score("storm", list(docs.values()))[2] == 0.0
    assert title_only.score("storm", list(docs.values()))[1] > 0


def test_multi_field_options_and_errors() -> None:
    assert BM25Retriever().options["fields"] == "flat" and BM25Retriever().options["field_weights"] is None
    assert BM25Retriever(fields="multi").options["field_weights"] == [1.0, 1.0]
    assert "fields='multi'" in repr(BM25Ranker(fields="multi"))
    with pytest.raises(ValueError, match="fields"):
        BM25Retriever(fields="bogus")
    with pytest.raises(ValueError, match="multi"):
        BM25Ranker(field_weights=(1.0, 2.0))  # flat has one field
    for bad in [(1.0,), (1.0, -1.0), (0.0, 0.0), (1.0, float("nan"))]:
        with pytest.raises(ValueError, match="field_weights"):
            BM25Retriever(fields="multi", field_weights=bad)


def _titled_corpus(n: int = 40, seed: int = 0) -> dict[str, dict[str, str]]:
    rng = np.random.default_rng(seed)
    out = {}
    for i, text in enumerate(_synthetic_corpus(n, seed).values()):
        title = " ".join(rng.choice(WORDS, size=int(rng.integers(0, 5))))  # some titles empty
        out[f"doc{i}"] = {"title": title, "text": text}
    return out


@pytest.mark.parametrize("method", METHODS)
def test_multi_field_ranker_with_corpus_equals_retriever(method: str) -> None:
    corpus = _titled_corpus()
    retriever = BM25Retriever(method, fields="multi").index(corpus)
    ranker = BM25Ranker(method, fields="multi", corpus=corpus)
    from_ret = BM25Ranker.from_retriever(retriever)
    by_id = {d.id: d for d in retriever.documents}
    subset = [by_id[i] for i in ("doc7", "doc3", "doc19", "doc0", "doc33")]
    for q in ["rain clouds and storm", "cold front air warm", "forecast"]:
        expected = {r.id: r.score for r in retriever.retrieve(q, k=len(corpus))}
        want = [expected[d.id] for d in subset]
        assert ranker.score(q, subset) == pytest.approx(want, rel=1e-5, abs=1e-6)
        assert from_ret.score(q, subset) == pytest.approx(want, rel=1e-5, abs=1e-6)


def test_multi_field_save_load_roundtrip(tmp_path: Path) -> None:
    corpus = _titled_corpus()
    retriever = BM25Retriever(fields="multi", field_weights=(1.5, 1.0), k1=0.9).index(corpus)
    retriever.save(tmp_path / "idx")
    files = {p.relative_to(tmp_path / "idx").as_posix() for p in (tmp_path / "idx").rglob("*") if p.is_file()}
    assert "unirank_bm25.json" in files and not any(f.endswith((".pkl", ".pickle")) for f in files)
    assert {f.split("/")[0] for f in files} >= {"title", "body"}
    loaded = BM25Retriever.load(tmp_path / "idx")
    assert (loaded.fields, loaded.field_weights, loaded.k1, len(loaded)) == ("multi", (1.5, 1.0), 0.9, 40)
    for q in ["rain storm", "cold warm", "sunny"]:
        a, b = retriever.retrieve(q, k=10), loaded.retrieve(q, k=10)
        assert a.ids == b.ids and a.scores == pytest.approx(b.scores)
        assert [r.metadata for r in a] == [r.metadata for r in b]
    docs = loaded.documents[:6]
    want = BM25Ranker(fields="multi", field_weights=(1.5, 1.0), k1=0.9, corpus=corpus).score("rain", docs)
    assert BM25Ranker.from_retriever(loaded).score("rain", docs) == pytest.approx(want, rel=1e-5)


def test_errors() -> None:
    with pytest.raises(ValueError, match="empty"):
        BM25Retriever().index([])
    with pytest.raises(ValueError, match="duplicate"):
        BM25Retriever().index([Document("a", "x"), Document("b", "x")])
    with pytest.raises(RuntimeError, match="index"):
        BM25Retriever().retrieve("rain")
    with pytest.raises(TypeError):
        BM25Retriever().index(TOY).retrieve_many("rain")


def test_missing_extra_names_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "bm25s", None)
    with pytest.raises(MissingExtraError, match=r"unirank\[bm25\]"):
        BM25Retriever()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    docs=st.lists(st.lists(st.sampled_from(WORDS), max_size=12).map(" ".join), min_size=1, max_size=8),
    query=st.lists(st.sampled_from(WORDS), min_size=1, max_size=4).map(" ".join),
)
def test_corpus_mode_is_pointwise_and_nonnegative(docs: list[str], query: str) -> None:
    ranker = BM25Ranker(corpus=_synthetic_corpus(20, seed=1))
    together = ranker.score(query, docs)
    alone = [ranker.score(query, [d])[0] for d in docs]
    assert together == pytest.approx(alone)
    assert all(s >= 0 for s in together) and all(s >= 0 for s in BM25Ranker().score(query, docs))


# -- SciFact (BEIR) reproduction ----------------------------------------------------------------------------
def _scifact_dir() -> Path:
    bundled = importlib.resources.files("unirank") / "data" / "scifact"
    if bundled.is_dir():
        return Path(str(bundled))
    env = os.environ.get("UNIRANK_SCIFACT_DIR")  # e.g. a BEIR download, for running before it is bundled
    if env and Path(env).is_dir():
        return Path(env)
    pytest.skip("SciFact is not bundled under unirank/data/scifact (and UNIRANK_SCIFACT_DIR is not set)")


def _jsonl(path: Path) -> list[dict]:
    gz = path.with_name(path.name + ".gz")
    with gzip.open(gz, "rt", encoding="utf-8") if gz.exists() else path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.mark.slow
def test_scifact_bm25_reproduces_published_ndcg() -> None:
    pytrec_eval = pytest.importorskip("pytrec_eval")
    root = _scifact_dir()
    qrels: dict[str, dict[str, int]] = {}
    for line in (root / "qrels" / "test.tsv").read_text(encoding="utf-8").splitlines()[1:]:
        qid, did, grade = line.split("\t")
        qrels.setdefault(qid, {})[did] = int(grade)
    queries = {q["_id"]: q["text"] for q in _jsonl(root / "queries.jsonl") if q["_id"] in qrels}
    docs = _jsonl(root / "corpus.jsonl")
    corpus = {d["_id"]: {"title": d.get("title", ""), "text": d["text"]} for d in docs}
    assert len(queries) == 300 and len(corpus) == 5183
    retriever = BM25Retriever().index(corpus)  # class defaults: Lucene k1=1.2 b=0.75, English stem + stop
    qids = list(queries)
    results = retriever.retrieve_many([queries[q] for q in qids], k=1000)
    run = {q: {r.id: r.score for r in res} for q, res in zip(qids, results)}
    per_query = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10"}).evaluate(run)
    ndcg10 = float(np.mean([m["ndcg_cut_10"] for m in per_query.values()]))
    # Measured 0.6791. Published: Anserini BM25 "flat" (title + text in one field) 0.6789; BEIR's 0.665
    # is a multi-field run (title and text scored as separate fields; Anserini "multifield" 0.6647).
    assert ndcg10 == pytest.approx(0.6789, abs=0.005)
    assert abs(ndcg10 - 0.665) < 0.02


@pytest.mark.slow
def test_scifact_multifield_bm25_reproduces_beir_ndcg() -> None:
    pytest.importorskip("ir_measures")
    from unirank.eval.datasets import load_dataset
    from unirank.eval.metrics import evaluate

    ds = load_dataset(_scifact_dir())
    assert len(ds.queries) == 300 and len(ds.corpus) == 5183
    qids = list(ds.queries)
    results = (
        BM25Retriever(fields="multi").index(ds.corpus).retrieve_many([ds.queries[q] for q in qids], k=100)
    )
    ndcg10 = evaluate(ds.qrels, {q: {r.id: r.score for r in res} for q, res in zip(qids, results)}, "nDCG@10")
    # Measured 0.6613 (Lucene k1=1.2 b=0.75, English stem + stop). Published multi-field BM25: BEIR 0.665,
    # Anserini "multifield" 0.6647; the gap is text analysis (bm25s stopwords / Snowball vs Lucene's).
    assert ndcg10["nDCG@10"] == pytest.approx(0.66, abs=0.01)
