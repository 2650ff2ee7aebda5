"""Running the app with uvicorn, with slow clients timed out on the server's side.

uvicorn closes an idle keep-alive connection after ``timeout_keep_alive``, but only once a response has
been sent, and any byte received stops that clock; it has no limit on reading a request's headers. So a
client that opens a connection and sends nothing, or sends its headers a byte every few seconds
("slowloris"), would hold a connection forever. :class:`HeaderDeadline` adds that limit to uvicorn's
HTTP/1.1 protocol: from the moment a connection opens, or its previous response ends, the client has
``header_timeout`` seconds to complete a request's headers, or the connection is closed. (The body is the
app's side: see :mod:`unirank.serve.guard`.)

>>> from unirank.serve import create_app, ServeConfig
>>> cfg = uvicorn_config(create_app("bm25"), ServeConfig(header_timeout=5), port=0)
>>> cfg.timeout_keep_alive, cfg.http.header_timeout
(5.0, 5.0)
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ..errors import require
from .limits import ServeConfig

__all__ = ["HeaderDeadline", "guarded_protocol", "uvicorn_config"]

logger = logging.getLogger(__name__)


class HeaderDeadline:
    """Mixin over a uvicorn HTTP/1.1 protocol class (``H11Protocol`` or ``HttpToolsProtocol``).

    Both keep the request being served in ``self.cycle`` (``None`` before the first request) and call
    ``on_response_complete`` after each response; a request is being served (its headers are complete)
    when ``cycle`` is set and its response is not complete.
    """

    header_timeout: float = 10.0
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._arm_header_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        self._arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        super().connection_lost(exc)  # type: ignore[misc]

    def _arm_header_deadline(self) -> None:
        transport = getattr(self, "transport", None)
        if transport is None or transport.is_closing():
            return
        if self._header_timer is not None:
            self._header_timer.cancel()
        loop = asyncio.get_running_loop()
        self._header_timer = loop.call_later(self.header_timeout, self._header_deadline_passed)

    def _header_deadline_passed(self) -> None:
        self._header_timer = None
        cycle = getattr(self, "cycle", None)
        if cycle is not None and not cycle.response_complete:
            return  # headers arrived: the request is being served (its body has the app's own limit)
        transport = getattr(self, "transport", None)
        if transport is not None and not transport.is_closing():
            logger.info("closing a connection: no complete request headers within %gs", self.header_timeout)
            transport.close()


def guarded_protocol(header_timeout: float) -> type:
    """uvicorn's HTTP/1.1 protocol class (httptools if installed, else h11) with :class:`HeaderDeadline`."""
    require("uvicorn", "server")
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    return type(
        f"Guarded{AutoHTTPProtocol.__name__}",
        (HeaderDeadline, AutoHTTPProtocol),
        {"header_timeout": float(header_timeout)},
    )


def uvicorn_config(
    app: Any,
    config: ServeConfig | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "info",
    graceful_timeout: float | None = 30.0,
    **options: Any,
) -> Any:
    """A ``uvicorn.Config`` serving ``app`` with ``config``'s header and keep-alive timeouts applied.

    ``config`` defaults to the app's own (``app.state.config``, set by :func:`~unirank.serve.create_app`).
    ``options`` go to ``uvicorn.Config`` (``root_path``, ``ssl_certfile``, ``ssl_keyfile``, ``log_config``,
    ...); the app writes its own access lines (with the request id), so uvicorn's are off.
    """
    uvicorn = require("uvicorn", "server")
    cfg = config or getattr(getattr(app, "state", None), "config", None) or ServeConfig()
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        http=guarded_protocol(cfg.header_timeout),
        timeout_keep_alive=cfg.keep_alive_timeout,  # type: ignore[arg-type]  # seconds; a float works
        timeout_graceful_shutdown=graceful_timeout,  # type: ignore[arg-type]
        **{"access_log": False, **options},
    )
