"""Prompt token ids for the LLM re-rankers, fitted to the context: one prompt at a time
(:func:`fit_text`) or all prompts of a call from ONE batched tokenizer call (:func:`fit_texts`,
:func:`encode_texts`, :func:`truncate_texts`), with the same result.

>>> class Words:  # a stand-in engine: one token per whitespace word
...     max_length = 4
...     def encode(self, text, special=True):
...         return [len(w) for w in text.split()]
>>> fit_texts(Words(), [lambda d: "Q: " + d], ["a b"])
[('a b', [2, 1, 1])]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["encode_texts", "fit_document", "fit_text", "fit_texts", "truncate_texts", "window_prompts"]


def encode_texts(engine: Any, texts: Sequence[str], special: bool = True) -> list[list[int]]:
    """``[engine.encode(t, special) for t in texts]``, from one batched call when the engine has
    ``encode_many`` (:meth:`unirank.backends.causal_lm.CausalLM.encode_many`)."""
    many = getattr(engine, "encode_many", None)
    if callable(many):
        return many(list(texts), special)  # type: ignore[no-any-return]
    return [engine.encode(t, special) for t in texts]


def fit_document(engine: Any, render: Any, doc: str, reserve: int = 0, what: str = "prompt") -> list[int]:
    """Token ids of ``render(doc)``, the document cut (token-accurately) so the prompt plus ``reserve`` tokens
    fit the context. Raises ``ValueError`` naming the limit when not even an empty document fits."""
    return fit_text(engine, render, doc, reserve, what)[1]


def fit_text(
    engine: Any, render: Any, doc: str, reserve: int = 0, what: str = "prompt"
) -> tuple[str, list[int]]:
    """:func:`fit_document` that also returns the document text kept (a server is sent ``render(text)``)."""
    from ..text import truncate_tokens

    limit = engine.max_length - reserve
    ids = engine.encode(render(doc))
    if len(ids) <= limit:
        return doc, ids
    overhead = len(engine.encode(render("")))
    budget = limit - overhead
    for _ in range(4):
        if budget < 1:
            raise ValueError(
                f"the context limit of {engine.max_length} tokens is too small for this {what}: it needs "
                f"{overhead + reserve} tokens before any document text"
            )
        kept = truncate_tokens(engine.tokenizer, doc, budget)
        ids = engine.encode(render(kept))
        if len(ids) <= limit:
            return kept, ids
        budget -= len(ids) - limit
    raise ValueError(f"could not fit the document into {limit} tokens")


def fit_texts(
    engine: Any,
    renders: Sequence[Callable[[str], str]],
    docs: Sequence[str],
    reserves: Sequence[int] | None = None,
    what: str = "prompt",
) -> list[tuple[str, list[int]]]:
    """``[fit_text(engine, r, d, reserve) ...]`` for many prompts: every ``render(doc)`` tokenised in one
    batched call; only a prompt over the context goes through :func:`fit_text`'s cutting loop."""
    res = list(reserves) if reserves is not None else [0] * len(docs)
    ids = encode_texts(engine, [r(d) for r, d in zip(renders, docs)])
    return [
        (d, x) if len(x) <= engine.max_length - k else fit_text(engine, r, d, k, what)
        for r, d, x, k in zip(renders, docs, ids, res)
    ]


def _cut_end(text: str, offsets: Sequence[tuple[int, int]], word_ids: Sequence[Any], budget: int) -> int:
    """Where :func:`unirank.text.truncate_tokens` cuts ``text`` (whole words, at most ``budget`` tokens),
    from the token offsets and word ids of its encoding (the word rule of ``unirank.text._word_spans``)."""
    used, end, last = 0, 0, None
    span_n, span_b = 0, 0
    for (a, b), w in zip(offsets, word_ids):
        at_space = a > 0 and (text[a - 1].isspace() or text[a : a + 1].isspace())
        if w is not None and w == last and span_n and not at_space:
            span_n, span_b = span_n + 1, b
        else:
            if span_n:  # close the previous word
                if used + span_n > budget:
                    return end
                used, end = used + span_n, span_b
            span_n, span_b = 1, b
        last = w
    if span_n and used + span_n <= budget:
        end = span_b
    return end


def truncate_texts(tokenizer: Any, texts: Sequence[str], max_tokens: int) -> list[str]:
    """``[truncate_tokens(tokenizer, t, max_tokens) for t in texts]`` from one batched fast-tokenizer call
    (a text whose cut prefix holds too few tokens, or a slow tokenizer: one call per text, as before)."""
    from ..text import safe_prefix, truncate_tokens

    if not texts:
        return []
    if not getattr(tokenizer, "is_fast", False):
        return [truncate_tokens(tokenizer, t, max_tokens) for t in texts]
    prefixes = [safe_prefix(t, max_tokens) for t in texts]
    enc = tokenizer(
        prefixes, add_special_tokens=False, return_offsets_mapping=True, truncation=False, verbose=False
    )
    out = []
    for i, (t, p) in enumerate(zip(texts, prefixes)):
        offsets = enc["offset_mapping"][i]
        if len(offsets) < max_tokens and len(p) < len(t):  # the safe prefix came out short
            out.append(truncate_tokens(tokenizer, t, max_tokens))
            continue
        out.append(t[: _cut_end(p, offsets, enc.word_ids(i), max_tokens)])
    return out


def window_prompts(
    window: Any, queries: Sequence[str], windows: Sequence[Sequence[Any]], reserve: int, prefix: str
) -> list[list[int]]:
    """``[window.local_prompt(q, docs, reserve, prefix) ...]`` (a listwise window ranker's prompts on a local
    engine, :class:`unirank.methods.llm_listwise._Window`) with the tokenizer called once for all the
    windows' empty prompts, once per document budget for the cut documents, and once for the prompts; a
    window whose prompt is over the context goes through ``local_prompt``'s own loop."""
    from ..prompts import identifiers, messages_to_text, render_listwise

    e, tok = window.engine, window.engine.tokenizer
    limit = e.max_length - reserve

    def text(q: str, passages: list[str]) -> str:
        labels = identifiers(len(passages), window.style)
        return messages_to_text(render_listwise(window.prompt, q, passages, labels), tok, prefix)

    overhead = encode_texts(e, [text(q, [""] * len(w)) for q, w in zip(queries, windows)])
    budgets = [
        min(window.max_doc_tokens, (limit - len(o)) // max(len(w), 1)) for o, w in zip(overhead, windows)
    ]
    cut: dict[int, list[str]] = {}
    for b in sorted({b for b in budgets if b >= 1}):
        texts = [d.text for w, bw in zip(windows, budgets) if bw == b for d in w]
        cut[b] = truncate_texts(tok, texts, b)
    at = dict.fromkeys(cut, 0)
    first: list[str | None] = []
    for q, w, b in zip(queries, windows, budgets):
        if b < 1:
            first.append(None)
            continue
        first.append(text(q, cut[b][at[b] : at[b] + len(w)]))
        at[b] += len(w)
    ids = encode_texts(e, [t for t in first if t is not None])
    out, k = [], 0
    for q, w, t in zip(queries, windows, first):
        x = ids[k] if t is not None else None
        k += t is not None
        out.append(
            x if x is not None and len(x) <= limit else window.local_prompt(q, list(w), reserve, prefix)
        )
    return out
