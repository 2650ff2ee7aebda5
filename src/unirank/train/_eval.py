"""Dev evaluation during training: the model being trained re-ranks the ``dev:`` set through unirank's own
re-ranking job (:func:`unirank.eval.rerank_run`, the same tokenisation as ``ce:``) and
:func:`unirank.eval.evaluate` computes the metric."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from ..base import PointwiseRanker
from ..errors import SpecError
from ..types import ScoreKind

__all__ = ["DevSet", "LiveCrossEncoder", "check_overlap", "normalize_query"]

logger = logging.getLogger(__name__)


def normalize_query(text: str) -> str:
    """Case- and whitespace-insensitive query text, for the dev / train overlap check.

    >>> normalize_query("  What is  RAIN? ")
    'what is rain?'
    """
    return re.sub(r"\s+", " ", text).strip().casefold()


class LiveCrossEncoder(PointwiseRanker):
    """The model being trained as a ``ce:`` ranker: same pair tokenisation, same score (the logit, or
    ``logit[1] - logit[0]``), run in eval mode without gradients; the model's mode is restored after."""

    score_kind = ScoreKind.LOGIT

    def __init__(
        self, model: Any, tokenizer: Any, max_length: int, *, decoder: bool = False, batch_size: int = 64
    ) -> None:
        super().__init__("ce:training")
        self.model, self.tokenizer, self.max_length = model, tokenizer, max_length
        self.decoder, self.batch_size = decoder, batch_size

    def _forward(self, batch: list[dict[str, list[int]]]) -> np.ndarray:
        from ..backends import hf
        from ._model import scores_from_logits

        device = str(next(self.model.parameters()).device)
        side = None if self.decoder else "right"
        inputs = hf.collate(batch, self.tokenizer, device, position_ids=self.decoder, padding_side=side)
        return scores_from_logits(self.model(**inputs).logits).cpu().numpy()

    def _score_pairs(self, queries: list[str], texts: list[str], show_progress: bool = False) -> np.ndarray:
        from ..backends import hf

        feats = hf.tokenize(self.tokenizer, queries, texts, self.max_length)
        was_training = self.model.training
        self.model.eval()
        try:
            return hf.run_model(
                feats, self._forward, max_tokens=8192, batch_size=self.batch_size, show_progress=show_progress
            )
        finally:
            self.model.train(was_training)


class DevSet:
    """The ``dev:`` mapping of the config, loaded once: dataset, first-stage run cut to the chosen queries."""

    def __init__(self, spec: Mapping[str, Any], *, show_progress: bool = False) -> None:
        from ..cli import _first_stage
        from ..eval.datasets import load_dataset
        from ..eval.job import check_query_text

        self.spec = dict(spec)
        self.metric = str(spec["metric"])
        self.depth = int(spec["depth"])
        self.dataset = load_dataset(spec["dataset"], split=spec.get("split", "test"))
        check_query_text(self.dataset, skip=True)
        run_name = _first_stage(self.dataset, spec.get("run"), self.depth, show_progress)
        run = self.dataset.get_run(run_name)
        queries = spec.get("queries") or {}
        exclude = set(queries.get("exclude") or [])
        qids = sorted(
            q
            for q in run
            if q in self.dataset.qrels and q not in exclude and self.dataset.queries.get(q, "").strip()
        )
        if queries.get("limit"):
            qids = qids[: int(queries["limit"])]
        if not qids:
            raise SpecError(
                f"dev: no judged query of {spec['dataset']!r} with text is in the run {run_name!r} "
                "(after dev.queries); the dev metric would be meaningless"
            )
        self.run = {q: list(run[q]) for q in qids}
        self.qrels = {q: self.dataset.qrels[q] for q in qids}
        self.query_texts = [self.dataset.queries[q] for q in qids]
        logger.info(
            "dev set: %d queries of %s, depth %d, metric %s",
            len(qids),
            spec["dataset"],
            self.depth,
            self.metric,
        )

    def score(self, ranker: Any) -> float:
        """The dev metric of ``ranker`` re-ranking the dev run."""
        from ..eval.job import rerank_run
        from ..eval.metrics import evaluate

        reranked = rerank_run(ranker, self.dataset, self.run, depth=self.depth, show_progress=False)
        result = evaluate(self.qrels, reranked, [self.metric], rel_level=self.dataset.rel_level)
        return float(result[self.metric])

    def first_stage_score(self) -> float:
        """The dev metric of the first-stage run itself (the reference a trained model should beat)."""
        from ..eval.metrics import evaluate

        return float(
            evaluate(self.qrels, self.run, [self.metric], rel_level=self.dataset.rel_level)[self.metric]
        )


def check_overlap(dev: DevSet, train_queries: Iterable[str]) -> None:
    """Refuse a dev set whose query texts are among the training queries (the dev metric would measure
    memorisation)."""
    seen = {normalize_query(q) for q in train_queries}
    shared = [q for q in dev.query_texts if normalize_query(q) in seen]
    if shared:
        raise SpecError(
            f"{len(shared)} of the {len(dev.query_texts)} dev queries are also training queries "
            f"(e.g. {shared[0]!r}); the dev set must be held out: exclude them from data.train "
            "(queries: {exclude: [...]}) or pick another dev set / dev.queries"
        )
