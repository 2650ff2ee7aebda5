"""Hosted and self-hosted re-ranking services as rankers: Cohere, Jina, Voyage, Mixedbread, TEI, unirank.

Every client is truly async (``httpx.AsyncClient``); the sync API runs the async path. One request is sent
per query (the providers take one query per call), concurrently up to ``max_concurrency``; 429 and 5xx
answers and transport errors are retried with exponential backoff, honouring ``Retry-After``. Results are
mapped back by the ``index`` each provider returns, so ids and metadata always come from the caller's
documents; documents a provider leaves out (``top_n``) score NaN and rank last.

Request and response shapes, as each provider documents them (``STYLES``): Cohere v2 / v1 and Jina send
``documents`` + ``top_n`` and read ``results[].relevance_score``; Voyage ``documents`` + ``top_k`` ->
``data[].relevance_score``; Mixedbread ``POST /v1/reranking`` with ``input`` + ``top_k`` -> ``data[].score``;
TEI ``POST /rerank`` with ``texts`` -> a list of ``{index, score}``.

Score kinds, honestly: Cohere, Jina, Voyage and Mixedbread return relevance scores in [0, 1] that are
monotone in relevance but not calibrated probabilities; they are declared ``PROBABILITY`` so that
``normalize="auto"`` leaves them alone. TEI returns a sigmoid probability (``raw_scores=True``: logits).
A unirank server names its scores' kind in the ``x-unirank-score-kind`` header; the client adopts it.

>>> from unirank import Reranker
>>> r = Reranker("tei:http://127.0.0.1:8080")  # no key needed for a local server
>>> r.style, r.score_kind.value
('tei', 'probability')
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from ..backends.http import RETRY_STATUS, backoff_delay
from ..base import Capabilities, Ranker
from ..errors import SpecError, UniRankError, require
from ..types import Document, ScoreKind

__all__ = [
    "STYLES",
    "APIError",
    "APIRanker",
    "CohereRanker",
    "JinaRanker",
    "MixedbreadRanker",
    "TEIRanker",
    "UnirankRanker",
    "VoyageRanker",
]

logger = logging.getLogger(__name__)
T = TypeVar("T")
SCORE_KIND_HEADER = "x-unirank-score-kind"


class APIError(UniRankError, RuntimeError):
    """A re-ranking service answered with an error, a malformed body, or not at all (after retries)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class _Style:
    path: str
    docs_field: str
    top_field: str | None
    results_field: str | None  # None: the body is the list itself (TEI)
    score_field: str
    sends_model: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


_NO_DOCS = {"return_documents": False}
STYLES: dict[str, _Style] = {
    "cohere-v2": _Style("/v2/rerank", "documents", "top_n", "results", "relevance_score"),
    "cohere-v1": _Style("/v1/rerank", "documents", "top_n", "results", "relevance_score", extra=_NO_DOCS),
    "jina": _Style("/v1/rerank", "documents", "top_n", "results", "relevance_score", extra=_NO_DOCS),
    "voyage": _Style("/v1/rerank", "documents", "top_k", "data", "relevance_score", extra=_NO_DOCS),
    "mixedbread": _Style("/v1/reranking", "input", "top_k", "data", "score", extra={"return_input": False}),
    "tei": _Style("/rerank", "texts", None, None, "score", sends_model=False),
}


@dataclass(frozen=True)
class _Provider:
    style: str
    base_url: str | None  # hosted default; None: the spec must give one
    key_env: str | None
    max_docs: int | None = None  # documented per-request limit; longer lists are split


PROVIDERS: dict[str, _Provider] = {
    "cohere": _Provider("cohere-v2", "https://api.cohere.com", "COHERE_API_KEY", max_docs=1000),
    "jina": _Provider("jina", "https://api.jina.ai", "JINA_API_KEY", max_docs=2048),
    "voyage": _Provider("voyage", "https://api.voyageai.com", "VOYAGE_API_KEY", max_docs=1000),
    "mixedbread": _Provider("mixedbread", "https://api.mixedbread.ai", "MXBAI_API_KEY", max_docs=1000),
    "tei": _Provider("tei", None, None, max_docs=32),  # TEI's default --max-client-batch-size
    "unirank": _Provider("tei", None, "UNIRANK_API_KEY"),
}


