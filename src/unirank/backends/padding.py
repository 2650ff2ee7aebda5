"""One padding id for tokenizer and model, and which models are decoders.

A batch of rows of different lengths is padded; the padding must be an id the model itself treats as
padding. Encoders ignore padding through the attention mask (only RoBERTa-style position ids read the pad
id), but the ``*ForSequenceClassification`` head of a decoder (Llama, Qwen, Mistral, Gemma, ...) scores the
last token that is not ``config.pad_token_id``: padded with any other id, every row shorter than the longest
in its batch is scored at a padding position. :func:`align_pad_token` makes tokenizer and config agree.
"""

from __future__ import annotations

import logging
from typing import Any

from ..errors import SpecError
from .hf import torch_modules

__all__ = ["align_pad_token", "is_decoder_only"]

logger = logging.getLogger(__name__)


def is_decoder_only(config: Any) -> bool:
    """Whether ``config`` (a transformers config or its ``config.json`` dict) is a decoder-only LM family
    (Llama, Qwen, Mistral, Gemma, GPT-2, ...), read from transformers' own auto mappings: a causal-LM
    architecture with no masked-LM variant and no encoder-decoder split. The ``*ForSequenceClassification``
    heads of these families score the last token that is not ``config.pad_token_id``."""
    torch_modules()
    from transformers.models.auto import modeling_auto as auto

    get = config.get if isinstance(config, dict) else lambda k, d=None: getattr(config, k, d)
    model_type = get("model_type")
    return (
        bool(model_type)
        and not get("is_encoder_decoder", False)
        and model_type in auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
        and model_type not in auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES
    )


def _first_id(value: Any) -> int | None:
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def align_pad_token(tokenizer: Any, config: Any, *, required: bool = False) -> int | None:
    """Make the tokenizer and the model config pad with one id, and return it.

    The id is the config's ``pad_token_id`` (what the model's own code reads: the last-token lookup of a
    decoder's sequence-classification head, RoBERTa's position ids), else the tokenizer's pad token, else its
    eos token, else the config's ``eos_token_id``. It is set on both, so :func:`collate` (and the ONNX
    runner) pad with exactly the id the model treats as padding. ``None`` when there is no candidate; with
    ``required=True`` that raises :class:`~unirank.errors.SpecError` instead.
    """
    candidates = (
        _first_id(getattr(config, "pad_token_id", None)),
        _first_id(getattr(tokenizer, "pad_token_id", None)),
        _first_id(getattr(tokenizer, "eos_token_id", None)),
        _first_id(getattr(config, "eos_token_id", None)),
    )
    pad_id = next((c for c in candidates if c is not None), None)
    if pad_id is None:
        if required:
            raise SpecError(
                "the model has no pad token: neither its config (pad_token_id / eos_token_id) nor its "
                "tokenizer (pad_token / eos_token) names one, so a batch cannot be padded in a way the model "
                "recognises; set pad_token_id in the model's config.json"
            )
        return None
    if getattr(tokenizer, "pad_token_id", None) != pad_id:
        token = tokenizer.convert_ids_to_tokens(pad_id)
        if not isinstance(token, str):
            raise SpecError(f"the model pads with id {pad_id}, which its tokenizer does not know")
        logger.info("padding with %r (id %d), the id the model treats as padding", token, pad_id)
        tokenizer.pad_token = token
    if getattr(config, "pad_token_id", None) != pad_id:
        config.pad_token_id = pad_id
    return pad_id
