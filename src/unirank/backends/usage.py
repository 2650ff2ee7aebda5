"""Usage counters shared by every LLM engine: model calls and prompt / completion tokens.

Server engines sum the ``usage`` object each answer carries (and count a call even when a server sends none:
``calls_without_usage`` says how many); local engines count the tokens they feed and generate with their
tokenizer. A ranker's ``usage`` property is its engine's counter (engines shared by several rankers share it).

>>> u = Usage()
>>> u.add(prompt_tokens=120, completion_tokens=1)
>>> u.add(prompt_tokens=80, completion_tokens=3)
>>> u.calls, u.prompt_tokens, u.completion_tokens, u.total_tokens
(2, 200, 4, 204)
>>> (u - Usage(calls=1, prompt_tokens=120, completion_tokens=1)).as_dict()["prompt_tokens"]
80
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Usage"]


@dataclass
class Usage:
    """Running totals of model calls and tokens; thread-safe :meth:`add`.

    ``calls_without_usage``: server answers that carried no ``usage`` object (their tokens are not in the
    totals, so the totals are then a lower bound).
    """

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls_without_usage: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def add(self, prompt_tokens: int = 0, completion_tokens: int = 0, calls: int = 1) -> None:
        """Count ``calls`` model calls with these token counts."""
        with self._lock:
            self.calls += calls
            self.prompt_tokens += int(prompt_tokens)
            self.completion_tokens += int(completion_tokens)

    def add_server(self, usage: Any) -> None:
        """Count one server answer from its ``usage`` object (``prompt_tokens`` / ``completion_tokens``);
        an answer without one counts as a call in ``calls_without_usage``.

        >>> u = Usage(); u.add_server({"prompt_tokens": 5, "completion_tokens": 2}); u.add_server(None)
        >>> u.calls, u.prompt_tokens, u.calls_without_usage
        (2, 5, 1)
        """
        if isinstance(usage, dict) and isinstance(usage.get("prompt_tokens"), int):
            done = usage.get("completion_tokens")
            self.add(usage["prompt_tokens"], done if isinstance(done, int) else 0)
            return
        with self._lock:
            self.calls += 1
            self.calls_without_usage += 1

    def reset(self) -> None:
        with self._lock:
            self.calls = self.prompt_tokens = self.completion_tokens = self.calls_without_usage = 0

    def copy(self) -> Usage:
        with self._lock:
            return Usage(self.calls, self.prompt_tokens, self.completion_tokens, self.calls_without_usage)

    def __sub__(self, other: Usage) -> Usage:
        """The usage between two snapshots (``after - before``)."""
        a, b = self.copy(), other.copy()
        return Usage(
            a.calls - b.calls,
            a.prompt_tokens - b.prompt_tokens,
            a.completion_tokens - b.completion_tokens,
            a.calls_without_usage - b.calls_without_usage,
        )

    def as_dict(self) -> dict[str, int]:
        """JSON-ready totals (``total_tokens`` included)."""
        c = self.copy()
        return {
            "calls": c.calls,
            "prompt_tokens": c.prompt_tokens,
            "completion_tokens": c.completion_tokens,
            "total_tokens": c.total_tokens,
            "calls_without_usage": c.calls_without_usage,
        }
