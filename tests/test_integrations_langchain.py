"""LangChain UnirankCompressor: real langchain-core objects, Reranker.rank as the oracle."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

pytest.importorskip("langchain_core")

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableLambda, RunnableParallel, RunnablePassthrough

from _integration_data import QUERIES, SPECS, TEXTS
from unirank.errors import MissingExtraError, SpecError
from unirank.integrations import langchain as lc_mod
from unirank.integrations.langchain import UnirankCompressor


@pytest.fixture(scope="module")
def compressors():
    return {spec: UnirankCompressor(spec, top_n=None) for spec in SPECS}


def _docs() -> list[Document]:
    return [Document(page_content=t, metadata={"pos": i}, id=f"d{i}") for i, t in enumerate(TEXTS)]


class FixedRetriever(BaseRetriever):
    """A first stage returning every document (in input order)."""

    docs: list[Document]

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        return list(self.docs)


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("query", QUERIES)
def test_runnable_chain_order_equals_reranker(spec, query, oracles, compressors):
    comp = compressors[spec]
    chain = RunnableParallel(docs=FixedRetriever(docs=_docs()), query=RunnablePassthrough()) | RunnableLambda(
        lambda x: comp.compress_documents(x["docs"], x["query"])
    )
    got = chain.invoke(query)
    want = oracles[spec].rank(query, TEXTS)
    assert [d.page_content for d in got] == [r.text for r in want]
    assert [d.metadata["relevance_score"] for d in got] == pytest.approx(want.scores, rel=1e-5)
    assert [d.metadata["pos"] for d in got] == want.indices  # original metadata kept
    assert [d.id for d in got] == [f"d{i}" for i in want.indices]


@pytest.mark.parametrize("spec", SPECS)
def test_async_equals_sync_and_inputs_untouched(spec, compressors):
    docs = _docs()
    comp = compressors[spec]
    sync = comp.compress_documents(docs, QUERIES[0])
    got = asyncio.run(comp.acompress_documents(docs, QUERIES[0]))
    assert [(d.page_content, d.metadata) for d in got] == [(d.page_content, d.metadata) for d in sync]
    assert all("relevance_score" not in d.metadata for d in docs)


def test_top_n_cuts_and_larger_than_list(oracles):
    docs = _docs()
    want = oracles["bm25"].rank(QUERIES[0], TEXTS)
    three = UnirankCompressor("bm25").compress_documents(docs, QUERIES[0])  # default top_n=3, as CohereRerank
    assert [d.page_content for d in three] == [r.text for r in want.top(3)]
    many = UnirankCompressor(oracles["bm25"], top_n=100).compress_documents(docs[:2], QUERIES[0])
    assert [d.page_content for d in many] == [r.text for r in oracles["bm25"].rank(QUERIES[0], TEXTS[:2])]
    assert UnirankCompressor("bm25", top_n=0).compress_documents(docs, QUERIES[0]) == []


def test_empty_documents_sync_and_async():
    comp = UnirankCompressor("bm25", top_n=5)
    assert list(comp.compress_documents([], "rain")) == []
    assert list(asyncio.run(comp.acompress_documents([], "rain"))) == []


def test_normalize_and_score_key():
    comp = UnirankCompressor("bm25", top_n=None, normalize="minmax", score_key="score")
    got = comp.compress_documents(_docs(), QUERIES[0])
    scores = [d.metadata["score"] for d in got]
    assert max(scores) == pytest.approx(1.0) and min(scores) == pytest.approx(0.0)


def test_bad_input_is_a_typed_error(oracles):
    with pytest.raises(ValueError, match="top_n"):
        UnirankCompressor("bm25", top_n=-1)
    with pytest.raises(TypeError, match="top_n"):
        UnirankCompressor("bm25", top_n="3")
    with pytest.raises(TypeError, match="spec string or a unirank Ranker"):
        UnirankCompressor(42)
    with pytest.raises(TypeError, match="already built"):
        UnirankCompressor(oracles["bm25"], options={"k1": 1.2})
    with pytest.raises(SpecError):
        UnirankCompressor("nosuchprefix:model")
    with pytest.raises(ValueError, match="query"):
        UnirankCompressor("bm25").compress_documents(_docs(), "   ")


def test_missing_framework_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "langchain_core.documents.compressor", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'unirank\[langchain\]'"):
        lc_mod._build()


def test_importing_the_integrations_imports_no_framework():
    code = (
        "import sys, unirank.integrations, unirank.integrations.langchain, unirank.integrations.llamaindex, "
        "unirank.integrations.haystack, unirank.integrations.pyterrier\n"
        "names = ('langchain_core', 'llama_index', 'haystack', 'pyterrier', 'torch')\n"
        "bad = [m for m in names if m in sys.modules]\n"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
