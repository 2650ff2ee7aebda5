"""What the LLM rankers do differently behind a server: one prompt with the local path, honest first-token
log-probabilities, and the probability mass the expected tokens had.

- **One prompt.** With a tokenizer on the server engine (``tokenizer=``), :func:`server_text` renders the
  model's own chat template (as :class:`~unirank.backends.causal_lm.CausalLM` prompts do) and
  :func:`doc_texts` cuts documents to ``max_doc_tokens`` *tokens*; without one, prompts are plain
  ``User: / Assistant:`` transcripts and budgets count whitespace words.
- **FIRST over ``chat``.** The answer is prefilled with ``[`` (vLLM / SGLang ``continue_final_message``,
  llama.cpp's last-assistant-message prefill) and the first token's top log-probabilities must list at least
  half of the window's identifiers; otherwise the server did not continue the answer (its first token is
  ``"<<"``, ``"Based"``, ``"<think>"``...) and :class:`~unirank.backends.openai_compat.EndpointError` says to
  use ``endpoint="completions"``. A server that rejects the prefill fields (HTTP 400) gets the same error.
- **Label mass.** Every call records the probability mass the expected tokens (FIRST identifiers, pointwise
  labels) had at the scored position, ``sum(exp(logprob))`` over those the server listed; the ranker's
  ``stats["label_mass"]`` summarises it (``calls``, ``mean``, ``min``, ``low``). A call below
  :data:`MIN_LABEL_MASS` is counted in ``low`` and the first one per ranker is logged as a warning: the model
  was mostly about to write something else, so the scores are read from the tail of its distribution.

>>> rec = {}
>>> record_mass(rec, 0.9); record_mass(rec, 0.3, "test")
>>> rec["label_mass"]
{'calls': 2, 'mean': 0.6, 'min': 0.3, 'low': 1}
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from ..prompts import identifiers, messages_to_text
from ..types import Document

__all__ = [
    "MIN_LABEL_MASS",
    "doc_texts",
    "first_logprobs",
    "label_mass",
    "record_mass",
    "server_text",
    "template_kwargs",
    "trace_warning",
]

logger = logging.getLogger(__name__)

#: below this first-token probability mass on the expected tokens a call counts as ``low`` (and warns once)
MIN_LABEL_MASS = 0.5


def server_text(engine: Any, messages: list[dict[str, str]], prefix: str = "") -> str:
    """The ``/completions`` prompt: the engine tokenizer's chat template if it has one, else a transcript."""
    return messages_to_text(messages, getattr(engine, "tokenizer", None), prefix, template_kwargs(engine))


def template_kwargs(engine: Any) -> dict[str, Any]:
    """The engine's extra chat-template variables (a server engine's ``enable_thinking``), else none."""
    get = getattr(engine, "template_kwargs", None)
    return get() if callable(get) else {}


def doc_texts(engine: Any, docs: list[Document], budget: int) -> list[str]:
    """Documents cut to ``budget`` tokens when the engine has a tokenizer (local, or a server engine built
    with ``tokenizer=``), else to ``budget`` whitespace words."""
    from ..text import truncate_tokens

    tok = getattr(engine, "tokenizer", None)
    if tok is not None:
        return [truncate_tokens(tok, d.text, budget) for d in docs]
    return [" ".join(d.text.split()[:budget]) for d in docs]


def label_mass(logprobs: Any) -> float:
    """``sum(exp(lp))`` over the finite log-probabilities (labels a server did not list add nothing).

    >>> round(label_mass([np.log(0.5), np.log(0.25), -np.inf, np.nan]), 6)
    0.75
    """
    lp = np.asarray(logprobs, dtype=np.float64)
    return float(np.exp(lp[np.isfinite(lp)]).sum())


