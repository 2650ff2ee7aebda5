"""Attention weights from the local causal-LM engine (:class:`unirank.backends.causal_lm.CausalLM`), for
attention-based re-ranking (ICR, :mod:`unirank.methods.attention`).

Two primitives, both summing the weights over heads and the chosen layers as the forward runs (forward hooks
on the ``*.self_attn`` modules, eager attention: the only implementation that returns weights):

- :func:`attention_rows`: rows of one prompt, from ONE forward over the whole prompt (the vocabulary head
  runs on the last position only);
- :func:`prefix_attention`: several prompts that share a prefix (ICR's query prompt and its content-free
  calibration prompt share every token before the query). The prefix runs ONCE with its KV cache kept; then
  the suffixes run as ONE right-padded batch on that cache expanded to the batch, with positions
  ``n_prefix + 0..width-1`` and a mask of ones over the prefix plus each row's own mask. Each real suffix
  token therefore sits at the same key index and position as in its whole prompt (the padding comes after
  it, hidden by the causal mask), which keeps sliding-window layers exact too; the weights a suffix token
  gives the prefix equal those of one forward over ``prefix + suffix`` to float rounding (1e-5 in fp32,
  ``tests/test_icr_batched.py``). A sliding-window layer's cache keeps only the last ``window - 1`` prefix
  tokens; its weights land on those positions (the others get none, as in the whole forward). The prefix
  forward needs no weights, so it runs with SDPA where the model has it (eager would materialise every
  layer's ``[heads, len, len]`` weights); only the suffix batch runs eager.

That is two model forwards (``engine.forward_calls``) for any number of suffixes; ``engine.usage`` counts
one call per prompt, with the prefix's tokens once (they are computed once). A model whose forward takes no
``position_ids`` or no cache, or whose cache cannot be expanded to a batch, runs each prompt whole instead
(:func:`shares_prefix` decides; the answer is the same).

>>> right_padded([[5, 6, 7], [8]], pad_id=0)[1].tolist()
[[1, 1, 1], [1, 0, 0]]
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import numpy as np

from . import hf
from .causal_batch import prefix_cache

__all__ = ["attention_rows", "prefix_attention", "right_padded", "shares_prefix"]

logger = logging.getLogger(__name__)


def right_padded(rows: list[list[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, mask)`` int64 ``[len(rows), longest]`` arrays of token id rows padded on the right."""
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
        mask[i, : len(r)] = 1
    return ids, mask


def _modules(engine: Any, layers: list[int] | None) -> list[Any]:
    modules = [m for n, m in engine.model.named_modules() if n.endswith("self_attn")]
    if not modules:
        raise TypeError(f"{engine.name}: no '*.self_attn' modules; attention weights are unavailable")
    chosen = range(len(modules)) if layers is None else layers
    try:
        return [modules[i] for i in chosen]
    except IndexError:
        raise ValueError(f"layers={layers}: the model has {len(modules)} attention layers") from None


def _weights(output: Any) -> Any:
    weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
    if weights is None:
        raise RuntimeError("attention module returned no weights; load with attn_implementation='eager'")
    return weights


@contextlib.contextmanager
def _prefix_attention_impl(engine: Any, sdpa: bool) -> Iterator[None]:
    """SDPA for the prefix forward, which needs no weights (eager materialises every layer's
    ``[heads, len, len]`` weights), where the model has it; the implementation is restored afterwards."""
    before = getattr(engine.model.config, "_attn_implementation", None)
    switched = False
    if before == "eager" and sdpa:
        try:
            engine.model.set_attn_implementation("sdpa")
            switched = True
        except (ValueError, ImportError) as exc:  # the architecture has no SDPA path
            logger.debug("%s: prefix runs eager (%s)", engine.name, exc)
    try:
        yield
    finally:
        if switched:
            engine.model.set_attn_implementation(before)


