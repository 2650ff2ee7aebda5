"""Server settings, API keys and Prometheus metrics (the guard that enforces the limits is in ``guard.py``).

Keys are compared with :func:`hmac.compare_digest` against every configured key (constant time, no early
exit on the first match). Metrics live in a registry owned by the app (never the process-global one), so
several apps in one process (tests, multi-tenant) do not collide.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Metrics", "ServeConfig", "check_api_key"]

KNOWN_ROUTES = (
    "/v1/rerank",
    "/v2/rerank",
    "/jina/v1/rerank",
    "/rerank",
    "/health",
    "/info",
    "/metrics",
    "/v1/models",
    "/v1/embeddings",
    "/docs",
    "/openapi.json",
)


@dataclass
class ServeConfig:
    """Limits and behaviour of a server (the ``unirank serve`` flags).

    Slow clients: ``header_timeout`` bounds the time from a connection's first byte (or the end of its
    previous response) to the end of the request's headers, ``body_timeout`` the time to receive the whole
    body (408), ``keep_alive_timeout`` how long an idle keep-alive connection stays open.
    ``request_timeout`` bounds the work on a request once it is read (504). Header and keep-alive times are
    applied by :func:`unirank.serve.server.uvicorn_config` (the server's side); the others by the app.

    Deployment: ``aliases`` maps more model names (say ``rerank-english-v3.0``, the Cohere SDK's default) to
    served ones; ``model_details`` (name -> ``{"spec", "options"}``) is shown by ``/info/{model}``;
    ``metrics_auth=False`` serves ``/metrics`` without the API key; ``cors_origins`` enables CORS for
    those origins (``"*"``: any).
    """

    api_keys: Sequence[str] = ()
    max_documents: int = 1000
    max_body_bytes: int = 10 * 1024 * 1024
    request_timeout: float = 30.0
    max_queue: int = 256
    max_batch_docs: int = 256
    max_wait_ms: float = 5.0
    default_model: str | None = None
    header_timeout: float = 10.0
    body_timeout: float = 60.0
    keep_alive_timeout: float = 5.0
    aliases: Mapping[str, str] = field(default_factory=dict)
    model_details: Mapping[str, Mapping[str, object]] = field(default_factory=dict)
    metrics_auth: bool = True
    cors_origins: Sequence[str] = ()

    def __post_init__(self) -> None:
        for name in ("max_documents", "max_body_bytes", "max_queue", "max_batch_docs"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.request_timeout <= 0 or self.max_wait_ms < 0:
            raise ValueError("request_timeout must be > 0 and max_wait_ms >= 0")
        for name in ("header_timeout", "body_timeout", "keep_alive_timeout"):
            if not float(getattr(self, name)) > 0:
                raise ValueError(f"{name} must be > 0 seconds")
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
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)  # process_cpu_seconds_total, process_resident_memory_bytes
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
