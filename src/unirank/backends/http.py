"""Retry policy shared by every HTTP client in unirank (hosted re-rank APIs, OpenAI-compatible servers).

Transient answers (:data:`RETRY_STATUS`) and transport errors are retried with exponential backoff and jitter;
a ``Retry-After`` header (seconds or an HTTP date) replaces the backoff, capped at ``max_backoff``.
"""

from __future__ import annotations

import email.utils
import math
import random
import time

__all__ = ["RETRY_STATUS", "backoff_delay", "retry_after_seconds"]

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
