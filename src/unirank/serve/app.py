"""The re-ranking HTTP service: Cohere v1/v2, Jina and TEI compatible routes over any unirank ranker.

>>> from fastapi.testclient import TestClient
>>> with TestClient(create_app({"bm25": "bm25"})) as client:
...     body = client.post("/v2/rerank", json={"query": "rain", "documents": ["cats", "rain falls"]}).json()
>>> [r["index"] for r in body["results"]]
[1, 0]

Routes: ``POST /v1/rerank`` (Cohere v1 + Jina), ``POST /v2/rerank`` (Cohere v2), ``POST /jina/v1/rerank``
(Jina defaults: documents returned), ``POST /rerank`` (TEI), ``GET /health``, ``GET /info``,
``GET /metrics`` (Prometheus), ``GET /docs`` (offline) and ``/openapi.json``; ``GET /v1/models``,
``GET /info/{model}``, ``POST /v1/embeddings`` (see :mod:`unirank.serve.deploy_routes`).
Cohere and Jina ``relevance_score`` and TEI's default ``score`` are the model's scores mapped to 0..1
(``normalize="auto"``: sigmoid for logits, cosine to 0..1, per-query min-max for BM25); TEI's
``raw_scores: true`` gives the raw scores. The ``x-unirank-score-kind`` response header says which.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

import numpy as np

from ..base import Ranker
from ..errors import require

require("fastapi", "server")  # this module is the server: a missing extra names the pip install

from fastapi import Depends, FastAPI, HTTPException, Request  # noqa: E402
from fastapi.exceptions import RequestValidationError  # noqa: E402
from fastapi.responses import JSONResponse, Response  # noqa: E402
from starlette.exceptions import HTTPException as StarletteHTTPException  # noqa: E402

from ..normalize import normalize_scores  # noqa: E402
from .batcher import MicroBatcher, QueueFull, ShuttingDown, WouldTimeOut  # noqa: E402
from .deploy_routes import add_deploy_routes  # noqa: E402
from .guard import guard_middleware  # noqa: E402
from .limits import Metrics, ServeConfig, check_api_key  # noqa: E402
from .logs import RequestIdMiddleware  # noqa: E402
from .prepare import cohere_texts, render_json, word_count  # noqa: E402
from .schemas import (  # noqa: E402
    ErrorBody,
    RerankRequest,
    RerankResponse,
    TEIRank,
    TEIRerankRequest,
    error_body,
)

__all__ = ["create_app", "load_models"]

logger = logging.getLogger(__name__)

_ERROR_TYPES = {
    400: "validation",
    401: "unauthorized",
    404: "not_found",
    408: "timeout",
    413: "payload_too_large",
    422: "validation",
    429: "overloaded",
    503: "unavailable",
    504: "timeout",
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (401, 404, 413, 422, 429, 503, 504)
}


def load_models(models: Mapping[str, Ranker | str] | Ranker | str) -> dict[str, Ranker]:
    """Name -> ranker; specs are built with :func:`unirank.Reranker`."""
    from ..reranker import Reranker

    if isinstance(models, (str, Ranker)):
        models = {models if isinstance(models, str) else models.name: models}
    if not models:
        raise ValueError("a server needs at least one model")
    return {str(name): Reranker(spec) if isinstance(spec, str) else spec for name, spec in models.items()}


def create_app(models: Mapping[str, Ranker | str] | Ranker | str, config: ServeConfig | None = None) -> Any:
    """A FastAPI app serving ``models`` (name -> ranker or spec); default: ``default_model`` or the first."""
    cfg = config or ServeConfig()
    rankers = load_models(models)
    default = cfg.default_model or next(iter(rankers))
    default = cfg.aliases.get(default, default)
    lost = {a: t for a, t in cfg.aliases.items() if t not in rankers or a in rankers}
    if lost:
        raise ValueError(f"aliases {lost} point at no served model or shadow one; served: {sorted(rankers)}")
    if default not in rankers:
        raise ValueError(f"default model {default!r} is not one of {sorted(rankers)}")
    metrics = Metrics()

    def on_batch(name: str) -> Any:
        def record(n_req: int, n_docs: int, seconds: float) -> None:
            metrics.batch_docs.labels(name).observe(n_docs)
            metrics.batch_requests.labels(name).observe(n_req)
            metrics.batch_seconds.labels(name).observe(seconds)

        return record

    batchers = {
        name: MicroBatcher(
            r,
            max_batch_docs=cfg.max_batch_docs,
            max_wait_ms=cfg.max_wait_ms,
            max_queue=cfg.max_queue,
            on_batch=on_batch(name),
        )
        for name, r in rankers.items()
    }
    for name, b in batchers.items():
        metrics.queue_depth.labels(name).set_function(lambda b=b: b.depth)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        for b in batchers.values():
            b.reopen()
        yield
        # uvicorn has stopped accepting and waited for in-flight requests; finish what is still queued.
        await asyncio.gather(*(b.close(timeout=cfg.request_timeout) for b in batchers.values()))

    app = FastAPI(
        title="unirank",
        version=_version(),
        lifespan=lifespan,
        description="Re-ranking service speaking the Cohere, Jina and TEI rerank APIs.",
        docs_url=None,  # FastAPI's pages load their assets from a CDN; /docs is served offline below
        redoc_url=None,
    )
    app.state.batchers, app.state.metrics, app.state.config = batchers, metrics, cfg

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse(
            error_body(message, _ERROR_TYPES.get(status, "error")),
            status_code=status,
            headers={"Retry-After": "1"} if status in (429, 503) else None,
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_req: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_req: Request, exc: RequestValidationError) -> JSONResponse:
        errs = [_printable(dict(e)) for e in exc.errors()[:20]]
        msg = "; ".join(f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg')}" for e in errs[:5])
        body = {**error_body(msg or "invalid request", "validation"), "detail": errs}
        return JSONResponse(body, status_code=422)

    @app.exception_handler(Exception)
    async def internal_error(_req: Request, exc: Exception) -> JSONResponse:  # never leak internals
        logger.exception("internal error")
        return error(500, "internal server error")

    async def authorize(request: Request) -> None:
        if not check_api_key(request.headers, cfg.api_keys):
            metrics.rejected.labels("auth").inc()
            raise HTTPException(401, "missing or invalid API key")

    auth = [Depends(authorize)]

    def resolve(model: str | None) -> str:
        """The served model a request's ``model`` (a name, an alias or none: the default) reaches, or 404."""
        name = model or default
        name = cfg.aliases.get(name, name)
        if name not in rankers:
            served = sorted(rankers) + sorted(cfg.aliases)
            raise HTTPException(404, f"model {model!r} is not served; available: {served}")
        return name

    async def score(
        model: str | None, query: str, docs: list[Any], prepare: Any = None
    ) -> tuple[Ranker, np.ndarray, Any]:
        """Raw scores of ``docs``; ``prepare(ranker)`` -> ``(texts, extra)`` runs first, in a worker thread
        (per-document work never runs on the event loop), under the same timeout as the model."""
        name = resolve(model)
        if len(docs) > cfg.max_documents:
            metrics.rejected.labels("documents").inc()
            raise HTTPException(
                413, f"{len(docs)} documents; this server accepts at most {cfg.max_documents}"
            )
        if not query.strip():
            raise HTTPException(422, "query is empty or whitespace")

        deadline = time.perf_counter() + cfg.request_timeout

        async def run() -> tuple[np.ndarray, Any]:
            texts, extra = docs, None
            if prepare is not None:
                texts, extra = await asyncio.to_thread(prepare, rankers[name])
            if not texts:
                return np.zeros(0), extra
            return await batchers[name].submit(query, texts, deadline), extra

        try:
            raw, extra = await asyncio.wait_for(run(), cfg.request_timeout)
        except QueueFull as exc:
            metrics.rejected.labels("queue").inc()
            raise HTTPException(429, f"server busy: {exc}; retry later") from exc
        except ShuttingDown as exc:
            raise HTTPException(503, str(exc)) from exc
        except WouldTimeOut as exc:  # not started: it could not finish in time at the model's speed
            metrics.rejected.labels("timeout").inc()
            msg = f"request would not finish within the {cfg.request_timeout:g}s timeout; retry later"
            raise HTTPException(504, msg) from exc
        except asyncio.TimeoutError as exc:
            metrics.rejected.labels("timeout").inc()
            raise HTTPException(504, f"request timed out after {cfg.request_timeout:g}s") from exc
        except (ValueError, TypeError) as exc:  # the ranker refused this input
            raise HTTPException(422, str(exc)) from exc
        except Exception as exc:
            logger.exception("model %s failed", name)
            raise HTTPException(500, "internal server error") from exc
        return rankers[name], raw, extra

    def relevance(ranker: Ranker, raw: np.ndarray, normalized: bool) -> list[float]:
        s = normalize_scores(raw, ranker.score_kind, "auto", ranker.calibrator)[0] if normalized else raw
        finite = [float(x) for x in s if math.isfinite(x)]
        floor = min(finite) - 1.0 if finite else 0.0  # unscorable documents: last, but valid JSON
        return [float(x) if math.isfinite(x) else floor for x in s]

    def order(scores: list[float], top_n: int | None) -> list[int]:
        idx = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
        return idx[:top_n] if top_n else idx

    def texts_of(req: RerankRequest, version: str) -> Any:
        """``prepare`` for Cohere / Jina bodies: document texts, cut to ``max_tokens_per_doc`` (at most the
        model's window) by the served model's own tokenizer (whitespace words without a fast tokenizer,
        such as BM25); and the word count of Jina's ``usage``."""

        def prepare(ranker: Ranker) -> tuple[list[str], int]:
            n = req.max_tokens_per_doc
            window = getattr(ranker, "max_length", None)
            if n and isinstance(window, int) and window > 0:
                n = min(n, window)
            texts = cohere_texts(req.documents, req.rank_fields, n, getattr(ranker, "tokenizer", None))
            words = 0
            if version == "1":
                words = word_count(req.query) * len(texts) + sum(word_count(t) for t in texts)
            return texts, words

        return prepare

    async def cohere(req: RerankRequest, version: str, jina: bool) -> Response:
        ranker, raw, n = await score(req.model, req.query, req.documents, texts_of(req, version))
        rel = relevance(ranker, raw, normalized=True)
        want_docs = req.return_documents if req.return_documents is not None else jina
        results = []
        for i in order(rel, req.top_n):
            item: dict[str, Any] = {"index": i, "relevance_score": rel[i]}
            if want_docs:
                doc = req.documents[i]
                item["document"] = {"text": doc} if isinstance(doc, str) else doc
            results.append(item)
        body: dict[str, Any] = {
            "id": str(uuid.uuid4()),
            "results": results,
            "meta": {"api_version": {"version": version}, "billed_units": {"search_units": 1}},
        }
        if version == "1":  # /v1/rerank is also Jina's route: add its fields
            body["model"] = req.model or default
            body["usage"] = {"total_tokens": n, "prompt_tokens": n}
        return await json_response(body, "probability")

    async def json_response(content: Any, score_kind: str) -> Response:
        """The body rendered in a worker thread (echoed documents can be megabytes)."""
        try:
            data = await asyncio.to_thread(render_json, content)
        except UnicodeEncodeError as exc:  # the guard refuses lone surrogates first; never a 500 anyway
            raise HTTPException(422, "a document holds a lone UTF-16 surrogate: invalid Unicode") from exc
        except ValueError as exc:  # only echoed input can hold these: Python's JSON reads 1e400 as inf
            raise HTTPException(422, "a document holds a number JSON cannot carry (NaN or Infinity)") from exc
        except RecursionError as exc:
            raise HTTPException(422, "a document is nested too deeply to be returned") from exc
        return Response(data, media_type="application/json", headers={"x-unirank-score-kind": score_kind})

    common: dict[str, Any] = {"dependencies": auth, "responses": _ERRORS, "response_model_exclude_none": True}

    @app.post("/v1/rerank", response_model=RerankResponse, **common)
    async def rerank_v1(req: RerankRequest) -> Response:
        """Cohere v1 rerank; also the Jina rerank route (the body carries both APIs' fields)."""
        return await cohere(req, "1", jina=False)

    @app.post("/jina/v1/rerank", response_model=RerankResponse, **common)
    async def rerank_jina(req: RerankRequest) -> Response:
        """Jina rerank with Jina's defaults (``return_documents`` true)."""
        return await cohere(req, "1", jina=True)

    @app.post("/v2/rerank", response_model=RerankResponse, **common)
    async def rerank_v2(req: RerankRequest) -> Response:
        """Cohere v2 rerank."""
        return await cohere(req, "2", jina=False)

    @app.post("/rerank", response_model=list[TEIRank], **common)
    async def rerank_tei(req: TEIRerankRequest) -> Response:
        """text-embeddings-inference rerank: a list of ``{index, score, text?}``, best first."""
        ranker, raw, _ = await score(req.model, req.query, req.texts)
        s = relevance(ranker, raw, normalized=not req.raw_scores)
        kind = ranker.score_kind.value if req.raw_scores else "probability"
        out = [
            {"index": i, "score": s[i], **({"text": req.texts[i]} if req.return_text else {})}
            for i in order(s, None)
        ]
        return await json_response(out, kind)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "models": sorted(rankers)}

    @app.get("/info", dependencies=auth)
    async def info() -> dict[str, Any]:
        return {
            "version": _version(),
            "default_model": default,
            "models": [
                {"name": n, "class": type(r).__name__, "score_kind": r.score_kind.value}
                for n, r in rankers.items()
            ],
            "aliases": dict(cfg.aliases),
            "limits": {
                "max_documents": cfg.max_documents,
                "max_body_bytes": cfg.max_body_bytes,
                "request_timeout": cfg.request_timeout,
                "max_queue": cfg.max_queue,
                "header_timeout": cfg.header_timeout,
                "body_timeout": cfg.body_timeout,
                "keep_alive_timeout": cfg.keep_alive_timeout,
            },
        }

    @app.get("/metrics", dependencies=auth if cfg.metrics_auth else [])
    async def prometheus() -> Response:
        data, ctype = metrics.render()
        return Response(data, media_type=ctype)

    add_deploy_routes(app, rankers, cfg, auth, resolve)
    if cfg.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        origins = list(cfg.cors_origins)
        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_methods=["*"], allow_headers=["*"])
    app.add_middleware(_Guard, config=cfg, metrics=metrics)
    app.add_middleware(RequestIdMiddleware)  # outermost: even the guard's refusals carry X-Request-ID
    return app


