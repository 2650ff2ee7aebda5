"""The server under hostile input: huge documents and options, invalid Unicode, timeouts, disconnects and
slow clients. The timing tests run a real uvicorn on loopback (``loopback``: the ``unirank serve`` setup).

Bounds are generous for a shared 2-core CI box; the design goal is that ``/health`` answers within 100 ms
while any single allowed request is being served (measured on an idle 2-core box: about 80 ms at worst with
a 9 MB document, most of it parsing the request's JSON; see ``docs/serving.md``).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from _serve_fixtures import RecordingRanker, SlowRanker, loopback  # noqa: E402
from unirank.serve.app import create_app  # noqa: E402
from unirank.serve.batcher import MicroBatcher, QueueFull, WouldTimeOut  # noqa: E402
from unirank.serve.limits import ServeConfig  # noqa: E402
from unirank.serve.prepare import first_words, head_tokens, word_count  # noqa: E402

BIG = ("precipitation forms when atmospheric vapour condenses on dust " * 150_000)[:9_000_000]


@pytest.fixture(scope="module")
def tokenizer(minilm_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(minilm_path))


# --- huge documents and options ---------------------------------------------------------------------------


def test_max_tokens_per_doc_is_capped_at_the_model_window(tokenizer):
    ranker = RecordingRanker(tokenizer, max_length=16)
    doc = "Rain forms when vapour condenses on dust and the droplets grow. " * 400
    with TestClient(create_app({"m": ranker})) as c:
        for n in (10**9, 10**30, 5):
            r = c.post("/v2/rerank", json={"query": "rain", "documents": [doc], "max_tokens_per_doc": n})
            assert r.status_code == 200, r.text
    huge, huger, five = ranker.texts
    assert huge == huger and doc.startswith(huge)
    assert len(tokenizer.tokenize(huge)) == 16  # the window, whole words
    assert len(tokenizer.tokenize(five)) <= 5 and doc.startswith(five)


def test_cutting_helpers_match_the_plain_definitions(tokenizer):
    from unirank.text import truncate_tokens

    text = "  Rain\tforms when vapour\n condenses;  droplets grow (quickly) and fall. " * 300
    for n in (1, 7, 64, 300, 10**6):
        assert first_words(text, n) == " ".join(text.split()[:n])
        assert head_tokens(tokenizer, text, n) == truncate_tokens(tokenizer, text, n)
    assert word_count(text) == len(text.split()) and word_count("") == 0


def test_sliced_word_helpers_equal_str_split_at_any_slice_size(monkeypatch):
    from hypothesis import given, settings
    from hypothesis import strategies as st

    import unirank.serve.prepare as prepare

    monkeypatch.setattr(prepare, "SLICE", 5)  # many slice boundaries in short texts

    @settings(max_examples=300, deadline=None)
    @given(st.text(st.sampled_from("ab \t\n\u00a0\u2003\x1cé.")), st.integers(1, 20))
    def check(text: str, n: int) -> None:
        assert first_words(text, n) == " ".join(text.split()[:n])
        assert word_count(text) == len(text.split())

    check()


def test_health_answers_while_a_big_request_is_served(tokenizer):
    """The issue's case: a 9 MB document with ``max_tokens_per_doc: 1e9`` stalled the event loop for ~19 s."""
    slow_window = RecordingRanker(tokenizer, max_length=512, delay=1.0)  # the model takes 1 s
    app = create_app({"win": slow_window, "bm25": "bm25"})
    with loopback(app) as (host, port), httpx.Client(base_url=f"http://{host}:{port}") as probe:
        assert probe.get("/health").status_code == 200
        for model, route in (("win", "/v2/rerank"), ("bm25", "/v1/rerank")):
            body = json.dumps(
                {
                    "model": model,
                    "query": "what causes rain",
                    "documents": [BIG, "rain"],
                    "max_tokens_per_doc": 10**9,
                }
            ).encode()
            result: dict[str, int] = {}

            def big(route: str = route, body: bytes = body, result: dict[str, int] = result) -> None:
                with httpx.Client(base_url=f"http://{host}:{port}", timeout=120) as c:
                    headers = {"content-type": "application/json"}
                    result["status"] = c.post(route, content=body, headers=headers).status_code

            t = threading.Thread(target=big)
            t.start()
            latencies = []
            while t.is_alive():
                t0 = time.perf_counter()
                assert probe.get("/health").status_code == 200
                latencies.append(time.perf_counter() - t0)
                time.sleep(0.02)
            t.join()
            assert result == {"status": 200}
            assert len(latencies) >= 3, latencies  # probed while the request was in flight
            assert max(latencies) < 0.5, (model, max(latencies))
    assert all(len(tokenizer.tokenize(x)) <= 512 for x in slow_window.texts)


