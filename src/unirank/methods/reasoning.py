"""Reasoning rerankers: models that think (``<think> ... </think>``) before they answer.

``reasoning=True`` on ``llm-listwise`` (Rank-K / ReasonRank style) and ``llm-pointwise`` (Rank1 style):

- no newline stop and no answer prefill while the model thinks; the thinking budget is
  ``max_reasoning_tokens`` (default 1024) on top of the answer's own tokens;
- the answer is read after the LAST ``</think>`` (inside ``<answer>...</answer>`` when the model uses those
  tags, as ReasonRank does), or from the content when the server sends the trace in a separate
  ``reasoning_content`` / ``reasoning`` field (vLLM's and SGLang's reasoning parsers);
- a trace that never ends is closed by force where the prompt can be continued (local engine,
  ``/completions``: a second call with the trace and ``</think>`` prefilled, counted as ``forced``, as s1 /
  Rank1 do; there any output without ``</think>`` counts as such a trace, since the chat template may have
  opened it); on ``chat`` it cannot be, and the window keeps its input order / the pair scores NaN, with a
  warning and ``unterminated`` counted: a trace is never parsed as the answer;
- every trace's length is counted (``reasoning_chars``, and ``reasoning_tokens`` where the engine has a
  tokenizer; the tokens a server billed are in its ``usage``) in ``stats`` (listwise: ``ranker.stats``;
  pointwise: ``ranker.reasoner.stats``); ``keep_traces=True`` also keeps each trace in ``traces``
  (``ranker.window.traces`` / ``ranker.reasoner.traces``).

Pointwise reasoning scores the label's log-probabilities at the token after the trace (Rank1: ``true`` /
``false`` after ``</think>``), in one call where the server returns log-probabilities for every generated
position, else in a second call with the trace prefilled (``max_tokens=1``).

>>> split_reasoning("<think>[3] then [1]</think>\\n[2] > [1] > [3]")
Split(answer='[2] > [1] > [3]', trace='[3] then [1]')
>>> split_reasoning("[3] is about rain... </think> <answer>[2] > [1]</answer>").answer
'[2] > [1]'
>>> split_reasoning("<think>still thinking about [3]").answer is None
True
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..prompts import identifiers
from ..types import Document
from .llm_listwise import GenerationWindow, parse_permutation
from .llm_pointwise import has_label, is_local, label_logprob
from .llm_server import server_text, trace_warning

__all__ = [
    "REASONING_OPTIONS",
    "PointwiseReasoner",
    "ReasoningWindow",
    "Split",
    "answer_text",
    "reasoning_window",
    "split_reasoning",
]

logger = logging.getLogger(__name__)

OPEN, CLOSE = "<think>", "</think>"
#: options a ranker's ``reasoning=True`` takes (besides ``reasoning`` itself)
REASONING_OPTIONS = ("max_reasoning_tokens", "keep_traces", "think_prefix")


@dataclass(frozen=True)
class Split:
    """A model output split into its final ``answer`` (``None``: the trace never ended) and its ``trace``."""

    answer: str | None
    trace: str


def split_reasoning(text: str | None, reasoning: str | None = None) -> Split:
    """The answer after the last ``</think>`` (the ``<answer>`` tags' content when present) and the trace.

    ``reasoning``: a server's separate reasoning field; ``text`` is then the answer (any tags in it are still
    honoured); no content beside it means the budget ended while reasoning. No tags at all: the whole text is
    the answer. An opened ``<think>`` that never closes: no answer (``None``).
    """
    trace = (reasoning or "").strip()
    if trace and not (text or "").strip():  # a reasoning field and no content: the budget ended inside it
        return Split(None, trace)
    text = text or ""
    close = text.rfind(CLOSE)
    if close >= 0:
        head, text = text[:close], text[close + len(CLOSE) :]
        trace = (trace + "\n" + head.replace(OPEN, "")).strip()
    elif OPEN in text:
        after = text.partition(OPEN)[2]
        return Split(None, (trace + "\n" + after).strip())
    m = re.search(r"<answer>(.*?)(?:</answer>|$)", text, flags=re.S)
    return Split((m.group(1) if m else text).strip(), trace)


def answer_text(text: str) -> str:
    """The final answer of a listwise output (``""`` when the trace never ended), LRL's ``Passage3`` read as
    ``[3]``.

    >>> answer_text("<think>[1]?</think> Passage3, Passage1")
    '[3], [1]'
    """
    return re.sub(r"Passage\s*(\d+)", r"[\1]", split_reasoning(text).answer or "")


class _Traces:
    """Trace bookkeeping shared by the listwise and pointwise reasoners."""

    stats: dict[str, int]

    def _init_traces(self, max_reasoning_tokens: int, keep_traces: bool, think_prefix: str) -> None:
        if isinstance(max_reasoning_tokens, bool) or not isinstance(max_reasoning_tokens, int):
            raise ValueError(f"max_reasoning_tokens must be an int >= 1, got {max_reasoning_tokens!r}")
        if max_reasoning_tokens < 1:
            raise ValueError(f"max_reasoning_tokens must be >= 1, got {max_reasoning_tokens}")
        self.max_reasoning_tokens, self.keep_traces = max_reasoning_tokens, bool(keep_traces)
        self.think_prefix = think_prefix
        self.traces: list[dict[str, Any]] = []
        for key in ("reasoning_calls", "reasoning_chars", "reasoning_tokens", "forced", "unterminated"):
            self.stats.setdefault(key, 0)

    def _record(self, query: str, trace: str, engine: Any, forced: bool, answer: str | None) -> None:
        trace_warning(engine, trace)
        self.stats["reasoning_calls"] += 1
        self.stats["reasoning_chars"] += len(trace)
        tok = getattr(engine, "tokenizer", None)
        n_tok = len(tok.encode(trace, add_special_tokens=False)) if tok is not None and trace else 0
        self.stats["reasoning_tokens"] += n_tok
        self.stats["forced"] += int(forced)
        if answer is None:
            self.stats["unterminated"] += 1
        if self.keep_traces:
            self.traces.append(
                {"query": query, "trace": trace, "chars": len(trace), "tokens": n_tok, "forced": forced}
            )


async def _raw_chat(
    engine: Any, messages: list[dict[str, str]], max_tokens: int, **extra: Any
) -> dict[str, Any]:
    """One chat answer's message and logprobs, reasoning field included (``achat`` drops it)."""
    payload = {"model": engine.model, "messages": messages, "max_tokens": max_tokens, "temperature": 0.0}
    payload.update(engine.chat_extras())  # enable_thinking / reasoning_effort where set
    choice = (await engine.post("chat/completions", {**payload, **extra}))["choices"][0]
    msg = choice.get("message") or {}
    return {
        "content": msg.get("content") if isinstance(msg.get("content"), str) else "",
        "reasoning": msg.get("reasoning_content") or msg.get("reasoning") or None,
        "logprobs": (choice.get("logprobs") or {}).get("content") or [],
    }


