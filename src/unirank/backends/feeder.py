"""A host pipeline that keeps the model busy: tokenise and pad the next batches in a background thread while
the current forward runs, keep scores on the device, copy them back once per call.

:class:`Prefetcher` runs any iterator in one background thread behind a bounded queue (fast tokenizers and
numpy release the GIL for most of their work, so this overlaps with a forward); an exception in the producer
is raised in the consumer, and the thread is stopped and joined whenever iteration ends, normally or not.
:func:`run_prefetched` drives a forward over such prepared batches: results stay where the forward put them
(on the GPU: no device-to-host copy and sync per batch) and are concatenated and copied back once. A batch
whose forward fails goes to ``fallback`` under the rules of :func:`unirank.batching.run_batches` (halved on
out-of-memory, retried item by item otherwise, ``NaN`` for an item that fails alone).

>>> with Prefetcher(iter(range(5)), depth=2) as feed:
...     [x * 10 for x in feed]
[0, 10, 20, 30, 40]
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

__all__ = [
    "PIPELINE_CHUNK",
    "Prefetcher",
    "Prepared",
    "accelerator_sizes",
    "default_dtype",
    "pair_batches",
    "pipeline_sizes",
    "queue_depth",
    "run_pipeline",
    "run_prefetched",
    "text_batches",
    "to_tensors",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class Prefetcher(Generic[T]):
    """Iterate ``source`` in a background thread, at most ``depth`` items ahead of the consumer.

    Use it as a context manager (or call :meth:`close`): leaving the block stops the producer and joins its
    thread, also when the consumer raises. An exception raised by ``source`` is re-raised by ``next()``.
    """

    def __init__(self, source: Iterable[T], depth: int = 2, name: str = "unirank-feeder") -> None:
        if depth < 1:
            raise ValueError("depth must be >= 1")
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._finished = False
        self._thread = threading.Thread(target=self._run, args=(source,), name=name, daemon=True)
        self._thread.start()

    def _put(self, msg: tuple[str, Any]) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(msg, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, source: Iterable[T]) -> None:
        it = iter(source)
        try:
            for item in it:
                if not self._put(("item", item)):
                    return
            self._put(("done", None))
        except BaseException as exc:  # handed to the consumer, never lost in the thread
            self._put(("error", exc))
        finally:
            close = getattr(it, "close", None)
            if callable(close):
                close()

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        if self._finished:
            raise StopIteration
        kind, value = self._queue.get()
        if kind == "item":
            return value  # type: ignore[no-any-return]
        self._finished = True
        self.close()
        if kind == "error":
            raise value
        raise StopIteration

    def close(self) -> None:
        """Stop the producer and join its thread (waits for the item it is preparing, if any)."""
        self._finished = True
        self._stop.set()
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        if self._thread is not threading.current_thread():
            self._thread.join()

    @property
    def alive(self) -> bool:
        """Whether the producer thread is still running."""
        return self._thread.is_alive()

    def __enter__(self) -> Prefetcher[T]:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


@dataclass
class Prepared:
    """A batch ready for the forward: the positions of its items in the call, and its inputs."""

    index: np.ndarray
    inputs: dict[str, Any]


def to_tensors(arrays: dict[str, np.ndarray], device: str) -> dict[str, Any]:
    """Numpy arrays as torch tensors without a copy; in pinned memory for a CUDA device, so the forward's
    ``.to(device, non_blocking=True)`` is an asynchronous copy."""
    import torch

    out = {k: torch.from_numpy(v) for k, v in arrays.items()}
    if str(device).startswith("cuda"):  # pragma: no cover - no GPU in CI
        out = {k: v.pin_memory() for k, v in out.items()}
    return out


def pair_batches(
    tokenizer: Any,
    template: Any,
    queries: Sequence[str],
    texts: Sequence[str],
    max_length: int,
    *,
    max_tokens: int,
    batch_size: int,
    device: str,
    chunk: int = 2048,
    first_chunk: int = 512,
    left: bool = False,
) -> Iterator[Prepared]:
    """Length-sorted, token-budget batches of (query, text) pairs, tokenised ``first_chunk`` pairs first
    and ``chunk`` at a time after that (:func:`unirank.backends.pairs.tokenize_pairs`): the first forward
    waits for ``first_chunk`` pairs only, and the later, larger chunks sort lengths over more pairs (less
    padding)."""
    from ..batching import token_budget_batches
    from .pairs import tokenize_pairs

    start = 0
    while start < len(texts):
        stop = min(start + (first_chunk if start == 0 else chunk), len(texts))
        toks = tokenize_pairs(tokenizer, template, queries[start:stop], texts[start:stop], max_length)
        for batch in token_budget_batches(toks.lengths, max_tokens=max_tokens, max_batch_size=batch_size):
            arrays = toks.collate(batch, left=left)
            yield Prepared(np.asarray(batch, dtype=np.int64) + start, to_tensors(arrays, device))
        start = stop


def text_batches(
    tokenizer: Any,
    texts: Sequence[str],
    max_length: int,
    *,
    max_tokens: int,
    batch_size: int,
    device: str,
    suffix_ids: tuple[int, ...] = (),
    position_ids: bool = False,
    chunk: int = 2048,
    first_chunk: int = 512,
    template: Any = None,
) -> Iterator[Prepared]:
    """:func:`pair_batches` for single texts (:func:`unirank.backends.texts.tokenize_texts`, on ``template``
    when given), padded on the tokenizer's side (left-padded rows get position ids when ``position_ids``)."""
    from ..batching import token_budget_batches
    from .texts import tokenize_texts

    left = getattr(tokenizer, "padding_side", "right") == "left"
    start = 0
    while start < len(texts):
        stop = min(start + (first_chunk if start == 0 else chunk), len(texts))
        toks = tokenize_texts(tokenizer, texts[start:stop], max_length, suffix_ids, template)
        for batch in token_budget_batches(toks.lengths, max_tokens=max_tokens, max_batch_size=batch_size):
            arrays = toks.collate(batch, left=left, position_ids=position_ids)
            yield Prepared(np.asarray(batch, dtype=np.int64) + start, to_tensors(arrays, device))
        start = stop


