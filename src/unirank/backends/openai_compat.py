"""Async client for OpenAI-compatible servers (vLLM, SGLang, Ollama, llama.cpp server, hosted APIs).

``base_url`` comes from the argument, else ``$OPENAI_BASE_URL``, else ``https://api.openai.com/v1``; the key
from ``api_key``, else ``$OPENAI_API_KEY``, else none (a local server needs no key). Requests retry on
connection errors, timeouts, HTTP 408 / 429 / 5xx and malformed JSON, with exponential backoff that honours
``Retry-After``; when retries run out a :class:`ServerError` is raised (never a hung or crashed event loop).
At most ``concurrency`` requests are in flight per event loop.

It fails fast on what no retry can fix: a ``base_url`` without an ``http(s)://`` scheme
(:class:`ServerConfigError`, at construction), an unsupported protocol, HTTP 4xx other than 408 / 409 / 425 /
429 (:class:`ServerError` at once), and a model name the server's ``GET /models`` does not list
(:class:`UnknownModelError`, read once per engine; a server without that route is fine). A request given up
on (timeout, cancelled task) has its connection closed before any retry is sent, so the server can stop it.

``usage`` (:class:`~unirank.backends.usage.Usage`) sums the ``usage`` of every answer; ``log_path=`` appends
one JSON line per request (``request``, ``response``, ``seconds``) for analysis. ``tokenizer=`` (a folder or
hub id of the served model's tokenizer, or a tokenizer object) lets the LLM rankers render the model's own
chat template and budget documents in tokens client-side, exactly as the local engine does (``max_length=``:
the served context in tokens, default the tokenizer's own limit). Reasoning switches, sent only where they
mean something: ``enable_thinking`` (``chat_template_kwargs: {"enable_thinking": ...}`` on chat requests, the
vLLM / SGLang convention; passed to the client-side chat template of ``/completions`` prompts) and
``reasoning_effort`` (OpenAI-style, chat requests only).

>>> e = OpenAICompatEngine("my-model", base_url="http://127.0.0.1:8000/v1")
>>> e.base_url
'http://127.0.0.1:8000/v1'
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from typing import Any

from ..aio import run_sync
from ..errors import UniRankError, require
from .completion import Completion, load_tokenizer, read_content_logprobs
from .http import RETRY_STATUS, backoff_delay, check_base_url, served_models
from .usage import Usage

__all__ = [
    "Completion",
    "EndpointError",
    "OpenAICompatEngine",
    "ServerConfigError",
    "ServerError",
    "UnknownModelError",
    "run_sync",
]

logger = logging.getLogger(__name__)


class ServerError(UniRankError, RuntimeError):
    """An OpenAI-compatible server failed (after retries) or answered something unusable."""


class ServerConfigError(UniRankError, ValueError):
    """An engine configuration no request can succeed with (e.g. a ``base_url`` without ``http(s)://``)."""


class UnknownModelError(ServerError):
    """The server's ``GET /models`` does not list the requested model; ``served`` holds the names it lists."""

    def __init__(self, message: str, served: list[str]) -> None:
        super().__init__(message)
        self.served = served


class EndpointError(ServerError):
    """The endpoint cannot give what the method needs (e.g. FIRST over ``chat`` without the identifiers in the
    first token's log-probabilities); the message names the endpoint to use instead."""


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
        check_model: read ``GET /models`` once and refuse a name the server does not list.
        tokenizer: the served model's tokenizer (folder, hub id or object) for client-side chat templates
            and token budgets; ``None``: prompts are plain transcripts and budgets count words.
        log_path: append one JSON line per request (request, response, seconds) to this file.
        max_length: the served model's context in tokens (default: the tokenizer's limit, if it has one).
        enable_thinking, reasoning_effort: reasoning switches (see the module docstring); ``None``: not sent.
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
        check_model: bool = True,
        tokenizer: Any = None,
        log_path: str | os.PathLike[str] | None = None,
        max_length: int | None = None,
        enable_thinking: bool | None = None,
        reasoning_effort: str | None = None,
    ) -> None:
        if not model:
            raise ValueError("an OpenAI-compatible engine needs a model name")
        if concurrency < 1 or max_retries < 0 or timeout <= 0:
            raise ValueError("concurrency must be >= 1, max_retries >= 0 and timeout > 0")
        self.model = model
        url = base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
        why = check_base_url(url)
        if why:
            raise ServerConfigError(why)
        self.base_url = url.rstrip("/")
        self.check_model = check_model
        self._served: list[str] | None = None
        self._models_read = False
        self.usage = Usage()
        self.log_path = os.fspath(log_path) if log_path is not None else None
        self.tokenizer = load_tokenizer(tokenizer)
        limit = getattr(self.tokenizer, "model_max_length", None)
        known = isinstance(limit, int) and 0 < limit < 10**7  # transformers' "no limit" is ~1e30
        self.max_length: int | None = max_length or (limit if known else None)
        if enable_thinking is not None and not isinstance(enable_thinking, bool):
            raise ValueError(f"enable_thinking must be True, False or None, got {enable_thinking!r}")
        if reasoning_effort is not None and (not isinstance(reasoning_effort, str) or not reasoning_effort):
            raise ValueError(f"reasoning_effort must be a string such as 'low', got {reasoning_effort!r}")
        self.enable_thinking, self.reasoning_effort = enable_thinking, reasoning_effort
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

    def encode(self, text: str, special: bool = True) -> list[int]:
        """Token ids of ``text`` with the served model's tokenizer (``tokenizer=``), as the server counts."""
        if self.tokenizer is None:
            raise ServerConfigError(f"{self!r} has no tokenizer: pass tokenizer= to count tokens client-side")
        return list(self.tokenizer(text, add_special_tokens=special)["input_ids"])

    def chat_extras(self) -> dict[str, Any]:
        """The reasoning switches a chat request carries (none when unset)."""
        out: dict[str, Any] = {}
        if self.enable_thinking is not None:
            out["chat_template_kwargs"] = {"enable_thinking": self.enable_thinking}
        if self.reasoning_effort is not None:
            out["reasoning_effort"] = self.reasoning_effort
        return out

    def template_kwargs(self) -> dict[str, Any]:
        """Extra variables for a client-side chat template (``enable_thinking`` when set)."""
        return {} if self.enable_thinking is None else {"enable_thinking": self.enable_thinking}

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
            if self.check_model:
                await self._read_models(client)
            for attempt in range(self.max_retries + 1):
                retry_after = None
                t0 = time.perf_counter()
                try:
                    self.requests_sent += 1
                    # a timeout or a cancelled task closes this request's connection (httpx), so the server
                    # sees the disconnect before any retry is sent
                    resp = await client.post(url, json=payload, headers=self.headers)
                    if resp.status_code in RETRY_STATUS:
                        retry_after = resp.headers.get("retry-after")
                        last = f"HTTP {resp.status_code}: {resp.text[:200]}"
                    elif resp.status_code >= 400:
                        self._log(path, payload, resp.text[:2000], t0)
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
                            self.usage.add_server(data.get("usage"))
                            self._log(path, payload, data, t0)
                            return data
                        last = f"malformed response: {resp.text[:200]!r}"
                except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:  # no retry can fix these
                    raise ServerConfigError(f"{url}: {type(exc).__name__}: {exc}") from exc
                except (httpx.TimeoutException, httpx.TransportError) as exc:
                    last = f"{type(exc).__name__}: {exc}"
                if attempt < self.max_retries:
                    wait = self._delay(attempt, retry_after)
                    logger.warning("%s failed (%s); retry %d in %.2fs", url, last, attempt + 1, wait)
                    await asyncio.sleep(wait)
        raise ServerError(f"{url} failed after {self.max_retries + 1} attempts; last error: {last}")

    async def _read_models(self, client: Any) -> None:
        """``GET /models`` once: refuse a model the server does not list (a server without the route, or one
        that lists nothing, is accepted; a transport failure is left to the request itself)."""
        httpx = require("httpx", "llm")
        if not self._models_read:
            try:
                resp = await client.get(f"{self.base_url}/models", headers=self.headers)
            except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
                raise ServerConfigError(f"{self.base_url}: {type(exc).__name__}: {exc}") from exc
            except (httpx.TimeoutException, httpx.TransportError):
                return
            self._models_read = True
            try:
                self._served = served_models(resp.json()) if resp.status_code == 200 else None
            except ValueError:
                self._served = None
        if self._served and self.model not in self._served:
            raise UnknownModelError(
                f"{self.base_url} does not serve model {self.model!r}; it lists {self._served} "
                "(pass one of those names, or check_model=False for a server whose list is incomplete)",
                self._served,
            )

    def _log(self, path: str, payload: dict[str, Any], response: Any, t0: float) -> None:
        if not self.log_path:
            return
        line = {"endpoint": path, "request": payload, "response": response}
        line["seconds"] = round(time.perf_counter() - t0, 4)
        with self._lock, open(self.log_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(line, ensure_ascii=False) + "\n")

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
        prefill: str | None = None,
    ) -> Completion:
        """Greedy chat completion; ``top_logprobs=k`` asks for the k most likely tokens per position.

        ``prefill`` starts the assistant's answer: a last assistant message the server continues (vLLM /
        SGLang ``continue_final_message`` with ``add_generation_prompt: false``; llama.cpp's server continues
        a last assistant message by itself). A server that rejects those fields answers HTTP 400
        (:class:`ServerError`); one that ignores them answers a fresh turn, which callers must detect."""
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": 0.0,
            **self.chat_extras(),
        }
        if prefill:
            payload["messages"] = [*messages, {"role": "assistant", "content": prefill}]
            payload.update(continue_final_message=True, add_generation_prompt=False)
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
        out = Completion(text, reasoning=str(msg.get("reasoning_content") or msg.get("reasoning") or ""))
        read_content_logprobs(out, (choice.get("logprobs") or {}).get("content") or [])
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
            read_content_logprobs(out, lp["content"])
        return out

    def chat(self, messages: list[dict[str, str]], **kwargs: Any) -> Completion:
        """Sync :meth:`achat`."""
        return run_sync(self.achat(messages, **kwargs))  # type: ignore[no-any-return]

    def complete(self, prompt: str, **kwargs: Any) -> Completion:
        """Sync :meth:`acomplete`."""
        return run_sync(self.acomplete(prompt, **kwargs))  # type: ignore[no-any-return]
