"""Listwise LLM re-rankers: permutation generation (RankGPT / RankZephyr prompts) and FIRST.

Both are window rankers (:class:`unirank.strategies.base.WindowRanker`) ordering at most ``window_size``
documents; :class:`LLMListwiseRanker` runs one under an ordering strategy (``strategy="sliding"`` by default,
or ``"setwise"``, ``"pairwise"``, ``"tournament"``, ``"jointrank"``; strategy options such as ``stride`` or
``passes`` pass through).

Spec grammar: ``llm-listwise:<model>`` (local: HF id, folder, ``.gguf``, ``"gemma3-270m"``) or
``llm-listwise:openai:<server model>`` / ``base_url=...`` (see :mod:`unirank.methods.llm_pointwise`), with
options ``method="generate"|"first"``, ``prompt="rankgpt"|"rankzephyr"``, ``window_size``, ``strategy``, ...

- ``generate``: greedy generation of ``[3] > [1] > [2]``; :func:`parse_permutation` turns ANY output into
  a valid permutation (duplicates dropped, unknown ids dropped, missing ids appended in their prior order) and
  the ranker counts the windows it had to repair (``stats``).
- ``first`` (FIRST, Reddy et al. 2024): one forward pass; the window is ordered by the logits of the first
  identifier the model would write. Identifiers are letters ``A..Z`` (one token each).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..base import Capabilities, Ranker
from ..prompts import ListwisePrompt, get_prompt, identifiers, messages_to_text, render_listwise
from ..types import Document, ScoreKind
from .llm_cost import LLMCostMixin
from .llm_fit import window_prompts
from .llm_pointwise import build_engine, is_local
from .llm_server import label_mass, record_mass, server_text, trace_warning

__all__ = [
    "FirstWindow",
    "GenerationWindow",
    "LLMListwiseRanker",
    "Parsed",
    "parse_permutation",
    "strip_reasoning",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Parsed:
    """A parsed permutation and what had to be repaired."""

    order: list[int]
    unknown: int = 0
    duplicates: int = 0
    missing: int = 0

    @property
    def repaired(self) -> bool:
        return bool(self.unknown or self.duplicates or self.missing)


def parse_permutation(text: str, n: int, style: str = "numeric") -> Parsed:
    """Parse a model's ranking output into a permutation of ``range(n)`` (always valid).

    >>> parse_permutation("[2] > [3] > [2] > [9]", 3)
    Parsed(order=[1, 2, 0], unknown=1, duplicates=1, missing=1)
    >>> parse_permutation("B > A", 2, style="alpha").order
    [1, 0]
    """
    if not isinstance(text, str):
        raise TypeError(f"model output must be a str, not {type(text).__name__}")
    if style == "numeric":
        found = re.findall(r"\[\s*(\d+)\s*\]", text) or re.findall(r"(?<![\w.])(\d+)(?![\w.])", text)
        ids = [int(x) - 1 if len(x) < 6 else -1 for x in found]
    elif style == "alpha":
        found = re.findall(r"\[\s*([A-Za-z])\s*\]", text) or re.findall(
            r"(?<![A-Za-z])([A-Za-z])(?![A-Za-z])", text
        )
        ids = [ord(x.upper()) - ord("A") for x in found]
    else:
        raise ValueError(f"identifier style {style!r}; expected 'numeric' or 'alpha'")
    order: list[int] = []
    seen: set[int] = set()
    unknown = duplicates = 0
    for i in ids:
        if not 0 <= i < n:
            unknown += 1
        elif i in seen:
            duplicates += 1
        else:
            seen.add(i)
            order.append(i)
    missing = [i for i in range(n) if i not in seen]
    return Parsed(order + missing, unknown, duplicates, len(missing))


def strip_reasoning(text: str) -> str:
    """Drop ``<think>...</think>`` reasoning traces (and an unterminated one) from a model's answer, so
    passage numbers mentioned while thinking are not read as the ranking.

    >>> strip_reasoning("<think>maybe [1]</think>[2] > [1]")
    '[2] > [1]'
    >>> strip_reasoning("[3] and [1] first? </think> [2] > [1]")  # the template opened the trace
    '[2] > [1]'
    """
    from .reasoning import answer_text  # the answer after the LAST </think>; "" if never closed

    return answer_text(text)


class _Window:
    """Shared prompt building and token budgeting of the listwise window rankers."""

    style = "numeric"

    def __init__(
        self,
        engine: Any,
        *,
        prompt: Any = "rankgpt",
        window_size: int = 20,
        max_doc_tokens: int = 100,
        endpoint: str = "completions",
        top_logprobs: int = 20,
    ) -> None:
        if window_size < 1 or max_doc_tokens < 1:
            raise ValueError("window_size and max_doc_tokens must be >= 1")
        if endpoint not in ("completions", "chat"):
            raise ValueError(f"endpoint={endpoint!r}; expected 'completions' or 'chat'")
        if self.style == "alpha" and window_size > 26:
            raise ValueError(f"FIRST uses letters A..Z as identifiers: window_size={window_size} > 26")
        self.engine, self.window_size, self.max_doc_tokens = engine, window_size, max_doc_tokens
        self.endpoint, self.top_logprobs = endpoint, top_logprobs
        self.prompt: ListwisePrompt = get_prompt(prompt, "listwise")
        self.stats = {"windows": 0, "repaired": 0, "calls": 0}

    @property
    def native_async(self) -> bool:  # a server: the strategies' sync path overlaps windows through arank
        return not is_local(self.engine)

    def messages(self, query: str, docs: list[Document], budget: int) -> list[dict[str, str]]:
        from .llm_server import doc_texts  # tokens when the engine has a tokenizer (server: tokenizer=)

        texts = doc_texts(self.engine, docs, budget)
        return render_listwise(self.prompt, query, texts, identifiers(len(docs), self.style))

    def local_prompt(self, query: str, docs: list[Document], reserve: int, prefix: str) -> list[int]:
        """Prompt ids within the context: per-document budgets shrink until the window fits."""
        e, tok = self.engine, self.engine.tokenizer
        limit = e.max_length - reserve
        overhead = len(
            e.encode(messages_to_text(self.messages(query, [Document("")] * len(docs), 1), tok, prefix))
        )
        budget = min(self.max_doc_tokens, (limit - overhead) // max(len(docs), 1))
        while True:
            if budget < 1:
                raise ValueError(
                    f"the context limit of {e.max_length} tokens is too small for a window of {len(docs)} "
                    f"documents: the prompt needs {overhead + reserve} tokens before any document text"
                )
            ids = e.encode(messages_to_text(self.messages(query, docs, budget), tok, prefix))
            if len(ids) <= limit:
                return ids  # type: ignore[no-any-return]
            budget -= max(1, (len(ids) - limit) // max(len(docs), 1))

    def _count(self, parsed: Parsed, text: str = "") -> list[int]:
        self.stats["windows"] += 1
        self.stats["repaired"] += int(parsed.repaired)
        n = len(parsed.order)
        if n > 1 and parsed.missing == n:  # nothing usable: the "ranking" would be the input order
            self.stats["unusable"] = self.stats.get("unusable", 0) + 1
            logger.warning(
                "listwise output names none of the %d passages (%r); the window keeps its input order",
                n,
                text[:80],
            )
        return parsed.order


class GenerationWindow(_Window):
    """Permutation generation over a window (RankGPT / RankZephyr prompts), parsed robustly.

    ``assistant_prefix="["`` starts the answer for text prompts (local engine, ``/completions``), which keeps
    base models on format, and generation stops at a newline (``stop_at_newline``); chat endpoints cannot be
    prefixed.
    ``identifiers="alpha"`` labels passages A, B, ... as FIRST does (for like-for-like comparisons).
    """

    def __init__(
        self,
        engine: Any,
        *,
        assistant_prefix: str = "[",
        max_new_tokens: int | None = None,
        identifiers: str = "numeric",
        stop_at_newline: bool = True,
        **kw: Any,
    ):
        self.stop = ["\n"] if stop_at_newline and assistant_prefix else None
        if identifiers not in ("numeric", "alpha"):
            raise ValueError(f"identifiers={identifiers!r}; expected 'numeric' or 'alpha'")
        self.style = identifiers
        super().__init__(engine, **kw)
        self.assistant_prefix, self.max_new_tokens = assistant_prefix, max_new_tokens

    def _new_tokens(self, n: int) -> int:
        if self.max_new_tokens:
            return self.max_new_tokens
        sample = " > ".join(f"[{i}]" for i in identifiers(n, self.style))
        per = len(self.engine.encode(sample, special=False)) if is_local(self.engine) else 4 * n
        return per + 4

    def rank_window(self, query: str, docs: list[Document]) -> list[int]:
        if len(docs) <= 1:
            return list(range(len(docs)))
        if not is_local(self.engine):
            from ..backends.openai_compat import run_sync

            return run_sync(self.arank_window(query, docs))  # type: ignore[no-any-return]
        n_new = self._new_tokens(len(docs))
        ids = self.local_prompt(query, docs, n_new, self.assistant_prefix)
        self.stats["calls"] += 1
        text = strip_reasoning(self.assistant_prefix + self.engine.generate([ids], n_new, stop=self.stop)[0])
        return self._count(parse_permutation(text, len(docs), self.style), text)

    async def arank_window(self, query: str, docs: list[Document]) -> list[int]:
        if len(docs) <= 1:
            return list(range(len(docs)))
        if is_local(self.engine):
            import asyncio

            return await asyncio.to_thread(self.rank_window, query, docs)
        msgs = self.messages(query, docs, self.max_doc_tokens)
        n_new = self._new_tokens(len(docs))
        self.stats["calls"] += 1
        if self.endpoint == "chat":
            got = await self.engine.achat(msgs, max_tokens=n_new)
            text = got.text
            trace_warning(self.engine, got.reasoning or ("</think>" in text))
        else:
            got = await self.engine.acomplete(
                server_text(self.engine, msgs, self.assistant_prefix), max_tokens=n_new, stop=self.stop
            )
            text = self.assistant_prefix + got.text
            trace_warning(self.engine, "</think>" in text)
        text = strip_reasoning(text)
        return self._count(parse_permutation(text, len(docs), self.style), text)


class FirstWindow(_Window):
    """FIRST: order a window by the first-identifier logits of a single forward pass."""

    style = "alpha"

    def rank_window(self, query: str, docs: list[Document]) -> list[int]:
        if len(docs) <= 1:
            return list(range(len(docs)))
        if not is_local(self.engine):
            from ..backends.openai_compat import run_sync

            return run_sync(self.arank_window(query, docs))  # type: ignore[no-any-return]
        return self.order(self.window_logprobs(query, docs))

    async def arank_window(self, query: str, docs: list[Document]) -> list[int]:
        if len(docs) <= 1:
            return list(range(len(docs)))
        if is_local(self.engine):
            import asyncio

            return await asyncio.to_thread(self.rank_window, query, docs)
        return self.order(await self.awindow_logprobs(query, docs))

    @property
    def rank_windows(self) -> Any:
        """Local engines: many windows (a strategy round, all queries) as ONE padded batch of prompts;
        ``None`` on servers, whose windows overlap through ``arank_window`` instead."""
        return self._rank_windows_local if is_local(self.engine) else None

    def _rank_windows_local(self, queries: list[str], windows: list[list[Document]]) -> list[list[int]]:
        todo = [i for i, w in enumerate(windows) if len(w) > 1]
        prompts = window_prompts(self, [queries[i] for i in todo], [windows[i] for i in todo], 1, "[")
        n = max((len(windows[i]) for i in todo), default=0)
        labels = [self.engine.token_id(x) for x in identifiers(n, "alpha")]
        lps = self.engine.next_token_logprobs(prompts, labels) if todo else []
        self.stats["calls"] += len(todo)
        got = {i: self.order(lp[: len(windows[i])]) for i, lp in zip(todo, lps)}
        return [got.get(i, list(range(len(w)))) for i, w in enumerate(windows)]

    def order(self, lp: np.ndarray) -> list[int]:
        self.stats["windows"] += 1
        record_mass(self.stats, label_mass(lp), "FIRST")  # the identifiers' first-token mass (llm_server)
        if len(lp) > 1 and not np.isfinite(lp).any():
            self.stats["unusable"] = self.stats.get("unusable", 0) + 1
            logger.warning(
                "FIRST: no usable log-probability for any of the %d identifiers (NaN, or none listed); "
                "the window keeps its input order",
                len(lp),
            )
        return [int(i) for i in np.argsort(-np.nan_to_num(lp, nan=-np.inf), kind="stable")]

    def window_logprobs(self, query: str, docs: list[Document]) -> np.ndarray:
        """Log-probabilities of each identifier (``A``, ``B``, ...) as the first token of the answer."""
        ids = self.local_prompt(query, docs, 1, "[")
        labels = [self.engine.token_id(x) for x in identifiers(len(docs), "alpha")]
        self.stats["calls"] += 1
        return self.engine.next_token_logprobs([ids], labels)[0]  # type: ignore[no-any-return]

    async def awindow_logprobs(self, query: str, docs: list[Document]) -> np.ndarray:
        from .llm_server import first_logprobs  # chat: prefilled "[", identifiers checked; label mass

        return await first_logprobs(self, query, docs)


class LLMListwiseRanker(LLMCostMixin, Ranker):
    """A listwise LLM re-ranker: a generation or FIRST window ranker under an ordering strategy.

    >>> r = LLMListwiseRanker("gemma3-270m", method="first", window_size=10, stride=5)  # doctest: +SKIP
    >>> r.rank("what causes rain", docs).ids[:3]                                          # doctest: +SKIP
    """

    score_kind = ScoreKind.RANK
    capabilities = Capabilities(pointwise=False, listwise=True, native_async=True)

    def __init__(
        self,
        model: Any = None,
        *,
        method: str = "generate",
        prompt: Any = None,
        window_size: int = 20,
        max_doc_tokens: int = 100,
        strategy: str = "sliding",
        endpoint: str = "completions",
        top_logprobs: int = 20,
        assistant_prefix: str = "[",
        max_new_tokens: int | None = None,
        identifiers: str = "numeric",
        name: str | None = None,
        **options: Any,
    ) -> None:
        super().__init__(name or f"llm-listwise:{model}", calibrator=options.pop("calibrator", None))
        if method not in ("generate", "first"):
            raise ValueError(f"method={method!r}; expected 'generate' or 'first'")
        conc, reasoning = options.get("concurrency"), options.pop("reasoning", False)
        self.engine = build_engine(model, options)
        if conc is not None:  # a strategy option too: windows overlap across queries, sync and async
            options["concurrency"] = conc
        common = dict(
            prompt=prompt or ("rankzephyr" if method == "first" else "rankgpt"),
            window_size=window_size,
            max_doc_tokens=max_doc_tokens,
            endpoint=endpoint,
            top_logprobs=top_logprobs,
        )
        if reasoning:  # think first, answer after </think> (methods/reasoning.py)
            from .reasoning import reasoning_window

            self.window: _Window = reasoning_window(self.engine, method, prompt, identifiers, options, common)
        elif method == "first":
            self.window = FirstWindow(self.engine, **common)
        else:
            self.window = GenerationWindow(
                self.engine,
                assistant_prefix=assistant_prefix,
                max_new_tokens=max_new_tokens,
                identifiers=identifiers,
                **common,
            )
        from ..strategies import build_strategy

        self.strategy_name = strategy
        self.strategy = build_strategy(strategy, self.window, **options)

    @property
    def stats(self) -> dict[str, Any]:
        """Windows ranked, windows whose output needed repair, model calls (and ``unusable``: windows whose
        output named no passage at all, each also logged as a warning; FIRST: ``label_mass``, see
        :mod:`unirank.methods.llm_server`)."""
        return dict(self.window.stats)

    def _score_many(
        self, queries: list[str], docs_lists: list[list[Document]], show_progress: bool = False
    ) -> list[np.ndarray]:
        return self.strategy._score_many(queries, docs_lists, show_progress)

    async def _ascore_many(
        self, queries: list[str], docs_lists: list[list[Document]], show_progress: bool = False
    ) -> list[np.ndarray]:
        return await self.strategy._ascore_many(queries, docs_lists, show_progress)
