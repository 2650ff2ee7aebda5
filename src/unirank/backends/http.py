"""Retry policy shared by every HTTP client in unirank (hosted re-rank APIs, OpenAI-compatible servers).

Transient answers (:data:`RETRY_STATUS`) and transport errors are retried with exponential backoff and jitter;
a ``Retry-After`` header (seconds or an HTTP date) replaces the backoff, capped at ``max_backoff``.
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from typing import Any
from urllib.parse import urlsplit

__all__ = ["RETRY_STATUS", "backoff_delay", "check_base_url", "retry_after_seconds", "served_models"]

#: HTTP statuses worth retrying: timeouts, conflicts/too-early, rate limits and server errors.
RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date); ``None`` if absent/bad.

    >>> retry_after_seconds("1.5"), retry_after_seconds(None), retry_after_seconds("soon")
    (1.5, None, None)
    """
    if not value:
        return None
    try:
        wait = float(value)
    except ValueError:
        try:
            wait = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return max(0.0, wait) if math.isfinite(wait) else None


def backoff_delay(attempt: int, backoff: float, max_backoff: float, retry_after: str | None = None) -> float:
    """Delay before retry ``attempt + 1``: the server's ``Retry-After`` if sent, else jittered exponential.

    >>> backoff_delay(0, 0.5, 30.0, retry_after="2")
    2.0
    >>> 0.25 <= backoff_delay(0, 0.5, 30.0) <= 0.5
    True
    """
    hinted = retry_after_seconds(retry_after)
    if hinted is not None:
        return min(hinted, max_backoff)
    return min(backoff * 2**attempt * (0.5 + random.random() / 2), max_backoff)


def check_base_url(url: str) -> str | None:
    """Why ``url`` cannot be requested (``None`` when it can): it needs an ``http://`` / ``https://`` scheme
    and a host. No retry can fix these, so clients raise at once.

    >>> check_base_url("http://127.0.0.1:8000/v1") is None
    True
    >>> check_base_url("127.0.0.1:8000/v1")
    "base_url '127.0.0.1:8000/v1' has no http:// or https:// scheme (try 'http://127.0.0.1:8000/v1')"
    """
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        if "://" in url:
            return f"base_url {url!r}: unsupported protocol {parts.scheme!r} (expected http:// or https://)"
        return f"base_url {url!r} has no http:// or https:// scheme (try 'http://{url}')"
    return None


def served_models(data: Any) -> list[str] | None:
    """The model names in a ``GET /models`` answer (OpenAI ``{"data": [{"id": ...}]}``, Ollama
    ``{"models": [{"name": ...}]}``); ``None`` when the answer lists none (the route is then unusable).

    >>> served_models({"data": [{"id": "a"}, {"id": "b"}]}), served_models({"oops": 1})
    (['a', 'b'], None)
    """
    if not isinstance(data, dict):
        return None
    names: list[str] = []
    for key, field in (("data", "id"), ("models", "name"), ("models", "model")):
        items = data.get(key)
        if isinstance(items, list):
            names += [str(x[field]) for x in items if isinstance(x, dict) and isinstance(x.get(field), str)]
    return sorted(set(names)) or None
