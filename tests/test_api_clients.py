"""Clients of hosted re-rankers against loopback fakes that answer as each provider documents.

The expected request bodies below are written from the providers' API references (Cohere v2 / v1 rerank,
Jina /v1/rerank, Voyage /v1/rerank, Mixedbread /v1/reranking, TEI /rerank); scores are checked against
``oracle_score``, recomputed here, never against the client's own output.
"""

from __future__ import annotations

import asyncio
import time

import pytest

pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from _fake_providers import PATHS, make_fake_app, oracle_score, serving
from unirank import Reranker
from unirank.backends.http import retry_after_seconds
from unirank.methods.api import APIError, APIRanker
from unirank.types import ScoreKind

QUERY = "what causes rain"
DOCS = [
    {"id": "d-cat", "text": "cats purr softly", "metadata": {"src": "pets"}},
    {"id": "d-rain", "text": "rain is what falls when clouds cool", "metadata": {"src": "wiki"}},
    {"id": "d-cause", "text": "what causes rain is condensation", "metadata": {}},
]
TEXTS = [d["text"] for d in DOCS]
ORACLE = sorted(range(3), key=lambda i: -oracle_score(QUERY, TEXTS[i]))

# Request bodies as each provider documents them (the client sends exactly these fields).
EXPECTED_REQUEST = {
    "cohere": {"model": "rerank-v3.5", "query": QUERY, "documents": TEXTS},
    "cohere-v1": {"model": "rerank-v3.5", "query": QUERY, "documents": TEXTS, "return_documents": False},
    "jina": {
        "model": "jina-reranker-v2-base-multilingual",
        "query": QUERY,
        "documents": TEXTS,
        "return_documents": False,
    },
    "voyage": {"model": "rerank-2", "query": QUERY, "documents": TEXTS, "return_documents": False},
    "mixedbread": {
        "model": "mixedbread-ai/mxbai-rerank-large-v1",
        "query": QUERY,
        "input": TEXTS,
        "return_input": False,
    },
    "tei": {"query": QUERY, "texts": TEXTS, "raw_scores": False, "return_text": False, "truncate": True},
}
TOP_FIELD = {
    "cohere": "top_n",
    "cohere-v1": "top_n",
    "jina": "top_n",
    "voyage": "top_k",
    "mixedbread": "top_k",
}


def client(provider: str, base_url: str, **kw) -> APIRanker:
    prov = {"cohere-v1": "cohere"}.get(provider, provider)
    model = EXPECTED_REQUEST[provider].get("model")
    if provider == "cohere-v1":
        kw["style"] = "cohere-v1"
    kw.setdefault("backoff", 0.01)
    return APIRanker(model, provider=prov, base_url=base_url, api_key=kw.pop("api_key", "test-key"), **kw)


@pytest.fixture(scope="module", params=sorted(PATHS))
def fake(request):
    app, state = make_fake_app(request.param)
    with serving(app) as url:
        yield request.param, url, state


def test_request_and_response_contract(fake):
    provider, url, state = fake
    state.reset()
    res = client(provider, url).rank(QUERY, DOCS)
    (sent,) = state.requests
    assert sent["path"] == PATHS[provider]
    assert sent["json"] == EXPECTED_REQUEST[provider]
    assert sent["headers"]["authorization"] == "Bearer test-key"
    assert sent["headers"]["content-type"] == "application/json"
    assert res.indices == ORACLE
    assert res.ids == [DOCS[i]["id"] for i in ORACLE]
    assert res[0].metadata == DOCS[ORACLE[0]]["metadata"]
    if provider != "tei":
        assert res.scores == pytest.approx([oracle_score(QUERY, TEXTS[i]) for i in ORACLE])


def test_top_k_is_sent_as_the_providers_top_field(fake):
    provider, url, state = fake
    state.reset()
    res = client(provider, url).rank(QUERY, DOCS, top_k=2)
    assert res.indices == ORACLE[:2]
    body = state.requests[0]["json"]
    if provider in TOP_FIELD:
        assert body[TOP_FIELD[provider]] == 2
        assert body == {**EXPECTED_REQUEST[provider], TOP_FIELD[provider]: 2}


def test_retry_after_on_429_is_honoured(fake):
    provider, url, state = fake
    state.reset(("429", 0.3))
    t0 = time.perf_counter()
    res = client(provider, url).rank(QUERY, DOCS)
    assert time.perf_counter() - t0 >= 0.3
    assert len(state.requests) == 2 and res.indices == ORACLE


def test_5xx_retried_then_error_after_budget(fake):
    provider, url, state = fake
    state.reset("500", "500")
    assert client(provider, url, max_retries=2).rank(QUERY, DOCS).indices == ORACLE
    assert len(state.requests) == 3
    state.reset("500", "500", "500")
    with pytest.raises(APIError, match="after 2 attempts") as err:
        client(provider, url, max_retries=1).rank(QUERY, DOCS)
    assert err.value.status == 500 and len(state.requests) == 2


