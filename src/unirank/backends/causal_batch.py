"""Padded batches for the local causal-LM engine (:class:`unirank.backends.causal_lm.CausalLM`).

Prompts of different lengths run as one forward when they are padded to a common width. Either side is
exact for a causal model when the attention mask hides the padding and the position ids count real tokens
only:

- ``"left"`` (default for next-token scores): every prompt ends in the last column, so the vocabulary head
  runs on that ONE column (``logits_to_keep=1``) instead of on every row's last position; position ids
  start at 0 on each row's first real token (``cumsum(mask) - 1``), so rotary models see the same positions
  as one prompt alone. This is how FIRST windows of many queries, or pointwise prompts, run as one batch.
- ``"right"``: real tokens keep their natural positions; the head runs on each row's own last position.

With no pad token the padding id is the EOS (or 0): it is never attended to, so its value does not matter.
Batched scores equal one-prompt-at-a-time scores to float rounding (``tests/test_llm_batched.py`` checks
1e-4 on Llama-, Qwen- and Gemma-style models, both sides, with and without a pad token). With
``engine.pipeline`` on (the default) the same batches run on the host pipeline
(:mod:`unirank.backends.causal_feed`); off, one after another here, with a device-to-host copy after each.

>>> collate_ids([[5, 6, 7], [8]], pad_id=0, side="left")["position_ids"].tolist()
[[0, 1, 2], [0, 0, 0]]
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np

from . import hf

__all__ = ["PADDING_SIDES", "collate_ids", "continuation_logprobs", "next_token_scores", "prefix_cache"]

PADDING_SIDES = ("left", "right")


def check_side(side: str) -> str:
    if side not in PADDING_SIDES:
        raise ValueError(f"padding_side={side!r}; expected 'left' or 'right'")
    return side


def collate_ids(rows: list[list[int]], *, pad_id: int, side: str, device: str = "cpu") -> dict[str, Any]:
    """``input_ids``, ``attention_mask`` and ``position_ids`` (``[batch, width]`` long tensors) for token id
    rows padded on ``side``; pad positions get position 0 (left) or continue past the end (right)."""
    torch, _ = hf.torch_modules()
    check_side(side)
    width = max(len(r) for r in rows)
    ids, mask = [], []
    for r in rows:
        pad = [pad_id] * (width - len(r))
        ones, zeros = [1] * len(r), [0] * (width - len(r))
        ids.append(pad + list(r) if side == "left" else list(r) + pad)
        mask.append(zeros + ones if side == "left" else ones + zeros)
    m = torch.tensor(mask, dtype=torch.long, device=device)
    pos = (
        (m.cumsum(-1) - 1).clamp(min=0)
        if side == "left"
        else torch.arange(width, device=device).expand(len(rows), width)
    )
    return {
        "input_ids": torch.tensor(ids, dtype=torch.long, device=device),
        "attention_mask": m,
        "position_ids": pos.contiguous(),
    }


def _count(engine: Any, prompt_lengths: list[int], completion: int) -> None:
    """Add the prompts to ``engine.usage`` (one call each, as a server request would be)."""
    usage = getattr(engine, "usage", None)
    if usage is not None:
        usage.add(sum(prompt_lengths), completion * len(prompt_lengths), calls=len(prompt_lengths))


def _accepts(engine: Any, name: str) -> bool:
    cache = engine.__dict__.setdefault("_forward_params", {})
    if name not in cache:
        cache[name] = name in inspect.signature(engine.model.forward).parameters
    return bool(cache[name])


def _pad_id(engine: Any) -> int:
    tok = engine.tokenizer
    for cand in (tok.pad_token_id, tok.eos_token_id):
        if cand is not None:
            return int(cand)
    return 0


def _inputs(engine: Any, batch: list[dict[str, list[int]]], side: str) -> dict[str, Any]:
    inputs = collate_ids(
        [f["input_ids"] for f in batch], pad_id=_pad_id(engine), side=side, device=engine.device
    )
    if not _accepts(engine, "position_ids"):
        if side == "left":
            raise TypeError(f"{engine.name}: the model takes no position_ids; use padding_side='right'")
        del inputs["position_ids"]
    return inputs


def _logits(engine: Any, inputs: dict[str, Any], keep: list[int] | int) -> tuple[Any, dict[int, int]]:
    """Logits at the columns ``keep`` (a list of positions, or ``1``: the last column only), with the column
    each position landed in: a 262k-vocabulary head over every prompt token would dominate the cost."""
    torch, _ = hf.torch_modules()
    engine.forward_calls += 1
    width = inputs["input_ids"].shape[1]
    cols = [width - 1] if keep == 1 else sorted(set(keep))  # type: ignore[arg-type]
    if _accepts(engine, "logits_to_keep"):
        arg: Any = 1 if keep == 1 else torch.tensor(cols, dtype=torch.long, device=engine.device)
        logits = engine.model(**inputs, logits_to_keep=arg).logits
        return logits, {p: i for i, p in enumerate(cols)}
    return engine.model(**inputs).logits, {p: p for p in cols}


def next_token_scores(
    engine: Any, prompts: list[list[int]], token_ids: list[int] | None, log_softmax: bool
) -> np.ndarray:
    """Next-token log-probabilities (or raw logits) after each prompt, ``[n, vocab]`` or
    ``[n, len(token_ids)]``, in token-budget padded batches on ``engine.padding_side``."""
    torch, _ = hf.torch_modules()
    side = check_side(getattr(engine, "padding_side", "left"))
    for p in prompts:
        engine.check_length(p)
    feats = [{"input_ids": list(p)} for p in prompts]

    def forward(batch: list[dict[str, list[int]]]) -> np.ndarray:
        inputs = _inputs(engine, batch, side)
        if side == "left":
            logits, _ = _logits(engine, inputs, 1)
            rows = logits[:, -1]
        else:
            last = [len(f["input_ids"]) - 1 for f in batch]
            logits, col = _logits(engine, inputs, last)
            rows = logits[torch.arange(len(batch)), [col[p] for p in last]]
        rows = rows.float()
        if log_softmax:
            rows = rows.log_softmax(-1)
        if token_ids is not None:
            rows = rows[:, token_ids]
        return rows.cpu().numpy()  # type: ignore[no-any-return]

    share = getattr(engine, "share_prefix", False) and side == "left" and _accepts(engine, "logits_to_keep")
    groups = prefix_groups(prompts, engine) if share and _accepts(engine, "position_ids") else []
    if getattr(engine, "pipeline", False):
        from . import causal_feed

        out = causal_feed.next_token_scores(engine, prompts, token_ids, log_softmax, groups)
        _count(engine, [len(p) for p in prompts], completion=1)
        return out
    rest = sorted(set(range(len(prompts))) - {i for _, idx in groups for i in idx})
    out: Any = None
    if rest:
        part = engine._run([feats[i] for i in rest], forward)
        out = np.empty((len(prompts), part.shape[1]), dtype=part.dtype)
        out[rest] = part
    for n_prefix, idx in groups:
        part = _shared_prefix_scores(engine, [prompts[i] for i in idx], n_prefix, token_ids, log_softmax)
        if out is None:
            out = np.empty((len(prompts), part.shape[1]), dtype=part.dtype)
        out[idx] = part
    _count(engine, [len(p) for p in prompts], completion=1)
    return out  # type: ignore[no-any-return]


#: prompts share a prefix worth computing once when it is at least this many tokens
MIN_SHARED_PREFIX = 8


def prefix_groups(prompts: list[list[int]], engine: Any = None) -> list[tuple[int, list[int]]]:
    """``(shared prefix length, prompt indices)`` for groups of 2+ prompts that start with the same
    :data:`MIN_SHARED_PREFIX` tokens; the prefix is the group's longest common prefix, less one token so every
    prompt keeps a token of its own. With ``engine``, a model with sliding-window attention only groups
    prompts that fit its window (padding between the prefix and a row's tokens would count in it).

    >>> prefix_groups([[1] * 9 + [2], [1] * 9 + [3, 4], [5] * 9])
    [(9, [0, 1])]
    """
    window = getattr(getattr(getattr(engine, "model", None), "config", None), "sliding_window", None)
    by_head: dict[tuple[int, ...], list[int]] = {}
    for i, p in enumerate(prompts):
        if len(p) > MIN_SHARED_PREFIX:
            by_head.setdefault(tuple(p[:MIN_SHARED_PREFIX]), []).append(i)
    out = []
    for idx in by_head.values():
        if len(idx) < 2:
            continue
        first, n = prompts[idx[0]], min(len(prompts[i]) for i in idx) - 1
        for i in idx[1:]:
            n = next((k for k, (a, b) in enumerate(zip(first[:n], prompts[i][:n])) if a != b), n)
        if n >= MIN_SHARED_PREFIX and (not window or max(len(prompts[i]) for i in idx) <= window):
            out.append((n, idx))
    return out


def prefix_cache(engine: Any, prefix: list[int]) -> Any:
    """Run ``prefix`` (token ids) as one row with ``use_cache=True`` and return its KV cache (one forward
    call, counted); the caller holds ``engine.lock`` and ``torch.inference_mode``."""
    torch, _ = hf.torch_modules()
    dev = engine.device
    engine.forward_calls += 1
    head = torch.tensor([list(prefix)], dtype=torch.long, device=dev)
    out = engine.model(
        input_ids=head,
        attention_mask=torch.ones_like(head),
        position_ids=torch.arange(len(prefix), device=dev)[None],
        use_cache=True,
        logits_to_keep=1,
    )
    return getattr(out, "cache", None) or out.past_key_values


def _shared_prefix_scores(
    engine: Any, prompts: list[list[int]], n_prefix: int, token_ids: list[int] | None, log_softmax: bool
) -> np.ndarray:
    """Next-token scores of prompts sharing their first ``n_prefix`` tokens: the prefix runs once (its KV
    cache kept), then the rest of every prompt runs in left-padded batches on a copy of that cache expanded
    to the batch. Exact: the padding sits between the prefix and a row's own tokens, hidden by the mask, and
    each row's positions continue from the prefix's (``n_prefix + cumsum(mask) - 1``)."""
    import copy

    torch, _ = hf.torch_modules()
    dev = engine.device
    key = "cache" if _accepts(engine, "cache") else "past_key_values"  # transformers 5.x: "cache"
    with engine.lock, torch.inference_mode():
        cache = prefix_cache(engine, prompts[0][:n_prefix])

    def forward(batch: list[dict[str, list[int]]]) -> np.ndarray:
        inputs = collate_ids([f["input_ids"] for f in batch], pad_id=_pad_id(engine), side="left", device=dev)
        rows = len(batch)
        past = copy.deepcopy(cache)
        past.batch_repeat_interleave(rows)
        mask = torch.cat(
            [torch.ones(rows, n_prefix, dtype=torch.long, device=dev), inputs["attention_mask"]], 1
        )
        engine.forward_calls += 1
        logits = (
            engine.model(
                input_ids=inputs["input_ids"],
                attention_mask=mask,
                position_ids=inputs["position_ids"] + n_prefix,
                **{key: past},
                use_cache=True,
                logits_to_keep=1,
            )
            .logits[:, -1]
            .float()
        )
        if log_softmax:
            logits = logits.log_softmax(-1)
        if token_ids is not None:
            logits = logits[:, token_ids]
        return logits.cpu().numpy()  # type: ignore[no-any-return]

    return engine._run([{"input_ids": list(p[n_prefix:])} for p in prompts], forward)  # type: ignore[no-any-return]


def continuation_logprobs(
    engine: Any, prompts: list[list[int]], continuations: list[list[int]]
) -> list[np.ndarray]:
    """Per-token log-probabilities of each continuation given its prompt, in padded batches."""
    side = check_side(getattr(engine, "padding_side", "left"))
    feats = []
    for p, c in zip(prompts, continuations):
        if not c:
            raise ValueError("an empty continuation has no likelihood")
        engine.check_length(list(p) + list(c), "prompt + continuation")
        feats.append({"input_ids": list(p) + list(c), "span": [len(c)]})
    width = max((len(c) for c in continuations), default=0)

    def forward(batch: list[dict[str, list[int]]]) -> np.ndarray:
        inputs = _inputs(engine, batch, side)
        total = inputs["input_ids"].shape[1]
        spans = []  # (row, first target column, k)
        for row, f in enumerate(batch):
            n, k = len(f["input_ids"]), f["span"][0]
            start = (total - n if side == "left" else 0) + n - k
            spans.append((row, start, k))
        need = [c for _, s, k in spans for c in range(s - 1, s + k - 1)]
        logits, col = _logits(engine, inputs, need)
        logp = logits.float().log_softmax(-1)
        out = np.full((len(batch), width), np.nan)
        for row, s, k in spans:
            targets = inputs["input_ids"][row, s : s + k]
            cols = [col[c] for c in range(s - 1, s + k - 1)]
            out[row, :k] = logp[row, cols].gather(-1, targets[:, None])[:, 0].cpu().numpy()
        return out

    if getattr(engine, "pipeline", False):
        from . import causal_feed

        rows = causal_feed.continuation_logprobs(engine, prompts, continuations)
    else:
        rows = engine._run(feats, forward)
    _count(engine, [len(f["input_ids"]) for f in feats], completion=0)
    return [rows[i, : len(c)] for i, c in enumerate(continuations)]