def run_pipeline(
    source: Iterable[Prepared],
    forward: Callable[[dict[str, Any]], Any],
    n_items: int,
    *,
    fallback: Callable[[list[int]], np.ndarray],
    show_progress: bool = False,
    desc: str = "scoring",
    depth: int = 2,
) -> np.ndarray:
    """:func:`run_prefetched` under ``torch.inference_mode`` with a progress bar (when ``show_progress``);
    ``depth`` batches may wait prepared (see :func:`queue_depth`)."""
    import torch
    from tqdm.auto import tqdm

    bar = tqdm(total=n_items, desc=desc, unit="item", disable=not show_progress, leave=False)
    try:
        with torch.inference_mode():
            return run_prefetched(
                source, forward, n_items, fallback=fallback, progress=bar.update, depth=depth
            )
    finally:
        bar.close()


# items tokenised per background step after the first (512): length sorting within 2048 DL19 top-100 pairs
# pads them by ~2.5 % (1.9 % over all 2000), and the first forward waits for 512 pairs only
PIPELINE_CHUNK = 2048


def pipeline_sizes(batch_size: int, max_tokens: int) -> tuple[int, int]:
    """``(chunk, depth)`` for a ranker's pipeline: items per tokenisation chunk (:data:`PIPELINE_CHUNK`, or
    four batches when batches are larger) and the prepared batches allowed to wait (:func:`queue_depth`).

    >>> pipeline_sizes(64, 4096), pipeline_sizes(1024, 262_144)
    ((2048, 128), (4096, 8))
    """
    chunk = max(PIPELINE_CHUNK, 4 * batch_size)
    return chunk, queue_depth(chunk, batch_size, max_tokens)