# --- invalid Unicode --------------------------------------------------------------------------------------

LONE = [
    ("/v2/rerank", b'{"query": "\\ud800 rain", "documents": ["rain"]}'),
    ("/v2/rerank", b'{"query": "rain", "documents": ["\\ud800 rain"], "return_documents": true}'),
    (
        "/v1/rerank",
        b'{"query": "rain", "documents": [{"text": "x", "\\udc00": 1}], "return_documents": true}',
    ),
    ("/jina/v1/rerank", b'{"query": "rain", "documents": [{"text": "x", "meta": ["\\udfff"]}]}'),
    ("/rerank", b'{"query": "rain", "texts": ["rain \\udbff"], "return_text": true}'),
    ("/rerank", b'{"query": 5, "texts": ["\\ud800\\ud800"], "raw_scores": "\\ud800"}'),
    ("/v2/rerank", b'{"query": "rain", "documents": ["a"], "model": "\\ude00\\ud83d"}'),
]


@pytest.mark.parametrize("route,raw", LONE)
def test_lone_surrogates_are_refused_with_4xx(route, raw):
    with TestClient(create_app({"bm25": "bm25"}), raise_server_exceptions=False) as c:
        r = c.post(route, content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert "surrogate" in r.json()["message"]
    r.content.decode("utf-8")  # valid UTF-8, valid JSON


def test_valid_escapes_are_not_mistaken_for_lone_surrogates():
    ok = [
        b'{"query": "rain \\ud83c\\udf27", "documents": ["rain \\ud83d\\ude00"], "return_documents": true}',
        b'{"query": "rain", "documents": ["a literal \\\\ud800 is six characters"], "top_n": 1, '
        b'"return_documents": true}',
    ]
    with TestClient(create_app({"bm25": "bm25"})) as c:
        for raw in ok:
            r = c.post("/v2/rerank", content=raw, headers={"content-type": "application/json"})
            assert r.status_code == 200, r.text
        assert r.json()["results"][0]["document"]["text"] == "a literal \\ud800 is six characters"
        emoji = c.post("/v2/rerank", content=ok[0], headers={"content-type": "application/json"}).json()
        assert emoji["results"][0]["document"]["text"] == "rain \U0001f600"


def _exchange(host: str, port: int, raw: bytes, limit: float = 10.0) -> bytes:
    with socket.create_connection((host, port), timeout=limit) as s:
        s.sendall(raw)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data


def test_lone_surrogate_over_a_real_socket():
    with loopback(create_app({"bm25": "bm25"})) as (host, port):
        for route, body in LONE:
            head = f"POST {route} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            head += f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            data = _exchange(host, port, head.encode() + body)  # a reset would raise here
            assert data.startswith(b"HTTP/1.1 422 "), data[:200]
            assert "surrogate" in json.loads(data.split(b"\r\n\r\n", 1)[1])["message"]


def test_validation_errors_do_not_echo_huge_input():
    with TestClient(create_app({"bm25": "bm25"})) as c:
        r = c.post(
            "/v2/rerank",
            json={"query": "q", "documents": [7, {"text": ["x" * 500_000]}], "top_n": "y" * 10**5},
        )
    assert r.status_code == 422 and len(r.content) < 20_000


# --- timeouts and disconnects: the queue ------------------------------------------------------------------


def test_timed_out_requests_leave_the_queue_and_are_never_computed():
    slow = SlowRanker(delay=0.3)

    async def go():
        b = MicroBatcher(slow, max_wait_ms=0, max_batch_docs=1, max_queue=2)
        busy = asyncio.ensure_future(b.submit("q", ["a"]))
        await asyncio.sleep(0.05)  # "a" is in the model
        for doc in ("bb", "cc"):
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(b.submit("q", [doc]), 0.05)
        assert b.depth == 0 and len(b._queue) == 0
        later = [asyncio.ensure_future(b.submit("q", [d])) for d in ("ddd", "eeee")]  # no QueueFull
        await asyncio.sleep(0)
        with pytest.raises(QueueFull):
            await b.submit("q", ["f"])
        out = [await f for f in [busy, *later]]
        await b.close()
        return out

    out = asyncio.run(go())
    assert [x.tolist() for x in out] == [[1.0], [3.0], [4.0]]
    assert slow.calls == [1, 1, 1]  # "bb" and "cc" never reached the model


def test_requests_that_cannot_finish_in_time_are_not_started():
    slow = SlowRanker(delay=0.2)

    async def go():
        b = MicroBatcher(slow, max_wait_ms=0)
        await b.submit("q", ["warm-up"])  # not a measure
        await b.submit("q", ["a"])  # 0.2 s per document
        t0 = time.perf_counter()
        with pytest.raises(WouldTimeOut):
            await b.submit("q", ["b"], deadline=t0 + 0.05)
        refused_after = time.perf_counter() - t0
        ok = await b.submit("q", ["ccc"], deadline=time.perf_counter() + 5)
        await b.close()
        return refused_after, ok, b.stats["expired"]

    refused_after, ok, expired = asyncio.run(go())
    assert refused_after < 0.1 and ok.tolist() == [3.0] and expired == 1
    assert slow.calls == [1, 1, 1]  # "b" never reached the model


def test_timeouts_under_load_do_not_fill_the_queue():
    """The issue's case, scaled down: clients retrying after 504 filled ``--max-queue`` with dead requests
    (76 x 504, 670 x 429, no 200). Each client holds at most one live request and there are no more clients
    than ``max_queue``, so no request may be refused with 429. Before the fix this gave about 200 x 429."""
    slow = SlowRanker(delay=0.1)  # 2 requests per batch: 20 requests/s for 8 clients, some wait > 0.25 s
    cfg = ServeConfig(request_timeout=0.25, max_queue=8, max_batch_docs=2, max_wait_ms=0)
    app = create_app({"slow": slow}, cfg)

    async def client(c: httpx.AsyncClient, until: float) -> list[int]:
        codes = []
        while time.perf_counter() < until:
            r = await c.post("/rerank", json={"query": "q", "texts": ["a"]})
            codes.append(r.status_code)
        return codes

    async def load() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=10) as c:
            until = time.perf_counter() + 2.0
            runs = await asyncio.gather(*(client(c, until) for _ in range(8)))
        return [code for run in runs for code in run]

    codes = asyncio.run(load())
    assert set(codes) <= {200, 504}, sorted(codes)
    assert codes.count(200) > 0 and codes.count(504) > 0
    assert sum(slow.calls) < len(codes)  # timed-out requests that had not started were never computed


