"""Request ids and logs: an ``X-Request-ID`` on every response, JSON log lines that carry it.

:func:`request_id_middleware` takes the client's ``X-Request-ID`` when it is a sane token (at most 128
characters of letters, digits and ``-_.:``), else makes one (a uuid4 hex), echoes it on the response, keeps
it in :data:`request_id` for the request's log records and writes one access line per request on the
``unirank.serve.access`` logger. :func:`log_config` is a ``logging.config.dictConfig`` dict (also given to
uvicorn) that writes text or JSON lines with the request id.

>>> import json, logging
>>> rec = logging.LogRecord("unirank", logging.INFO, __file__, 1, "hello %s", ("you",), None)
>>> rec.request_id = "abc"
>>> json.loads(JsonFormatter().format(rec))["message"], json.loads(JsonFormatter().format(rec))["request_id"]
('hello you', 'abc')
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import time
import uuid
from datetime import datetime, timezone
from typing import Any

__all__ = [
    "JsonFormatter",
    "RequestIdFilter",
    "RequestIdMiddleware",
    "log_config",
    "request_id",
    "request_id_middleware",
]

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("unirank_request_id", default="-")
_SANE = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
access_logger = logging.getLogger("unirank.serve.access")


class RequestIdFilter(logging.Filter):
    """Adds ``record.request_id`` (the current request's id, ``-`` outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id, ``http`` fields, exception."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", request_id.get()),
        }
        http = getattr(record, "http", None)
        if isinstance(http, dict):
            out.update(http)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def log_config(fmt: str = "text", level: str = "info") -> dict[str, Any]:
    """A ``dictConfig`` for the server's process: ``fmt`` ``"text"`` or ``"json"``; uvicorn's loggers too.

    >>> log_config("json")["formatters"]["default"]["()"].endswith("JsonFormatter")
    True
    """
    if fmt not in ("text", "json"):
        raise ValueError(f"log format {fmt!r}; expected 'text' or 'json'")
    formatter: dict[str, Any] = (
        {"()": f"{__name__}.JsonFormatter"}
        if fmt == "json"
        else {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"}
    )
    lvl = level.upper()
    handler = {"class": "logging.StreamHandler", "formatter": "default", "filters": ["request_id"]}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": f"{__name__}.RequestIdFilter"}},
        "formatters": {"default": formatter},
        "handlers": {"default": handler},
        "loggers": {
            name: {"handlers": ["default"], "level": lvl, "propagate": False}
            for name in ("unirank", "uvicorn", "uvicorn.error", "uvicorn.access")
        },
    }


def request_id_middleware(app: Any) -> Any:
    """Wrap an ASGI app: request id in, out, in the logs; one access log line per HTTP request."""

    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        given = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        rid = given if _SANE.fullmatch(given) else uuid.uuid4().hex
        token = request_id.set(rid)
        status = {"code": 500}
        t0 = time.perf_counter()

        async def send_with_id(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                headers = [h for h in message.get("headers", []) if h[0].lower() != b"x-request-id"]
                message = {**message, "headers": [*headers, (b"x-request-id", rid.encode())]}
            await send(message)

        try:
            await app(scope, receive, send_with_id)
        finally:
            ms = (time.perf_counter() - t0) * 1000
            client = scope.get("client") or ("-", 0)
            access_logger.info(
                "%s %s %d %.1fms",
                scope.get("method", "-"),
                scope.get("path", "-"),
                status["code"],
                ms,
                extra={
                    "request_id": rid,
                    "http": {
                        "method": scope.get("method"),
                        "path": scope.get("path"),
                        "status": status["code"],
                        "duration_ms": round(ms, 2),
                        "client": client[0],
                    },
                },
            )
            request_id.reset(token)

    return wrapped


class RequestIdMiddleware:
    """:func:`request_id_middleware` as a class, for ``app.add_middleware(RequestIdMiddleware)``."""

    def __init__(self, app: Any) -> None:
        self._call = request_id_middleware(app)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self._call(scope, receive, send)
