"""The reference implementations, called through their own public APIs on the checkpoints ``build`` saved.

Imports neither unirank nor the test helpers: this module runs in the reference environment (transformers
4.51 / 4.57 and the reference packages), which need not have unirank installed. Each runner takes the cases
of its family (``cases.json``) and returns one score list per case; a runner whose package does not import
raises ``Skip`` with the reason.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path
from typing import Any


class Skip(Exception):
    """The reference cannot run here; the message says why."""


def _need(module: str, dist: str) -> Any:
    try:
        return importlib.import_module(module)
    except Exception as exc:  # ImportError, or the package breaking on this transformers
        raise Skip(f"{dist} does not import here ({type(exc).__name__}: {exc})") from exc


def version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def mxbai(cases: list[dict[str, Any]], _: dict[str, Any]) -> tuple[str, list[list[float]]]:
    import torch

    mod = _need("mxbai_rerank", "mxbai-rerank")
    out = []
    for case in cases:
        ref = dict(case["ref"])
        call = {"instruction": ref.pop("instruction")} if "instruction" in ref else {}
        model = mod.MxbaiRerankV2(case["path"], device="cpu", torch_dtype=torch.float32, **ref)
        docs = case["docs"]
        out.append(model.predict(queries=[case["query"]] * len(docs), documents=docs, **call).tolist())
    return f"mxbai-rerank {version('mxbai-rerank')} MxbaiRerankV2.predict", out


def bge_gemma(cases: list[dict[str, Any]], _: dict[str, Any]) -> tuple[str, list[list[float]]]:
    mod = _need("FlagEmbedding", "FlagEmbedding")
    out = []
    for case in cases:
        model = mod.FlagLLMReranker(case["path"], use_fp16=False, use_bf16=False, devices="cpu")
        got = model.compute_score([[case["query"], d] for d in case["docs"]], **case["ref"])
        out.append([float(x) for x in (got if isinstance(got, list) else [got])])
    return f"FlagEmbedding {version('FlagEmbedding')} FlagLLMReranker.compute_score", out


def layerwise(cases: list[dict[str, Any]], _: dict[str, Any]) -> tuple[str, list[list[float]]]:
    mod = _need("FlagEmbedding", "FlagEmbedding")
    out = []
    for case in cases:
        model = mod.LayerWiseFlagLLMReranker(case["path"], use_fp16=False, use_bf16=False, devices="cpu")
        pairs = [[case["query"], d] for d in case["docs"]]
        got = model.compute_score(pairs, **case["ref"])
        out.append([float(x) for x in (got if isinstance(got, list) else [got])])
    return f"FlagEmbedding {version('FlagEmbedding')} LayerWiseFlagLLMReranker.compute_score", out


def set_encoder(cases: list[dict[str, Any]], _: dict[str, Any]) -> tuple[str, list[list[float]]]:
    import torch

    mod = _need("lightning_ir", "lightning-ir")
    out = []
    for case in cases:
        module = mod.CrossEncoderModule(model_name_or_path=case["path"]).eval()
        torch.manual_seed(case["ref"].get("seed", 0))
        got = module.score(case["query"], case["docs"]).scores
        out.append(got.reshape(-1).tolist())
    return f"lightning-ir {version('lightning-ir')} CrossEncoderModule.score", out


def jina_v3(cases: list[dict[str, Any]], opts: dict[str, Any]) -> tuple[str, list[list[float]]]:
    import torch

    source = opts.get("jina_modeling")
    if not source or not Path(source).is_file():
        raise Skip(
            "needs the checkpoint's own modeling.py (huggingface.co/jinaai/jina-reranker-v3): pass "
            "--jina-modeling PATH"
        )
    spec = importlib.util.spec_from_file_location("jina_reranker_v3_modeling", source)
    assert spec is not None and spec.loader is not None
    try:
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    except Exception as exc:
        raise Skip(f"{source} does not import here ({type(exc).__name__}: {exc})") from exc
    from transformers import AutoTokenizer

    out = []
    for case in cases:
        model = mod.JinaForRanking.from_pretrained(case["path"], torch_dtype=torch.float32).eval()
        tok = AutoTokenizer.from_pretrained(case["path"])
        # modeling.py hard-codes the real vocabulary's ids (151670 / 151671); use this tokenizer's
        model.doc_embed_token_id = tok.convert_tokens_to_ids("<|embed_token|>")
        model.query_embed_token_id = tok.convert_tokens_to_ids("<|rerank_token|>")
        scores = [0.0] * len(case["docs"])
        for hit in model.rerank(case["query"], case["docs"]):
            scores[int(hit["index"])] = float(hit["relevance_score"])
        out.append(scores)
    return f"jinaai/jina-reranker-v3 modeling.py ({Path(source).name}) JinaForRanking.rerank", out


RUNNERS = {
    "mxbai-v2": mxbai,
    "bge-gemma": bge_gemma,
    "layerwise": layerwise,
    "set-encoder": set_encoder,
    "jina-v3": jina_v3,
}
