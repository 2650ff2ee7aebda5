"""JointRank (Dedov, 2025): rank overlapping blocks independently and concurrently, then aggregate.

The ``n`` candidates are covered by ``replicates`` partitions into blocks of at most ``window`` documents,
so every document appears in exactly ``replicates`` blocks (equi-replicate). All blocks are ranked in one
concurrent round; every block ranking gives a win for each of its ordered pairs, and the pairwise outcomes
are aggregated.

Designs (``design=``):

- ``"latin"`` (default): Latin-square style (the affine plane over ``Z_q``). ``q`` is the smallest prime
  ``>= max(ceil(n / window), ceil(sqrt(n)))``; position ``i`` sits at row ``i // q``, column ``i % q`` of a
  grid with ``rows = ceil(n / q) <= q`` rows. Partition 0 cuts ``range(n)`` into ``ceil(n / window)``
  near-equal consecutive blocks (in the complete design: whole rows, ``floor(window / q)`` per block);
  partition ``t >= 1`` takes the "lines" of slope ``t - 1``, ``{i: (col + (t - 1) * row) mod q == c}``,
  ``floor(window / rows)`` lines merged per block. Two positions in different rows share exactly one line
  over the ``q`` slopes, so with ``replicates = q + 1`` (``replicates=None``) and ``q <= window`` (about
  ``n <= window ** 2``; longer rows are split into pieces) every pair shares a block and an exact window
  ranker gives the exact order. More replicates than ``q + 1`` would repeat blocks and are capped there.
- ``"random"``: each partition is a random permutation (``seed``) cut into ``ceil(n / window)`` blocks of
  near-equal size (``replicates=None`` means 3).

Within a block documents keep their input order. Aggregations (``aggregation=``), from the win matrix
``W[i, j]`` (blocks where ``i`` was above ``j``), with ``P[i, j] = W[i, j] / (W[i, j] + W[j, i])`` per
compared pair (so a pair that shares several blocks is not weighted more):

- ``"winrate"``: mean of ``P[i, j]`` over the documents ``j`` compared with ``i``;
- ``"pagerank"``: PageRank (damping 0.85) on the graph where each document passes its weight to the
  documents that beat it, in proportion to ``P``; documents that never lost spread theirs uniformly;
- ``"bt"``: Bradley-Terry strengths by the MM algorithm (Hunter, 2004) on one fractional comparison per
  compared pair, regularised by one win and one loss against a virtual document of strength 1.

Ties are broken by win rate, then by input order. Calls: ``1`` when ``n <= window`` (the window is the
answer), else the number of blocks of two or more documents: latin
``ceil(n / window) + (replicates - 1) * ceil(q / floor(window / rows))`` (complete design:
``ceil(rows / floor(window / q)) + q * ceil(q / floor(window / rows))`` when ``q <= window``),
random ``replicates * ceil(n / window)``; all in a single round.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .base import Plan, WindowRanker, WindowStrategy, check_int

__all__ = ["AGGREGATIONS", "DESIGNS", "JointRank", "aggregate", "block_design"]

DESIGNS = ("latin", "random")
AGGREGATIONS = ("winrate", "pagerank", "bt")


def _next_prime(x: int) -> int:
    p = max(x, 2)
    while any(p % d == 0 for d in range(2, math.isqrt(p) + 1)):
        p += 1
    return p


def block_design(
    n: int, window: int, replicates: int | None = None, design: str = "latin", seed: int = 0
) -> list[list[int]]:
    """Blocks (lists of positions, input order) covering ``range(n)``; each position in ``replicates`` blocks.

    >>> block_design(4, 2, design="latin")  # q = 2: rows, columns, diagonals: every pair once
    [[0, 1], [2, 3], [0, 2], [1, 3], [0, 3], [1, 2]]
    """
    if design not in DESIGNS:
        raise ValueError(f"design={design!r}; expected one of {DESIGNS}")
    check_int("window", window, 2)
    check_int("replicates", replicates, 1, allow_none=True)
    if n <= window:
        return [list(range(n))] if n else []
    if design == "random":
        rng = np.random.default_rng(seed)
        blocks = []
        for _ in range(3 if replicates is None else replicates):
            for part in np.array_split(rng.permutation(n), math.ceil(n / window)):
                blocks.append(sorted(int(i) for i in part))
        return blocks
    q = _next_prime(max(math.ceil(n / window), math.isqrt(n - 1) + 1))
    rows = math.ceil(n / q)  # <= q and <= window
    classes = min(q + 1 if replicates is None else replicates, q + 1)
    if classes <= q:  # not a complete design: partition 0 is near-equal consecutive chunks of <= window
        blocks = [[int(i) for i in part] for part in np.array_split(np.arange(n), math.ceil(n / window))]
    elif q <= window:  # whole rows, floor(window / q) per block
        per = window // q
        blocks = [list(range(r * q, min((r + per) * q, n))) for r in range(0, rows, per)]
    else:  # n > about window ** 2: rows are longer than a window, split each into near-equal pieces
        blocks = []
        for r in range(rows):
            row = range(r * q, min((r + 1) * q, n))
            parts = np.array_split(np.asarray(row), math.ceil(len(row) / window))
            blocks.extend([int(i) for i in part] for part in parts)
    per = window // rows  # lines (of <= rows positions) merged per block
    for slope in range(classes - 1):
        lines: list[list[int]] = [[] for _ in range(q)]
        for i in range(n):
            lines[(i % q + slope * (i // q)) % q].append(i)
        for c in range(0, q, per):
            merged = sorted(i for line in lines[c : c + per] for i in line)
            if merged:
                blocks.append(merged)
    return blocks


def _win_matrix(n: int, blocks: list[list[int]], perms: list[list[int]]) -> np.ndarray:
    wins = np.zeros((n, n))
    for block, perm in zip(blocks, perms):
        ranked = [block[i] for i in perm]
        for a in range(len(ranked)):
            for b in range(a + 1, len(ranked)):
                wins[ranked[a], ranked[b]] += 1
    return wins


def aggregate(wins: np.ndarray, how: str = "winrate", iterations: int = 10_000) -> np.ndarray:
    """Scores (higher is better) from a win matrix ``wins[i, j]`` = times ``i`` ranked above ``j``.

    PageRank and Bradley-Terry iterate until the change is below 1e-12 (PageRank, L1) or 1e-9 (BT, max
    relative) or ``iterations`` steps; MM is linear-rate (for ``n = 100`` typically 0.05-0.2 s of numpy).

    >>> aggregate(np.array([[0, 1, 1], [0, 0, 1], [0, 0, 0]]), "pagerank").argsort()[::-1].tolist()
    [0, 1, 2]
    """
    if how not in AGGREGATIONS:
        raise ValueError(f"aggregation={how!r}; expected one of {AGGREGATIONS}")
    wins = np.asarray(wins, dtype=np.float64)
    n = wins.shape[0]
    games = wins + wins.T
    compared = games > 0
    p = np.divide(wins, games, out=np.zeros_like(wins), where=compared)
    if how == "winrate":
        return p.sum(1) / np.maximum(compared.sum(1), 1)
    if how == "pagerank":
        damping = 0.85
        # column j spreads j's weight to the documents that beat j, in proportion to P[i, j]
        out = p.sum(0)
        trans = np.divide(p, out, out=np.zeros_like(p), where=out > 0)
        dangling = out == 0
        rank = np.full(n, 1.0 / n)
        for _ in range(iterations):
            new = (1 - damping) / n + damping * (trans @ rank + rank[dangling].sum() / n)
            if np.abs(new - rank).sum() < 1e-12:
                rank = new
                break
            rank = new
        return rank
    # Bradley-Terry, MM updates; one (fractional) game per compared pair plus a virtual opponent of strength 1
    w = p.sum(1) + 1.0
    strength = np.ones(n)
    c = compared.astype(np.float64)
    for _ in range(iterations):
        denom = (c / (strength[:, None] + strength[None, :])).sum(1) + 2.0 / (strength + 1.0)
        new = w / denom  # no rescaling: the virtual opponent (strength 1) fixes the scale
        if np.max(np.abs(new - strength) / strength) < 1e-9:
            strength = new
            break
        strength = new
    return np.log(strength)


class JointRank(WindowStrategy):
    """Block design + concurrent block ranking + aggregation.

    >>> from unirank import Reranker
    >>> from unirank.strategies.base import PointwiseWindow
    >>> jr = JointRank(PointwiseWindow(Reranker("bm25"), window_size=2), replicates=None)
    >>> jr.rank("rain", ["sun", "rain", "rain rain rain", "fog"]).indices[:2], jr.last_stats["calls"]
    ([2, 1], 6)
    """

    def __init__(
        self,
        window_ranker: WindowRanker,
        window: int | None = None,
        replicates: int | None = 3,
        design: str = "latin",
        aggregation: str = "winrate",
        seed: int = 0,
        concurrency: int = 8,
        name: str = "",
    ) -> None:
        super().__init__(window_ranker, concurrency=concurrency, name=name or f"jointrank-{aggregation}")
        if design not in DESIGNS:
            raise ValueError(f"design={design!r}; expected one of {DESIGNS}")
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation={aggregation!r}; expected one of {AGGREGATIONS}")
        size = window_ranker.window_size
        self.window = check_int("window", size if window is None else window, 2, size)
        self.replicates = check_int("replicates", replicates, 1, allow_none=True)
        self.design, self.aggregation = design, aggregation
        self.seed = check_int("seed", seed, 0)

    def _plan(self, n: int, stats: dict[str, Any]) -> Plan:
        if n <= self.window:
            perms = yield [list(range(n))]
            return list(perms[0]) if n else []
        blocks = block_design(n, self.window, self.replicates, self.design, self.seed)
        stats["blocks"] = len(blocks)
        perms = yield blocks
        wins = _win_matrix(n, blocks, perms)
        score = aggregate(wins, self.aggregation)
        tie = aggregate(wins, "winrate")
        return sorted(range(n), key=lambda i: (-round(float(score[i]), 9), -tie[i], i))
