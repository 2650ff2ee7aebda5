"""Rankers for server tests (slow, failing, recording) and a loopback uvicorn runner."""

from __future__ import annotations

import contextlib
import threading
import time

import numpy as np

from unirank.base import Ranker
from unirank.methods.lexical import BM25Ranker
from unirank.types import ScoreKind


class SlowRanker(Ranker):
    """Scores = document length, after sleeping ``delay`` seconds per batch; counts its batches."""

    score_kind = ScoreKind.UNBOUNDED

    def __init__(self, delay: float = 0.3) -> None:
        super().__init__("slow")
        self.delay = delay
        self.calls: list[int] = []
        self.lock = threading.Lock()

    def _score_many(self, queries, docs_lists, show_progress=False):
        time.sleep(self.delay)
        with self.lock:
            self.calls.append(sum(len(d) for d in docs_lists))
        return [np.array([float(len(d.text)) for d in docs]) for docs in docs_lists]


class BrokenRanker(Ranker):
    """Fails with an internal error whose text must never reach a client."""

    def _score_many(self, queries, docs_lists, show_progress=False):
        raise RuntimeError("SECRET-INTERNAL /etc/passwd stack detail")


class CountingBM25(BM25Ranker):
    """BM25 that records the size of every ``rank_many`` call (the batcher's merge unit)."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[tuple[int, int]] = []

    def rank_many(self, queries, docs_lists, *args, **kwargs):
        self.batches.append((len(queries), sum(len(d) for d in docs_lists)))
        return super().rank_many(queries, docs_lists, *args, **kwargs)


class RecordingRanker(Ranker):
    """Scores = document length after ``delay`` s; keeps every text it was given; has a tokenizer and a window
    like the transformer rankers (``tokenizer``, ``max_length``), so ``max_tokens_per_doc`` cuts by tokens."""

    score_kind = ScoreKind.UNBOUNDED

    def __init__(self, tokenizer=None, max_length: int | None = None, delay: float = 0.0) -> None:
        super().__init__("recording")
        self.tokenizer, self.max_length, self.delay = tokenizer, max_length, delay
        self.texts: list[str] = []

    def _score_many(self, queries, docs_lists, show_progress=False):
        time.sleep(self.delay)
        self.texts.extend(d.text for docs in docs_lists for d in docs)
        return [np.array([float(len(d.text)) for d in docs]) for docs in docs_lists]


@contextlib.contextmanager
def loopback(app, config=None, timeout: float = 10.0, **options):
    """Run ``app`` with uvicorn on 127.0.0.1 (port 0) as ``unirank serve`` does (``uvicorn_config``: header
    and keep-alive timeouts applied; ``options`` such as ``root_path``, ``ssl_certfile`` go to uvicorn);
    yield ``(host, port)``; always stop it."""
    import uvicorn

    from unirank.serve.server import uvicorn_config

    cfg = uvicorn_config(app, config, port=0, log_level="warning", graceful_timeout=2, **options)
    server = uvicorn.Server(cfg)
    thread = threading.Thread(target=server.run, name="loopback-server", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("test server did not start")
            time.sleep(0.01)
        yield server.servers[0].sockets[0].getsockname()[:2]
    finally:
        server.should_exit = True
        thread.join(timeout)
