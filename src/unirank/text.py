"""Token-accurate truncation and passage splitting for long documents.

A model sees at most ``max_length`` tokens. Two ways to deal with a longer document:

- **truncate** (the default everywhere): keep the first tokens; cheap, but anything relevant past the limit
  is invisible to the model;
- **split** into passages of a fixed token size (with overlap) and aggregate the passage scores
  (``max`` = MaxP, ``first`` = FirstP, ``sum``, ``mean``), which finds a relevant passage anywhere.

Passages are sliced from the *original text* by the tokenizer's character offsets, so no text is altered
by a decode round trip. Without a tokenizer, whitespace words stand in for tokens.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, Protocol

__all__ = ["safe_prefix", "split_token_passages", "split_words", "truncate_tokens", "whitespace_slices"]

_WS = re.compile(r"\S+")

# A tokenizer never needs more characters than this per token to produce a token, for text cut at a
# whitespace boundary; if a prefix of this size still gives too few tokens we fall back to the whole text.
_CHARS_PER_TOKEN_BOUND = 32


class _FastTokenizer(Protocol):
    def __call__(self, text: str, **kwargs: Any) -> Any: ...


def split_words(text: str, size: int, overlap: int = 0, max_passages: int | None = None) -> list[str]:
    """Split ``text`` into passages of ``size`` whitespace words, ``overlap`` words shared.

    >>> split_words("a b c d e", 2, 0)
    ['a b', 'c d', 'e']
    >>> split_words("a b c d e", 3, 1)
    ['a b c', 'c d e']
    """
    if size < 1:
        raise ValueError("passage size must be >= 1")
    if not 0 <= overlap < size:
        raise ValueError("passage overlap must be >= 0 and smaller than the passage size")
    spans = [m.span() for m in _WS.finditer(text)]
    if not spans:
        return [text] if text else [""]
    return [text[spans[a][0] : spans[b - 1][1]] for a, b in _windows(len(spans), size, overlap, max_passages)]


def _windows(n: int, size: int, overlap: int, max_passages: int | None) -> list[tuple[int, int]]:
    step = size - overlap
    out: list[tuple[int, int]] = []
    start = 0
    while True:
        end = min(start + size, n)
        out.append((start, end))
        if end >= n or (max_passages is not None and len(out) >= max_passages):
            return out
        start += step


def safe_prefix(text: str, max_tokens: int) -> str:
    """A whitespace-aligned prefix of ``text`` long enough to hold ``max_tokens`` tokens in practice.

    Tokenising a 5 MB document to keep its first 512 tokens wastes seconds; this cuts the text first.
    Callers must check that the prefix really produced ``max_tokens`` tokens (see :func:`truncate_tokens`).

    >>> safe_prefix("short text", 512)
    'short text'
    """
    limit = max(max_tokens, 1) * _CHARS_PER_TOKEN_BOUND
    if len(text) <= limit:
        return text
    cut = text.rfind(" ", 0, limit)
    return text[: cut if cut > limit // 2 else limit]


def _word_spans(tokenizer: _FastTokenizer, text: str) -> list[tuple[int, int, int]]:
    """``(char_start, char_end, n_tokens)`` of each pre-tokenised word of ``text``.

    Slices made of whole words re-tokenise to exactly the tokens they had in the full text, which a cut in
    the middle of a word (``"knead"`` -> ``"k" "##nea" "##d"``) would not.
    """
    enc = tokenizer(
        text, add_special_tokens=False, return_offsets_mapping=True, truncation=False, verbose=False
    )
    offsets = enc["offset_mapping"]
    try:
        word_ids = enc.word_ids()
    except (AttributeError, ValueError):  # slow tokenizers: one token = one word
        word_ids = list(range(len(offsets)))
    spans: list[list[int]] = []
    last = None
    for (a, b), w in zip(offsets, word_ids):
        # a token at a whitespace boundary starts a word even when the tokenizer reports one "word" for the
        # whole text (SentencePiece-style normalizers that turn spaces into "▁" before pre-tokenizing: Gemma)
        at_space = a > 0 and (text[a - 1].isspace() or text[a : a + 1].isspace())
        if w is not None and w == last and spans and not at_space:
            spans[-1][1] = b
            spans[-1][2] += 1
        else:
            spans.append([a, b, 1])
        last = w
    return [(a, b, n) for a, b, n in spans]


def _pack(
    words: list[tuple[int, int, int]], size: int, overlap: int, limit: int | None
) -> list[tuple[int, int]]:
    """Greedy windows of whole words with at most ``size`` tokens (a longer word stands alone)."""
    out: list[tuple[int, int]] = []
    i = 0
    while i < len(words):
        j, used = i, 0
        while j < len(words) and (j == i or used + words[j][2] <= size):
            used += words[j][2]
            j += 1
        out.append((i, j))
        if j >= len(words) or (limit is not None and len(out) >= limit):
            break
        back, k = 0, j
        while k - 1 > i and back + words[k - 1][2] <= overlap:
            back += words[k - 1][2]
            k -= 1
        i = k
    return out


def _count(words: list[tuple[int, int, int]]) -> int:
    return sum(w[2] for w in words)


def truncate_tokens(tokenizer: _FastTokenizer, text: str, max_tokens: int) -> str:
    """The longest prefix of ``text`` made of whole words and at most ``max_tokens`` tokens.

    Token-accurate: computed from the tokenizer's own word boundaries and offsets, not a word-count estimate.
    """
    prefix = safe_prefix(text, max_tokens)
    words = _word_spans(tokenizer, prefix)
    if _count(words) < max_tokens and len(prefix) < len(text):
        words = _word_spans(tokenizer, text)
    used = 0
    end = 0
    for _, b, n in words:
        if used + n > max_tokens:
            break
        used += n
        end = b
    return text[:end]


def split_token_passages(
    tokenizer: _FastTokenizer,
    text: str,
    size: int,
    overlap: int = 0,
    max_passages: int | None = None,
) -> list[str]:
    """Split ``text`` into passages of at most ``size`` tokens (about ``overlap`` shared), whole words only.

    Passages are sliced from the original text. At most ``max_passages`` are returned (the document's head);
    only the text those passages need is tokenised, so a multi-megabyte document costs what its first
    passages cost.
    """
    if size < 1:
        raise ValueError("passage size must be >= 1")
    if not 0 <= overlap < size:
        raise ValueError("passage overlap must be >= 0 and smaller than the passage size")
    if not text:
        return [""]
    needed = size + (size - overlap) * ((max_passages or 1 << 30) - 1)
    prefix = safe_prefix(text, needed) if max_passages is not None else text
    words = _word_spans(tokenizer, prefix)
    if _count(words) < needed and len(prefix) < len(text):
        words = _word_spans(tokenizer, text)
    if not words:
        return [text]
    return [text[words[a][0] : words[b - 1][1]] for a, b in _pack(words, size, overlap, max_passages)]


_SPACE = re.compile(r"\s")


def whitespace_slices(text: str, size: int = 1 << 18) -> Iterator[str]:
    """``text`` in pieces of about ``size`` characters, each cut after whitespace (words stay whole), so that
    no single C call over a multi-megabyte document holds the GIL for long (a server's event loop shares it).

    >>> list(whitespace_slices("one two three", size=2))
    ['one ', 'two ', 'three']
    """
    start = 0
    while start < len(text):
        space = _SPACE.search(text, start + size)
        end = space.end() if space else len(text)
        yield text[start:end]
        start = end