class ReasoningWindow(_Traces, GenerationWindow):
    """Permutation generation after a reasoning trace (Rank-K / ReasonRank style); see the module doc."""

    rank_windows = None  # no batched generation path here: every window may need its own forced close

    def __init__(
        self,
        engine: Any,
        *,
        max_reasoning_tokens: int = 1024,
        keep_traces: bool = False,
        think_prefix: str = "",
        **kw: Any,
    ) -> None:
        kw.pop("assistant_prefix", None)
        kw.pop("stop_at_newline", None)
        super().__init__(engine, assistant_prefix="", stop_at_newline=False, **kw)
        self._init_traces(max_reasoning_tokens, keep_traces, think_prefix)

    def _finish(self, query: str, n: int, split: Split, forced: bool) -> list[int]:
        self._record(query, split.trace, self.engine, forced, split.answer)
        if split.answer is None:
            logger.warning(
                "reasoning trace of %d characters never reached </think> (max_reasoning_tokens=%d) and could "
                "not be closed on this endpoint; the window keeps its input order",
                len(split.trace),
                self.max_reasoning_tokens,
            )
            self.stats["windows"] += 1
            return list(range(n))
        text = answer_text(split.answer)
        return self._count(parse_permutation(text, n, self.style), text)

    def rank_window(self, query: str, docs: list[Document]) -> list[int]:
        if len(docs) <= 1:
            return list(range(len(docs)))
        if not is_local(self.engine):
            from ..backends.openai_compat import run_sync

            return run_sync(self.arank_window(query, docs))  # type: ignore[no-any-return]
        n_ans = self._answer_tokens(len(docs))
        ids = self.local_prompt(query, docs, self.max_reasoning_tokens + n_ans, self.think_prefix)
        self.stats["calls"] += 1
        out = self.engine.generate([ids], self.max_reasoning_tokens + n_ans)[0]
        split, forced = _closed(self.think_prefix + out), False
        if split.answer is None:  # budget spent while thinking: close the trace, prefill the answer
            self.stats["calls"] += 1
            more = self.engine.encode(out + f"\n{CLOSE}\n\n[", special=False)
            split = Split("[" + self.engine.generate([ids + more], n_ans, stop=["\n"])[0], split.trace)
            forced = True
        return self._finish(query, len(docs), split, forced)

    async def arank_window(self, query: str, docs: list[Document]) -> list[int]:
        if len(docs) <= 1:
            return list(range(len(docs)))
        if is_local(self.engine):
            import asyncio

            return await asyncio.to_thread(self.rank_window, query, docs)
        msgs = self.messages(query, docs, self.max_doc_tokens)
        n_ans = self._answer_tokens(len(docs))
        budget = self.max_reasoning_tokens + n_ans
        self.stats["calls"] += 1
        if self.endpoint == "chat":
            got = await _raw_chat(self.engine, msgs, budget)
            return self._finish(query, len(docs), split_reasoning(got["content"], got["reasoning"]), False)
        prompt = server_text(self.engine, msgs, self.think_prefix)
        out = (await self.engine.acomplete(prompt, max_tokens=budget)).text
        split, forced = _closed(self.think_prefix + out), False
        if split.answer is None:
            self.stats["calls"] += 1
            tail = f"{out}\n{CLOSE}\n\n["
            got = await self.engine.acomplete(prompt + tail, max_tokens=n_ans, stop=["\n"])
            split, forced = Split("[" + got.text, split.trace), True
        return self._finish(query, len(docs), split, forced)

    def _new_tokens(self, n: int) -> int:
        """The most tokens one call may generate: the thinking budget plus the answer (cost estimates)."""
        return self.max_reasoning_tokens + self._answer_tokens(n)

    def _answer_tokens(self, n: int) -> int:
        if self.max_new_tokens:
            return self.max_new_tokens
        sample = " > ".join(f"[{i}]" for i in identifiers(n, self.style))
        per = len(self.engine.encode(sample, special=False)) if is_local(self.engine) else 4 * n
        return per + 8  # room for "</think>" / "<answer>" tags around the ranking