def _run_sync(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine from sync code, also when the caller already runs an event loop (notebooks)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="unirank-api") as ex:
        return ex.submit(lambda: asyncio.run(make())).result()


class APIRanker(Ranker):
    """A ranker backed by an HTTP re-ranking service.

    Args:
        model: the provider's model name (sent as ``model``; TEI ignores it; a unirank server picks by it).
        provider: ``"cohere" | "jina" | "voyage" | "mixedbread" | "tei" | "unirank"``.
        base_url: the service root (default: the provider's hosted API); any Cohere-compatible server works
            with ``provider="cohere"``.
        api_key: the key; default from the provider's environment variable. Only hosted APIs require one.
        style: request/response style (``STYLES``), default the provider's; a unirank server speaks all.
        timeout: seconds per HTTP request. max_retries / backoff / max_backoff: retry policy on 429/5xx.
        max_concurrency: requests in flight at once. top_n: ask the service for only the best ``top_n``.
        max_docs_per_request: split longer candidate lists (scores of the parts are merged).
        raw_scores: TEI style only: ask for raw logits instead of sigmoid probabilities.
        transport: an ``httpx`` transport (e.g. ``httpx.ASGITransport(app)`` for an in-process server).
    """

    capabilities = Capabilities(pointwise=True, native_async=True)

    def __init__(
        self,
        model: str | None = None,
        *,
        provider: str = "cohere",
        base_url: str | None = None,
        api_key: str | None = None,
        style: str | None = None,
        timeout: float = 30.0,
        max_retries: int = 4,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        max_concurrency: int = 8,
        top_n: int | None = None,
        max_docs_per_request: int | None = None,
        raw_scores: bool = False,
        headers: dict[str, str] | None = None,
        transport: Any = None,
        name: str = "",
    ) -> None:
        if provider not in PROVIDERS:
            raise SpecError(f"unknown API provider {provider!r}; expected one of {sorted(PROVIDERS)}")
        prov = PROVIDERS[provider]
        style = style or prov.style
        if style not in STYLES:
            raise ValueError(f"unknown API style {style!r}; expected one of {sorted(STYLES)}")
        url = (base_url or prov.base_url or "").rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise SpecError(f"{provider}: base_url must be an http(s) URL, got {base_url!r}")
        key = api_key or (os.environ.get(prov.key_env) if prov.key_env else None)
        if not key and prov.base_url and url == prov.base_url:
            raise ValueError(
                f"{provider}: an API key is needed for {url}; pass api_key=... or set {prov.key_env}"
            )
        for label, value in (("timeout", timeout), ("max_concurrency", max_concurrency)):
            if not value or value <= 0:
                raise ValueError(f"{label} must be > 0, got {value}")
        if max_retries < 0 or backoff < 0:
            raise ValueError("max_retries and backoff must be >= 0")
        if top_n is not None and top_n < 1:
            raise ValueError(f"top_n must be >= 1, got {top_n}")
        super().__init__(name or f"{provider}:{model or url}")
        self.provider, self.style, self.base_url, self.model = provider, style, url, model
        self._key = key
        self.timeout, self.max_retries = timeout, max_retries
        self.backoff, self.max_backoff = backoff, max_backoff
        self.max_concurrency, self.top_n, self.raw_scores = max_concurrency, top_n, raw_scores
        self.max_docs_per_request = max_docs_per_request or prov.max_docs
        self.headers = dict(headers or {})
        self.transport = transport
        tei_raw = style == "tei" and raw_scores
        self.score_kind = ScoreKind.LOGIT if tei_raw else ScoreKind.PROBABILITY
        if provider == "unirank":
            self.score_kind = ScoreKind.UNBOUNDED  # until the server says (x-unirank-score-kind)

    @classmethod
    def from_spec(cls, arg: str | None, **options: Any) -> APIRanker:
        provider = getattr(cls, "PROVIDER", None) or options.pop("provider", "cohere")
        arg = (arg or "").strip()
        if PROVIDERS[provider].base_url is None:  # tei:<base_url>, unirank:<base_url>
            return cls(options.pop("model", None), provider=provider, base_url=arg or None, **options)
        if "@http" in arg:  # cohere:<model>@<base_url>
            arg, _, rest = arg.partition("@")
            options["base_url"] = rest
        return cls(arg or None, provider=provider, **options)

    # -- the primitive ------------------------------------------------------------------------------------
    def _score_many(
        self, queries: list[str], docs_lists: list[list[Document]], show_progress: bool = False
    ) -> list[np.ndarray]:
        return _run_sync(lambda: self._ascore_lists(queries, docs_lists, self.top_n))

    async def _ascore_many(
        self, queries: list[str], docs_lists: list[list[Document]], show_progress: bool = False
    ) -> list[np.ndarray]:
        return await self._ascore_lists(queries, docs_lists, self.top_n)

    def _score_for_ranking(
        self, queries: list[str], docs_lists: list[list[Document]], top_k: int | None, show_progress: bool
    ) -> list[np.ndarray]:
        # ``top_k`` is sent to the service as its ``top_n`` / ``top_k``
        return _run_sync(lambda: self._ascore_lists(queries, docs_lists, self._top(top_k)))

    async def _ascore_for_ranking(
        self, queries: list[str], docs_lists: list[list[Document]], top_k: int | None
    ) -> list[np.ndarray]:
        return await self._ascore_lists(queries, docs_lists, self._top(top_k))

    def _top(self, top_k: int | None) -> int | None:
        cands = [t for t in (top_k, self.top_n) if t]
        return min(cands) if cands else None

    # -- HTTP ---------------------------------------------------------------------------------------------
    async def _ascore_lists(
        self, queries: list[str], docs_lists: list[list[Document]], top_n: int | None
    ) -> list[np.ndarray]:
        httpx = require("httpx", "api")
        headers = {"Content-Type": "application/json", "Accept": "application/json", **self.headers}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        sem = asyncio.Semaphore(self.max_concurrency)
        out = [np.full(len(d), np.nan) for d in docs_lists]
        jobs = []
        size = self.max_docs_per_request or max((len(d) for d in docs_lists), default=1) or 1
        async with httpx.AsyncClient(
            base_url=self.base_url, headers=headers, timeout=self.timeout, transport=self.transport
        ) as client:
            for li, (q, docs) in enumerate(zip(queries, docs_lists)):
                for start in range(0, len(docs), size):
                    part = docs[start : start + size]
                    top = top_n if len(part) == len(docs) else None  # a split list needs every score
                    jobs.append(self._request((client, sem), q, part, top, (out[li], start)))
            await asyncio.gather(*jobs)
        return out

    async def _request(self, conn: Any, query: str, docs: list[Document], top_n: Any, slot: Any) -> None:
        (client, sem), (into, offset) = conn, slot
        style = STYLES[self.style]
        body: dict[str, Any] = {"query": query, style.docs_field: [d.text for d in docs], **style.extra}
        if (style.sends_model or self.provider == "unirank") and self.model:  # unirank: TEI route too
            body["model"] = self.model
        if style.top_field and top_n is not None:
            body[style.top_field] = min(top_n, len(docs))
        if self.style == "tei":
            body.update(raw_scores=self.raw_scores, return_text=False, truncate=True)
        async with sem:
            data, resp_headers = await self._post(client, style.path, body)
        kind = resp_headers.get(SCORE_KIND_HEADER)
        if self.provider == "unirank" and kind in ScoreKind._value2member_map_:
            self.score_kind = ScoreKind(kind)
        got = self._parse(data, style, len(docs))
        top_sent = body.get(style.top_field) if style.top_field else None
        want = len(docs) if top_sent is None else int(top_sent)
        if len(got) < want:  # the unscored documents would rank last with no word of why
            raise APIError(f"{self.name}: {style.path} returned {len(got)} results for {want} documents")
        for index, score in got:
            into[offset + index] = score

    async def _post(self, client: Any, path: str, body: dict[str, Any]) -> tuple[Any, Any]:
        httpx = require("httpx", "api")
        last = "no attempt made"
        for attempt in range(self.max_retries + 1):
            retry_after = None
            try:
                resp = await client.post(path, json=body)
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                last = f"{type(exc).__name__}: {exc}"
                status = None
            else:
                status = resp.status_code
                if status < 300:
                    try:
                        return resp.json(), resp.headers
                    except ValueError as exc:
                        raise APIError(
                            f"{self.name}: malformed JSON from {path} ({status}): {resp.text[:200]!r}", status
                        ) from exc
                last = f"HTTP {status}: {resp.text[:300]}"
                if status not in RETRY_STATUS:
                    raise APIError(f"{self.name}: {path} failed with {last}", status)
                retry_after = resp.headers.get("retry-after")
            if attempt < self.max_retries:
                wait = backoff_delay(attempt, self.backoff, self.max_backoff, retry_after)
                logger.info("%s: %s (attempt %d); retrying in %.2fs", self.name, last, attempt + 1, wait)
                await asyncio.sleep(wait)
        raise APIError(
            f"{self.name}: {path} failed after {self.max_retries + 1} attempts; last: {last}", status
        )

    def _parse(self, data: Any, style: _Style, n: int) -> list[tuple[int, float]]:
        field_ = style.results_field
        items = data if field_ is None else data.get(field_) if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise APIError(f"{self.name}: response has no {field_ or 'result'} list: {data!r:.200}")
        out, seen = [], set()
        for item in items:
            idx, score = (
                (item.get("index"), item.get(style.score_field)) if isinstance(item, dict) else (0, 0)
            )
            ok_idx = type(idx) is int and 0 <= idx < n and idx not in seen
            if not isinstance(item, dict) or not ok_idx or type(score) not in (int, float):
                raise APIError(f"{self.name}: malformed result {item!r:.200} for {n} documents")
            seen.add(idx)
            out.append((idx, float(score) if math.isfinite(score) else float("nan")))
        return out

    def __repr__(self) -> str:  # never shows the key
        return (
            f"{type(self).__name__}(model={self.model!r}, base_url={self.base_url!r}, style={self.style!r})"
        )


class CohereRanker(APIRanker):
    """``cohere:<model>`` (v2 API), or ``cohere:<model>@<base_url>`` for any Cohere-compatible server."""

    PROVIDER = "cohere"


class JinaRanker(APIRanker):
    """``jina:<model>``: the Jina AI rerank API (``JINA_API_KEY``)."""

    PROVIDER = "jina"


class VoyageRanker(APIRanker):
    """``voyage:<model>``: the Voyage AI rerank API (``VOYAGE_API_KEY``)."""

    PROVIDER = "voyage"


class MixedbreadRanker(APIRanker):
    """``mixedbread:<model>``: the Mixedbread reranking API (``MXBAI_API_KEY``)."""

    PROVIDER = "mixedbread"


class TEIRanker(APIRanker):
    """``tei:<base_url>``: a Hugging Face text-embeddings-inference server's ``/rerank``."""

    PROVIDER = "tei"


class UnirankRanker(APIRanker):
    """``unirank:<base_url>``: another ``unirank serve``; ``style=`` picks any route it speaks."""

    PROVIDER = "unirank"

    def __init__(self, model: str | None = None, **options: Any) -> None:
        options.setdefault("raw_scores", True)
        super().__init__(model, **options)
