"""The local causal-LM engine's prefill-only forwards on the host pipeline (:mod:`unirank.backends.feeder`).

Next-token scores (pointwise yes/no and graded labels, FIRST's single-token logits) and continuation
log-probabilities run here when ``engine.pipeline`` is on (the default of
:class:`~unirank.backends.causal_lm.CausalLM`):

- the prompts of a call go into ONE numpy pool of token ids (:class:`IdPool`); each token-budget batch
  (length-sorted, :func:`unirank.batching.token_budget_batches`, as :func:`unirank.backends.hf.run_model`
  forms them) is padded straight into numpy arrays (:func:`unirank.backends.pairs.gather_rows`: no Python
  list per row) with the position ids of :func:`unirank.backends.causal_batch.collate_ids` (left padding:
  counted from each row's first real token; right: ``0..width-1``);
- batches are prepared in a background thread (:class:`~unirank.backends.feeder.Prefetcher`) while the
  current forward runs; the rows a caller asked for (the ``token_ids`` columns, or the whole log-softmaxed
  row) stay on the device and are copied back once per call (:func:`~unirank.backends.feeder.run_prefetched`);
- a batch whose forward fails is retried under :func:`unirank.batching.run_batches`' isolation (halved on
  out-of-memory, item by item otherwise, ``NaN`` and a warning for an item that fails alone).

``share_prefix`` groups (:func:`~unirank.backends.causal_batch.prefix_groups`) run in the same call: each
group's prefix runs once when its first batch comes up, and its rows continue from that KV cache.

>>> pool = IdPool([[5, 6, 7], [8]])
>>> {k: v.tolist() for k, v in pool.collate([0, 1], side="left", pad_id=0).items()}["position_ids"]
[[0, 1, 2], [0, 0, 0]]
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from . import hf
from .feeder import Prepared, run_prefetched, to_tensors
from .pairs import gather_rows

__all__ = ["IdPool", "continuation_logprobs", "next_token_scores"]

logger = logging.getLogger(__name__)

#: whole-vocabulary rows of one call kept on an accelerator up to this many bytes (beyond: copied per batch)
MAX_DEVICE_ROWS_BYTES = 512 << 20


class IdPool:
    """Token id rows held in one int64 pool (``ids``), with each row's ``starts`` and ``lengths``."""

    def __init__(self, rows: Sequence[Sequence[int]]) -> None:
        self.lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
        total = int(self.lengths.sum())
        self.ids = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int64, count=total)
        self.starts = np.cumsum(self.lengths) - self.lengths

    def __len__(self) -> int:
        return len(self.lengths)

    def collate(
        self, index: Sequence[int] | np.ndarray, *, side: str, pad_id: int, skip: int = 0
    ) -> dict[str, np.ndarray]:
        """``input_ids`` / ``attention_mask`` / ``position_ids`` (int64 ``[batch, width]``) of the rows
        ``index`` without their first ``skip`` tokens, padded on ``side`` as
        :func:`~unirank.backends.causal_batch.collate_ids` pads them."""
        idx = np.asarray(index, dtype=np.int64)
        src, lens = self.starts[idx] + skip, self.lengths[idx] - skip
        left = side == "left"
        ids, (rows, cols, _) = gather_rows(self.ids, src[:, None], lens[:, None], pad_id, left)
        mask = np.zeros_like(ids)
        mask[rows, cols] = 1
        if left:
            pos = np.maximum(mask.cumsum(-1) - 1, 0)
        else:
            pos = np.tile(np.arange(ids.shape[1], dtype=np.int64), (len(idx), 1))
        return {"input_ids": ids, "attention_mask": mask, "position_ids": pos}


def _to_device(inputs: dict[str, Any], device: str) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) for k, v in inputs.items() if not k.startswith("_")}


def _drive(
    engine: Any,
    batches: Iterator[tuple[np.ndarray, dict[str, Any]]],
    prepare: Callable[[np.ndarray], dict[str, Any]],
    forward: Callable[[dict[str, Any]], Any],
    n_items: int,
) -> np.ndarray:
    """Run ``forward`` over the prepared ``batches`` under the engine's lock; failed batches retried on
    ``forward(prepare(positions))`` with the isolation of :func:`unirank.batching.run_batches`."""
    torch, _ = hf.torch_modules()

    def fallback(idx: list[int]) -> np.ndarray:
        return forward(prepare(np.asarray(idx, dtype=np.int64))).float().cpu().numpy()  # type: ignore[no-any-return]

    def prepared() -> Iterator[Prepared]:  # runs in the feeder thread: numpy, then (pinned) tensors
        for idx, arrays in batches:
            plain = {k: v for k, v in arrays.items() if not isinstance(v, np.ndarray)}
            yield Prepared(
                idx,
                {**to_tensors({k: v for k, v in arrays.items() if k not in plain}, engine.device), **plain},
            )

    with engine.lock, torch.inference_mode():
        return run_prefetched(prepared(), forward, n_items, fallback=fallback)