class _Guard:
    """ASGI middleware adapter for :func:`guard_middleware` (Starlette instantiates it with the app)."""

    def __init__(self, app: Any, config: ServeConfig, metrics: Metrics) -> None:
        self._call = guard_middleware(app, config, metrics)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self._call(scope, receive, send)


def _printable(obj: Any, limit: int = 200, depth: int = 0) -> Any:
    """A validation error's echo made safe to send as JSON: strings valid UTF-8 (a lone surrogate becomes
    ``?``) and at most ``limit`` characters, containers at most 20 items and 6 levels deep (a 9 MB or
    900-level document is not echoed back), non-finite numbers as strings."""
    if isinstance(obj, bytes):
        obj = obj[:limit].decode("utf-8", "replace")
    if isinstance(obj, str):
        short = obj if len(obj) <= limit else obj[:limit] + "..."
        return short.encode("utf-8", "replace").decode("utf-8")
    if obj is None or isinstance(obj, bool):
        return obj
    if isinstance(obj, int):
        return obj if obj.bit_length() <= 256 else f"<an integer of {obj.bit_length()} bits>"
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else str(obj)
    if isinstance(obj, (dict, list, tuple)) and depth >= 6:
        return "..."
    if isinstance(obj, dict):
        items = list(obj.items())[:20]
        return {str(_printable(k, limit, 6)): _printable(v, limit, depth + 1) for k, v in items}
    if isinstance(obj, (list, tuple)):
        return [_printable(v, limit, depth + 1) for v in obj[:20]]
    return _printable(repr(obj), limit)


def _version() -> str:
    from .. import __version__

    return __version__
