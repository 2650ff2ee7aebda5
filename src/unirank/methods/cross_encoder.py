"""Cross-encoders: transformers sequence-classification models that read (query, document) together.

Covers BERT / MiniLM / ELECTRA / RoBERTa / DeBERTa / ModernBERT / XLM-R (bge-reranker, jina-reranker-v1/v2
with ``trust_remote_code=True``, mxbai-rerank-v1, ms-marco-* ...). Score conventions of the common heads:

- ``num_labels == 1``: the single logit (ms-marco-MiniLM, bge-reranker): a relevance log-odds.
- ``num_labels == 2``: ``logit[1] - logit[0]``, the log-odds of the "relevant" class, so ``sigmoid(score)``
  equals ``softmax(logits)[1]`` exactly (older MS MARCO BERT / ELECTRA rerankers).
- more labels (or a 2-label head whose relevant class is 0): pass ``label=`` (index or name from
  ``id2label``) and the score is that label's log-odds ``log(p / (1 - p))``.

Scores are therefore always :attr:`ScoreKind.LOGIT`; ``normalize="auto"`` gives probabilities.

Decoder rerankers with a classification head (Llama / Qwen / Mistral / Gemma ``*ForSequenceClassification``)
score the last token that is not ``config.pad_token_id``. Their batches are padded with exactly that id: the
config's ``pad_token_id``, else the tokenizer's pad token, else its eos token, set on both tokenizer and
config (:func:`unirank.backends.padding.align_pad_token`); a model with none of these is refused with a
:class:`~unirank.errors.SpecError`. Left-padded batches get position ids that start at each row's first real
token, so a pair scores the same alone, in any batch, and with either padding side. Encoders (BERT, ELECTRA,
RoBERTa, ...) always pad on the right, whatever the tokenizer's ``padding_side`` says: their head reads
position 0 and their absolute positions count from the left edge.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from ..backends import compiled, hf, masks, pairs
from ..backends.feeder import accelerator_sizes, default_dtype, pair_batches, pipeline_sizes, run_pipeline
from ..backends.padding import align_pad_token, is_decoder_only
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
        batch_size: most pairs per forward (default 64 on CPU; on CUDA sized from the free memory, see
            :func:`~unirank.backends.feeder.accelerator_sizes`); ``max_tokens_per_batch`` caps
            ``batch * longest pair``.
        dtype: ``"fp32"`` / ``"fp16"`` / ``"bf16"``; default fp32 on CPU; on CUDA bf16 where the device
            supports it, else fp16.
        label: which class is "relevant" (index or ``id2label`` name); default 1 for 2-label heads, required
            for heads with more labels.
        long_docs, passage_tokens, passage_overlap, max_passages: see :class:`~unirank.base.PointwiseRanker`.
        trust_remote_code, allow_pickle: opt-ins for custom model code and pickled weights.
        backend: ``"torch"`` (default) or ``"onnx"`` (onnxruntime on CPU; the model is exported once and
            cached, see :mod:`unirank.backends.onnx`); ``quantize="int8"`` runs it with dynamic int8
            weights; ``onnx_threads`` = CPU cores to use (default: all this process may use, a container's
            CPU quota included), as that many concurrent batches.
        cache: a :class:`~unirank.cache.ScoreCache` (or ``True`` for an in-memory LRU) of pair scores.
        compile: ``None`` (default: the eager forward), ``"inductor"`` (``torch.compile``, batch widths padded
            to multiples of 32 tokens so a run sees few shapes) or ``"cudagraphs"`` (CUDA only: captured CUDA
            graphs, rows bucketed too); a forward that fails to compile falls back to eager with one warning.
            See :mod:`unirank.backends.compiled`.
        attn_implementation: transformers' attention kernel (``"sdpa"``, ``"eager"``, ``"flash_attention_2"``
            with the ``flash-attn`` package on CUDA, ...); default: transformers' choice.
        unpadded: with ``attn_implementation="flash_attention_2"``: pack each batch's pairs into one row
            without padding for FlashAttention's variable-length kernel (checked on a probe batch first).

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
        batch_size: int | None = None,
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
        backend: str = "torch",
        quantize: str | None = None,
        onnx_threads: int | None = None,
        compile: str | None = None,
        attn_implementation: str | None = None,
        unpadded: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            name or f"ce:{model_name_or_path}",
            long_docs=long_docs,
            passage_tokens=passage_tokens,
            passage_overlap=passage_overlap,
            max_passages=max_passages,
            calibrator=kwargs.pop("calibrator", None),
            cache=kwargs.pop("cache", None),
        )
        if kwargs:
            raise TypeError(f"unknown option(s) for a cross-encoder: {sorted(kwargs)}")
        if batch_size is not None and batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.model_name_or_path = model_name_or_path
        self.path = hf.local_model_dir(model_name_or_path, revision=revision, allow_pickle=allow_pickle)
        config = hf.read_json(self.path / "config.json")
        archs = config.get("architectures") or []
        if not any(str(a).endswith("ForSequenceClassification") for a in archs):
            raise SpecError(
                f"{model_name_or_path} is not a sequence-classification model (architectures={archs}); "
                "a cross-encoder needs a *ForSequenceClassification head. For a bi-encoder use 'embed:'."
            )
        self.device = hf.pick_device(device)
        compiled.check_options(compile, attn_implementation, unpadded, self.device, backend, quantize)
        self.tokenizer = hf.load_tokenizer(self.path, trust_remote_code=trust_remote_code)
        self.model = hf.load_model(
            self.path,
            "AutoModelForSequenceClassification",
            device=self.device,
            dtype=hf.torch_dtype(dtype or default_dtype(self.device), self.device),
            trust_remote_code=trust_remote_code,
            allow_pickle=allow_pickle,
            **({"attn_implementation": attn_implementation} if attn_implementation else {}),
        )
        # a decoder's head scores the last token that is not config.pad_token_id: pad with exactly that id
        self.decoder = is_decoder_only(self.model.config)
        if self.decoder:
            align_pad_token(self.tokenizer, self.model.config, required=True)
        else:  # an encoder reads its head at position 0 and absolute positions from the left edge
            self.tokenizer.padding_side = "right"
        self.max_length = hf.max_model_length(self.tokenizer, self.model.config, max_length)
        budget, batch = hf.default_token_budget(self.device), 64
        if self.device.startswith("cuda"):  # pragma: no cover - no GPU in CI
            budget, batch = accelerator_sizes(self.device, self.model)
        self.batch_size = batch_size or batch
        self.max_tokens_per_batch = max_tokens_per_batch or budget
        self.num_labels = int(self.model.config.num_labels)
        self.label_index = self._label_index(label)
        self.backend, self.quantize = backend, quantize
        self._onnx = None
        # the head reads only the first token: the last layer runs for that row alone (verified on a probe)
        self.cls_only_last_layer = False
        if backend == "torch" and quantize is None and not unpadded:  # packed rows need the stock layer
            from ..backends import cls_only

            self.cls_only_last_layer = cls_only.enable(self.model, self.tokenizer, self.device)
        if backend != "torch" or quantize is not None:
            from ..backends.onnx import onnx_forward_for

            self._onnx = onnx_forward_for(self, "seqcls", backend, quantize, dtype, onnx_threads)
            if max_tokens_per_batch is None:
                from ..backends.onnx import DEFAULT_TOKEN_BUDGET

                self.max_tokens_per_batch = DEFAULT_TOKEN_BUDGET
        # the host pipeline (each query tokenised once, numpy collation, background preparation) where the
        # pair encoding is proven equal to the tokenizer's own; decoders and ONNX keep the classic path
        self.pair_template = None
        if self._onnx is None and not self.decoder:
            self.pair_template = pairs.pair_template(self.tokenizer, self.max_length)
        # the padding mask handed over as the 4-D form the attention takes (verified on a probe batch)
        self.mask_form: str | None = None
        if self._onnx is None and not self.decoder:
            self.mask_form = masks.verify(self.model, self.tokenizer, self.device)
        # compile= / unpadded=: the host pipeline's forward behind torch.compile or packed rows (None: eager)
        self._fast = compiled.build_forward(
            self.model,
            self._score_tensor,
            compile=compile,
            unpadded=unpadded,
            device=self.device,
            max_width=self.max_length,
            tokenizer=self.tokenizer,
            host_pipeline=self.pair_template is not None,
        )

    def _label_index(self, label: int | str | None) -> int:
        if self.num_labels == 1:
            if label not in (None, 0, "0"):
                raise SpecError(f"label={label!r}: a single-logit head has no class to choose")
            return 0
        id2label = {int(k): str(v) for k, v in (self.model.config.id2label or {}).items()}
        if label is None:
            if self.num_labels == 2:
                return 1  # the convention of 2-label rerankers: class 1 = relevant
            raise SpecError(
                f"this head has {self.num_labels} labels {id2label}; pass label=<index or name> to say "
                "which one means 'relevant'"
            )
        if isinstance(label, int) and not isinstance(label, bool) and 0 <= label < self.num_labels:
            return label
        for idx, lab in id2label.items():
            if lab == str(label):
                return idx
        raise SpecError(f"label={label!r} is not one of {id2label}")

    def _logits_to_scores(self, logits: Any) -> np.ndarray:
        return self._score_tensor(logits).cpu().numpy()

    def _score_tensor(self, logits: Any) -> Any:
        """Scores from logits, left on the logits' device."""
        x = logits.float()
        li = self.label_index
        if self.num_labels == 1:
            return x[:, 0]
        if self.num_labels == 2:
            return x[:, li] - x[:, 1 - li]
        logp = x.log_softmax(-1)
        # log(p / (1 - p)) computed stably from log-probabilities
        rest = logp.clone()
        rest[:, li] = float("-inf")
        return logp[:, li] - rest.logsumexp(-1)

    def _forward_inputs(self, inputs: dict[str, Any]) -> Any:
        """Scores of a padded batch (host tensors), left on the device (the host pipeline's forward)."""
        if self._fast is not None:  # compiled / packed: takes the 2-D padding mask
            return self._fast({k: v.to(self.device, non_blocking=True) for k, v in inputs.items()})
        inputs, _ = masks.device_inputs(inputs, self.device, self.mask_form, self.model.dtype)
        return self._score_tensor(self.model(**inputs).logits)

    def _forward(self, batch: list[dict[str, list[int]]]) -> np.ndarray:
        if self._onnx is not None:  # numpy only: this may run in several threads at once
            return _scores_from_logits(self._onnx(batch), self.num_labels, self.label_index)
        side = None if self.decoder else "right"  # an encoder's head reads position 0: never left-pad it
        inputs = hf.collate(batch, self.tokenizer, self.device, position_ids=self.decoder, padding_side=side)
        return self._logits_to_scores(self.model(**inputs).logits)

    def _split_passages(self, text: str) -> list[str]:
        # room for the query and the special tokens: passages default to max_length - 64 tokens
        window = max(self.max_length - 64, 16)
        return hf.split_passages(
            self.tokenizer, text, self.passage_tokens, window, self.passage_overlap, self.max_passages
        )

    def _score_pairs(self, queries: list[str], texts: list[str], show_progress: bool = False) -> np.ndarray:
        if self.pair_template is not None:
            return self._score_pipelined(queries, texts, show_progress)
        feats = hf.tokenize(self.tokenizer, queries, texts, self.max_length)
        return hf.run_model(
            feats,
            self._forward,
            max_tokens=self.max_tokens_per_batch,
            batch_size=self.batch_size,
            show_progress=show_progress,
            desc=self.name,
            workers=self._onnx.workers if self._onnx is not None else 1,
        )

    def _score_pipelined(self, queries: list[str], texts: list[str], show_progress: bool) -> np.ndarray:
        def fallback(idx: list[int]) -> np.ndarray:  # the classic path, for batches that failed
            qs, ts = [queries[i] for i in idx], [texts[i] for i in idx]
            return self._forward(hf.tokenize(self.tokenizer, qs, ts, self.max_length))

        chunk, depth = pipeline_sizes(self.batch_size, self.max_tokens_per_batch)
        source = pair_batches(
            self.tokenizer,
            self.pair_template,
            queries,
            texts,
            self.max_length,
            max_tokens=self.max_tokens_per_batch,
            batch_size=self.batch_size,
            device=self.device,
            chunk=chunk,
        )
        return run_pipeline(
            source,
            self._forward_inputs,
            len(texts),
            fallback=fallback,
            show_progress=show_progress,
            desc=self.name,
            depth=depth,
        )


def _scores_from_logits(logits: np.ndarray, num_labels: int, label_index: int) -> np.ndarray:
    """NumPy twin of :meth:`CrossEncoderRanker._logits_to_scores` (1 label: the logit; 2: log-odds; more:
    log(p / (1 - p)) of ``label_index``)."""
    x = np.asarray(logits, dtype=np.float64)
    if num_labels == 1:
        return x[:, 0]
    if num_labels == 2:
        return x[:, label_index] - x[:, 1 - label_index]
    m = x.max(-1, keepdims=True)
    logp = x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))
    rest = np.delete(logp, label_index, axis=1)
    rm = rest.max(-1, keepdims=True)
    rm = np.where(np.isfinite(rm), rm, 0.0)  # every other class impossible: log(1 - p) = -inf, score +inf
    with np.errstate(divide="ignore"):
        return logp[:, label_index] - (rm[:, 0] + np.log(np.exp(rest - rm).sum(-1)))
