"""Loopback fakes of the hosted re-ranking APIs, answering with each provider's documented response shape.

A fake records every request (path, headers, JSON body) and follows a script of behaviours, one per
request, then answers normally: ``("429", retry_after)``, ``"500"``, ``"401"``, ``"malformed"`` (a 200
with a broken JSON body), ``("slow", seconds)``, ``"bad-index"``. Scores come from :func:`oracle_score`, a
word-overlap score the tests recompute independently of any client code.

Servers run on 127.0.0.1 with port 0 in a background thread and always shut down (see :func:`serving`).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

PATHS = {
    "cohere": "/v2/rerank",
    "cohere-v1": "/v1/rerank",
    "jina": "/v1/rerank",
    "voyage": "/v1/rerank",
    "mixedbread": "/v1/reranking",
    "tei": "/rerank",
}


def oracle_score(query: str, text: str) -> float:
    """Fraction of the query's words found in the text (0..1)."""
    q = set(query.lower().split())
    return len(q & set(text.lower().split())) / max(len(q), 1)


@dataclass
class FakeState:
    script: deque[Any] = field(default_factory=deque)
    requests: list[dict[str, Any]] = field(default_factory=list)

    def reset(self, *script: Any) -> None:
        self.script = deque(script)
        self.requests = []


def _ranked(query: str, texts: list[str], top: int | None) -> list[tuple[int, float]]:
    scored = sorted(((i, oracle_score(query, t)) for i, t in enumerate(texts)), key=lambda x: (-x[1], x[0]))
    return scored[:top] if top else scored


def _body(provider: str, req: dict[str, Any]) -> Any:
    q = req["query"]
    if provider == "tei":
        raw = bool(req.get("raw_scores"))
        out = []
        for i, s in _ranked(q, req["texts"], None):
            score = math.log((s + 0.01) / (1.01 - s)) if raw else s
            out.append(
                {"index": i, "score": score, **({"text": req["texts"][i]} if req.get("return_text") else {})}
            )
        return out
    if provider == "mixedbread":
        data = [
            {"index": i, "score": s, "object": "rank_result"}
            for i, s in _ranked(q, req["input"], req.get("top_k"))
        ]
        n = sum(len(t.split()) for t in req["input"])
        return {
            "usage": {"prompt_tokens": n, "total_tokens": n},
            "model": req["model"],
            "data": data,
            "object": "list",
            "top_k": req.get("top_k") or len(data),
            "return_input": False,
        }
    if provider == "voyage":
        data = [{"relevance_score": s, "index": i} for i, s in _ranked(q, req["documents"], req.get("top_k"))]
        return {"object": "list", "data": data, "model": req["model"], "usage": {"total_tokens": 10}}
    docs = req["documents"]
    results = []
    for i, s in _ranked(q, docs, req.get("top_n")):
        item: dict[str, Any] = {"index": i, "relevance_score": s}
        if provider == "jina" and req.get("return_documents", True):
            item["document"] = {"text": docs[i]}
        results.append(item)
    if provider == "jina":
        return {"model": req["model"], "usage": {"total_tokens": 10}, "results": results}
    version = "1" if provider == "cohere-v1" else "2"
    return {
        "id": "07734bd2-2473-4f07-94e1-0d9f0e6843cf",
        "results": results,
        "meta": {"api_version": {"version": version}, "billed_units": {"search_units": 1}},
    }


def make_fake_app(provider: str) -> tuple[FastAPI, FakeState]:
    """A fake of ``provider`` (a key of :data:`PATHS`) and the state the test drives it with."""
    app = FastAPI()
    state = FakeState()

    @app.post(PATHS[provider])
    async def rerank(request: Request) -> Response:
        body = await request.json()
        state.requests.append({"path": request.url.path, "headers": dict(request.headers), "json": body})
        step = state.script.popleft() if state.script else "ok"
        kind, arg = (step, None) if isinstance(step, str) else step
        if kind == "429":
            return JSONResponse({"message": "rate limited"}, 429, headers={"Retry-After": str(arg)})
        if kind == "500":
            return JSONResponse({"message": "internal error"}, 500)
        if kind == "401":
            return JSONResponse({"message": "invalid api token"}, 401)
        if kind == "malformed":
            return Response(b'{"results": [{"index": 0, "relev', 200, media_type="application/json")
        if kind == "slow":
            await asyncio.sleep(arg)
        out = _body(provider, body)
        if kind == "bad-index":
            items = out if isinstance(out, list) else out.get("results") or out.get("data")
            items[0]["index"] = 10_000
        return JSONResponse(out)

    return app, state


@contextlib.contextmanager
def serving(app: Any, timeout: float = 10.0) -> Iterator[str]:
    """Run ``app`` with uvicorn on 127.0.0.1, port 0, in a thread; yield its base URL; always stop it."""
    import uvicorn

    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, log_level="warning", lifespan="on", timeout_graceful_shutdown=5
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="fake-server", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("test server did not start")
            time.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)
