"""Window rankers for the strategy tests: an exact oracle, an adversarial one, a position-biased one."""

from __future__ import annotations

import asyncio
import random

from unirank.types import Document


def docs_with_relevance(rels: list[float]) -> list[Document]:
    """Documents carrying their hidden true relevance in ``metadata["rel"]``."""
    return [Document(f"doc {i}", id=str(i), metadata={"rel": float(r)}) for i, r in enumerate(rels)]


def ideal(rels: list[float]) -> list[int]:
    """Indices by decreasing true relevance (distinct relevances in the tests)."""
    return sorted(range(len(rels)), key=lambda i: -rels[i])


class OracleWindow:
    """Orders a window by the hidden relevance; counts its own calls and the async calls in flight."""

    def __init__(self, window_size: int) -> None:
        self.window_size = window_size
        self.calls = 0
        self.sizes: list[int] = []
        self.in_flight = 0
        self.max_in_flight = 0

    def rank_window(self, query: str, docs: list[Document]) -> list[int]:
        assert 1 <= len(docs) <= self.window_size
        self.calls += 1
        self.sizes.append(len(docs))
        return sorted(range(len(docs)), key=lambda i: -docs[i].metadata["rel"])

    async def arank_window(self, query: str, docs: list[Document]) -> list[int]:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        await asyncio.sleep(0.001)
        self.in_flight -= 1
        return self.rank_window(query, docs)


class BatchOracle(OracleWindow):
    """An oracle with the optional batched ``rank_windows``; counts batches."""

    def __init__(self, window_size: int) -> None:
        super().__init__(window_size)
        self.batches = 0

    def rank_windows(self, queries: list[str], windows: list[list[Document]]) -> list[list[int]]:
        self.batches += 1
        return [self.rank_window(q, w) for q, w in zip(queries, windows)]


class RandomWindow:
    """Adversarial: returns an arbitrary permutation of every window (seeded)."""

    def __init__(self, window_size: int, seed: int) -> None:
        self.window_size = window_size
        self.rng = random.Random(seed)

    def rank_window(self, query: str, docs: list[Document]) -> list[int]:
        perm = list(range(len(docs)))
        self.rng.shuffle(perm)
        return perm

    async def arank_window(self, query: str, docs: list[Document]) -> list[int]:
        return self.rank_window(query, docs)


class FirstPositionWindow:
    """Position-biased: always keeps the window's input order."""

    def __init__(self, window_size: int) -> None:
        self.window_size = window_size

    def rank_window(self, query: str, docs: list[Document]) -> list[int]:
        return list(range(len(docs)))

    async def arank_window(self, query: str, docs: list[Document]) -> list[int]:
        return self.rank_window(query, docs)


class BrokenWindow(FirstPositionWindow):
    """Returns something that is not a permutation."""

    def rank_window(self, query: str, docs: list[Document]) -> list[int]:
        return [0] * len(docs)