def queue_depth(chunk: int, batch_size: int, max_tokens: int, typical_length: int = 128) -> int:
    """Prepared batches allowed to wait: about two tokenisation chunks' worth (``chunk`` items each, batches
    of ``min(batch_size, max_tokens // typical_length)`` items), so the producer tokenises the next chunk
    while the forward works through the current one instead of stalling on a full queue after two batches.

    >>> queue_depth(512, 64, 4096), queue_depth(4096, 1024, 262_144)
    (32, 8)
    """
    per_batch = max(1, min(batch_size, max_tokens // max(1, typical_length)))
    return max(2, -(-2 * chunk // per_batch))


def run_prefetched(
    source: Iterable[Prepared],
    forward: Callable[[dict[str, Any]], Any],
    n_items: int,
    *,
    fallback: Callable[[list[int]], np.ndarray],
    progress: Callable[[int], None] | None = None,
    depth: int = 2,
) -> np.ndarray:
    """Run ``forward(inputs) -> tensor`` (one row per item, left on its device) over ``source`` prepared in
    the background; one row per item in input order, float64. Failed batches go to ``fallback(positions)``
    with :func:`unirank.batching.run_batches`' isolation (see the module doc)."""
    import torch

    from ..batching import run_batches

    outs: list[Any] = []
    done: list[np.ndarray] = []
    failed: list[list[int]] = []
    with Prefetcher(source, depth=depth) as feed:
        for prep in feed:
            try:
                outs.append(forward(prep.inputs))
            except Exception as exc:
                logger.warning(
                    "a batch of %d failed (%s: %s); retrying it on the classic path",
                    len(prep.index),
                    type(exc).__name__,
                    exc,
                )
                failed.append(prep.index.tolist())
                continue
            done.append(prep.index)
            if progress is not None:
                progress(len(prep.index))
    out: np.ndarray | None = None
    if outs:  # one device-to-host copy for the whole call
        scores = torch.cat([o.reshape(len(i), *o.shape[1:]) for o, i in zip(outs, done)]).float().cpu()
        rows = scores.numpy().astype(np.float64)
        out = np.full((n_items, *rows.shape[1:]), np.nan, dtype=np.float64)
        out[np.concatenate(done)] = rows
    if failed:
        again = run_batches(fallback, failed, n_items, progress)
        lost = [i for b in failed for i in b]
        if out is None:
            return again
        if again.ndim == out.ndim:
            out[lost] = again[lost]
    if out is None:
        return np.full(n_items, np.nan, dtype=np.float64)
    return out


# Accelerator sizing: activations of one encoder layer at a time (inference keeps no others), per token:
# ~6 hidden-size vectors + 2 feed-forward-size vectors; a share of the free memory goes to them.
_FREE_SHARE = 0.4
_BUDGET_RANGE = (16_384, 262_144)
_BATCH_RANGE = (64, 1024)


def default_dtype(device: str) -> str | None:
    """The default weights dtype: bf16 on a CUDA device that supports it, else fp16 there; ``None`` (fp32)
    elsewhere.

    >>> default_dtype("cpu") is None
    True
    """
    if not str(device).startswith("cuda"):
        return None
    import torch  # pragma: no cover - no GPU in CI

    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"  # pragma: no cover


def accelerator_sizes(device: str, model: Any) -> tuple[int, int]:
    """``(tokens per batch, pairs per batch)`` for ``model`` on a CUDA ``device`` from its free memory
    (``torch.cuda.mem_get_info``), within ``_BUDGET_RANGE`` / ``_BATCH_RANGE``."""
    import torch  # pragma: no cover - no GPU in CI

    free, _ = torch.cuda.mem_get_info(torch.device(device))  # pragma: no cover
    cfg = getattr(model, "config", None)  # pragma: no cover
    hidden = int(getattr(cfg, "hidden_size", 0) or 768)  # pragma: no cover
    inner = int(getattr(cfg, "intermediate_size", 0) or 4 * hidden)  # pragma: no cover
    size = next(model.parameters()).element_size()  # pragma: no cover
    tokens = int(free * _FREE_SHARE // (size * (6 * hidden + 2 * inner)))  # pragma: no cover
    budget = max(_BUDGET_RANGE[0], min(_BUDGET_RANGE[1], tokens))  # pragma: no cover
    return budget, max(_BATCH_RANGE[0], min(_BATCH_RANGE[1], budget // 128))  # pragma: no cover
