"""Async client for OpenAI-compatible servers (vLLM, SGLang, Ollama, llama.cpp server, hosted APIs).

``base_url`` comes from the argument, else ``$OPENAI_BASE_URL``, else ``https://api.openai.com/v1``; the key
from ``api_key``, else ``$OPENAI_API_KEY``, else none (a local server needs no key). Requests retry on
connection errors, timeouts, HTTP 408 / 429 / 5xx and malformed JSON, with exponential backoff that honours
``Retry-After``; when retries run out a :class:`ServerError` is raised (never a hung or crashed event loop).
At most ``concurrency`` requests are in flight per event loop.

>>> e = OpenAICompatEngine("my-model", base_url="http://127.0.0.1:8000/v1")
>>> e.base_url
'http://127.0.0.1:8000/v1'
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ..errors import UniRankError, require
from .http import RETRY_STATUS, backoff_delay

__all__ = ["Completion", "OpenAICompatEngine", "ServerError", "run_sync"]

logger = logging.getLogger(__name__)


class ServerError(UniRankError, RuntimeError):
    """An OpenAI-compatible server failed (after retries) or answered something unusable."""


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


def run_sync(coro: Any) -> Any:
    """Run a coroutine to completion from sync code, also when called inside a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


class OpenAICompatEngine:
    """An OpenAI-compatible chat / completions endpoint.

    Args:
        model: the server's model name.
        base_url, api_key: see the module docstring.
        timeout: seconds per request. max_retries: retries after the first try.
        backoff, max_backoff: first backoff delay and cap, in seconds (``Retry-After`` is honoured up to
            ``max_backoff``).
        concurrency: requests in flight at once (per event loop).
        headers: extra HTTP headers. transport: an ``httpx`` transport (tests).
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 4,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        concurrency: int = 8,
        headers: dict[str, str] | None = None,
        transport: Any = None,
    ) -> None:
        if not model:
            raise ValueError("an OpenAI-compatible engine needs a model name")
        if concurrency < 1 or max_retries < 0 or timeout <= 0:
            raise ValueError("concurrency must be >= 1, max_retries >= 0 and timeout > 0")
        self.model = model
        url = base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
        self.base_url = url.rstrip("/")
        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.headers = {"Content-Type": "application/json", **(headers or {})}
        if key:
            self.headers["Authorization"] = f"Bearer {key}"
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.concurrency = concurrency
        self.transport = transport
        self.requests_sent = 0
        self._sems: dict[int, asyncio.Semaphore] = {}
        self._lock = threading.Lock()
        self._model_warned = False

    def __repr__(self) -> str:
        return f"OpenAICompatEngine({self.model!r}, base_url={self.base_url!r})"

    # -- HTTP ---------------------------------------------------------------------------------------------
    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        with self._lock:
            sem = self._sems.get(id(loop))
            if sem is None or getattr(sem, "_unirank_loop", None) is not loop:
                sem = asyncio.Semaphore(self.concurrency)
                sem._unirank_loop = loop  # type: ignore[attr-defined]
                self._sems[id(loop)] = sem
            return sem

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        return backoff_delay(attempt, self.backoff, self.max_backoff, retry_after)

    async def post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        """POST JSON with retries; the decoded JSON object, or :class:`ServerError`."""
        httpx = require("httpx", "llm")
        url = f"{self.base_url}/{path.lstrip('/')}"
        last = "no attempt"
        async with (
            self._semaphore(),
            httpx.AsyncClient(timeout=self.timeout, transport=self.transport) as client,
        ):
            for attempt in range(self.max_retries + 1):
                retry_after = None
                try:
                    self.requests_sent += 1
                    resp = await client.post(url, json=payload, headers=self.headers)
                    if resp.status_code in RETRY_STATUS:
                        retry_after = resp.headers.get("retry-after")
                        last = f"HTTP {resp.status_code}: {resp.text[:200]}"
                    elif resp.status_code >= 400:
                        raise ServerError(f"{url} answered HTTP {resp.status_code}: {resp.text[:500]}")
                    else:
                        try:
                            data = resp.json()
                        except ValueError:
                            data = None
                        if (
                            isinstance(data, dict)
                            and isinstance(data.get("choices"), list)
                            and data["choices"]
                        ):
                            self._check_model(data.get("model"))
                            return data
                        last = f"malformed response: {resp.text[:200]!r}"
                except (httpx.TimeoutException, httpx.TransportError) as exc:
                    last = f"{type(exc).__name__}: {exc}"
                if attempt < self.max_retries:
                    wait = self._delay(attempt, retry_after)
                    logger.warning("%s failed (%s); retry %d in %.2fs", url, last, attempt + 1, wait)
                    await asyncio.sleep(wait)
        raise ServerError(f"{url} failed after {self.max_retries + 1} attempts; last error: {last}")

    def _check_model(self, served: Any) -> None:
        """Warn once when the server names another model than the one asked for (llama.cpp's server
        ignores the ``model`` field and answers with whatever it loaded)."""
        if isinstance(served, str) and served and served != self.model and not self._model_warned:
            self._model_warned = True
            logger.warning(
                "%s answered as model %r, not the requested %r: it may be serving another model",
                self.base_url,
                served,
                self.model,
            )

    # -- endpoints ----------------------------------------------------------------------------------------
    async def achat(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int = 64,
        top_logprobs: int | None = None,
        stop: list[str] | None = None,
    ) -> Completion:
        """Greedy chat completion; ``top_logprobs=k`` asks for the k most likely tokens per position."""
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": 0.0,
        }
        if top_logprobs is not None:
            payload.update(logprobs=True, top_logprobs=top_logprobs)
        if stop:
            payload["stop"] = stop
        choice = (await self.post("chat/completions", payload))["choices"][0]
        msg = choice.get("message") or {}
        text = msg.get("content")
        if not isinstance(text, str):
            hint = (
                " (the answer is all reasoning_content: a reasoning model that ran out of max_tokens while "
                "thinking, or the server's reasoning parser kept the answer)"
                if msg.get("reasoning_content") or msg.get("reasoning")
                else ""
            )
            raise ServerError(f"chat response without text content{hint}: {str(choice)[:200]}")
        out = Completion(text)
        _read_content_logprobs(out, (choice.get("logprobs") or {}).get("content") or [])
        return out

    async def acomplete(
        self,
        prompt: str,
        *,
        max_tokens: int = 64,
        logprobs: int | None = None,
        echo: bool = False,
        stop: list[str] | None = None,
    ) -> Completion:
        """Greedy text completion (``/completions``); ``echo=True`` with ``max_tokens=0`` scores a text."""
        payload: dict[str, Any] = {
            "model": self.model,
            "prompt": prompt,
            "max_tokens": max_tokens,
            "temperature": 0.0,
        }
        if logprobs is not None:
            payload["logprobs"] = logprobs
        if echo:
            payload["echo"] = True
        if stop:
            payload["stop"] = stop
        choice = (await self.post("completions", payload))["choices"][0]
        text = choice.get("text")
        if not isinstance(text, str):
            raise ServerError(f"completion response without text: {str(choice)[:200]}")
        lp = choice.get("logprobs") or {}
        out = Completion(
            text,
            tokens=[str(t) for t in lp.get("tokens") or []],
            token_logprobs=list(lp.get("token_logprobs") or []),
            top_logprobs=[dict(d or {}) for d in lp.get("top_logprobs") or []],
            text_offset=[int(x) for x in lp.get("text_offset") or []],
        )
        if not out.tokens and isinstance(lp.get("content"), list):  # llama.cpp: the chat shape here too
            _read_content_logprobs(out, lp["content"])
        return out

    def chat(self, messages: list[dict[str, str]], **kwargs: Any) -> Completion:
        """Sync :meth:`achat`."""
        return run_sync(self.achat(messages, **kwargs))  # type: ignore[no-any-return]

    def complete(self, prompt: str, **kwargs: Any) -> Completion:
        """Sync :meth:`acomplete`."""
        return run_sync(self.acomplete(prompt, **kwargs))  # type: ignore[no-any-return]


def _read_content_logprobs(out: Completion, content: list[Any]) -> None:
    """Append the chat-shaped ``logprobs.content`` entries (one per generated token) to ``out``."""
    for item in content:
        out.tokens.append(str(item.get("token", "")))
        out.token_logprobs.append(item.get("logprob"))
        out.top_logprobs.append(
            {str(t["token"]): float(t["logprob"]) for t in item.get("top_logprobs") or []}
        )
