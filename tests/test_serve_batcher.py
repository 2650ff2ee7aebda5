"""Cross-request micro-batching: merging, bounds, back-pressure, shutdown, errors, the loop stays free."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from _serve_fixtures import BrokenRanker, CountingBM25, SlowRanker
from unirank import Reranker
from unirank.serve.batcher import MicroBatcher, QueueFull, ShuttingDown

QUERIES = ["rain clouds", "cats purr", "what is vapour", "dogs bark", "clouds cool", "rain falls"]
DOCS = ["rain falls from clouds", "cats purr softly", "water vapour condenses", "dogs bark loudly"]


def test_concurrent_requests_merge_into_one_rank_many_with_offline_scores():
    ranker = CountingBM25()
    oracle = Reranker("bm25")

    async def go():
        b = MicroBatcher(ranker, max_wait_ms=100, max_batch_docs=1000)
        out = await asyncio.gather(*(b.submit(q, DOCS) for q in QUERIES))
        await b.close()
        return out

    out = asyncio.run(go())
    assert ranker.batches == [(len(QUERIES), len(QUERIES) * len(DOCS))]
    for q, s in zip(QUERIES, out):
        np.testing.assert_allclose(s, oracle.score(q, DOCS))


def test_batches_are_bounded_in_documents_and_wait():
    ranker = CountingBM25()

    async def go():
        b = MicroBatcher(ranker, max_wait_ms=50, max_batch_docs=8)
        await asyncio.gather(*(b.submit(q, DOCS) for q in QUERIES))  # 6 x 4 docs, at most 8 per batch
        t0 = time.perf_counter()
        await b.submit("lonely", DOCS)  # nobody joins: waits max_wait_ms, not longer
        lonely = time.perf_counter() - t0
        big = await b.submit("big", DOCS * 5)  # a single request over the bound still runs, alone
        await b.close()
        return lonely, big

    lonely, big = asyncio.run(go())
    assert all(n_docs <= 8 for _, n_docs in ranker.batches[:3]) and len(ranker.batches) == 5
    assert 0.04 <= lonely < 0.5
    assert big.shape == (20,) and ranker.batches[-1] == (1, 20)


def test_queue_bound_and_shutdown_drain():
    slow = SlowRanker(delay=0.2)

    async def go():
        b = MicroBatcher(slow, max_wait_ms=0, max_batch_docs=1, max_queue=2)
        first = asyncio.ensure_future(b.submit("q", ["a"]))
        await asyncio.sleep(0.05)  # first is computing; the queue is empty again
        queued = [asyncio.ensure_future(b.submit("q", ["bb"])) for _ in range(2)]
        await asyncio.sleep(0)
        with pytest.raises(QueueFull):
            await b.submit("q", ["ccc"])
        await b.close()  # finishes the computing batch and both queued requests
        with pytest.raises(ShuttingDown):
            await b.submit("q", ["d"])
        return await first, [await f for f in queued]

    first, queued = asyncio.run(go())
    assert first.tolist() == [1.0] and [q.tolist() for q in queued] == [[2.0], [2.0]]
    assert slow.calls == [1, 1, 1]


def test_model_error_reaches_every_request_of_the_batch():
    async def go():
        b = MicroBatcher(BrokenRanker(), max_wait_ms=30)
        res = await asyncio.gather(b.submit("q", ["a"]), b.submit("r", ["b"]), return_exceptions=True)
        await b.close()
        return res

    assert all(isinstance(r, RuntimeError) for r in asyncio.run(go()))


def test_event_loop_stays_responsive_and_cancelled_requests_are_skipped():
    slow = SlowRanker(delay=0.3)

    async def go():
        b = MicroBatcher(slow, max_wait_ms=0, max_batch_docs=1)
        busy = asyncio.ensure_future(b.submit("q", ["a"]))
        ticks = 0
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 0.2:
            await asyncio.sleep(0.01)
            ticks += 1
        gone = asyncio.ensure_future(b.submit("q", ["cancelled"]))
        await asyncio.sleep(0)
        gone.cancel()
        await busy
        await b.close()
        return ticks

    assert asyncio.run(go()) >= 10  # the model ran in its thread while the loop kept ticking
    assert slow.calls == [1]  # the cancelled request never reached the model


def test_bad_arguments():
    with pytest.raises(ValueError):
        MicroBatcher(Reranker("bm25"), max_queue=0)
