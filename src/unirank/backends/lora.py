"""LoRA adapters (PEFT folder layout) merged into a transformers model, without PEFT at run time.

A PEFT LoRA folder holds ``adapter_config.json`` (``peft_type: LORA``, ``base_model_name_or_path``, ``r``,
``lora_alpha``, ``target_modules``, ``use_rslora``, optional ``alpha_pattern``) and
``adapter_model.safetensors`` with keys ``base_model.model.<module>.lora_A.weight`` (``r x in``) and
``...lora_B.weight`` (``out x r``). :func:`merge_lora` folds each pair into its ``nn.Linear``:
``W += scale * B @ A`` with ``scale = alpha / r`` (``alpha / sqrt(r)`` with rsLoRA), which is exactly
what PEFT's own forward (``W x + scale * B A x``) computes, so the merged model needs no wrapper.

Adapters saved with an older transformers module layout (e.g. Qwen2-VL's ``model.layers.*`` before it
became ``model.language_model.layers.*``) are mapped with transformers' own checkpoint renaming rules.
Anything a plain merge would get wrong is refused with a ``ValueError`` naming it: DoRA, trained biases,
non-Linear targets (embeddings, convolutions, GPT-2 ``Conv1D``), ``modules_to_save`` weights. A LoRA on an
output head tied to the input embeddings unties it first (the embeddings keep their weights, as in PEFT).

>>> is_adapter_dir(".")
False
"""

from __future__ import annotations

import logging
import math
import os
import re
from pathlib import Path
from typing import Any

from ..errors import require
from .hf import read_json

__all__ = [
    "ADAPTER_CONFIG",
    "ADAPTER_WEIGHTS",
    "is_adapter_dir",
    "lora_pairs",
    "merge_lora",
    "read_adapter_config",
]

logger = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_PREFIX = "base_model.model."
_KEY = re.compile(r"^(?P<module>.+)\.(?:lora_(?P<ab>[AB])(?:\.[^.]+)?|(?P<base>base_layer))\.weight$")