def test_a_disconnected_client_leaves_the_queue():
    slow = SlowRanker(delay=0.5)
    app = create_app({"slow": slow}, ServeConfig(max_batch_docs=1, max_wait_ms=0))
    body = b'{"query": "q", "texts": ["gone"]}'
    raw = b"POST /rerank HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
    raw += b"Content-Length: %d\r\n\r\n" % len(body) + body
    with loopback(app) as (host, port), httpx.Client(base_url=f"http://{host}:{port}") as c:
        first = threading.Thread(target=lambda: c.post("/rerank", json={"query": "q", "texts": ["a"]}))
        first.start()
        time.sleep(0.15)  # "a" is in the model
        with socket.create_connection((host, port)) as s:
            s.sendall(raw)
            time.sleep(0.15)  # queued behind "a"
        first.join(5)
        time.sleep(0.7)  # had it stayed, "gone" would have run by now
        metrics = httpx.get(f"http://{host}:{port}/metrics").text
    assert slow.calls == [1], slow.calls
    assert 'unirank_queue_depth{model="slow"} 0.0' in metrics


# --- slow clients -----------------------------------------------------------------------------------------

SLOW_CFG = ServeConfig(header_timeout=0.5, body_timeout=0.5, keep_alive_timeout=0.5)


def _closed_after(s: socket.socket, limit: float = 5.0) -> tuple[bytes, float]:
    """Read until the server closes the connection; (what it sent, seconds it took)."""
    t0 = time.perf_counter()
    s.settimeout(limit)
    data = b""
    try:
        while chunk := s.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data, time.perf_counter() - t0


