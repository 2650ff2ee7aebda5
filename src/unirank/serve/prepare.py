"""Per-document request work, done off the event loop and in bounded slices.

Everything here runs in a worker thread (``asyncio.to_thread``), never on the event loop, and walks long
texts in slices of :data:`SLICE` characters: CPython switches threads only between bytecodes, so one C call
over a 9 MB string (``str.split``, ``re.findall``) would hold the GIL — and stall ``/health`` — for its
whole duration; a slice costs a few milliseconds.

>>> first_words("  rain  falls\\nfrom clouds ", 3), word_count("  rain  falls\\nfrom clouds ")
('rain falls from', 4)
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from ..text import whitespace_slices

__all__ = [
    "SLICE",
    "cohere_texts",
    "first_words",
    "has_surrogate_escape",
    "head_tokens",
    "render_json",
    "word_count",
]

SLICE = 1 << 18  # characters per step over a long text (~1-3 ms of C work each)

_WORD = re.compile(r"\S+")
# A JSON \uD800-\uDFFF escape; a valid pair matches too, so this is only a cheap pre-filter.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def first_words(text: str, n: int) -> str:
    """The first ``n`` whitespace-separated words of ``text``, joined by single spaces."""
    parts: list[str] = []  # each slice's words joined on their own: no single join over a million words
    left = n
    for piece in whitespace_slices(text, SLICE):
        words = _WORD.findall(piece)[:left]
        if words:
            parts.append(" ".join(words))
        left -= len(words)
        if left <= 0:
            break
    return " ".join(parts)


def word_count(text: str) -> int:
    """Whitespace-separated words in ``text`` (the ``usage`` figure of the Jina body)."""
    return sum(len(piece.split()) for piece in whitespace_slices(text, SLICE))


def cohere_texts(
    documents: Sequence[str | dict[str, Any]],
    rank_fields: Sequence[str] | None,
    max_tokens: int | None,
    tokenizer: Any,
) -> list[str]:
    """The text of each Cohere / Jina document, cut to ``max_tokens`` (already capped at the model window).

    Raises :class:`ValueError` (HTTP 422) for an object document without a usable text.
    """
    fast = getattr(tokenizer, "is_fast", False)
    out = []
    for i, doc in enumerate(documents):
        if isinstance(doc, str):
            text = doc
        elif rank_fields:
            text = "\n".join(f"{k}: {doc[k]}" for k in rank_fields if k in doc)
        elif isinstance(doc.get("text"), str):
            text = doc["text"]
        else:
            raise ValueError(f"documents[{i}] has no string 'text' field (or set rank_fields)")
        if max_tokens:
            text = head_tokens(tokenizer, text, max_tokens) if fast else first_words(text, max_tokens)
        out.append(text)
    return out


def head_tokens(tokenizer: Any, text: str, n: int) -> str:
    """``truncate_tokens(tokenizer, text, n)``, tokenising only a growing whitespace-aligned head of the text.

    If the words of a head do not all fit in ``n`` tokens, the cut fell inside it and equals the cut of
    the whole text; otherwise the head doubles. A 9 MB document costs what its first few kB cost.
    """
    from ..text import truncate_tokens

    size = 16 * n + 64
    while size < len(text):
        cut = text.rfind(" ", 0, size)
        head = text[: cut if cut > 0 else size]
        got = truncate_tokens(tokenizer, head, n)
        if len(got) < len(head.rstrip()):
            return got
        size *= 4
    return truncate_tokens(tokenizer, text, n)


def has_surrogate_escape(body: bytes) -> bool:
    """Whether a JSON body contains a ``\\uD800``-``\\uDFFF`` escape (a lone one is invalid Unicode)."""
    return _SURROGATE_ESCAPE.search(body) is not None


def render_json(content: Any) -> bytes:
    """UTF-8 JSON of a response body (inputs were checked to be valid Unicode, so this cannot fail)."""
    return json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")
