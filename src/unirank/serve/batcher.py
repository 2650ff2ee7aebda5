"""Cross-request micro-batching: concurrent requests for one model become one ``rank_many`` call.

A request waits at most ``max_wait_ms`` for company; a batch holds at most ``max_batch_docs`` documents
(a single larger request runs alone). The model runs in one worker thread, off the event loop, so the
server keeps accepting and queueing while a batch computes — which is what lets throughput under
concurrency approach offline ``rank_many`` throughput. A request that is cancelled while it waits (its
timeout passed, or its client disconnected) leaves the queue at once and its documents never reach the
model; one that could not finish before its deadline at the model's measured speed is not started, and a
batch grows only as far as its most urgent request can wait. The queue is bounded: :meth:`MicroBatcher.submit`
raises :class:`QueueFull` (HTTP 429) instead of letting latency grow without bound, and
:class:`ShuttingDown` (HTTP 503) once :meth:`MicroBatcher.close` has begun; ``close`` finishes what is queued.

>>> import asyncio
>>> from unirank import Reranker
>>> async def demo():
...     b = MicroBatcher(Reranker("bm25"), max_wait_ms=5)
...     s = await asyncio.gather(b.submit("rain", ["rain falls", "cats"]), b.submit("cats", ["cats", "dogs"]))
...     await b.close()
...     return [int(x.argmax()) for x in s], b.stats["batches"]
>>> asyncio.run(demo())
([0, 0], 1)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..base import Ranker
from ..types import DocLike, to_documents

__all__ = ["MicroBatcher", "QueueFull", "ShuttingDown", "WouldTimeOut"]

logger = logging.getLogger(__name__)

_TIMING_AGE = 10.0  # seconds a batch's timing informs the deadline checks


class QueueFull(RuntimeError):
    """The bounded queue is full; the caller should retry later (HTTP 429)."""


class ShuttingDown(RuntimeError):
    """The batcher is closing and accepts no new work (HTTP 503)."""


class WouldTimeOut(TimeoutError):
    """The request could not finish before its deadline at the model's measured speed, so it was not
    started (HTTP 504)."""


@dataclass
class _Item:
    query: str
    docs: list[Any]
    future: asyncio.Future[np.ndarray]
    deadline: float | None = None
    enqueued: float = field(default_factory=time.perf_counter)


class MicroBatcher:
    """Merge concurrent :meth:`submit` calls for one ranker into batched ``rank_many`` calls.

    Args:
        ranker: any :class:`~unirank.base.Ranker`.
        max_batch_docs: documents per merged call (a larger single request still runs, alone).
        max_wait_ms: how long the first request of a batch waits for others.
        max_queue: requests waiting at most; more raise :class:`QueueFull`.
        on_batch: ``callback(n_requests, n_docs, seconds)`` after each batch (metrics).
    """

    def __init__(
        self,
        ranker: Ranker,
        *,
        max_batch_docs: int = 256,
        max_wait_ms: float = 5.0,
        max_queue: int = 256,
        on_batch: Callable[[int, int, float], None] | None = None,
    ) -> None:
        if max_batch_docs < 1 or max_queue < 1 or max_wait_ms < 0:
            raise ValueError("max_batch_docs and max_queue must be >= 1, max_wait_ms >= 0")
        self.ranker = ranker
        self.max_batch_docs, self.max_wait, self.max_queue = max_batch_docs, max_wait_ms / 1000.0, max_queue
        self.on_batch = on_batch
        self._queue: deque[_Item] = deque()
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="unirank-batch")
        self._closing = False
        self.stats = {"batches": 0, "requests": 0, "documents": 0, "expired": 0}
        self._timings: deque[tuple[float, float, int]] = deque(maxlen=32)  # (ended, seconds, documents)

    @property
    def depth(self) -> int:
        """Requests waiting (not counting the batch being computed, nor cancelled ones)."""
        return sum(1 for i in self._queue if not i.future.done())

    async def submit(self, query: str, docs: Sequence[DocLike], deadline: float | None = None) -> np.ndarray:
        """Raw scores of ``docs`` for ``query`` in input order, computed in a merged batch.

        ``deadline`` (a ``time.perf_counter()`` time): when the model's measured speed says the request
        cannot finish by then, it is not started and :class:`WouldTimeOut` is raised; a batch is not grown
        past what its most urgent request can wait for.
        """
        if self._closing:
            raise ShuttingDown("the server is shutting down")
        if self.depth >= self.max_queue:
            raise QueueFull(f"queue full ({self.max_queue} requests waiting)")
        loop = asyncio.get_running_loop()
        if self._worker is None or self._worker.done() or self._worker.get_loop() is not loop:
            self._wakeup = asyncio.Event()
            self._worker = loop.create_task(self._run(), name="unirank-batcher")
        item = _Item(query, list(docs), loop.create_future(), deadline)
        self._queue.append(item)
        assert self._wakeup is not None
        self._wakeup.set()
        try:
            return await item.future
        except asyncio.CancelledError:
            # Timed out or the client went away: leave the queue now (it must not count against
            # ``max_queue``) and drop the work if it has not started; a running batch just discards it.
            with contextlib.suppress(ValueError):
                self._queue.remove(item)
            item.future.cancel()
            raise

    def reopen(self) -> None:
        """Accept work again after :meth:`close` (an app restarted in the same process)."""
        if self._closing:
            self._closing = False
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="unirank-batch")

    async def close(self, timeout: float | None = 30.0) -> None:
        """Stop accepting work, finish what is queued (up to ``timeout`` s), release the worker thread."""
        self._closing = True
        loop = asyncio.get_running_loop()
        if self._worker is not None and self._worker.get_loop() is not loop:
            self._worker = None  # started on another (finished) event loop, e.g. a test client's
        if self._worker is not None and not self._worker.done():
            assert self._wakeup is not None
            self._wakeup.set()
            try:
                await asyncio.wait_for(asyncio.shield(self._worker), timeout)
            except asyncio.TimeoutError:
                self._worker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._worker
        for item in self._queue:
            if item.future.get_loop() is loop and not item.future.done():
                item.future.set_exception(ShuttingDown("the server shut down before this request ran"))
        self._queue.clear()
        self._executor.shutdown(wait=False)

    async def _run(self) -> None:
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            # Wait (bounded) for company unless the batch is already full.
            deadline = self._queue[0].enqueued + self.max_wait
            while not self._closing and self._pending_docs() < self.max_batch_docs:
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                self._wakeup.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), left)
            batch = self._take()
            if not batch:
                continue
            t0 = time.perf_counter()
            try:
                scores = await loop.run_in_executor(self._executor, self._compute, batch)
            except Exception as exc:  # the model failed: every request of the batch gets the error
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(exc)
                continue
            dt = time.perf_counter() - t0
            n_docs = sum(len(i.docs) for i in batch)
            if n_docs and self.stats["batches"]:  # the first batch warms the model up: not a measure
                self._timings.append((time.perf_counter(), dt, n_docs))
            for item, s in zip(batch, scores):
                if not item.future.done():
                    item.future.set_result(s)
            self.stats["batches"] += 1
            self.stats["requests"] += len(batch)
            self.stats["documents"] += n_docs
            if self.on_batch is not None:
                self.on_batch(len(batch), n_docs, dt)

    def _pending_docs(self) -> int:
        return sum(len(i.docs) for i in self._queue if not i.future.done())

    def _per_doc(self, now: float) -> float:
        """Seconds per document of the fastest batch of the last ``_TIMING_AGE`` s (0: no recent batch).

        Optimistic (the most efficient batch, no fixed cost), so work that can finish is not refused;
        with no recent batch there is no limit at all, so an outlier cannot starve the queue for long.
        """
        recent = sorted(dt / n for ended, dt, n in self._timings if now - ended < _TIMING_AGE)
        return recent[len(recent) // 2] if recent else 0.0

    def _take(self) -> list[_Item]:
        now = time.perf_counter()
        per_doc = self._per_doc(now)
        batch: list[_Item] = []
        n = 0
        due = float("inf")  # the most urgent deadline in the batch
        while self._queue:
            item = self._queue[0]
            if item.future.done():  # cancelled (client went away or timed out)
                self._queue.popleft()
                continue
            if item.deadline is not None and now + per_doc * len(item.docs) > item.deadline:  # cannot finish
                self._queue.popleft()
                self.stats["expired"] += 1
                item.future.set_exception(WouldTimeOut("the request would not finish before its deadline"))
                continue
            if batch and n + len(item.docs) > self.max_batch_docs:
                break
            if batch and now + per_doc * (n + len(item.docs)) > min(due, item.deadline or due):
                break  # a bigger batch would make one of its requests miss its deadline
            batch.append(self._queue.popleft())
            n += len(item.docs)
            due = min(due, item.deadline or due)
        return batch

    def _compute(self, batch: list[_Item]) -> list[np.ndarray]:
        docs_lists = [to_documents(i.docs) for i in batch]
        ranked = self.ranker.rank_many([i.query for i in batch], docs_lists)
        out = []
        for rr, docs in zip(ranked, docs_lists):
            s = np.full(len(docs), np.nan)
            for r in rr.results:
                s[r.index] = r.score
            out.append(s)
        return out
