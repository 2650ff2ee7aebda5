"""Cross-encoders: transformers sequence-classification models that read (query, document) together.

Covers BERT / MiniLM / ELECTRA / RoBERTa / DeBERTa / ModernBERT / XLM-R (bge-reranker, jina-reranker-v1/v2
with ``trust_remote_code=True``, mxbai-rerank-v1, ms-marco-* ...). Score conventions of the common heads:

- ``num_labels == 1``: the single logit (ms-marco-MiniLM, bge-reranker): a relevance log-odds.
- ``num_labels == 2``: ``logit[1] - logit[0]``, the log-odds of the "relevant" class, so ``sigmoid(score)``
  equals ``softmax(logits)[1]`` exactly (older MS MARCO BERT / ELECTRA rerankers).
- more labels: pass ``label=`` (index or name from ``id2label``) and the score is that label's log-odds.

Scores are therefore always :attr:`ScoreKind.LOGIT`; ``normalize="auto"`` gives probabilities.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from ..backends import hf
from ..base import PointwiseRanker
from ..errors import SpecError
from ..types import ScoreKind

__all__ = ["CrossEncoderRanker"]

logger = logging.getLogger(__name__)


class CrossEncoderRanker(PointwiseRanker):
    """A pointwise cross-encoder reranker.

    Args:
        model_name_or_path: local folder or Hugging Face model id of a ``*ForSequenceClassification`` model.
        device: ``"cpu"``, ``"cuda"``, ... (default: best available).
        max_length: tokens per (query, document) pair; default: the model's limit. Pairs are truncated
            ``longest_first`` (the query keeps its tokens unless it is the longer side).
        batch_size: most pairs per forward; ``max_tokens_per_batch`` caps ``batch * longest pair``.
        dtype: ``"fp32"`` / ``"fp16"`` / ``"bf16"``; default fp32 on CPU, fp16 on CUDA.
        label: which class is "relevant" for heads with more than two labels.
        long_docs, passage_tokens, passage_overlap, max_passages: see :class:`~unirank.base.PointwiseRanker`.
        trust_remote_code, allow_pickle: opt-ins for custom model code and pickled weights.

    Example (a tiny model built on the spot, loaded through the public path):

    >>> import tempfile, transformers                                          # doctest: +SKIP
    >>> r = CrossEncoderRanker("cross-encoder/ms-marco-MiniLM-L-6-v2")         # doctest: +SKIP
    >>> r.rank("what causes rain", ["Rain is water falling.", "Cats purr."]).top(1)  # doctest: +SKIP
    """

    score_kind = ScoreKind.LOGIT

    def __init__(
        self,
        model_name_or_path: str,
        *,
        device: str | None = None,
        max_length: int | None = None,
        batch_size: int = 64,
        max_tokens_per_batch: int | None = None,
        dtype: str | None = None,
        label: int | str | None = None,
        long_docs: str = "truncate",
        passage_tokens: int | None = None,
        passage_overlap: int = 32,
        max_passages: int = 128,
        trust_remote_code: bool = False,
        allow_pickle: bool = False,
        revision: str | None = None,
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            name or f"ce:{model_name_or_path}",
            long_docs=long_docs,
            passage_tokens=passage_tokens,
            passage_overlap=passage_overlap,
            max_passages=max_passages,
            calibrator=kwargs.pop("calibrator", None),
        )
        if kwargs:
            raise TypeError(f"unknown option(s) for a cross-encoder: {sorted(kwargs)}")
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.model_name_or_path = model_name_or_path
        self.path = hf.local_model_dir(model_name_or_path, revision=revision)
        config = hf.read_json(self.path / "config.json")
        archs = config.get("architectures") or []
        if not any(str(a).endswith("ForSequenceClassification") for a in archs):
            raise SpecError(
                f"{model_name_or_path} is not a sequence-classification model (architectures={archs}); "
                "a cross-encoder needs a *ForSequenceClassification head. For a bi-encoder use 'embed:'."
            )
        self.device = hf.pick_device(device)
        self.tokenizer = hf.load_tokenizer(self.path, trust_remote_code=trust_remote_code)
        self.model = hf.load_model(
            self.path,
            "AutoModelForSequenceClassification",
            device=self.device,
            dtype=hf.torch_dtype(dtype, self.device),
            trust_remote_code=trust_remote_code,
            allow_pickle=allow_pickle,
        )
        self.max_length = hf.max_model_length(self.tokenizer, self.model.config, max_length)
        self.batch_size = batch_size
        self.max_tokens_per_batch = max_tokens_per_batch or hf.default_token_budget(self.device)
        self.num_labels = int(self.model.config.num_labels)
        self.label_index = self._label_index(label)

    def _label_index(self, label: int | str | None) -> int | None:
        if self.num_labels <= 2:
            if label is not None and label not in (1, "1"):
                logger.info(
                    "label=%r ignored: a %d-label head has a fixed convention", label, self.num_labels
                )
            return None
        id2label = {int(k): str(v) for k, v in (self.model.config.id2label or {}).items()}
        if label is None:
            raise SpecError(
                f"this head has {self.num_labels} labels {id2label}; pass label=<index or name> to say "
                "which one means 'relevant'"
            )
        if isinstance(label, int) and 0 <= label < self.num_labels:
            return label
        for idx, lab in id2label.items():
            if lab == label:
                return idx
        raise SpecError(f"label={label!r} is not one of {id2label}")

    def _logits_to_scores(self, logits: Any) -> np.ndarray:
        x = logits.float()
        if self.num_labels == 1:
            return x[:, 0].cpu().numpy()
        if self.num_labels == 2:
            return (x[:, 1] - x[:, 0]).cpu().numpy()
        logp = x.log_softmax(-1)
        p = logp[:, self.label_index]
        # log(p / (1 - p)) computed stably from log-probabilities
        rest = logp.clone()
        rest[:, self.label_index] = float("-inf")
        return (p - rest.logsumexp(-1)).cpu().numpy()

    def _forward(self, batch: list[dict[str, list[int]]]) -> np.ndarray:
        inputs = hf.collate(batch, self.tokenizer, self.device)
        return self._logits_to_scores(self.model(**inputs).logits)

    def _split_passages(self, text: str) -> list[str]:
        from ..text import split_token_passages, split_words

        size = self.passage_tokens or max(self.max_length - 64, 16)
        if not getattr(self.tokenizer, "is_fast", False):
            return split_words(text, size, min(self.passage_overlap, size - 1), self.max_passages)
        return split_token_passages(
            self.tokenizer, text, size, min(self.passage_overlap, size - 1), self.max_passages
        )

    def _score_pairs(self, queries: list[str], texts: list[str], show_progress: bool = False) -> np.ndarray:
        feats = hf.tokenize(self.tokenizer, queries, texts, self.max_length)
        return hf.run_model(
            feats,
            self._forward,
            max_tokens=self.max_tokens_per_batch,
            batch_size=self.batch_size,
            show_progress=show_progress,
            desc=self.name,
        )
