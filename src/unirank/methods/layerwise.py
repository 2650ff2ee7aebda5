"""Layer-wise decoder reranker (BAAI/bge-reranker-v2-minicpm-layerwise), native: no trust_remote_code.

The checkpoint is MiniCPM-2B (``model_type: minicpm``, ``architectures: [LayerWiseMiniCPMForCausalLM]``)
with one scalar head ``lm_head.<i>.linear_head.weight`` (``1 x hidden``) per layer from ``start_layer`` to
``num_hidden_layers`` (``head_type: simple``, ``head_multi: true``). FlagEmbedding's
``LayerWiseLLMReranker`` scores a pair at cutoff layer ``c`` as ``head[c - start_layer] . RMSNorm(h_c)`` at
the last real token, ``h_c`` the hidden state after ``c`` decoder layers (the final norm's weights).
unirank's default ``cutoff_layer`` is 28, the model card's example; FlagEmbedding's own default is the last
layer (``num_hidden_layers``: 40), so its out-of-the-box scores equal ``cutoff_layer=40`` here, not the
default. At the same cutoff layer unirank equals FlagEmbedding 1.4.2 (transformers 4.51) to 8.3e-7 on a tiny
random checkpoint, fp32 CPU (``benchmarks/parity/run_parity.py``).

MiniCPM is Llama plus three scalars, all folded into weights here so a plain ``LlamaModel`` runs it:
embeddings times ``scale_emb``; each residual branch (``o_proj``, ``down_proj``) times
``scale_depth / sqrt(num_hidden_layers)``; ``dim_model_base`` only scales vocabulary heads (unused by
``simple`` heads). Only the first ``c`` layers are built, so the model's final norm gives ``RMSNorm(h_c)``.

Input (FlagEmbedding): ``[bos] + tok("A: {query}")[: max_length * 3 // 4] + tok("\\n") +
tok("B: {passage}")`` cut (passage side only) to ``max_length + len(sep) + len(prompt)`` tokens, then
``tok("\\n") + tok(prompt)``; all tokenised without special tokens.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..backends import hf
from ..base import PointwiseRanker
from ..errors import SpecError, require
from ..types import ScoreKind

__all__ = ["LAYERWISE_PROMPT", "LayerwiseRanker"]

logger = logging.getLogger(__name__)

LAYERWISE_PROMPT = (
    "Given a query A and a passage B, determine whether the passage contains an answer to the query by "
    "providing a prediction of either 'Yes' or 'No'."
)


def _load_state(path: Path, keep: Any) -> dict[str, Any]:
    st = require("safetensors.torch", "hf", "safetensors")
    index = hf.read_json(path / "model.safetensors.index.json").get("weight_map")
    files = sorted(set(index.values())) if index else [p.name for p in sorted(path.glob("*.safetensors"))]
    if not files:
        raise SpecError(f"{path} has no .safetensors weights")
    state: dict[str, Any] = {}
    for name in files:
        with st.safe_open(str(path / name), framework="pt") as fh:
            state.update({k: fh.get_tensor(k) for k in fh.keys() if keep(k)})
    return state


class LayerwiseRanker(PointwiseRanker):
    """bge-reranker-v2-minicpm-layerwise style scoring from one layer's head (native transformers Llama).

    Args:
        model_name_or_path: a ``LayerWiseMiniCPMForCausalLM`` checkpoint (folder or hub id).
        cutoff_layer: which layer's score to use (``start_layer..num_hidden_layers``). Default 28, the model
            card's example (``cutoff_layers=[28]``); FlagEmbedding's ``LayerWiseFlagLLMReranker`` defaults
            to the last layer (``num_hidden_layers``, 40 in the published checkpoint), so pass
            ``cutoff_layer=40`` to get the scores of its default.
        prompt: the instruction appended after the pair. max_length: query + passage token budget (512).
        batch_size, device, dtype, revision, name: as for the other HF rankers.

    >>> from unirank import Reranker
    >>> r = Reranker("layerwise:BAAI/bge-reranker-v2-minicpm-layerwise", cutoff_layer=28)  # doctest: +SKIP
    >>> r.rank("what is a panda?", ["The giant panda is a bear.", "hi"]).top(1)[0].text  # doctest: +SKIP
    'The giant panda is a bear.'
    """

    score_kind = ScoreKind.LOGIT

    def __init__(
        self,
        model_name_or_path: str,
        *,
        cutoff_layer: int = 28,
        prompt: str = LAYERWISE_PROMPT,
        max_length: int = 512,
        batch_size: int = 16,
        device: str | None = None,
        dtype: str | None = None,
        revision: str | None = None,
        name: str | None = None,
        **options: Any,
    ) -> None:
        super().__init__(name or f"layerwise:{model_name_or_path}", **options)
        torch, transformers = hf.torch_modules()
        self.path = hf.local_model_dir(model_name_or_path, revision=revision)
        cfg = hf.read_json(self.path / "config.json")
        archs = cfg.get("architectures") or []
        if cfg.get("model_type") != "minicpm" or "LayerWiseMiniCPMForCausalLM" not in archs:
            raise SpecError(
                f"{model_name_or_path}: expects a LayerWiseMiniCPMForCausalLM (minicpm), "
                f"got model_type={cfg.get('model_type')!r}, architectures={archs}"
            )
        if cfg.get("head_type", "simple") != "simple":
            raise SpecError(f"{model_name_or_path}: head_type={cfg.get('head_type')!r}; only 'simple' heads")
        n_layers, start = int(cfg["num_hidden_layers"]), int(cfg.get("start_layer", 8))
        if not start <= cutoff_layer <= n_layers:
            raise ValueError(
                f"cutoff_layer={cutoff_layer} must be in [{start}, {n_layers}] (the last layer, "
                f"cutoff_layer={n_layers}, is FlagEmbedding's default)"
            )
        if int(cfg.get("pretraining_tp", 1)) != 1 or cfg.get("rope_scaling"):
            raise SpecError(f"{model_name_or_path}: pretraining_tp > 1 / rope_scaling are not supported")
        self.cutoff_layer, self.prompt, self.max_length, self.batch_size = (
            cutoff_layer,
            prompt,
            max_length,
            batch_size,
        )
        self.device = hf.pick_device(device)
        dt = hf.torch_dtype(dtype, self.device)
        head_key = (
            f"lm_head.{cutoff_layer - start}.linear_head.weight"
            if cfg.get("head_multi", True)
            else "lm_head.linear_head.weight"
        )

        def keep(key: str) -> bool:
            if key == head_key or key in ("model.embed_tokens.weight", "model.norm.weight"):
                return True
            parts = key.split(".")
            return key.startswith("model.layers.") and int(parts[2]) < cutoff_layer

        state = _load_state(self.path, keep)
        if head_key not in state:
            raise SpecError(f"{model_name_or_path}: no {head_key} in the checkpoint")
        head = state.pop(head_key)
        residual = float(cfg.get("scale_depth", 1.0)) / math.sqrt(n_layers)  # the full depth, not the cutoff
        llama_state = {}
        for key, value in state.items():
            key = key.removeprefix("model.")
            if key == "embed_tokens.weight":
                value = value.float() * float(cfg.get("scale_emb", 1.0))
            elif key.endswith(("self_attn.o_proj.weight", "mlp.down_proj.weight")):
                value = value.float() * residual
            llama_state[key] = value
        config = transformers.LlamaConfig(
            vocab_size=cfg["vocab_size"],
            hidden_size=cfg["hidden_size"],
            intermediate_size=cfg["intermediate_size"],
            num_hidden_layers=cutoff_layer,
            num_attention_heads=cfg["num_attention_heads"],
            num_key_value_heads=cfg.get("num_key_value_heads") or cfg["num_attention_heads"],
            max_position_embeddings=cfg["max_position_embeddings"],
            rms_norm_eps=cfg.get("rms_norm_eps", 1e-6),
            rope_theta=cfg.get("rope_theta", 10000.0),
            attention_bias=cfg.get("attention_bias", False),
            hidden_act=cfg.get("hidden_act", "silu"),
            tie_word_embeddings=False,
        )
        self.model = transformers.LlamaModel(config)
        missing, unexpected = self.model.load_state_dict(llama_state, strict=False)
        missing = [k for k in missing if "rotary" not in k]
        if missing or unexpected:
            raise SpecError(
                f"{model_name_or_path}: weights do not fit (missing {missing}, unexpected {unexpected})"
            )
        self.model.to(device=self.device, dtype=dt).eval()
        self.head = head.to(self.device, torch.float32).reshape(-1)
        self.tokenizer = hf.load_tokenizer(self.path)
        tok = self.tokenizer
        self._sep = tok("\n", add_special_tokens=False)["input_ids"]
        self._prompt = tok(prompt, add_special_tokens=False)["input_ids"]
        if tok.bos_token_id is None:
            raise SpecError(f"{model_name_or_path}: the tokenizer has no bos token")

    def features(self, query: str, passage: str) -> list[int]:
        """The token ids FlagEmbedding's layerwise reranker builds for one pair."""
        tok = self.tokenizer
        q = tok(f"A: {query}", add_special_tokens=False)["input_ids"][: self.max_length * 3 // 4]
        p = tok(f"B: {passage}", add_special_tokens=False)["input_ids"][: self.max_length]
        head = [tok.bos_token_id, *q]
        room = self.max_length + len(self._sep) + len(self._prompt) - len(head)
        return [*head, *([*self._sep, *p][: max(room, 0)]), *self._sep, *self._prompt]

    def _forward(self, batch: list[dict[str, list[int]]]) -> np.ndarray:
        torch, _ = hf.torch_modules()
        inputs = hf.collate(batch, _RightPad(self.tokenizer), self.device)
        hidden = self.model(**inputs).last_hidden_state  # RMSNorm(h_cutoff)
        last = inputs["attention_mask"].sum(1) - 1
        rows = hidden[torch.arange(hidden.shape[0], device=hidden.device), last].float()
        return (rows @ self.head).cpu().numpy()

    def _score_pairs(self, queries: list[str], texts: list[str], show_progress: bool = False) -> np.ndarray:
        feats = [
            {"input_ids": ids, "attention_mask": [1] * len(ids)} for ids in map(self.features, queries, texts)
        ]
        return hf.run_model(
            feats,
            self._forward,
            max_tokens=self.batch_size * (self.max_length + 64),
            batch_size=self.batch_size,
            show_progress=show_progress,
            desc=self.name,
        )


class _RightPad:
    """The tokenizer's pad id, padding on the right (the last real token is found from the mask)."""

    def __init__(self, tok: Any) -> None:
        self.pad_token_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        self.padding_side = "right"
