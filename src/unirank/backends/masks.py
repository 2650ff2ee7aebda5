"""Attention masks handed to an encoder already expanded: ``transformers`` does not rebuild them per forward.

An encoder in ``transformers`` 5 turns the ``[batch, width]`` padding mask into the form its attention
implementation takes (a boolean ``[batch, 1, width, width]`` mask for SDPA) on every forward; for a
small model that is a third of the forward's host time (a one-layer BERT: 48 ms of Python per 2,000
DL19 pairs, 31 ms without it). A 4-D mask is passed through as it is, so :func:`expand` builds the
broadcastable ``[batch, 1, 1, width]`` form once per batch (boolean for SDPA, additive for the eager
implementation) and drops it when no row is padded (the stock path also runs SDPA without a mask then).

:func:`verify` runs a padded probe batch both ways and returns the form only if the outputs agree (1e-5 in
fp32, a bf16 / fp16 tolerance otherwise) on real tokens; any other attention implementation, a decoder or a
model that rejects the 4-D mask keeps the stock path.

>>> import torch
>>> expand(torch.tensor([[1, 1, 0], [1, 1, 1]]), "bool").shape
torch.Size([2, 1, 1, 3])
>>> expand(torch.ones(2, 3, dtype=torch.long), "bool") is None
True
"""

from __future__ import annotations

import logging
from typing import Any

from .probe import agrees, probe_batch

__all__ = ["FORMS", "device_inputs", "expand", "verify"]

logger = logging.getLogger(__name__)

#: attention implementation -> the 4-D mask form it takes
FORMS = {"sdpa": "bool", "eager": "additive"}


def expand(mask: Any, form: str, dtype: Any = None) -> Any:
    """``mask`` (``[batch, width]``, 1 = token) as ``[batch, 1, 1, width]`` in ``form`` (``"bool"``: True
    where attended; ``"additive"``: 0 there, the dtype's minimum at padding); ``None`` when unpadded."""
    import torch

    if bool(mask.all()):
        return None
    keep = mask[:, None, None, :].bool()
    if form == "bool":
        return keep
    dtype = dtype or torch.float32
    return torch.zeros(keep.shape, dtype=dtype, device=mask.device).masked_fill(~keep, torch.finfo(dtype).min)


def device_inputs(
    inputs: dict[str, Any], device: Any, form: str | None, dtype: Any = None
) -> tuple[dict[str, Any], Any]:
    """A host batch moved to ``device`` (non-blocking), its padding mask expanded to ``form`` first when given
    (on the host: no device synchronisation; pinned for CUDA so the copy stays asynchronous). Returns the
    model's inputs and the 2-D mask on the device (pooling needs it).

    >>> import torch
    >>> x, m = device_inputs({"input_ids": torch.ones(1, 2, dtype=torch.long),
    ...                       "attention_mask": torch.tensor([[1, 0]])}, "cpu", "bool")
    >>> x["attention_mask"].shape, m.tolist()
    (torch.Size([1, 1, 1, 2]), [[1, 0]])
    """
    host = dict(inputs)
    if form is not None:
        wide = expand(host["attention_mask"], form, dtype)
        if wide is not None and str(device).startswith("cuda"):  # pragma: no cover - no GPU in CI
            wide = wide.pin_memory()
        host["mask4d"] = wide
    moved = {k: v.to(device, non_blocking=True) for k, v in host.items() if v is not None}
    mask = moved["attention_mask"]
    if form is not None:
        moved["attention_mask"] = moved.pop("mask4d", None)
    return moved, mask


def _first_output(out: Any) -> Any:
    for name in ("logits", "last_hidden_state"):
        value = getattr(out, name, None)
        if value is not None:
            return value
    return out[0]


def verify(model: Any, tokenizer: Any, device: Any = "cpu", pair: bool = True) -> str | None:
    """The mask form ``model`` takes (see :func:`expand`), or ``None`` if a padded probe batch scored with it
    differs from the stock path (or the model is a decoder, or its attention implementation is another)."""
    import torch

    cfg = getattr(model, "config", None)
    form = FORMS.get(str(getattr(cfg, "_attn_implementation", None)))
    right = getattr(tokenizer, "padding_side", "right") == "right"
    if form is None or getattr(cfg, "is_decoder", False) or not right:
        return None
    try:
        probe = probe_batch(tokenizer, device, pair=pair)
        dtype = next(model.parameters()).dtype
        with torch.inference_mode():
            ref = _first_output(model(**probe)).float()
            expanded = dict(probe, attention_mask=expand(probe["attention_mask"], form, dtype))
            got = _first_output(model(**expanded)).float()
    except Exception as exc:  # the model does not take a 4-D mask
        logger.debug("expanded attention mask not used: %s: %s", type(exc).__name__, exc)
        return None
    if got.shape != ref.shape:
        return None
    if ref.dim() == 3:  # hidden states: compare real tokens only (padding rows are free to differ)
        real = probe["attention_mask"].bool()
        ref, got = ref[real], got[real]
    if not agrees(ref, got, dtype, 1e-5):
        logger.debug("expanded attention mask not used: probe outputs differ")
        return None
    return form
