"""Haystack UnirankRanker: a real Pipeline (in-memory BM25 retriever >> ranker), YAML round trip; oracle:
Reranker.rank on the retriever's own output."""

from __future__ import annotations

import asyncio
import sys

import pytest

pytest.importorskip("haystack")

from haystack import Document, Pipeline
from haystack.components.retrievers.in_memory import InMemoryBM25Retriever
from haystack.document_stores.in_memory import InMemoryDocumentStore

from _integration_data import QUERIES, SPECS, TEXTS
from unirank.errors import MissingExtraError, SpecError
from unirank.integrations import haystack as hs_mod
from unirank.integrations.haystack import UnirankRanker

ALLOW = ["unirank.integrations.haystack"]


def _docs() -> list[Document]:
    return [Document(content=t, id=f"d{i}", meta={"pos": i}, score=0.5) for i, t in enumerate(TEXTS)]


def _pipeline(ranker) -> Pipeline:
    store = InMemoryDocumentStore()
    store.write_documents(_docs())
    pipe = Pipeline()
    pipe.add_component("retriever", InMemoryBM25Retriever(store, top_k=5))
    pipe.add_component("ranker", ranker)
    pipe.connect("retriever.documents", "ranker.documents")
    return pipe


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("query", QUERIES)
def test_pipeline_order_equals_reranker(spec, query, oracles):
    pipe = _pipeline(UnirankRanker(spec, top_k=None))
    out = pipe.run(
        {"retriever": {"query": query}, "ranker": {"query": query}}, include_outputs_from={"retriever"}
    )
    candidates = out["retriever"]["documents"]
    got = out["ranker"]["documents"]
    want = oracles[spec].rank(query, [d.content for d in candidates])
    assert [d.id for d in got] == [candidates[i].id for i in want.indices]
    assert [d.score for d in got] == pytest.approx(want.scores, rel=1e-5)
    assert [d.meta["pos"] for d in got] == [candidates[i].meta["pos"] for i in want.indices]
    async_out = asyncio.run(pipe.run_async({"retriever": {"query": query}, "ranker": {"query": query}}))
    assert [(d.id, d.score) for d in async_out["ranker"]["documents"]] == [(d.id, d.score) for d in got]


def test_yaml_round_trip_gives_the_same_ranking(oracles):
    pipe = _pipeline(UnirankRanker("bm25", top_k=3, normalize="minmax"))
    yaml = pipe.dumps()
    assert "unirank.integrations.haystack.UnirankRanker" in yaml and "reranker: bm25" in yaml
    loaded = Pipeline.loads(yaml, allowed_modules=ALLOW)
    ranker = loaded.get_component("ranker")
    assert (ranker.reranker, ranker.top_k, ranker.normalize) == ("bm25", 3, "minmax")
    data = {"retriever": {"query": QUERIES[0]}, "ranker": {"query": QUERIES[0]}}
    a = pipe.run(data)["ranker"]["documents"]
    b = loaded.run(data)["ranker"]["documents"]
    assert [(d.id, d.score) for d in a] == [(d.id, d.score) for d in b] and len(a) == 3
    assert UnirankRanker.from_dict(ranker.to_dict()).to_dict() == ranker.to_dict()


@pytest.mark.parametrize("spec", SPECS)
def test_warm_up_run_async_equals_sync_and_inputs_untouched(spec, oracles):
    ranker = UnirankRanker(spec, top_k=4)
    ranker.warm_up()
    built = ranker._ranker
    ranker.warm_up()
    assert ranker._ranker is built  # warm_up loads once
    docs = _docs()
    sync = ranker.run(QUERIES[0], docs)["documents"]
    got = asyncio.run(ranker.run_async(QUERIES[0], docs))["documents"]
    assert [(d.id, d.score) for d in got] == [(d.id, d.score) for d in sync]
    assert [d.id for d in sync] == [f"d{i}" for i in oracles[spec].rank(QUERIES[0], TEXTS).indices[:4]]
    assert all(d.score == 0.5 for d in docs)


def test_top_k_override_larger_and_empty():
    ranker = UnirankRanker("bm25", top_k=2)
    assert len(ranker.run(QUERIES[0], _docs())["documents"]) == 2
    assert len(ranker.run(QUERIES[0], _docs(), top_k=5)["documents"]) == 5
    assert len(ranker.run(QUERIES[0], _docs()[:3], top_k=50)["documents"]) == 3
    assert ranker.run(QUERIES[0], [])["documents"] == []
    assert asyncio.run(ranker.run_async(QUERIES[0], []))["documents"] == []


def test_built_ranker_runs_but_is_not_serialisable(oracles):
    ranker = UnirankRanker(oracles["bm25"], top_k=None)
    got = ranker.run(QUERIES[1], _docs())["documents"]
    assert [d.id for d in got] == [f"d{i}" for i in oracles["bm25"].rank(QUERIES[1], TEXTS).indices]
    with pytest.raises(TypeError, match="spec string"):
        ranker.to_dict()


def test_bad_input_is_a_typed_error():
    with pytest.raises(ValueError, match="top_k"):
        UnirankRanker("bm25", top_k=-1)
    with pytest.raises(TypeError, match="spec string or a unirank Ranker"):
        UnirankRanker(["bm25"])
    with pytest.raises(SpecError):
        UnirankRanker("nosuchprefix:model").warm_up()
    ranker = UnirankRanker("bm25")
    with pytest.raises(ValueError, match="no text content"):
        ranker.run("rain", [Document(content=None, id="x")])
    with pytest.raises(TypeError, match="not a haystack Document"):
        ranker.run("rain", ["plain string"])
    with pytest.raises(ValueError, match="top_k"):
        ranker.run("rain", _docs(), top_k=-3)


def test_missing_framework_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "haystack", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'unirank\[haystack\]'"):
        hs_mod._build()
