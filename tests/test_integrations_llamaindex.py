"""LlamaIndex UnirankPostprocessor: real NodeWithScore objects and a query engine; oracle: Reranker.rank.

The query engine retrieves from a ``SummaryIndex`` (every node, no embedding model) and answers with
``response_mode="no_text"``, so no LLM is called; ``Settings.llm`` is set to LlamaIndex's ``MockLLM`` for the
test only so LlamaIndex does not try to resolve its default (OpenAI) LLM.
"""

from __future__ import annotations

import asyncio
import sys

import pytest

pytest.importorskip("llama_index.core")

from llama_index.core import Settings, SummaryIndex
from llama_index.core.llms import MockLLM
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle, TextNode

from _integration_data import QUERIES, SPECS, TEXTS
from unirank.errors import MissingExtraError, SpecError
from unirank.integrations import llamaindex as li_mod
from unirank.integrations.llamaindex import UnirankPostprocessor


@pytest.fixture(scope="module")
def posts():
    return {spec: UnirankPostprocessor(spec, top_n=None) for spec in SPECS}


def _nodes() -> list[NodeWithScore]:
    return [
        NodeWithScore(node=TextNode(text=t, id_=f"n{i}"), score=1.0 - i / 10) for i, t in enumerate(TEXTS)
    ]


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("query", QUERIES)
def test_query_engine_order_equals_reranker(spec, query, oracles, posts, monkeypatch):
    monkeypatch.setattr(Settings, "_llm", MockLLM())
    index = SummaryIndex([TextNode(text=t, id_=f"n{i}") for i, t in enumerate(TEXTS)])
    engine = index.as_query_engine(node_postprocessors=[posts[spec]], response_mode="no_text")
    got = engine.query(query).source_nodes
    want = oracles[spec].rank(query, TEXTS)
    assert [n.node.node_id for n in got] == [f"n{i}" for i in want.indices]
    assert [n.score for n in got] == pytest.approx(want.scores, rel=1e-5)
    async_got = asyncio.run(engine.aquery(query)).source_nodes
    assert [(n.node.node_id, n.score) for n in async_got] == [(n.node.node_id, n.score) for n in got]


@pytest.mark.parametrize("spec", SPECS)
def test_postprocess_nodes_async_equals_sync(spec, oracles, posts):
    nodes = _nodes()
    sync = posts[spec].postprocess_nodes(nodes, query_bundle=QueryBundle(QUERIES[0]))
    got = asyncio.run(posts[spec].apostprocess_nodes(nodes, query_str=QUERIES[0]))
    want = oracles[spec].rank(QUERIES[0], TEXTS)
    assert [n.node.node_id for n in sync] == [f"n{i}" for i in want.indices]
    assert [(n.node.node_id, n.score) for n in got] == [(n.node.node_id, n.score) for n in sync]
    assert [n.score for n in nodes] == [1.0 - i / 10 for i in range(len(TEXTS))]  # inputs untouched


def test_metadata_mode_decides_the_text(oracles):
    nodes = [
        NodeWithScore(node=TextNode(text="a short note", metadata={"topic": "rain clouds"}, id_="m")),
        NodeWithScore(node=TextNode(text="rain", id_="r")),
    ]
    texts = [n.node.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes]
    assert "rain clouds" in texts[0]
    got = UnirankPostprocessor(oracles["bm25"], top_n=None).postprocess_nodes(nodes, query_str="rain clouds")
    assert [n.node.node_id for n in got] == [
        ["m", "r"][i] for i in oracles["bm25"].rank("rain clouds", texts).indices
    ]
    plain = UnirankPostprocessor("bm25", top_n=None, metadata_mode=MetadataMode.NONE)
    got = plain.postprocess_nodes(nodes, query_str="rain clouds")
    assert [n.node.node_id for n in got] == ["r", "m"]


def test_top_n_default_larger_and_empty(oracles):
    nodes = _nodes()
    want = oracles["bm25"].rank(QUERIES[0], TEXTS)
    two = UnirankPostprocessor("bm25").postprocess_nodes(
        nodes, query_str=QUERIES[0]
    )  # default 2, as LlamaIndex's
    assert [n.node.node_id for n in two] == [f"n{i}" for i in want.indices[:2]]
    many = UnirankPostprocessor("bm25", top_n=50).postprocess_nodes(nodes[:3], query_str=QUERIES[0])
    assert len(many) == 3
    assert UnirankPostprocessor("bm25", top_n=5).postprocess_nodes([], query_str="rain") == []
    assert asyncio.run(UnirankPostprocessor("bm25").apostprocess_nodes([], query_str="rain")) == []


def test_serialises_with_its_spec():
    post = UnirankPostprocessor("bm25", top_n=4, normalize="minmax")
    d = post.to_dict()
    assert d["reranker"] == "bm25" and d["top_n"] == 4 and d["class_name"] == "UnirankPostprocessor"


def test_bad_input_is_a_typed_error():
    with pytest.raises(ValueError, match="top_n"):
        UnirankPostprocessor("bm25", top_n=-2)
    with pytest.raises(TypeError, match="spec string or a unirank Ranker"):
        UnirankPostprocessor(3.5)
    with pytest.raises(SpecError):
        UnirankPostprocessor("nosuchprefix:model")
    with pytest.raises(ValueError, match="needs a query"):
        UnirankPostprocessor("bm25").postprocess_nodes(_nodes())


def test_missing_framework_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "llama_index.core.postprocessor.types", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'unirank\[llamaindex\]'"):
        li_mod._build()
