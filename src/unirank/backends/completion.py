"""One OpenAI-compatible answer (:class:`Completion`) and the helpers that read it, for
:mod:`unirank.backends.openai_compat`.

>>> out = Completion("x")
>>> top = [{"token": " yes", "logprob": -0.1}]
>>> read_content_logprobs(out, [{"token": " yes", "logprob": -0.1, "top_logprobs": top}])
>>> out.tokens, out.top_logprobs
([' yes'], [{' yes': -0.1}])
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Completion", "load_tokenizer", "read_content_logprobs"]


@dataclass
class Completion:
    """One choice: its text, and token log-probabilities when requested.

    ``top_logprobs[i]`` maps candidate token strings to log-probabilities at generated position ``i``;
    ``tokens`` / ``token_logprobs`` / ``text_offset`` cover the echoed prompt too when ``echo=True``.
    """

    text: str
    tokens: list[str] = field(default_factory=list)
    token_logprobs: list[float | None] = field(default_factory=list)
    top_logprobs: list[dict[str, float]] = field(default_factory=list)
    text_offset: list[int] = field(default_factory=list)
    #: a chat answer's separate ``reasoning_content`` / ``reasoning`` field (``""`` when none)
    reasoning: str = ""


def read_content_logprobs(out: Completion, content: list[Any]) -> None:
    """Append the chat-shaped ``logprobs.content`` entries (one per generated token) to ``out``."""
    for item in content:
        out.tokens.append(str(item.get("token", "")))
        out.token_logprobs.append(item.get("logprob"))
        out.top_logprobs.append(
            {str(t["token"]): float(t["logprob"]) for t in item.get("top_logprobs") or []}
        )


def load_tokenizer(tokenizer: Any) -> Any:
    """A tokenizer object from a folder / hub id (loaded with transformers), or the object as given."""
    if tokenizer is None or not isinstance(tokenizer, (str, os.PathLike)):
        return tokenizer
    from . import hf

    return hf.load_tokenizer(hf.local_model_dir(tokenizer))
