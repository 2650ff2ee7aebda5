"""Usage and cost of the LLM rankers: ``ranker.usage`` (what was spent) and ``ranker.estimate(...)`` (what a
run will spend, before it starts).

``usage`` is the engine's :class:`~unirank.backends.usage.Usage`: calls and prompt / completion tokens summed
from a server's ``usage`` answers, or counted by the tokenizer on a local engine (rankers sharing an engine
share its counter; ``usage.copy()`` before and subtract after to measure one run).

``estimate(num_queries=, depth=)`` dry-runs the ranker's own strategy on ``depth`` placeholder documents with
a window ranker that keeps every window's order (no model is called), so the counts follow the strategy's
real plan (window, stride, passes, blocks...); adaptive sorts (setwise / pairwise heapsort, bubblesort,
``passes=None``) vary with the model's answers, and the estimate is their count for an answer that keeps the
input order. Prompt tokens are the prompt's own tokens (with the engine's tokenizer when it has one, else
characters / 4) plus ``query_tokens`` and ``doc_tokens`` per document (default: the per-document budget, an
upper bound).
"""

from __future__ import annotations

import copy
from typing import Any

from ..backends.usage import Usage
from ..types import Document

__all__ = ["LLMCostMixin", "estimate_listwise", "estimate_pointwise"]


class _CountingWindow:
    """A window ranker that keeps the input order and calls no model (for dry runs)."""

    def __init__(self, window_size: int) -> None:
        self.window_size = window_size

    def rank_window(self, query: str, docs: list[Document]) -> list[int]:
        return list(range(len(docs)))

    async def arank_window(self, query: str, docs: list[Document]) -> list[int]:
        return list(range(len(docs)))


def _count_tokens(engine: Any, text: str) -> int:
    tok = getattr(engine, "tokenizer", None)
    if tok is None:
        return max(1, len(text) // 4)
    return len(tok(text, add_special_tokens=True)["input_ids"])


def _result(calls: int, prompt: int, completion: int, num_queries: int, **extra: Any) -> dict[str, Any]:
    out = {"calls": calls, "prompt_tokens": prompt, "completion_tokens": completion}
    out.update(total_tokens=prompt + completion, calls_per_query=calls / max(num_queries, 1), **extra)
    return out


def estimate_listwise(
    ranker: Any, num_queries: int, depth: int, doc_tokens: int | None = None, query_tokens: int = 16
) -> dict[str, Any]:
    """Calls, rounds and tokens of ``ranker`` (an ``LLMListwiseRanker``) over ``num_queries`` x ``depth``."""
    from .llm_server import server_text

    win = ranker.window
    strat = copy.copy(ranker.strategy)
    strat.window_ranker = _CountingWindow(win.window_size)
    docs = [Document("", str(i)) for i in range(depth)]
    strat.rank_many(["q"], [docs])
    st = strat.last_stats
    calls, shown = int(st["calls"]) * num_queries, int(st["window_docs"]) * num_queries
    per_doc = win.max_doc_tokens if doc_tokens is None else min(doc_tokens, win.max_doc_tokens)
    size = min(win.window_size, max(depth, 1))
    prefix = "[" if type(win).__name__ == "FirstWindow" or getattr(win, "assistant_prefix", "") else ""
    empty = server_text(ranker.engine, win.messages("", docs[:size], 1), prefix)  # the prompt, no text
    overhead = _count_tokens(ranker.engine, empty) + query_tokens
    prompt = calls * overhead + shown * per_doc
    new = win._new_tokens(size) if hasattr(win, "_new_tokens") else 1
    return _result(calls, prompt, calls * new, num_queries, rounds=int(st["rounds"]))  # per query


def estimate_pointwise(
    ranker: Any, num_queries: int, depth: int, doc_tokens: int | None = None, query_tokens: int = 16
) -> dict[str, Any]:
    """Calls and tokens of ``ranker`` (an ``LLMPointwiseRanker``): one call per (query, document)."""
    calls = num_queries * depth
    overhead = _count_tokens(ranker.engine, ranker.prompt.render("", "")) + query_tokens
    per_doc = doc_tokens if doc_tokens is not None else int(getattr(ranker, "max_doc_words", 300) * 1.3)
    completion = 0 if ranker.mode == "likelihood" else calls
    return _result(calls, calls * (overhead + per_doc), completion, num_queries)


class LLMCostMixin:
    """``usage`` and ``estimate`` for the LLM rankers (see the module docstring)."""

    engine: Any

    @property
    def usage(self) -> Usage:
        """Calls and tokens spent so far by this ranker's engine (:class:`~unirank.backends.usage.Usage`)."""
        got = getattr(self.engine, "usage", None)
        return got if isinstance(got, Usage) else Usage()

    def estimate(
        self, *, num_queries: int = 1, depth: int = 100, doc_tokens: int | None = None, query_tokens: int = 16
    ) -> dict[str, Any]:
        """Model calls and tokens a run over ``num_queries`` queries of ``depth`` candidates will take,
        before it starts: ``calls``, ``prompt_tokens``, ``completion_tokens``, ``total_tokens``,
        ``calls_per_query`` (and, for listwise strategies, ``rounds``: sequential rounds per query).

        >>> from unirank import Reranker                                          # doctest: +SKIP
        >>> r = Reranker("llm-listwise:openai:m", base_url=url, method="first", stride=10)  # doctest: +SKIP
        >>> r.estimate(num_queries=43, depth=100)["calls"]                        # doctest: +SKIP
        387
        """
        if num_queries < 0 or depth < 0:
            raise ValueError("num_queries and depth must be >= 0")
        fn = estimate_listwise if hasattr(self, "window") else estimate_pointwise
        return fn(self, num_queries, depth, doc_tokens, query_tokens)