def test_malformed_json_bad_index_and_401_are_typed_errors_without_retry(fake):
    provider, url, state = fake
    for step, match in (("malformed", "malformed JSON"), ("bad-index", "malformed result"), ("401", "401")):
        state.reset(step)
        with pytest.raises(APIError, match=match):
            client(provider, url, max_retries=3).rank(QUERY, DOCS)
        assert len(state.requests) == 1, step


def test_slow_response_times_out_then_retry_succeeds(fake):
    provider, url, state = fake
    state.reset(("slow", 1.0))
    t0 = time.perf_counter()
    with pytest.raises(APIError, match="Timeout"):
        client(provider, url, timeout=0.2, max_retries=0).rank(QUERY, DOCS)
    assert time.perf_counter() - t0 < 0.9
    state.reset(("slow", 1.0))
    assert client(provider, url, timeout=0.2, max_retries=1).rank(QUERY, DOCS).indices == ORACLE


def test_many_queries_run_concurrently_and_async_path(fake):
    provider, url, state = fake
    state.reset(*[("slow", 0.3)] * 4)
    r = client(provider, url, max_concurrency=4)
    queries = [QUERY, "cats", "clouds cool", "condensation"]
    t0 = time.perf_counter()
    out = r.rank_many(queries, [DOCS] * 4)
    assert time.perf_counter() - t0 < 1.0  # 4 x 0.3 s sequentially would be 1.2 s
    for q, rr in zip(queries, out):
        assert rr.scores[0] == max(oracle_score(q, t) for t in TEXTS)

    async def in_loop():  # both the async API and the sync API inside a running loop
        a = await r.arank(QUERY, DOCS)
        return a, r.rank(QUERY, DOCS)

    a, b = asyncio.run(in_loop())
    assert a.indices == b.indices == ORACLE


def test_tei_splits_long_lists_and_raw_scores_are_logits():
    app, state = make_fake_app("tei")
    docs = [f"doc {i} rain" if i % 7 == 0 else f"doc {i}" for i in range(40)]
    with serving(app) as url:
        r = Reranker(f"tei:{url}", raw_scores=True)
        assert r.score_kind is ScoreKind.LOGIT
        res = r.rank("rain", docs)
    assert sorted(len(q["json"]["texts"]) for q in state.requests) == [8, 32]  # concurrent parts
    assert "authorization" not in state.requests[0]["headers"]  # no key for a local server
    assert set(res.indices[:6]) == {0, 7, 14, 21, 28, 35}


def test_keys_from_environment_and_required_for_hosted(monkeypatch):
    for var in ("COHERE_API_KEY", "JINA_API_KEY", "VOYAGE_API_KEY", "MXBAI_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ValueError, match="COHERE_API_KEY"):
        Reranker("cohere:rerank-v3.5")
    with pytest.raises(ValueError, match="MXBAI_API_KEY"):
        Reranker("mixedbread:mixedbread-ai/mxbai-rerank-large-v1")
    monkeypatch.setenv("JINA_API_KEY", "from-env")
    app, state = make_fake_app("jina")
    with serving(app) as url:
        Reranker("jina:jina-reranker-v2-base-multilingual", base_url=url).rank(QUERY, TEXTS)
    assert state.requests[0]["headers"]["authorization"] == "Bearer from-env"
    assert "from-env" not in repr(Reranker("jina:m"))


def test_spec_forms():
    r = Reranker("cohere:my-model@http://127.0.0.1:9/compat")
    assert (r.model, r.base_url, r.style) == ("my-model", "http://127.0.0.1:9/compat", "cohere-v2")
    t = Reranker("tei:http://127.0.0.1:9/")
    assert (t.base_url, t.style, t.score_kind) == ("http://127.0.0.1:9", "tei", ScoreKind.PROBABILITY)
    u = Reranker("unirank:http://127.0.0.1:9", style="jina", model="bm25")
    assert (u.style, u.model) == ("jina", "bm25")
    v = Reranker("voyage:rerank-2", api_key="k")
    assert (v.base_url, v.style, v.score_kind) == (
        "https://api.voyageai.com",
        "voyage",
        ScoreKind.PROBABILITY,
    )
    with pytest.raises(ValueError, match="URL"):
        Reranker("tei:not-a-url")
    with pytest.raises(ValueError, match="style"):
        Reranker("unirank:http://127.0.0.1:9", style="nope")


def test_retry_after_parsing():
    assert retry_after_seconds("2") == 2.0
    assert 0 <= retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") <= 0.0 + 1e-9
    assert retry_after_seconds("-3") == 0.0
