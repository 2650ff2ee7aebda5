"""Routes a deployment expects beside the rerank APIs: OpenAI ``/v1/models`` and ``/v1/embeddings``,
``/info/{model}``, and the offline ``/docs`` page.

- ``GET /v1/models``: ``{"object": "list", "data": [{"id", "object": "model", "created", "owned_by",
  "root", "aliases", "capabilities", ...}]}``: every served model, then every alias (``root``: the model
  it reaches); also ``models: [{name, endpoints}]``, the shape of Cohere's ``GET /v1/models``.
  ``GET /v1/models/{id}``: one entry (404 when neither a model nor an alias).
- ``GET /info/{model}``: the model's class, spec, options, score kind, window, device, aliases.
- ``POST /v1/embeddings``: OpenAI's body (``input``: a string or a list of strings, ``model``,
  ``encoding_format``: ``float`` or ``base64``) when the model is an embedding model (``embed:...``);
  any other model: 400 with the names of the embedding models served.
"""

from __future__ import annotations

import asyncio
import base64
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from ..base import Ranker
from .docs_page import CSP, docs_html
from .limits import ServeConfig
from .prepare import render_json

__all__ = ["EmbeddingRequest", "add_deploy_routes", "is_embedding_model"]


class EmbeddingRequest(BaseModel):
    """OpenAI ``POST /v1/embeddings`` body (token-id inputs are not accepted: send text)."""

    model_config = ConfigDict(
        extra="ignore", json_schema_extra={"examples": [{"input": ["what causes rain"], "model": "default"}]}
    )

    input: str | list[str] = Field(..., description="a text or a list of texts")
    model: str | None = Field(None, max_length=512, description="model name; default: the server's default")
    encoding_format: Literal["float", "base64"] = Field("float", description="float lists or base64 float32")
    dimensions: int | None = Field(None, ge=1, description="keep the first N dimensions (then re-normalised)")
    user: str | None = Field(None, max_length=512, description="accepted and ignored")


def is_embedding_model(ranker: Ranker) -> bool:
    """Whether ``ranker`` embeds texts (a bi-encoder, :class:`~unirank.methods.embedding.EmbeddingRanker`)."""
    mod = sys.modules.get("unirank.methods.embedding")  # not imported: no ranker can be one
    return mod is not None and isinstance(ranker, mod.EmbeddingRanker)


def _model_info(
    name: str, ranker: Ranker, described: Mapping[str, Any], aliases: list[str]
) -> dict[str, Any]:
    caps = ["rerank", *(["embeddings"] if is_embedding_model(ranker) else [])]
    return {
        "name": name,
        "class": type(ranker).__name__,
        "spec": described.get("spec", ranker.name),
        "options": described.get("options", {}),
        "score_kind": ranker.score_kind.value,
        "max_length": getattr(ranker, "max_length", None),
        "batch_size": getattr(ranker, "batch_size", None),
        "device": str(getattr(ranker, "device", "cpu")),
        "aliases": aliases,
        "capabilities": caps,
    }


def add_deploy_routes(
    app: FastAPI,
    rankers: Mapping[str, Ranker],
    cfg: ServeConfig,
    auth: list[Any],
    resolve: Callable[[str | None], str],
) -> None:
    """Register the routes of the module docstring; ``resolve(model_or_alias)`` -> served name or 404."""
    created = int(time.time())
    aliases_of = {n: sorted(a for a, t in cfg.aliases.items() if t == n) for n in rankers}

    def entry(model_id: str, root: str) -> dict[str, Any]:
        r = rankers[root]
        return {
            "id": model_id,
            "object": "model",
            "created": created,
            "owned_by": "unirank",
            "root": root,
            "aliases": aliases_of[root] if model_id == root else [],
            "capabilities": _model_info(root, r, {}, [])["capabilities"],
            "score_kind": r.score_kind.value,
        }

    @app.get("/v1/models", dependencies=auth)
    async def list_models() -> dict[str, Any]:
        """OpenAI model list: the served models, then their aliases (``models``: the same, Cohere's shape)."""
        data = [entry(n, n) for n in rankers] + [entry(a, t) for a, t in cfg.aliases.items()]
        cohere = [{"name": m["id"], "endpoints": m["capabilities"]} for m in data]
        return {"object": "list", "data": data, "models": cohere}

    @app.get("/v1/models/{model_id:path}", dependencies=auth)
    async def get_model(model_id: str) -> dict[str, Any]:
        """One served model or alias, OpenAI shape."""
        return entry(model_id, resolve(model_id))

    @app.get("/info/{model:path}", dependencies=auth)
    async def model_info(model: str) -> dict[str, Any]:
        """A served model's class, spec, options, score kind, window, batch size, device and aliases."""
        name = resolve(model)
        return _model_info(name, rankers[name], cfg.model_details.get(name, {}), aliases_of[name])

    @app.post("/v1/embeddings", dependencies=auth)
    async def embeddings(req: EmbeddingRequest) -> Response:
        """OpenAI embeddings from a served embedding model (``embed:...``)."""
        name = resolve(req.model)
        ranker = rankers[name]
        if not is_embedding_model(ranker):
            served = [n for n, r in rankers.items() if is_embedding_model(r)]
            raise HTTPException(
                400,
                f"model {name!r} ({type(ranker).__name__}) is not an embedding model; "
                f"embedding models served: {served}",
            )
        texts = [req.input] if isinstance(req.input, str) else list(req.input)
        if not texts:
            raise HTTPException(422, "input is empty: send a text or a non-empty list of texts")
        if len(texts) > cfg.max_documents:
            raise HTTPException(413, f"{len(texts)} inputs; this server accepts at most {cfg.max_documents}")

        def work() -> bytes:  # the model, the token count and the JSON body: all off the event loop
            prompt = getattr(ranker, "document_prompt", "") or ""
            vecs = ranker.encode(texts, prompt=prompt)  # type: ignore[attr-defined]
            ids = ranker.tokenizer(  # type: ignore[attr-defined]
                texts,
                truncation=True,
                max_length=ranker.max_length,  # type: ignore[attr-defined]
            )["input_ids"]
            n_tokens = sum(len(i) for i in ids)
            if req.dimensions is not None:
                if req.dimensions > vecs.shape[1]:
                    raise ValueError(f"dimensions={req.dimensions}; this model has {vecs.shape[1]}")
                vecs = vecs[:, : req.dimensions]
                vecs = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
            vecs = np.nan_to_num(vecs.astype("<f4"))
            b64 = req.encoding_format == "base64"
            data = [
                {
                    "object": "embedding",
                    "index": i,
                    "embedding": base64.b64encode(v.tobytes()).decode() if b64 else v.tolist(),
                }
                for i, v in enumerate(vecs)
            ]
            usage = {"prompt_tokens": n_tokens, "total_tokens": n_tokens}
            return render_json({"object": "list", "data": data, "model": req.model or name, "usage": usage})

        try:
            body = await asyncio.wait_for(asyncio.to_thread(work), cfg.request_timeout)
        except asyncio.TimeoutError as exc:
            raise HTTPException(504, f"request timed out after {cfg.request_timeout:g}s") from exc
        except (ValueError, TypeError) as exc:  # the model refused this input
            raise HTTPException(422, str(exc)) from exc
        return Response(body, media_type="application/json")

    @app.get("/docs", include_in_schema=False)
    async def docs(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        page = docs_html(root + (app.openapi_url or "/openapi.json"), app.title)
        return HTMLResponse(page, headers={"Content-Security-Policy": CSP})