def _budget_batches(engine: Any, lengths: np.ndarray) -> list[list[int]]:
    from ..batching import token_budget_batches

    return token_budget_batches(
        lengths.tolist(), max_tokens=engine.max_tokens_per_batch, max_batch_size=engine.batch_size
    )


def _vocab(engine: Any) -> int:
    head = engine.model.get_output_embeddings()
    n = getattr(head, "out_features", None) or getattr(engine.model.config, "vocab_size", None)
    return int(n or 0)


def next_token_scores(
    engine: Any,
    prompts: list[list[int]],
    token_ids: list[int] | None,
    log_softmax: bool,
    groups: list[tuple[int, list[int]]],
) -> np.ndarray:
    """:func:`unirank.backends.causal_batch.next_token_scores` on the host pipeline (see the module doc);
    ``groups`` are the ``share_prefix`` groups (empty when off)."""
    from .causal_batch import _accepts, _pad_id, check_side

    torch, _ = hf.torch_modules()
    side = check_side(getattr(engine, "padding_side", "left"))
    dev, pad = engine.device, _pad_id(engine)
    n = len(prompts)
    width_out = len(token_ids) if token_ids is not None else _vocab(engine)
    if n == 0:
        return np.zeros((0, width_out), dtype=np.float64)
    pool = IdPool(prompts)
    keep_ok, pos_ok = _accepts(engine, "logits_to_keep"), _accepts(engine, "position_ids")
    # which segment each prompt runs in: -1 = whole prompt, g = tail after the prefix of group g
    seg = np.full(n, -1, dtype=np.int64)
    skips = [0]
    for g, (n_prefix, idx) in enumerate(groups):
        seg[idx] = g
        skips.append(n_prefix)
    sel = None if token_ids is None else torch.tensor(token_ids, dtype=torch.long, device=dev)
    spill = token_ids is None and not str(dev).startswith("cpu") and n * width_out * 4 > MAX_DEVICE_ROWS_BYTES

    def prepare(idx: np.ndarray) -> dict[str, Any]:
        g = int(seg[idx[0]])
        arrays: dict[str, Any] = pool.collate(
            idx, side="left" if g >= 0 else side, pad_id=pad, skip=skips[g + 1]
        )
        arrays["_group"] = g
        if g < 0 and side == "right":
            last = pool.lengths[idx] - 1
            cols = np.unique(last)
            arrays["_cols"] = cols
            arrays["_pick"] = np.searchsorted(cols, last) if keep_ok else last
        return arrays

    def batches() -> Iterator[tuple[np.ndarray, dict[str, Any]]]:
        for g in range(-1, len(groups)):
            members = np.flatnonzero(seg == g)
            for b in _budget_batches(engine, pool.lengths[members] - skips[g + 1]):
                idx = members[b]
                yield idx, prepare(idx)

    prefix = _PrefixCache(engine, prompts, groups)

    def forward(inputs: dict[str, Any]) -> Any:
        g = inputs["_group"]
        if g >= 0:
            rows = prefix.forward(g, inputs)
        elif side == "left":
            if not pos_ok:
                raise TypeError(f"{engine.name}: the model takes no position_ids; use padding_side='right'")
            engine.forward_calls += 1
            model_in = _to_device(inputs, dev)
            out = engine.model(**model_in, logits_to_keep=1) if keep_ok else engine.model(**model_in)
            rows = out.logits[:, -1]
        else:
            model_in = _to_device(inputs, dev)
            if not pos_ok:
                del model_in["position_ids"]
            engine.forward_calls += 1
            pick = inputs["_pick"].to(dev, non_blocking=True)
            if keep_ok:
                logits = engine.model(
                    **model_in, logits_to_keep=inputs["_cols"].to(dev, non_blocking=True)
                ).logits
            else:
                logits = engine.model(**model_in).logits
            rows = logits[torch.arange(len(pick), device=dev), pick]
        rows = rows.float()
        if log_softmax:
            rows = rows.log_softmax(-1)
        if sel is not None:
            rows = rows[:, sel]
        return rows.cpu() if spill else rows

    def tensors_prepare(idx: np.ndarray) -> dict[str, Any]:
        arrays = prepare(idx)
        return {k: (torch.from_numpy(v) if isinstance(v, np.ndarray) else v) for k, v in arrays.items()}

    try:
        out = _drive(engine, batches(), tensors_prepare, forward, n)
    finally:
        prefix.clear()
    if out.ndim == 1:  # nothing scored at all (a lone prompt that failed): NaN rows of the right width
        out = np.full((n, width_out), np.nan, dtype=np.float64)
    return out