@contextlib.contextmanager
def _hooked(engine: Any, layers: list[int] | None, hook: Any) -> Iterator[None]:
    """Eager attention and ``hook`` on the chosen layers for the duration; the engine's attention
    implementation is restored afterwards (other methods share the engine)."""
    before = getattr(engine.model.config, "_attn_implementation", "eager")
    if before != "eager":
        engine.model.set_attn_implementation("eager")
    handles = [m.register_forward_hook(hook) for m in _modules(engine, layers)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
        if before != "eager":
            engine.model.set_attn_implementation(before)


def attention_rows(
    engine: Any, ids: list[int], rows: list[int], layers: list[int] | None = None
) -> np.ndarray:
    """Attention weights from the token positions ``rows`` to every position, summed over heads and the
    chosen layers (default all): ``[len(rows), len(ids)]``, from ONE forward pass over ``ids``.

    Rows are taken per layer as the forward runs (hooks), so memory stays ``O(layers * rows * len)``.
    """
    from .causal_batch import _accepts

    torch, _ = hf.torch_modules()
    engine.check_length(ids)
    acc = torch.zeros(len(rows), len(ids))
    idx = torch.tensor(rows, dtype=torch.long, device=engine.device)

    def hook(_mod: Any, _inp: Any, output: Any) -> None:
        acc.add_(_weights(output)[0][:, idx].float().sum(0).cpu())  # the rows first: [heads, rows, len]

    with engine.lock, _hooked(engine, layers, hook), torch.inference_mode():  # hooks: our forward only
        engine.forward_calls += 1
        engine.usage.add(len(ids), 0)
        t = torch.tensor([ids], dtype=torch.long, device=engine.device)
        keep = {"logits_to_keep": 1} if _accepts(engine, "logits_to_keep") else {}  # no vocabulary head
        engine.model(input_ids=t, attention_mask=torch.ones_like(t), **keep)
    return acc.numpy().astype(np.float64)


def _cache_key(engine: Any) -> str | None:
    from .causal_batch import _accepts

    for key in ("cache", "past_key_values"):  # transformers 5.x: "cache"
        if _accepts(engine, key):
            return key
    return None


def shares_prefix(engine: Any) -> bool:
    """Whether :func:`prefix_attention` can continue a batch from the prefix's KV cache on this model
    (its forward takes ``position_ids`` and a cache); otherwise each prompt runs whole."""
    from .causal_batch import _accepts

    return _accepts(engine, "position_ids") and _cache_key(engine) is not None


def _whole(
    engine: Any, prefix: list[int], suffixes: list[list[int]], layers: list[int] | None
) -> list[np.ndarray]:
    n = len(prefix)
    out = []
    for s in suffixes:
        rows = list(range(n, n + len(s)))
        out.append(attention_rows(engine, list(prefix) + list(s), rows, layers)[:, :n])
    return out


def prefix_attention(
    engine: Any,
    prefix: list[int],
    suffixes: list[list[int]],
    layers: list[int] | None = None,
    *,
    sdpa_prefix: bool = True,
) -> list[np.ndarray]:
    """For each suffix, the attention from its tokens to the ``prefix`` positions in the prompt
    ``prefix + suffix``, summed over heads and the chosen layers: ``[len(suffix), len(prefix)]`` arrays,
    equal to ``attention_rows(prefix + suffix, suffix rows)[:, :len(prefix)]``, from two forwards (the prefix
    once, then the suffixes as one batch; see the module doc). ``sdpa_prefix``: the prefix forward, which
    needs no weights, runs with SDPA where the model has it (no ``[heads, len, len]`` weights per layer;
    equal to eager to float rounding); ``False`` keeps the engine's implementation."""
    torch, _ = hf.torch_modules()
    if not prefix or not suffixes or any(not s for s in suffixes):
        raise ValueError("prefix_attention needs a non-empty prefix and non-empty suffixes")
    for s in suffixes:
        engine.check_length(list(prefix) + list(s))
    if not shares_prefix(engine):
        logger.debug("%s: no position_ids / cache in the forward; prompts run whole", engine.name)
        return _whole(engine, prefix, suffixes, layers)
    from .causal_batch import _pad_id

    n, dev, key = len(prefix), engine.device, _cache_key(engine)
    ids_np, mask_np = right_padded([list(s) for s in suffixes], _pad_id(engine))
    rows, width = ids_np.shape
    acc = torch.zeros(rows, width, n, device=dev)

    def hook(_mod: Any, _inp: Any, output: Any) -> None:
        w = _weights(output)  # [rows, heads, width, kept prefix keys + width]
        kept = w.shape[-1] - width
        if not 0 < kept <= n:
            raise RuntimeError(f"attention over {w.shape[-1]} keys does not fit a prefix of {n} tokens")
        acc[:, :, n - kept :] += w[..., :kept].float().sum(1)

    with engine.lock, torch.inference_mode():
        with _prefix_attention_impl(engine, sdpa_prefix):
            cache = prefix_cache(engine, list(prefix))
        if rows > 1 and not hasattr(cache, "batch_repeat_interleave"):
            cache = None
        if cache is not None:
            if rows > 1:
                cache.batch_repeat_interleave(rows)
            ids, mask = torch.from_numpy(ids_np).to(dev), torch.from_numpy(mask_np).to(dev)
            full_mask = torch.cat([torch.ones(rows, n, dtype=torch.long, device=dev), mask], 1)
            with _hooked(engine, layers, hook):
                engine.forward_calls += 1
                engine.model(
                    input_ids=ids,
                    attention_mask=full_mask,
                    position_ids=(n + torch.arange(width, device=dev)).expand(rows, width),
                    **{key: cache},
                    use_cache=True,
                    logits_to_keep=1,
                )
            engine.usage.add(n + int(mask_np.sum()), 0, calls=rows)
    if cache is None:  # the cache cannot be expanded to a batch (the prefix forward counted, as it ran)
        logger.debug("%s: the KV cache cannot be expanded to a batch; prompts run whole", engine.name)
        return _whole(engine, prefix, suffixes, layers)
    got = acc.cpu().numpy().astype(np.float64)
    return [got[i, : len(s)] for i, s in enumerate(suffixes)]
