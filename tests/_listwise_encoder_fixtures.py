"""A tiny random jina-reranker-v3 checkpoint, saved in the real checkpoint's file layout.

``config.json``: ``model_type`` ``qwen3``, ``architectures`` ``["JinaForRanking"]`` and the hub repo's
``auto_map`` (never executed: unirank runs its own forward); ``model.safetensors``: the ``JinaForRanking``
(a ``Qwen3ForCausalLM`` subclass with ``lm_head = Identity``) weight names, i.e. ``model.*`` for the Qwen3
backbone plus ``projector.0.weight`` (hidden/2, hidden) and ``projector.2.weight`` (512, hidden/2), no biases
and no ``lm_head``; a byte-level BPE tokenizer (like Qwen's) with the chat tokens and the two embed tokens
as added special tokens.
"""

from __future__ import annotations

import json
from pathlib import Path

SPECIAL = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<think>",
    "</think>",
    "<|embed_token|>",
    "<|rerank_token|>",
]


def save_byte_tokenizer(out: Path, special: list[str] = SPECIAL, model_max_length: int = 4096) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<|endoftext|>" if "<|endoftext|>" in special else None,
        eos_token="<|im_end|>" if "<|im_end|>" in special else None,
        additional_special_tokens=[s for s in special if s not in ("<|endoftext|>", "<|im_end|>")],
        model_max_length=model_max_length,
    )
    fast.save_pretrained(out)


def save_tiny_jina_v3(
    out: Path,
    *,
    seed: int = 0,
    projector: bool = True,
    special: list[str] = SPECIAL,
    model_type: str = "qwen3",
) -> Path:
    import torch
    from safetensors.torch import save_file
    from transformers import Qwen3Config, Qwen3Model

    out.mkdir(parents=True, exist_ok=True)
    save_byte_tokenizer(out, special)
    config = Qwen3Config(
        vocab_size=272,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        pad_token_id=256,
        eos_token_id=258,
    )
    torch.manual_seed(seed)
    backbone = Qwen3Model(config).eval()
    with torch.no_grad():  # larger activations than the default init, so cosines spread out
        backbone.embed_tokens.weight.normal_(0.0, 1.0)
        for layer in backbone.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                proj.weight.normal_(0.0, 0.3)
            layer.self_attn.o_proj.weight.normal_(0.0, 0.6)
            layer.mlp.down_proj.weight.normal_(0.0, 0.2)
    weights = {f"model.{k}": v.contiguous() for k, v in backbone.state_dict().items()}
    if projector:
        gen = torch.Generator().manual_seed(seed + 1)
        weights["projector.0.weight"] = torch.randn(32, 64, generator=gen) / 8
        weights["projector.2.weight"] = torch.randn(512, 32, generator=gen) / 6
    save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})
    cfg = config.to_dict()
    cfg.update(
        architectures=["JinaForRanking"],
        auto_map={"AutoModel": "modeling.JinaForRanking"},
        model_type=model_type,
    )
    (out / "config.json").write_text(json.dumps(cfg, indent=2), encoding="utf-8")
    return out
