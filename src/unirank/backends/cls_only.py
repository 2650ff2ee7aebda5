"""Run a BERT-style cross-encoder's last layer for the first ([CLS]) token only.

A ``*ForSequenceClassification`` head of BERT, RoBERTa, XLM-R and ELECTRA reads the first token's state after
the last layer, and nothing else of that layer's output. The last layer therefore only needs the keys and
values of every token; the query, attention, output projection and feed-forward are needed for one row.
:func:`enable` replaces the forward of the model's last layer (of this model instance only) by that
computation, which is exact and saves ~1/7 of the FLOPs of a 6-layer model (~1/13 for 12 layers).

It is applied only where it can be verified: :func:`enable` scores a padded probe batch with and without the
change and keeps it only if the logits agree (1e-4 in fp32, a bf16 / fp16 tolerance otherwise); any other
architecture, transformers version or attention implementation keeps the stock forward. The same change is
written into unirank's ONNX graph (:mod:`unirank.backends.onnx_bert`).

>>> import tempfile
>>> from unirank.bench import build_minilm_cross_encoder
>>> from unirank import Reranker
>>> ce = Reranker(f"ce:{build_minilm_cross_encoder(tempfile.mkdtemp())}", device="cpu")
>>> ce.cls_only_last_layer  # verified and on for this BERT cross-encoder
True
"""

from __future__ import annotations

import logging
import types
from typing import Any

from .probe import agrees, probe_batch

logger = logging.getLogger(__name__)

__all__ = ["enable", "supports"]

_TYPES = {"bert", "roberta", "xlm-roberta", "electra", "camembert"}


def _last_layer(model: Any) -> Any | None:
    from . import hf

    try:
        layers = hf.encoder_layers(model)[3]
    except TypeError:
        return None
    if len(layers) == 0:
        return None
    layer = layers[-1]
    att = getattr(layer, "attention", None)
    sa = getattr(att, "self", None)
    needed = (
        sa is not None
        and all(
            hasattr(sa, n) for n in ("query", "key", "value", "num_attention_heads", "attention_head_size")
        )
        and hasattr(att, "output")
        and hasattr(layer, "intermediate")
        and hasattr(layer, "output")
    )
    return layer if needed else None


def supports(model: Any) -> bool:
    """Whether ``model`` is a cross-encoder of a family whose head reads only the first token."""
    cfg = getattr(model, "config", None)
    return (
        cfg is not None
        and getattr(cfg, "model_type", None) in _TYPES
        and type(model).__name__.endswith("ForSequenceClassification")
        and not getattr(cfg, "is_decoder", False)
        and not getattr(cfg, "add_cross_attention", False)
        and _last_layer(model) is not None
    )


def _cls_only_forward(
    layer: Any, hidden_states: Any, attention_mask: Any = None, *args: Any, **kwargs: Any
) -> Any:
    import torch

    if layer.training:  # training keeps the stock layer (its attention dropout included)
        return type(layer).forward(layer, hidden_states, attention_mask, *args, **kwargs)
    sa = layer.attention.self
    b, s, _ = hidden_states.shape
    heads, size = int(sa.num_attention_heads), int(sa.attention_head_size)
    first = hidden_states[:, :1]
    q = sa.query(first).view(b, 1, heads, size).transpose(1, 2)
    k = sa.key(hidden_states).view(b, s, heads, size).transpose(1, 2)
    v = sa.value(hidden_states).view(b, s, heads, size).transpose(1, 2)
    mask = attention_mask
    if mask is not None:
        if mask.dim() != 4 or mask.shape[-1] != s or mask.shape[-2] not in (1, s):
            raise ValueError(f"unexpected attention mask shape {tuple(mask.shape)}")
        mask = mask[:, :, :1, :]
    scale = float(getattr(sa, "scaling", size**-0.5))
    ctx = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    ctx = ctx.transpose(1, 2).reshape(b, 1, heads * size)
    att = layer.attention.output(ctx, first)
    return layer.output(layer.intermediate(att), att)


def enable(model: Any, tokenizer: Any, device: Any = "cpu") -> bool:
    """Give ``model``'s last layer the [CLS]-only forward if :func:`supports` and a probe batch agrees;
    returns whether it is on."""
    if not supports(model):
        return False
    import torch

    layer = _last_layer(model)
    try:
        probe = probe_batch(tokenizer, device)
        with torch.inference_mode():
            ref = model(**probe).logits.float()
            layer.forward = types.MethodType(_cls_only_forward, layer)
            got = model(**probe).logits.float()
    except Exception as exc:  # an unexpected transformers internals / attention implementation
        layer.__dict__.pop("forward", None)
        logger.debug("[CLS]-only last layer not used: %s: %s", type(exc).__name__, exc)
        return False
    if not agrees(ref, got, next(model.parameters()).dtype, 1e-4):
        layer.__dict__.pop("forward", None)
        logger.debug("[CLS]-only last layer not used: probe logits differ")
        return False
    return True
