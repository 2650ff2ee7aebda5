"""Length-sorted, token-budget batching with fault isolation.

Padding is wasted compute: a batch costs ``len(batch) * longest item``. Sorting items by length and cutting
batches at a token budget keeps that product near the real token count, and lets many short pairs share a
batch while a few long ones go in small batches. :func:`run_batches` runs a scoring function over such
batches and isolates failures: an out-of-memory error halves the batch and retries; any other error in a
batch is retried item by item, so one bad document costs only its own score (``NaN``), never the batch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["run_batches", "token_budget_batches"]

logger = logging.getLogger(__name__)


def token_budget_batches(
    lengths: Sequence[int], max_tokens: int = 16384, max_batch_size: int = 256
) -> list[list[int]]:
    """Group item indices into batches, longest first, with ``len(batch) * max_len <= max_tokens``.

    An item longer than the budget gets a batch of its own.

    >>> token_budget_batches([5, 100, 6, 90], max_tokens=200, max_batch_size=8)
    [[1, 3], [2, 0]]
    """
    if max_tokens < 1 or max_batch_size < 1:
        raise ValueError("max_tokens and max_batch_size must be >= 1")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    width = 0
    for i in order:
        new_width = max(width, lengths[i])
        if current and (len(current) + 1 > max_batch_size or (len(current) + 1) * new_width > max_tokens):
            batches.append(current)
            current, new_width = [], lengths[i]
        current.append(i)
        width = new_width
    if current:
        batches.append(current)
    return batches


def _is_oom(exc: BaseException) -> bool:
    text = f"{type(exc).__name__}: {exc}".lower()
    return isinstance(exc, MemoryError) or "out of memory" in text or "outofmemory" in text


def run_batches(
    fn: Callable[[list[int]], np.ndarray],
    batches: Sequence[list[int]],
    n_items: int,
    progress: Callable[[int], None] | None = None,
    workers: int = 1,
) -> np.ndarray:
    """Call ``fn(batch_indices) -> scores`` for every batch and scatter the scores into one array.

    ``fn`` returns one row per item (a score, or a vector); the result has shape ``(n_items, ...)``.
    Failures are isolated as described in the module docstring; an item that fails alone scores ``NaN``
    and a warning is logged. ``progress(n)`` is called with the number of items finished.

    With ``workers > 1`` the batches run concurrently in that many threads (for engines that release the
    GIL, such as onnxruntime sessions with one intra-op thread each); batches that fail are then retried
    sequentially with the same isolation rules.
    """
    if workers > 1 and len(batches) > 1:
        return _run_concurrently(fn, batches, n_items, progress, workers)
    out: np.ndarray | None = None
    failed: list[int] = []
    pending = [list(b) for b in batches]
    while pending:
        batch = pending.pop(0)
        try:
            scores = np.asarray(fn(batch), dtype=np.float64)
            if scores.ndim == 0 or scores.shape[0] != len(batch):
                raise RuntimeError(f"scoring function returned {scores.shape} rows for {len(batch)} items")
            if out is None:
                out = np.full((n_items, *scores.shape[1:]), np.nan, dtype=np.float64)
            out[batch] = scores
        except Exception as exc:
            if len(batch) == 1:
                logger.warning(
                    "item %d could not be scored and gets NaN: %s: %s", batch[0], type(exc).__name__, exc
                )
                failed.append(batch[0])
            elif _is_oom(exc):
                half = len(batch) // 2
                logger.warning("out of memory on a batch of %d; retrying in halves", len(batch))
                _free_accelerator_memory()
                pending[:0] = [batch[:half], batch[half:]]
                continue
            else:
                logger.warning(
                    "a batch of %d failed (%s: %s); retrying its items one by one",
                    len(batch),
                    type(exc).__name__,
                    exc,
                )
                pending[:0] = [[i] for i in batch]
                continue
        if progress is not None:
            progress(len(batch))
    if out is None:
        if n_items > 1 and len(failed) == n_items:
            raise RuntimeError(f"all {n_items} items failed to score; see the warnings above")
        return np.full(n_items, np.nan, dtype=np.float64)
    return out


def _run_concurrently(
    fn: Callable[[list[int]], np.ndarray],
    batches: Sequence[list[int]],
    n_items: int,
    progress: Callable[[int], None] | None,
    workers: int,
) -> np.ndarray:
    from concurrent.futures import ThreadPoolExecutor

    def attempt(batch: list[int]) -> np.ndarray | None:
        try:
            scores = np.asarray(fn(batch), dtype=np.float64)
        except Exception as exc:
            name = type(exc).__name__
            logger.debug("a concurrent batch of %d failed (%s: %s); retrying it alone", len(batch), name, exc)
            return None
        return scores if scores.ndim and scores.shape[0] == len(batch) else None

    done: list[tuple[list[int], np.ndarray]] = []
    retry: list[list[int]] = []
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="unirank-batch")
    try:
        for batch, scores in zip(batches, pool.map(attempt, [list(b) for b in batches])):
            if scores is None:
                retry.append(list(batch))
                continue
            done.append((list(batch), scores))
            if progress is not None:
                progress(len(batch))
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    if not done:  # nothing succeeded concurrently: the sequential path decides (and raises if all fail)
        return run_batches(fn, retry, n_items, progress)
    out = np.full((n_items, *done[0][1].shape[1:]), np.nan, dtype=np.float64)
    for batch, scores in done:
        out[batch] = scores
    if retry:  # sequential, isolating failures; rows that fail stay NaN
        again = run_batches(fn, retry, n_items, progress)
        rows = [i for b in retry for i in b]
        if again.ndim == out.ndim:
            out[rows] = again[rows]
    return out


def _free_accelerator_memory() -> None:
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():  # pragma: no cover - no GPU in CI
        torch.cuda.empty_cache()