def record_mass(stats: dict[str, Any], mass: float, who: str = "") -> None:
    """Add one call's expected-token mass to ``stats["label_mass"]`` (warns at the first low one)."""
    s = stats.setdefault("label_mass", {"calls": 0, "mean": 0.0, "min": 1.0, "low": 0})
    s["calls"] += 1
    s["mean"] = round(s["mean"] + (mass - s["mean"]) / s["calls"], 6)
    s["min"] = round(min(s["min"], mass), 6)
    if mass < MIN_LABEL_MASS:
        s["low"] += 1
        if s["low"] == 1:
            logger.warning(
                "%s: the expected tokens had only %.3g of the probability mass at the scored position "
                "(threshold %.2f): the model was about to write something else, so its scores come from the "
                "tail of its distribution; stats['label_mass'] counts such calls",
                who or "LLM ranker",
                mass,
                MIN_LABEL_MASS,
            )


async def first_logprobs(window: Any, query: str, docs: list[Document]) -> np.ndarray:
    """FIRST over a server: each identifier's log-probability as the first answer token (``-inf`` when the
    server did not list it); records the mass; raises where the endpoint cannot give FIRST's signal."""
    from ..backends.openai_compat import EndpointError, ServerError

    e, n = window.engine, len(docs)
    msgs = window.messages(query, docs, window.max_doc_tokens)
    k = max(window.top_logprobs, n)
    window.stats["calls"] += 1
    use = "use endpoint='completions' (a /completions prompt ends with the answer's '[')"
    if window.endpoint == "chat":
        try:
            got = await e.achat(msgs, max_tokens=1, top_logprobs=k, prefill="[")
        except ServerError as exc:
            if "HTTP 400" not in str(exc):
                raise
            raise EndpointError(
                f"FIRST over endpoint='chat': {e.base_url} rejected the prefilled answer "
                f"(continue_final_message): {exc}; {use}"
            ) from exc
    else:
        got = await e.acomplete(server_text(e, msgs, "["), max_tokens=1, logprobs=k)
    if not got.top_logprobs or not got.top_logprobs[0]:
        raise (EndpointError if window.endpoint == "chat" else ServerError)(
            f"{e.base_url} returned no top_logprobs; FIRST needs them"
            + (f"; {use}" if window.endpoint == "chat" else "")
        )
    top = got.top_logprobs[0]
    out = []
    for x in identifiers(n, "alpha"):
        # the identifier token itself (after "[" it has no space); lower-casing tokenizers last
        hit = next((top[t] for t in (x, " " + x, x.lower(), " " + x.lower()) if t in top), None)
        out.append(-np.inf if hit is None else float(hit))
    lp = np.array(out)  # its mass is recorded by window.order (local windows too)
    found = int(np.isfinite(lp).sum())
    if window.endpoint == "chat" and found < math.ceil(n / 2):
        first = got.tokens[0] if got.tokens else sorted(top, key=lambda t: -top[t])[0]
        raise EndpointError(
            f"FIRST over endpoint='chat': only {found} of {n} identifiers are among the first token's "
            f"top-{k} log-probabilities (the first token is {first!r}): {e.base_url} did not continue the "
            f"prefilled answer '[', so the window cannot be ordered; {use}"
        )
    return lp


def pointwise_mass(top: dict[str, float], labels: tuple[str, ...], prefix: str = " ") -> float:
    """The first-token mass of a pointwise prompt's labels in a server's top log-probabilities (each label
    in the spellings :func:`~unirank.methods.llm_pointwise.label_logprob` accepts; unlisted labels add 0).

    >>> round(pointwise_mass({" yes": np.log(0.6), " no": np.log(0.1), "Maybe": -0.5}, ("yes", "no")), 6)
    0.7
    """
    from .llm_pointwise import has_label, label_logprob

    return label_mass([label_logprob(top, w, prefix) for w in labels if has_label(top, w, prefix)])


def trace_warning(engine: Any, trace: Any) -> None:
    """Warn once per engine when a server sent a reasoning trace although ``enable_thinking=False`` asked
    for none (it ignored the switch; the answer is still read after the trace)."""
    if trace and getattr(engine, "enable_thinking", None) is False and not getattr(engine, "_ignored", False):
        engine._ignored = True
        logger.warning(
            "%s sent a reasoning trace although enable_thinking=False was requested (over chat the server "
            "or its template ignored chat_template_kwargs; over /completions the switch reaches only a "
            "client-side chat template, tokenizer=); the answer is read after the trace",
            getattr(engine, "base_url", engine),
        )
