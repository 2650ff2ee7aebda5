"""The invariance matrix: one :class:`Case` per registered method family (or variant), and the tiny models,
loopback servers and rankers the cases are built from.

A case declares how the family may depend on its candidate list:

- ``pointwise``: a pair's score depends on that pair only (alone == in any batch == in any order);
- ``set``: scores depend on the whole candidate set but not on its order (BM25's candidate IDF, Set-Encoder,
  duoT5's sym-sum);
- ``list``: order-dependent listwise rankers (positions in a prompt); exempt from score-order invariance,
  but a shuffled list must still come back as a valid permutation of exactly the documents sent.

Every case is batch-invariant across queries (``rank_many``) and over its batching option, and deterministic.
``tol`` is 1e-5 unless the case says why not. Everything is built once per test session.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

Q = "what causes rain"
DOCS = [
    "rain",
    "Water vapour condenses in clouds and falls as rain when the drops get heavy enough to fall.",
    "cats purr",
    "The sun shines and it is hot; dry weather has no rain at all, only light and heat from the sun.",
    "dogs bark at night",
    # longer than the tiny models' windows (ColBERT 24 tokens, layerwise 64): cut, and the longest row
    " ".join(f"rain falls from clouds when vapour condenses, day {i}." for i in range(20)),
]
Q2 = "why do cats purr"
DOCS2 = ["cats purr when they are happy and relaxed in the sun", "coffee", "the light bulb"]


@dataclass(frozen=True)
class Case:
    """One row of the matrix (see the module docstring)."""

    id: str
    prefix: str
    kind: str  # "pointwise" | "set" | "list"
    options: dict[str, Any] = field(default_factory=dict)
    #: the option that sets the forward batch size (checked at its smallest value), or None with ``why``
    batch_option: str | None = "batch_size"
    batch_min: int = 1
    #: has a tokenizer whose padding side must not matter
    padding: bool = True
    #: has torch weights: NaN weights must surface as a warning or an error
    weights: bool = True
    tol: float = 1e-5
    why: str = ""
    #: property -> reason: a known failure in a file another engineer owns (strict xfail)
    xfail: dict[str, str] = field(default_factory=dict)


API = dict(batch_option=None, padding=False, weights=False, why="HTTP: the server batches")
LLM_SERVER = dict(batch_option=None, padding=False, weights=False, why="HTTP: one request per pair/window")

CASES: tuple[Case, ...] = (
    Case("ce", "ce", "pointwise"),
    Case("ce-decoder", "ce", "pointwise"),  # a Llama seq-cls head whose tokenizer has no pad token
    Case("embed", "embed", "pointwise"),
    Case("bm25", "bm25", "set", batch_option=None, padding=False, weights=False, why="candidate IDF"),
    Case("bm25-corpus", "bm25", "pointwise", batch_option=None, padding=False, weights=False, why="no model"),
    Case("monot5", "monot5", "pointwise"),
    Case("rankt5", "rankt5", "pointwise"),
    Case("duot5", "duot5", "set", why="sym-sum over every pair of the candidate set"),
    Case("listt5", "listt5", "list", batch_option=None, why="one FiD window per forward"),
    Case("colbert", "colbert", "pointwise"),
    Case(
        "e2rank",
        "e2rank",
        "list",
        why="the first candidates are written into the query",
    ),
    Case("vlm", "vlm", "pointwise", batch_option=None, why="scores one document per forward"),
    Case("vlm-api", "vlm-api", "pointwise", **API),
    Case("cohere", "cohere", "pointwise", **API),
    Case("jina", "jina", "pointwise", **API),
    Case("voyage", "voyage", "pointwise", **API),
    Case("mixedbread", "mixedbread", "pointwise", **API),
    Case("tei", "tei", "pointwise", **API),
    Case("unirank", "unirank", "pointwise", **API),
    Case("llm-pointwise", "llm-pointwise", "pointwise", options={"mode": "yesno"}),
    Case("llm-pointwise-graded", "llm-pointwise", "pointwise", options={"mode": "graded"}),
    Case(
        "llm-pointwise-likelihood",
        "llm-pointwise",
        "pointwise",
        options={"mode": "likelihood"},
        tol=1e-4,
        why="log-likelihoods near -65 in float32: a padded batch rounds differently (1.1e-5, relative 2e-7)",
    ),
    Case("llm-pointwise-server", "llm-pointwise", "pointwise", **LLM_SERVER),
    Case("llm-listwise-first", "llm-listwise", "list", options={"method": "first", "window_size": 3}),
    Case("llm-listwise-generate", "llm-listwise", "list", options={"window_size": 3}),
    *(  # the other ordering strategies over the same FIRST window ranker
        Case(
            f"llm-listwise-{s}",
            "llm-listwise",
            "list",
            options={"method": "first", "window_size": 3, "strategy": s},
        )
        for s in ("setwise", "pairwise", "tournament", "jointrank")
    ),
    Case("llm-listwise-server", "llm-listwise", "list", options={"method": "first"}, **LLM_SERVER),
    Case("icr", "icr", "list", batch_option=None, why="one prompt holds the whole list"),
    Case("jina-v3", "jina-v3", "list", why="causal attention: a document's position matters"),
    Case(
        "set-encoder",
        "set-encoder",
        "set",
        batch_option="max_tokens_per_batch",
        why="passages attend to each other's [INT] tokens",
    ),
    Case("layerwise", "layerwise", "pointwise"),
)


def params(prop: str, select: Any = None) -> list[Any]:
    """The cases for one property (``select``: a filter), each a strict xfail where the matrix records a
    known failure of that property."""
    out = []
    for c in CASES:
        if select is not None and not select(c):
            continue
        marks = [pytest.mark.xfail(strict=True, reason=c.xfail[prop])] if prop in c.xfail else []
        out.append(pytest.param(c, id=c.id, marks=marks))
    return out


class Models:
    """Tiny checkpoints and loopback servers, each built on first use and kept for the session."""

    def __init__(self, factory: Any, minilm: Path, make_bert: Any, causal: Path, stack: Any) -> None:
        self.factory, self.minilm, self.make_bert, self.causal = factory, minilm, make_bert, causal
        self.stack = stack
        self._memo: dict[str, Any] = {}

    def get(self, key: str) -> Any:
        if key not in self._memo:
            self._memo[key] = getattr(self, "_" + key.replace("-", "_"))()
        return self._memo[key]

    def _dir(self, name: str) -> Path:
        return Path(self.factory.mktemp(f"inv-{name}")) / name

    def _seqcls(self) -> Path:
        return self.make_bert("seqcls", seed=11)

    def _decoder_seqcls(self) -> Path:
        """A tiny ``LlamaForSequenceClassification`` whose tokenizer has no pad token and whose config
        names EOS as padding (as Qwen / Llama seq-cls exports do)."""
        import torch
        import transformers

        from _llm_fixtures import _tokenizer

        out = self._dir("decoder-seqcls")
        tok = _tokenizer(self.minilm)
        tok.pad_token = None
        dims = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
        config = transformers.LlamaConfig(
            vocab_size=len(tok), num_key_value_heads=1, num_labels=1, pad_token_id=tok.eos_token_id, **dims
        )
        torch.manual_seed(5)
        model = transformers.LlamaForSequenceClassification(config)
        with torch.no_grad():  # livelier than the tiny init, so positions matter clearly
            model.model.embed_tokens.weight.normal_(0.0, 1.0)
        model.save_pretrained(out)
        tok.save_pretrained(out)
        return out

    def _encoder(self) -> Path:
        return self.make_bert("encoder", seed=3)

    def _t5(self) -> Path:
        from _family_fixtures import save_tiny_t5

        return save_tiny_t5(self._dir("t5"), seed=1)

    def _colbert(self) -> Path:
        pytest.importorskip("pylate")
        from _family_fixtures import save_tiny_colbert

        return save_tiny_colbert(
            self.get("encoder"), self._dir("colbert"), query_length=12, document_length=24
        )

    def _llava(self) -> Path:
        from _family_fixtures import save_tiny_llava

        return save_tiny_llava(self._dir("llava"))

    def _jina_v3(self) -> Path:
        from _listwise_encoder_fixtures import save_tiny_jina_v3

        return save_tiny_jina_v3(self._dir("jina-v3"))

    def _set_encoder(self) -> Path:
        from _set_encoder_fixtures import build_set_encoder

        return build_set_encoder(self._dir("set-encoder"), self.minilm, depth=100, sample_missing_docs=False)

    def _layerwise(self) -> Path:
        from test_layerwise import save_tiny_layerwise

        return save_tiny_layerwise(self._dir("layerwise"))[0]

    def _engine(self) -> Any:
        from unirank.backends.causal_lm import CausalLM

        return CausalLM(self.causal, attn_implementation="eager", batch_size=8)

    def _engine1(self) -> Any:
        from unirank.backends.causal_lm import CausalLM

        return CausalLM(self.causal, attn_implementation="eager", batch_size=1)

    def _llm_server(self) -> Any:
        from _fake_openai_server import FakeOpenAIServer

        server = FakeOpenAIServer(self.get("engine"), max_logprobs=100_000)
        self.stack.callback(server.stop)
        return server.start()

    def provider(self, name: str) -> str:
        """Base URL of a loopback fake of hosted API ``name``."""
        key = f"provider-{name}"
        if key not in self._memo:
            from _fake_providers import make_fake_app, serving

            self._memo[key] = self.stack.enter_context(serving(make_fake_app(name)[0]))
        return str(self._memo[key])

    def _unirank_server(self) -> str:
        from _fake_providers import serving
        from unirank import Reranker
        from unirank.serve.app import create_app

        app = create_app({"tiny": Reranker(f"ce:{self.get('seqcls')}")})
        return str(self.stack.enter_context(serving(app)))


def build(models: Models, case: Case, **over: Any) -> Any:
    """The ranker of ``case`` (``over``: extra options, e.g. the batching option)."""
    from unirank import Reranker

    m, opts = models, {**case.options, **over}
    engine_key = "engine1" if opts.pop("batch_size", None) == 1 else "engine"
    p = case.id
    if p == "ce":
        return Reranker(f"ce:{m.get('seqcls')}", **opts)
    if p == "ce-decoder":
        return Reranker(f"ce:{m.get('decoder_seqcls')}", **opts)
    if p == "embed":
        return Reranker(f"embed:{m.get('encoder')}", **opts)
    if p == "bm25":
        return Reranker("bm25", **opts)
    if p == "bm25-corpus":
        corpus = {f"c{i}": t for i, t in enumerate([*DOCS, *DOCS2, "rain rain clouds", "sun"])}
        return Reranker("bm25", corpus=corpus, **opts)
    if p in ("monot5", "rankt5", "duot5", "listt5"):
        return Reranker(f"{p}:{m.get('t5')}", **opts)
    if p == "colbert":
        return Reranker(f"colbert:{m.get('colbert')}", **opts)
    if p == "e2rank":
        return Reranker(f"e2rank:{m.get('encoder')}", num_input_docs=2, **opts)
    if p == "vlm":
        return Reranker(f"vlm:{m.get('llava')}", tokens=("False", "True"), **opts)
    server = m.get("llm_server") if p in ("vlm-api", "llm-pointwise-server", "llm-listwise-server") else None
    if p == "vlm-api":
        return Reranker(
            f"vlm-api:{server.base_url}@test-model",
            tokens=("no", "yes"),
            top_logprobs=100_000,
            max_retries=0,
            **opts,
        )
    if p in ("cohere", "jina", "voyage", "mixedbread"):
        return Reranker(f"{p}:m", base_url=m.provider(p), api_key="k", max_retries=0, **opts)
    if p == "tei":
        return Reranker(f"tei:{m.provider('tei')}", max_retries=0, **opts)
    if p == "unirank":
        return Reranker(f"unirank:{m.get('unirank_server')}", max_retries=0, **opts)
    if p.startswith("llm-pointwise") or p.startswith("llm-listwise"):
        family = "llm-pointwise" if p.startswith("llm-pointwise") else "llm-listwise"
        if server is not None:
            return Reranker(
                f"{family}:test-model", base_url=server.base_url, max_retries=0, top_logprobs=100_000, **opts
            )
        return Reranker(family, engine=m.get(engine_key), **opts)
    if p == "icr":
        return Reranker("icr", engine=m.get("engine"), **opts)
    if p == "jina-v3":
        return Reranker(f"jina-v3:{m.get('jina-v3')}", dtype="fp32", **opts)
    if p == "set-encoder":
        return Reranker(f"set-encoder:{m.get('set-encoder')}", **opts)
    if p == "layerwise":
        return Reranker(f"layerwise:{m.get('layerwise')}", cutoff_layer=2, max_length=64, **opts)
    raise KeyError(f"no builder for case {case.id!r}")


@pytest.fixture(scope="session")
def models(tmp_path_factory, minilm_path, make_tiny_bert, tiny_causal_lm):
    with contextlib.ExitStack() as stack:
        yield Models(tmp_path_factory, minilm_path, make_tiny_bert, tiny_causal_lm, stack)


@pytest.fixture(scope="session")
def rankers(models):
    """``rankers(case, **options)``: one ranker per (case, options), built on first use."""
    memo: dict[str, Any] = {}

    def get(case: Case, **over: Any) -> Any:
        key = case.id + json.dumps(over, sort_keys=True)
        if key not in memo:
            memo[key] = build(models, case, **over)
        return memo[key]

    return get
