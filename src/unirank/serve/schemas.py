"""Request and response bodies of the routes, field for field as the providers document them.

- Cohere ``POST /v1/rerank`` and ``/v2/rerank``: ``model, query, documents (strings, or objects with
  rank_fields on v1), top_n, return_documents, rank_fields, max_chunks_per_doc, max_tokens_per_doc`` ->
  ``{id, results: [{index, relevance_score, document?}], meta: {api_version, billed_units}}``.
- Jina ``POST /v1/rerank``: ``model, query, documents, top_n, return_documents`` ->
  ``{model, usage: {total_tokens}, results: [{index, document: {text}, relevance_score}]}``.
  ``/v1/rerank`` answers with the union of the Cohere v1 and Jina bodies, so clients of either parse it.
- TEI ``POST /rerank``: ``query, texts, raw_scores, return_text, truncate, truncation_direction`` ->
  ``[{index, score, text?}]`` sorted by score.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class RerankRequest(BaseModel):
    """Cohere v1 / v2 and Jina request body."""

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "examples": [
                {"model": "default", "query": "what causes rain", "documents": ["clouds", "cats"], "top_n": 1}
            ]
        },
    )

    model: str | None = Field(None, max_length=512, description="model name; default: the server's default")
    query: str = Field(..., min_length=1, description="the search query")
    documents: list[str | dict[str, Any]] = Field(
        ..., description="strings, or objects with a 'text' field (or the fields named by rank_fields)"
    )
    top_n: int | None = Field(None, ge=1, description="return only the best top_n results")
    return_documents: bool | None = Field(None, description="include each document in its result")
    rank_fields: list[str] | None = Field(None, description="Cohere v1: object fields to rank on, in order")
    max_chunks_per_doc: int | None = Field(None, ge=1, description="accepted; documents are scored whole")
    max_tokens_per_doc: int | None = Field(
        None, ge=1, description="truncate each document to this many tokens of the model's tokenizer"
    )


class TEIRerankRequest(BaseModel):
    """Hugging Face text-embeddings-inference ``/rerank`` request body."""

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "examples": [{"query": "what causes rain", "texts": ["clouds", "cats"], "raw_scores": False}]
        },
    )

    query: str = Field(..., min_length=1)
    texts: list[str]
    model: str | None = Field(None, max_length=512, description="unirank extension: which served model")
    raw_scores: bool = Field(False, description="raw model scores instead of 0..1 relevance")
    return_text: bool = False
    truncate: bool | None = Field(False, description="accepted; the model always truncates to its window")
    truncation_direction: Literal["Left", "Right", "left", "right"] = "Right"


class Document(BaseModel):
    text: str


class CohereResult(BaseModel):
    index: int
    relevance_score: float
    document: dict[str, Any] | None = None


class ApiVersion(BaseModel):
    version: str


class BilledUnits(BaseModel):
    search_units: int


class Meta(BaseModel):
    api_version: ApiVersion
    billed_units: BilledUnits


class Usage(BaseModel):
    total_tokens: int
    prompt_tokens: int


class RerankResponse(BaseModel):
    """Cohere v1/v2 body, plus Jina's ``model`` and ``usage`` on ``/v1/rerank``."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "7f8e...",
                    "results": [{"index": 0, "relevance_score": 0.98}],
                    "meta": {"api_version": {"version": "2"}, "billed_units": {"search_units": 1}},
                }
            ]
        }
    )

    id: str
    results: list[CohereResult]
    meta: Meta
    model: str | None = None
    usage: Usage | None = None


class TEIRank(BaseModel):
    index: int
    score: float
    text: str | None = None


class ErrorBody(BaseModel):
    """Every error: Cohere's ``message`` and TEI's ``error`` / ``error_type``."""

    message: str
    error: str
    error_type: str


def error_body(message: str, error_type: str) -> dict[str, Any]:
    return {"message": message, "error": message, "error_type": error_type}
