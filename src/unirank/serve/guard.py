"""The ASGI guard around the routes: body size and read time, invalid Unicode, client disconnects, metrics.

Before the app sees a request, the guard reads its whole body (bounded by ``max_body_bytes``, checked on
``Content-Length`` *and* while streaming, so a chunked upload cannot exceed it either) within
``body_timeout`` seconds — a client that trickles its body gets 408 and the connection is closed. A JSON
body holding a lone UTF-16 surrogate escape (``"\\ud800"``) is refused with 422: no valid Unicode string
carries one, and it could not be echoed back in any response. While the app runs, the guard watches the
connection: when the client goes away before the response starts, the app's task is cancelled, so a
request waiting in the micro-batch queue leaves it and its documents never reach the model.

Header read time and idle keep-alive are the HTTP server's side: see :mod:`unirank.serve.server`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

from .limits import KNOWN_ROUTES, Metrics, ServeConfig
from .prepare import has_surrogate_escape
from .schemas import error_body

__all__ = ["guard_middleware"]


class _TooLarge(Exception):
    pass


class _Disconnected(Exception):
    pass


def _lone_surrogate(body: bytes) -> bool:
    """Whether a JSON body decodes to a string (or key) holding a lone surrogate (invalid JSON: False)."""
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return False  # not JSON (or nested too deep to read): the app answers 4xx for that
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return False


def guard_middleware(app: Any, config: ServeConfig, metrics: Metrics) -> Any:
    """Wrap an ASGI app with the guard described in the module docstring."""

    async def send_json(send: Any, status: int, body: dict[str, Any]) -> None:
        raw = json.dumps(body).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(raw)).encode()),
            (b"connection", b"close"),  # the rest of the request is not read: do not reuse the connection
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": raw})

    async def guarded(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        path, root = scope.get("path", ""), scope.get("root_path", "")
        if root and path.startswith(root):  # uvicorn's --root-path: the route is what follows the prefix
            path = path[len(root) :]
        route = path if path in KNOWN_ROUTES else "other"
        status_box: dict[str, Any] = {"status": 500, "started": False}
        limit = config.max_body_bytes

        async def send_wrapped(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status_box["status"], status_box["started"] = message["status"], True
            await send(message)

        async def read_body() -> bytes:
            chunks, size = [], 0
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise _Disconnected
                if message["type"] == "http.request":
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > limit:
                        raise _TooLarge
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        return b"".join(chunks)

        async def refuse(status: int, reason: str, message: str, error_type: str) -> None:
            metrics.rejected.labels(reason).inc()
            await send_json(send_wrapped, status, error_body(message, error_type))

        t0 = time.perf_counter()
        metrics.in_flight.inc()
        try:
            length = dict(scope.get("headers") or []).get(b"content-length")
            if length is not None and (not length.isdigit() or int(length) > limit):
                await refuse(413, "body_size", f"request body exceeds {limit} bytes", "payload_too_large")
                return
            try:
                body = await asyncio.wait_for(read_body(), config.body_timeout)
            except _TooLarge:
                await refuse(413, "body_size", f"request body exceeds {limit} bytes", "payload_too_large")
                return
            except asyncio.TimeoutError:
                msg = f"request body not received within {config.body_timeout:g}s"
                await refuse(408, "body_timeout", msg, "timeout")
                return
            except _Disconnected:
                status_box["status"] = 499  # nginx's "client closed request", for the metrics only
                return
            if has_surrogate_escape(body) and await asyncio.to_thread(_lone_surrogate, body):
                msg = "request body holds a lone UTF-16 surrogate (a \\ud800-\\udfff escape): invalid Unicode"
                await refuse(422, "unicode", msg, "validation")
                return
            await _run_watching(app, scope, receive, send_wrapped, body, status_box)
        finally:
            metrics.in_flight.dec()
            metrics.requests.labels(route, str(status_box["status"])).inc()
            metrics.latency.labels(route).observe(time.perf_counter() - t0)

    return guarded


async def _run_watching(
    app: Any, scope: Any, receive: Any, send: Any, body: bytes, status_box: dict[str, Any]
) -> None:
    """Run ``app`` on the buffered ``body``; cancel it if the client leaves before the response starts."""
    gone = asyncio.Event()
    replayed = False

    async def replay() -> dict[str, Any]:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def watch() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        gone.set()

    task = asyncio.ensure_future(app(scope, replay, send))
    watcher = asyncio.ensure_future(watch())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done() and not status_box["started"]:  # the client went away: drop its work
            task.cancel()
            status_box["status"] = 499
            with contextlib.suppress(asyncio.CancelledError):
                await task
            return
        await task
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await watcher