def is_adapter_dir(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a folder holding a PEFT adapter (``adapter_config.json``)."""
    return (Path(path) / ADAPTER_CONFIG).is_file()


def read_adapter_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The adapter's config, checked: a LoRA adapter whose settings a plain weight merge reproduces."""
    path = Path(path)
    cfg = read_json(path / ADAPTER_CONFIG)
    if not cfg:
        raise ValueError(f"{path} has no {ADAPTER_CONFIG}; not a PEFT adapter folder")
    kind = str(cfg.get("peft_type", "LORA")).upper()
    if kind != "LORA":
        raise ValueError(f"{path}: only LoRA adapters can be merged, this one is peft_type={kind}")
    if cfg.get("use_dora"):
        raise ValueError(f"{path}: DoRA adapters (use_dora=true) are not supported; only plain LoRA merges")
    if str(cfg.get("bias", "none")) != "none" or cfg.get("lora_bias"):
        raise ValueError(f"{path}: adapters that train biases (bias={cfg.get('bias')!r}) are not supported")
    if cfg.get("layer_replication"):
        raise ValueError(f"{path}: layer_replication adapters change the model's layers; not supported")
    if cfg.get("fan_in_fan_out"):
        raise ValueError(
            f"{path}: fan_in_fan_out adapters (Conv1D targets) are not supported; only nn.Linear"
        )
    for key in ("r", "lora_alpha"):
        if not isinstance(cfg.get(key), (int, float)) or cfg[key] <= 0:
            raise ValueError(f"{path}: {ADAPTER_CONFIG} needs a positive {key!r}, got {cfg.get(key)!r}")
    return cfg


def _alpha_for(module: str, cfg: dict[str, Any]) -> float:
    """``alpha_pattern`` entries (a module-name regex matched at a dot boundary, as PEFT does) win."""
    for pattern, alpha in (cfg.get("alpha_pattern") or {}).items():
        if re.match(rf"(.*\.)?({pattern})$", module):
            return float(alpha)
    return float(cfg["lora_alpha"])


def lora_pairs(path: str | os.PathLike[str]) -> dict[str, tuple[Any, Any, float, Any]]:
    """``{module name as saved: (A, B, scale, base)}`` from an adapter folder (tensors on CPU, as saved).

    ``base`` is the layer's own weight when PEFT saved it next to the pair (it does for a target tied to
    the input embeddings, e.g. a tied ``lm_head``), else ``None``.
    """
    path = Path(path)
    cfg = read_adapter_config(path)
    weights = path / ADAPTER_WEIGHTS
    if not weights.is_file():
        raise ValueError(f"{path} has no {ADAPTER_WEIGHTS} (pickled adapter_model.bin is not loaded)")
    st = require("safetensors.torch", "hf", "safetensors")
    state = st.load_file(str(weights))
    embedding = [k for k in state if ".lora_embedding_" in k]
    if embedding:
        raise ValueError(
            f"{path}: {embedding[0]!r} is LoRA on an Embedding; only LoRA on nn.Linear layers merges"
        )
    halves: dict[str, dict[str, Any]] = {}
    for key, tensor in state.items():
        name = key[len(_PREFIX) :] if key.startswith(_PREFIX) else key
        m = _KEY.match(name)
        if m is None:
            raise ValueError(
                f"{path}: cannot merge {key!r}: not a LoRA A/B weight (modules_to_save / saved full layers "
                "are not supported); only LoRA on nn.Linear layers merges"
            )
        halves.setdefault(m["module"], {})[m["ab"] or "W"] = tensor
    out = {}
    for module, ab in halves.items():
        if not {"A", "B"} <= set(ab):
            raise ValueError(f"{path}: {module!r} has no lora_A/lora_B pair, only {sorted(ab)}")
        a, b = ab["A"], ab["B"]
        if a.dim() != 2 or b.dim() != 2 or a.shape[0] != b.shape[1]:
            raise ValueError(
                f"{path}: {module!r} is not a Linear LoRA pair: A {tuple(a.shape)}, B {tuple(b.shape)}"
            )
        r = a.shape[0]
        alpha = _alpha_for(module, cfg)
        out[module] = (a, b, alpha / math.sqrt(r) if cfg.get("use_rslora") else alpha / r, ab.get("W"))
    if not out:
        raise ValueError(f"{path}: {ADAPTER_WEIGHTS} holds no LoRA weights")
    return out


def _renamer(model: Any) -> Any:
    """A function mapping a saved parameter name to this transformers version's layout, or None."""
    try:
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import WeightRenaming, rename_source_key

        renamings = [t for t in get_model_conversion_mapping(model) if isinstance(t, WeightRenaming)]
    except Exception as exc:  # older / newer transformers without this API: exact names only
        logger.debug("no transformers checkpoint renaming available (%s)", exc)
        return None
    return lambda key: rename_source_key(key, renamings, [])[0]


def merge_lora(model: Any, adapter: str | os.PathLike[str]) -> list[str]:
    """Merge the LoRA adapter folder ``adapter`` into ``model`` in place; returns the merged module names.

    Each ``W`` becomes ``W + scale * B @ A`` (computed in float32, stored in ``W``'s dtype and device).
    ``ValueError`` when a saved module is missing from the model, is not an ``nn.Linear``, or its shape
    does not match.
    """
    torch = require("torch", "hf")
    pairs = lora_pairs(adapter)
    modules = dict(model.named_modules())
    rename = _renamer(model)
    try:
        embeddings = model.get_input_embeddings()
    except (AttributeError, NotImplementedError):
        embeddings = None
    merged = []
    for saved, (a, b, scale, saved_w) in pairs.items():
        name = saved
        if name not in modules and rename is not None:
            name = rename(saved + ".weight").removesuffix(".weight")
        target = modules.get(name)
        if target is None:
            raise ValueError(f"{adapter}: the adapter targets {saved!r}, which this model does not have")
        if not isinstance(target, torch.nn.Linear):
            raise ValueError(f"{adapter}: {saved!r} is a {type(target).__name__}, not an nn.Linear")
        w = target.weight
        if tuple(w.shape) != (b.shape[0], a.shape[1]):
            raise ValueError(
                f"{adapter}: {saved!r} has weight {tuple(w.shape)} but the LoRA pair gives "
                f"{(b.shape[0], a.shape[1])}; is the adapter for another base model?"
            )
        if embeddings is not None and getattr(embeddings, "weight", None) is w:
            # a tied output head (tie_word_embeddings): LoRA changes the head only, so untie it first
            target.weight = w = torch.nn.Parameter(w.detach().clone(), requires_grad=w.requires_grad)
        with torch.no_grad():
            if saved_w is not None:
                if tuple(saved_w.shape) != tuple(w.shape):
                    raise ValueError(f"{adapter}: the saved {saved!r} weight does not fit the model's")
                w.copy_(saved_w.to(w.device, w.dtype))
            delta = (b.to(w.device, torch.float32) @ a.to(w.device, torch.float32)) * scale
            w.copy_((w.float() + delta).to(w.dtype))
        merged.append(name)
    logger.info("merged %d LoRA modules from %s", len(merged), adapter)
    return merged