def _trickle(s: socket.socket, data: bytes, every: float = 0.1) -> float:
    """Send ``data`` a byte at a time; seconds until the server closed the connection (or all was sent)."""
    t0 = time.perf_counter()
    for i in range(len(data)):
        try:
            s.sendall(data[i : i + 1])
        except OSError:
            break
        time.sleep(every)
    return time.perf_counter() - t0


def test_slow_and_idle_clients_are_closed():
    app = create_app({"bm25": "bm25"}, SLOW_CFG)
    with loopback(app) as (host, port):
        with socket.create_connection((host, port)) as s:  # connects, never sends
            data, took = _closed_after(s)
        assert data == b"" and took < 2.0

        with socket.create_connection((host, port)) as s:  # slowloris: headers a byte every 0.1 s
            head = b"POST /rerank HTTP/1.1\r\nHost: t\r\nX-Padding: " + b"a" * 100 + b"\r\n\r\n"
            took = _trickle(s, head)
            assert took < 2.0, took

        with socket.create_connection((host, port)) as s:  # headers at once, then the body trickles
            s.sendall(b"POST /rerank HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n")
            s.sendall(b"Content-Length: 60\r\n\r\n")
            threading.Thread(
                target=_trickle, args=(s, b'{"query": "q", "texts": ["a"]}' + b" " * 30), daemon=True
            ).start()
            data, took = _closed_after(s)
        assert data.startswith(b"HTTP/1.1 408 ") and took < 2.0, (data[:100], took)

        with socket.create_connection((host, port)) as s:  # one request, then idle keep-alive
            body = b'{"query": "q", "texts": ["a"]}'
            s.sendall(b"POST /rerank HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n")
            s.sendall(b"Content-Length: %d\r\n\r\n" % len(body) + body)
            data, took = _closed_after(s)
        assert data.startswith(b"HTTP/1.1 200 ") and took < 2.0


def test_a_request_slower_than_the_header_timeout_still_completes_on_a_kept_alive_connection():
    app = create_app({"slow": SlowRanker(delay=0.8)}, SLOW_CFG)
    with loopback(app) as (host, port), httpx.Client(base_url=f"http://{host}:{port}") as c:
        for _ in range(2):  # the same connection: the deadline re-arms after each response
            assert c.post("/rerank", json={"query": "q", "texts": ["a"]}).status_code == 200


def test_echoed_numbers_json_cannot_carry_are_4xx():
    raw = b'{"query": "q", "documents": [{"text": "a", "x": 1e400}, "b"], "return_documents": true}'
    with TestClient(create_app({"bm25": "bm25"}), raise_server_exceptions=False) as c:
        r = c.post("/v1/rerank", content=raw, headers={"content-type": "application/json"})
        assert r.status_code == 422 and "Infinity" in r.json()["message"]
        quiet = c.post("/v1/rerank", content=raw.replace(b"true", b"false"), headers=r.request.headers)
        assert quiet.status_code == 200


@pytest.mark.parametrize("depth", [900, 3000])
@pytest.mark.parametrize("query", [b'"q"', b'"\\ud800"'])
def test_deeply_nested_bodies_are_4xx(depth, query):
    deep = b"{" + b'"a": {' * depth + b"}" * depth + b"}"
    with TestClient(create_app({"bm25": "bm25"}), raise_server_exceptions=False) as c:
        for route, key in (("/rerank", b"texts"), ("/v1/rerank", b"documents")):
            raw = b'{"query": ' + query + b', "return_documents": true, "' + key + b'": ["a", ' + deep + b"]}"
            r = c.post(route, content=raw, headers={"content-type": "application/json"})
            assert 400 <= r.status_code < 500 and len(r.content) < 20_000, (route, r.status_code)


def test_validation_echo_of_every_json_kind_is_safe():
    bodies = [b"null", b"true", b"[1, 2.5, null]", b'{"query": NaN, "texts": Infinity}', b'{"query": 1e400}']
    bodies.append(b'{"query": ' + str(10**1000).encode() + b', "documents": "x"}')
    with TestClient(create_app({"bm25": "bm25"}), raise_server_exceptions=False) as c:
        for raw in bodies:
            for route in ("/v2/rerank", "/rerank"):
                r = c.post(route, content=raw, headers={"content-type": "application/json"})
                assert r.status_code == 422 and len(r.content) < 20_000, (raw, r.text)
