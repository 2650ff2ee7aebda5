"""Safety and observability around the routes: API keys, body size limit, Prometheus metrics.

Keys are compared with :func:`hmac.compare_digest` against every configured key (constant time, no early
exit on the first match). The body limit is enforced on ``Content-Length`` *and* while streaming, so a
chunked upload cannot exceed it either. Metrics live in a registry owned by the app (never the process-global
one), so several apps in one process (tests, multi-tenant) do not collide.
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .schemas import error_body

__all__ = ["Metrics", "ServeConfig", "check_api_key", "guard_middleware"]

KNOWN_ROUTES = ("/v1/rerank", "/v2/rerank", "/jina/v1/rerank", "/rerank", "/health", "/info", "/metrics")


@dataclass
class ServeConfig:
    """Limits and behaviour of a server (the ``unirank serve`` flags)."""

    api_keys: Sequence[str] = ()
    max_documents: int = 1000
    max_body_bytes: int = 10 * 1024 * 1024
    request_timeout: float = 30.0
    max_queue: int = 256
    max_batch_docs: int = 256
    max_wait_ms: float = 5.0
    default_model: str | None = None

    def __post_init__(self) -> None:
        for name in ("max_documents", "max_body_bytes", "max_queue", "max_batch_docs"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.request_timeout <= 0 or self.max_wait_ms < 0:
            raise ValueError("request_timeout must be > 0 and max_wait_ms >= 0")
        if any(not isinstance(k, str) or not k for k in self.api_keys):
            raise ValueError("API keys must be non-empty strings")


def check_api_key(headers: Any, keys: Sequence[str]) -> bool:
    """Whether the request carries one of ``keys`` (``Authorization: Bearer <key>`` or ``X-API-Key``).

    >>> check_api_key({"authorization": "Bearer s3cret"}, ["s3cret"]), check_api_key({}, ["s3cret"])
    (True, False)
    """
    if not keys:
        return True
    auth = headers.get("authorization") or ""
    given = auth[7:].strip() if auth[:7].lower() == "bearer " else (headers.get("x-api-key") or "")
    given_b = given.encode("utf-8", "surrogateescape")
    ok = False
    for key in keys:
        ok |= hmac.compare_digest(given_b, key.encode("utf-8"))
    return ok


class Metrics:
    """Prometheus metrics in a registry of their own."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "unirank_requests", "HTTP requests", ["route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "unirank_request_seconds",
            "request latency",
            ["route"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.in_flight = Gauge("unirank_in_flight_requests", "requests being served", registry=self.registry)
        self.batch_docs = Histogram(
            "unirank_batch_documents",
            "documents per merged batch",
            ["model"],
            registry=self.registry,
            buckets=(1, 4, 16, 32, 64, 128, 256, 512, 1024, 4096),
        )
        self.batch_requests = Histogram(
            "unirank_batch_requests",
            "requests merged per batch",
            ["model"],
            registry=self.registry,
            buckets=(1, 2, 4, 8, 16, 32, 64),
        )
        self.batch_seconds = Histogram(
            "unirank_batch_seconds", "model time per batch", ["model"], registry=self.registry
        )
        self.queue_depth = Gauge("unirank_queue_depth", "requests waiting", ["model"], registry=self.registry)
        self.rejected = Counter(
            "unirank_rejected", "requests refused by a limit", ["reason"], registry=self.registry
        )

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _TooLarge(Exception):
    pass


def guard_middleware(app: Any, config: ServeConfig, metrics: Metrics) -> Any:
    """Wrap an ASGI app: refuse bodies over ``max_body_bytes`` (413) and record request metrics."""

    async def send_json(send: Any, status: int, body: dict[str, Any]) -> None:
        raw = json.dumps(body).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": raw})

    async def guarded(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        path = scope.get("path", "")
        route = path if path in KNOWN_ROUTES else "other"
        status_box = {"status": 500, "started": False}
        limit = config.max_body_bytes
        too_large = error_body(f"request body exceeds {limit} bytes", "payload_too_large")

        async def send_wrapped(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status_box["status"], status_box["started"] = message["status"], True
            await send(message)

        received = 0

        async def receive_limited() -> dict[str, Any]:
            nonlocal received
            message: dict[str, Any] = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    from fastapi import HTTPException

                    metrics.rejected.labels("body_size").inc()
                    raise HTTPException(413, too_large["message"])  # FastAPI re-raises it to our handler
            return message

        t0 = time.perf_counter()
        metrics.in_flight.inc()
        try:
            length = dict(scope.get("headers") or []).get(b"content-length")
            if length is not None and (not length.isdigit() or int(length) > limit):
                metrics.rejected.labels("body_size").inc()
                await send_json(send_wrapped, 413, too_large)
                return
            try:
                await app(scope, receive_limited, send_wrapped)
            except _TooLarge:  # pragma: no cover - a route that streams the body itself
                if not status_box["started"]:
                    await send_json(send_wrapped, 413, too_large)
        finally:
            metrics.in_flight.dec()
            metrics.requests.labels(route, str(status_box["status"])).inc()
            metrics.latency.labels(route).observe(time.perf_counter() - t0)

    return guarded