def reasoning_window(
    engine: Any, method: str, prompt: Any, ids: str, options: dict[str, Any], common: dict[str, Any]
) -> ReasoningWindow:
    """The window ranker of ``llm-listwise`` with ``reasoning=True`` (consumes its options)."""
    if method != "generate":
        raise ValueError("reasoning=True needs method='generate' (FIRST reads no trace)")
    kw = {k: options.pop(k) for k in REASONING_OPTIONS if k in options}
    return ReasoningWindow(engine, identifiers=ids, **kw, **{**common, "prompt": prompt or "reasonrank"})


class PointwiseReasoner(_Traces):
    """Rank1-style pointwise reasoning for :class:`~unirank.methods.llm_pointwise.LLMPointwiseRanker`: think,
    then score the label's log-probabilities at the token after ``</think>``."""

    def __init__(
        self, ranker: Any, max_reasoning_tokens: int = 1024, keep_traces: bool = False, think_prefix: str = ""
    ) -> None:
        if ranker.mode == "likelihood":
            raise ValueError("reasoning=True needs mode='yesno' or 'graded' (a label after the trace)")
        self.ranker, self.engine = ranker, ranker.engine
        self.stats: dict[str, int] = {"calls": 0}
        self._init_traces(max_reasoning_tokens, keep_traces, think_prefix)

    def _labels(self, top: dict[str, float]) -> np.ndarray | None:
        p = self.ranker.prompt
        if not any(has_label(top, w, p.label_prefix) for w in p.labels):
            return None
        lp = np.array([[label_logprob(top, w, p.label_prefix) for w in p.labels]])
        return self.ranker._finish_labels(lp) if np.isfinite(lp).all() else np.array([np.nan])

    # -- local --------------------------------------------------------------------------------------------
    def score_pairs(self, queries: list[str], texts: list[str]) -> np.ndarray:
        r, e = self.ranker, self.engine
        budget = self.max_reasoning_tokens
        renders = [lambda d, q=q: r.prompt.render(q, d) + self.think_prefix for q in queries]
        prompts = [ids for _, ids in r.fit_many(renders, list(texts), [budget + 4] * len(texts))]
        outs = e.generate(prompts, budget, stop=[CLOSE])
        scored = []
        for q, ids, out in zip(queries, prompts, outs):
            trace = out.split(CLOSE)[0]
            forced = CLOSE not in out and len(e.encode(out, special=False)) >= budget
            self._record(q, trace.replace(OPEN, "").strip(), e, forced, trace)
            scored.append(ids + e.encode(f"{trace}{CLOSE}{r._suffix}", special=False))
        self.stats["calls"] += 2 * len(prompts)
        return r._finish_labels(e.next_token_logprobs(scored, r._label_ids))  # type: ignore[no-any-return]

    # -- server -------------------------------------------------------------------------------------------
    async def aone(self, query: str, text: str) -> np.ndarray:
        r, e = self.ranker, self.engine
        k, budget = r.top_logprobs, self.max_reasoning_tokens + 2
        render = lambda d: r.prompt.render(query, d) + self.think_prefix  # noqa: E731
        prompt = render(r.fit(render, text, self.max_reasoning_tokens + 4)[0])  # as the local path
        self.stats["calls"] += 1
        if r.endpoint == "chat":
            got = await _raw_chat(
                e, [{"role": "user", "content": prompt}], budget, logprobs=True, top_logprobs=k
            )
            split = split_reasoning(got["content"], got["reasoning"])
            self._record(query, split.trace, e, False, split.answer)
            tokens = [str(x.get("token", "")) for x in got["logprobs"]]
            tops = [
                {str(t["token"]): float(t["logprob"]) for t in x.get("top_logprobs") or []}
                for x in got["logprobs"]
            ]
            at = _after_trace(tokens, bool(got["reasoning"]))
            score = self._labels(tops[at]) if at is not None and at < len(tops) else None
            if score is None:
                return self._unusable(split, "chat")
            return score
        got = await e.acomplete(prompt, max_tokens=budget, logprobs=k)
        split = split_reasoning(self.think_prefix + got.text)
        at = _after_trace(got.tokens, False)
        if at is not None and at < len(got.top_logprobs):
            score = self._labels(got.top_logprobs[at])
            if score is not None:  # the label was in the one call's log-probabilities
                self._record(query, split.trace, e, False, split.answer)
                return score
        trace_text = got.text.split(CLOSE)[0]
        forced = CLOSE not in got.text
        self._record(query, split.trace, e, forced, trace_text)
        self.stats["calls"] += 1
        again = await e.acomplete(prompt + f"{trace_text}{CLOSE}", max_tokens=1, logprobs=k)
        score = self._labels(again.top_logprobs[0] if again.top_logprobs else {})
        return self._unusable(split, "completions") if score is None else score

    def _unusable(self, split: Split, endpoint: str) -> np.ndarray:
        logger.warning(
            "%s: no log-probability for the labels %s after the reasoning trace (%d characters%s) over %s; "
            "the pair is scored NaN",
            self.ranker.name,
            list(self.ranker.prompt.labels),
            len(split.trace),
            ", never closed" if split.answer is None else "",
            endpoint,
        )
        return np.array([np.nan])


def _closed(text: str) -> Split:
    """With ``reasoning=True`` an output without ``</think>`` is a trace the budget cut (the chat template may
    have opened it, so no ``<think>`` need be in it): never read as the answer.

    >>> _closed("[3] looks best, then [1] and")
    Split(answer=None, trace='[3] looks best, then [1] and')
    """
    return split_reasoning(text) if CLOSE in text else Split(None, text.replace(OPEN, "").strip())


def _after_trace(tokens: list[str], separate: bool) -> int | None:
    """Index of the first non-blank token after the last ``</think>`` in a token list; with a separate
    reasoning field (the tokens are the answer's), the first non-blank token."""
    start = 0
    if not separate:
        joined, ends = "", []
        for t in tokens:
            joined += t
            ends.append(len(joined))
        close = joined.rfind(CLOSE)
        if close < 0:
            return None
        start = next(i for i, e in enumerate(ends) if e >= close + len(CLOSE)) + 1
    return next((i for i in range(start, len(tokens)) if tokens[i].strip()), None)