class _PrefixCache:
    """The KV cache of one ``share_prefix`` group's prefix at a time, computed when a batch of the group
    first needs it (groups' batches arrive one group after another)."""

    def __init__(self, engine: Any, prompts: list[list[int]], groups: list[tuple[int, list[int]]]) -> None:
        self.engine, self.prompts, self.groups = engine, prompts, groups
        self.key: int | None = None
        self.cache: Any = None

    def clear(self) -> None:
        self.key, self.cache = None, None

    def _prefix(self, g: int) -> Any:
        if self.key != g:
            from .causal_batch import prefix_cache

            n_prefix, idx = self.groups[g]
            self.clear()
            self.key, self.cache = g, prefix_cache(self.engine, self.prompts[idx[0]][:n_prefix])
        return self.cache

    def forward(self, g: int, inputs: dict[str, Any]) -> Any:
        """Last-column logits of the batch ``inputs`` (tails of group ``g``, left-padded) after its prefix."""
        import copy

        from .causal_batch import _accepts

        torch, _ = hf.torch_modules()
        e, dev = self.engine, self.engine.device
        n_prefix = self.groups[g][0]
        cache = self._prefix(g)
        model_in = _to_device(inputs, dev)
        rows = model_in["input_ids"].shape[0]
        past = copy.deepcopy(cache)
        past.batch_repeat_interleave(rows)
        mask = torch.cat(
            [torch.ones(rows, n_prefix, dtype=torch.long, device=dev), model_in["attention_mask"]], 1
        )
        key = "cache" if _accepts(e, "cache") else "past_key_values"  # transformers 5.x: "cache"
        e.forward_calls += 1
        out = e.model(
            input_ids=model_in["input_ids"],
            attention_mask=mask,
            position_ids=model_in["position_ids"] + n_prefix,
            **{key: past},
            use_cache=True,
            logits_to_keep=1,
        )
        return out.logits[:, -1]


def continuation_logprobs(
    engine: Any, prompts: list[list[int]], continuations: list[list[int]]
) -> np.ndarray:
    """Per-token log-probabilities of each continuation given its prompt, ``[n, longest continuation]``
    (``NaN`` past a row's own continuation), on the host pipeline; the caller checks the inputs."""
    from .causal_batch import _accepts, _pad_id, check_side

    torch, _ = hf.torch_modules()
    side = check_side(getattr(engine, "padding_side", "left"))
    dev, pad = engine.device, _pad_id(engine)
    n = len(prompts)
    width_c = max((len(c) for c in continuations), default=0)
    if n == 0:
        return np.zeros((0, width_c), dtype=np.float64)
    pool = IdPool([list(p) + list(c) for p, c in zip(prompts, continuations)])
    span = np.fromiter(map(len, continuations), dtype=np.int64, count=n)
    keep_ok, pos_ok = _accepts(engine, "logits_to_keep"), _accepts(engine, "position_ids")

    def prepare(idx: np.ndarray) -> dict[str, Any]:
        arrays: dict[str, Any] = pool.collate(idx, side=side, pad_id=pad)
        total = arrays["input_ids"].shape[1]
        lens, k = pool.lengths[idx], span[idx]
        start = (total - lens if side == "left" else 0) + lens - k  # first target column per row
        row = np.repeat(np.arange(len(idx)), k)
        j = np.arange(int(k.sum())) - np.repeat(np.cumsum(k) - k, k)  # position within the continuation
        target_col = np.repeat(start, k) + j
        cols = np.unique(target_col - 1)
        arrays["_cols"] = cols
        arrays["_row"], arrays["_j"] = row, j
        arrays["_at"] = np.searchsorted(cols, target_col - 1) if keep_ok else target_col - 1
        arrays["_target"] = arrays["input_ids"][row, target_col]
        return arrays

    def batches() -> Iterator[tuple[np.ndarray, dict[str, Any]]]:
        for b in _budget_batches(engine, pool.lengths):
            idx = np.asarray(b, dtype=np.int64)
            yield idx, prepare(idx)

    def forward(inputs: dict[str, Any]) -> Any:
        if side == "left" and not pos_ok:
            raise TypeError(f"{engine.name}: the model takes no position_ids; use padding_side='right'")
        model_in = _to_device(inputs, dev)
        if not pos_ok:
            del model_in["position_ids"]
        engine.forward_calls += 1
        if keep_ok:
            logits = engine.model(
                **model_in, logits_to_keep=inputs["_cols"].to(dev, non_blocking=True)
            ).logits
        else:
            logits = engine.model(**model_in).logits
        logp = logits.float().log_softmax(-1)
        row, j = inputs["_row"].to(dev, non_blocking=True), inputs["_j"].to(dev, non_blocking=True)
        vals = logp[
            row, inputs["_at"].to(dev, non_blocking=True), inputs["_target"].to(dev, non_blocking=True)
        ]
        out = torch.full((model_in["input_ids"].shape[0], width_c), float("nan"), device=dev)
        out[row, j] = vals
        return out

    def tensors_prepare(idx: np.ndarray) -> dict[str, Any]:
        return {k: torch.from_numpy(v) for k, v in prepare(idx).items()}

    out = _drive(engine, batches(), tensors_prepare, forward, n)
    if out.ndim == 1:
        out = np.full((n, width_c), np.nan, dtype=np.float64)
    return out
