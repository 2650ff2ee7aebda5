"""Sequence-to-sequence rerankers on T5-family checkpoints: monoT5, RankT5 and duoT5.

- **monoT5** (Nogueira et al., 2020): input ``"Query: {q} Document: {d} Relevant:"``; the relevance is read
  from the first decoder step's logits of the "true" and "false" target tokens. The score is
  ``logit(true) - logit(false)`` (:attr:`ScoreKind.LOGIT`), so ``sigmoid(score)`` is exactly the
  ``softmax([false, true])[true]`` probability that ``rerankers``/pygaggle report. The target tokens depend on
  the checkpoint family (:data:`MONOT5_TOKENS`): castorini monoT5 uses ``"▁true"/"▁false"``, the unicamp mT5
  variants ``"▁yes"/"▁no"``, the Portuguese ptt5 ones ``"▁sim"/"▁não"``; ``tokens=(false, true)`` overrides.
- **RankT5** (Zhuang et al., 2022) on ``"Query: {q} Document: {d}"``: encoder-decoder: the first decoder
  step's logit of an unused token (``<extra_id_10>`` in the released checkpoints); encoder-only: the first
  token's encoder output through a 1-unit dense layer (``classifier.weight`` / ``classifier.bias`` stored with
  a ``T5EncoderModel`` checkpoint). Scores are :attr:`ScoreKind.UNBOUNDED`.
- **duoT5** (Pradeep et al., 2021): ``p(d_i > d_j)`` from ``"Query: {q} Document0: {d_i} Document1: {d_j}
  Relevant:"``, for every ordered pair of the first ``top_k`` candidates (the input order is taken to be a
  first-stage ranking), aggregated by ``sym-sum``: ``s_i = sum_j p_ij + (1 - p_ji)``.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from ..backends import hf
from ..base import Capabilities, PointwiseRanker, Ranker
from ..errors import SpecError
from ..types import Document, ScoreKind

__all__ = ["MONOT5_TOKENS", "DuoT5Ranker", "MonoT5Ranker", "RankT5Ranker", "load_seq2seq"]

_KNOWN = {  # checkpoint name prefix -> (suffixes, (false token, true token))
    "castorini/monot5-": (
        "small-msmarco-10k small-msmarco-100k base-msmarco base-msmarco-10k base-msmarco-100k large-msmarco "
        "large-msmarco-10k 3b-msmarco 3b-msmarco-10k base-med-msmarco 3b-med-msmarco",
        ("▁false", "▁true"),
    ),
    "castorini/duot5-": ("base-msmarco 3b-msmarco", ("▁false", "▁true")),
    "unicamp-dl/InRanker-": ("small base 3B", ("▁false", "▁true")),
    "unicamp-dl/mt5-base-": (
        "en-msmarco mmarco-v1 mmarco-v2 en-pt-msmarco-v1 en-pt-msmarco-v2",
        ("▁no", "▁yes"),
    ),
    "unicamp-dl/ptt5-base-": (
        "pt-msmarco-10k-v1 pt-msmarco-10k-v2 pt-msmarco-100k-v1 pt-msmarco-100k-v2 en-pt-msmarco-10k-v1 "
        "en-pt-msmarco-100k-v2",
        ("▁não", "▁sim"),
    ),
    "unicamp-dl/monoptt5-": ("small base large 3b", ("▁Não", "▁Sim")),
}
# (false token, true token) per known checkpoint; ``_FAMILY_TOKENS`` is the fallback by ``model_type``.
MONOT5_TOKENS: dict[str, tuple[str, str]] = {
    prefix + suffix: tokens for prefix, (suffixes, tokens) in _KNOWN.items() for suffix in suffixes.split()
}
_FAMILY_TOKENS = {"t5": ("▁false", "▁true"), "mt5": ("▁no", "▁yes"), "umt5": ("▁no", "▁yes")}
MONOT5_TEMPLATE = "Query: {query} Document: {document} Relevant:"
DUOT5_TEMPLATE = "Query: {query} Document0: {doc0} Document1: {doc1} Relevant:"
RANKT5_TEMPLATE = "Query: {query} Document: {document}"


def load_seq2seq(
    model_name_or_path: str, *, family: str, encoder_only: bool = False, **options: Any
) -> tuple[Any, Any, Any, str]:
    """``(path, tokenizer, model, device)`` of a T5-family checkpoint whose head fits ``family``.

    ``options``: ``device``, ``dtype``, ``trust_remote_code``, ``allow_pickle``, ``revision``.
    """
    path = hf.local_model_dir(model_name_or_path, revision=options.get("revision"))
    config = hf.read_json(path / "config.json")
    archs = [str(a) for a in config.get("architectures") or []]
    if encoder_only:
        if not any(a.endswith("EncoderModel") for a in archs):
            raise SpecError(
                f"{model_name_or_path}: {family} (encoder-only) expects a T5EncoderModel checkpoint with a "
                f"'classifier' dense head; got architectures={archs}"
            )
    elif not config.get("is_encoder_decoder") or not any(
        a.endswith("ForConditionalGeneration") for a in archs
    ):
        raise SpecError(
            f"{model_name_or_path}: {family} expects an encoder-decoder LM head "
            f"(*ForConditionalGeneration with is_encoder_decoder=true, e.g. T5ForConditionalGeneration); "
            f"got architectures={archs}, is_encoder_decoder={config.get('is_encoder_decoder')}"
        )
    dev = hf.pick_device(options.get("device"))
    remote = bool(options.get("trust_remote_code", False))
    tok = hf.load_tokenizer(path, trust_remote_code=remote)
    model = hf.load_model(
        path, "T5EncoderModel" if encoder_only else "AutoModelForSeq2SeqLM", device=dev,
        dtype=hf.torch_dtype(options.get("dtype"), dev), trust_remote_code=remote,
        allow_pickle=bool(options.get("allow_pickle", False)),
    )  # fmt: skip
    return path, tok, model, dev


def token_id(tokenizer: Any, token: str | int, what: str) -> int:
    """The id of ``token`` in the vocabulary, or a :class:`SpecError` naming what was expected."""
    if isinstance(token, int):
        if not 0 <= token < len(tokenizer):
            raise SpecError(f"{what} token id {token} is outside the vocabulary (size {len(tokenizer)})")
        return token
    tid = tokenizer.convert_tokens_to_ids(token)
    if tid is None or (tid == tokenizer.unk_token_id and token != tokenizer.unk_token):
        raise SpecError(
            f"the tokenizer has no {what} token {token!r}; pass the right one with tokens=/token="
        )
    return int(tid)


class _T5Scorer:
    """Shared plumbing: load, template tokenisation (documents truncated, never the suffix), batching."""

    def _setup(
        self, model_name_or_path: str, family: str, options: dict[str, Any], encoder_only: bool = False
    ):
        self.model_name_or_path = model_name_or_path
        keys = ("device", "dtype", "trust_remote_code", "allow_pickle", "revision")
        self.path, self.tokenizer, self.model, self.device = load_seq2seq(
            model_name_or_path,
            family=family,
            encoder_only=encoder_only,
            **{k: options.pop(k) for k in keys if k in options},
        )
        self.max_length = int(options.pop("max_length", None) or 512)
        self.batch_size = int(options.pop("batch_size", 32))
        self.max_tokens_per_batch = options.pop("max_tokens_per_batch", None) or hf.default_token_budget(
            self.device
        )
        if options:
            raise TypeError(f"unknown option(s) for {family}: {sorted(options)}")

    def _set_tokens(self, model_name_or_path: str, tokens: tuple[str | int, str | int] | None) -> None:
        if tokens is None:
            mt = str(getattr(self.model.config, "model_type", "t5"))
            tokens = MONOT5_TOKENS.get(model_name_or_path) or _FAMILY_TOKENS.get(mt, _FAMILY_TOKENS["t5"])
        if len(tokens) != 2:
            raise ValueError("tokens must be (false_token, true_token)")
        self.tokens = tuple(tokens)
        self.false_id = token_id(self.tokenizer, tokens[0], "'false'")
        self.true_id = token_id(self.tokenizer, tokens[1], "'true'")

    def _encode_template(self, template: str, fields: dict[str, str], doc_keys: tuple[str, ...]) -> dict:
        """Token ids of ``template`` filled with ``fields``; documents share what ``max_length`` leaves."""
        tok = self.tokenizer
        parts: list[tuple[str, str | None]] = []  # (literal text, doc key or None)
        rest = template
        for key in doc_keys:
            head, _, rest = rest.partition("{" + key + "}")
            parts.append((head.format(**fields), key))
        tail_ids = tok(rest.format(**fields), add_special_tokens=True)["input_ids"]
        head_ids = [tok(h, add_special_tokens=False)["input_ids"] if h else [] for h, _ in parts]
        doc_ids = [tok(fields[k], add_special_tokens=False)["input_ids"] for _, k in parts]
        budget = self.max_length - len(tail_ids) - sum(len(h) for h in head_ids)
        if budget < len(doc_keys):
            raise ValueError(f"the query is too long for max_length={self.max_length}")
        cut = _share_budget([len(d) for d in doc_ids], budget)
        ids: list[int] = []
        for h, d, n in zip(head_ids, doc_ids, cut):
            ids += h + d[:n]
        ids += tail_ids
        return {"input_ids": ids, "attention_mask": [1] * len(ids)}

    def _first_step_logits(self, batch: list[dict[str, list[int]]]) -> Any:
        torch, _ = hf.torch_modules()
        inputs = hf.collate(batch, self.tokenizer, self.device)
        start = self.model.config.decoder_start_token_id
        dec = torch.full((len(batch), 1), int(start if start is not None else 0), device=self.device)
        return self.model(**inputs, decoder_input_ids=dec).logits[:, 0, :].float()

    def _run(
        self, feats: list[dict[str, list[int]]], forward: Any, show_progress: bool, desc: str
    ) -> np.ndarray:
        return hf.run_model(
            feats,
            forward,
            max_tokens=self.max_tokens_per_batch,
            batch_size=self.batch_size,
            show_progress=show_progress,
            desc=desc,
        )


def _share_budget(lengths: list[int], budget: int) -> list[int]:
    """Split ``budget`` tokens among documents: short ones keep all, the rest share equally."""
    out = [0] * len(lengths)
    left = budget
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    for n, i in enumerate(order):
        out[i] = min(lengths[i], left // (len(order) - n))
        left -= out[i]
    return out


class _PointwiseT5(_T5Scorer, PointwiseRanker):
    """Pointwise T5 scorers: ``self.template`` filled per (query, document), scored by ``self._forward``."""

    def _score_pairs(self, queries: list[str], texts: list[str], show_progress: bool = False) -> np.ndarray:
        feats = [
            self._encode_template(self.template, {"query": q, "document": t}, ("document",))
            for q, t in zip(queries, texts)
        ]
        return self._run(feats, self._forward, show_progress, self.name)


class MonoT5Ranker(_PointwiseT5):
    """monoT5 pointwise reranker: ``score = logit(true) - logit(false)`` at the first decoder step.

    Args:
        model_name_or_path: a T5/mT5 ``*ForConditionalGeneration`` checkpoint (folder or hub id).
        tokens: ``(false_token, true_token)`` (strings or ids); default from :data:`MONOT5_TOKENS` by id,
            else by ``model_type`` (``t5`` -> true/false, ``mt5`` -> yes/no).
        template: input template with ``{query}`` and ``{document}``.
        max_length, batch_size, device, dtype: as for the other HF rankers.

    >>> r = MonoT5Ranker("castorini/monot5-base-msmarco")  # doctest: +SKIP
    >>> r.rank("what causes rain", ["Rain is condensed vapour.", "Cats purr."]).ids  # doctest: +SKIP
    ['0', '1']
    """

    score_kind = ScoreKind.LOGIT

    def __init__(
        self,
        model_name_or_path: str,
        *,
        tokens: tuple[str | int, str | int] | None = None,
        template: str = MONOT5_TEMPLATE,
        name: str | None = None,
        **options: Any,
    ) -> None:
        base = {
            k: options.pop(k)
            for k in ("long_docs", "passage_tokens", "passage_overlap", "max_passages", "calibrator")
            if k in options
        }
        super().__init__(name or f"monot5:{model_name_or_path}", **base)
        self._setup(model_name_or_path, "monoT5", options)
        self.template = template
        self._set_tokens(model_name_or_path, tokens)

    def _forward(self, batch: list[dict[str, list[int]]]) -> np.ndarray:
        logits = self._first_step_logits(batch)
        return (logits[:, self.true_id] - logits[:, self.false_id]).cpu().numpy()


class RankT5Ranker(_PointwiseT5):
    """RankT5 reranker (unnormalised ranking scores).

    Args:
        model_name_or_path: a T5 ``*ForConditionalGeneration`` checkpoint (encoder-decoder RankT5) or a
            ``T5EncoderModel`` checkpoint whose weights also hold ``classifier.weight`` / ``classifier.bias``
            (encoder-only RankT5); which one is read from ``config.json``.
        token: the score token of the encoder-decoder variant (default ``"<extra_id_10>"``).
        template: input template with ``{query}`` and ``{document}``.

    >>> r = RankT5Ranker("Soyoung97/RankT5-base")  # doctest: +SKIP
    >>> r.rank("rain", ["Rain falls.", "Cats purr."]).ids  # doctest: +SKIP
    ['0', '1']
    """

    score_kind = ScoreKind.UNBOUNDED

    def __init__(
        self,
        model_name_or_path: str,
        *,
        token: str | int = "<extra_id_10>",
        template: str = RANKT5_TEMPLATE,
        name: str | None = None,
        **options: Any,
    ) -> None:
        base = {
            k: options.pop(k)
            for k in ("long_docs", "passage_tokens", "passage_overlap", "max_passages", "calibrator")
            if k in options
        }
        super().__init__(name or f"rankt5:{model_name_or_path}", **base)
        path = hf.local_model_dir(model_name_or_path, revision=options.get("revision"))
        archs = [str(a) for a in hf.read_json(path / "config.json").get("architectures") or []]
        self.encoder_only = any(a.endswith("EncoderModel") for a in archs)
        self._setup(model_name_or_path, "RankT5", options, encoder_only=self.encoder_only)
        self.template = template
        if self.encoder_only:
            self.head = self._load_head()
        else:
            self.score_id = token_id(self.tokenizer, token, "RankT5 score")

    def _load_head(self) -> Any:
        torch, _ = hf.torch_modules()
        from safetensors import safe_open

        for f in sorted(self.path.glob("*.safetensors")):
            with safe_open(str(f), framework="pt") as fh:
                keys = set(fh.keys())
                if "classifier.weight" in keys:
                    w = fh.get_tensor("classifier.weight")
                    b = fh.get_tensor("classifier.bias") if "classifier.bias" in keys else None
                    break
        else:
            raise SpecError(
                f"{self.path}: encoder-only RankT5 expects 'classifier.weight' (1 x d_model) in its "
                "safetensors weights; none found"
            )
        if w.ndim != 2 or w.shape[0] != 1 or w.shape[1] != self.model.config.d_model:
            raise SpecError(
                f"{self.path}: classifier.weight has shape {tuple(w.shape)}; expected "
                f"(1, {self.model.config.d_model})"
            )
        layer = torch.nn.Linear(w.shape[1], 1, bias=b is not None)
        layer.load_state_dict({"weight": w, **({"bias": b} if b is not None else {})})
        return layer.to(self.device).eval()

    def _forward(self, batch: list[dict[str, list[int]]]) -> np.ndarray:
        if self.encoder_only:
            inputs = hf.collate(batch, self.tokenizer, self.device)
            hidden = self.model(**inputs).last_hidden_state[:, 0].float()
            return self.head(hidden)[:, 0].cpu().numpy()
        return self._first_step_logits(batch)[:, self.score_id].cpu().numpy()


class DuoT5Ranker(_T5Scorer, Ranker):
    """duoT5 pairwise reranker over the first ``top_k`` candidates, aggregated by sym-sum.

    ``score_i = sum_{j != i} p(d_i > d_j) + (1 - p(d_j > d_i))`` (``aggregation="sym-sum"``) or
    ``sum_{j != i} p(d_i > d_j)`` (``"sum"``); ``k (k - 1)`` model inputs per query. Candidates after the
    first ``top_k`` keep their input order below the re-ranked ones (scores ``-1, -2, ...``).

    >>> r = DuoT5Ranker("castorini/duot5-base-msmarco", top_k=10)  # doctest: +SKIP
    >>> r.rank("rain", ["Rain falls.", "Cats."]).ids  # doctest: +SKIP
    """

    score_kind = ScoreKind.UNBOUNDED
    capabilities = Capabilities(pointwise=False, listwise=True)

    def __init__(
        self,
        model_name_or_path: str,
        *,
        top_k: int = 10,
        aggregation: str = "sym-sum",
        tokens: tuple[str | int, str | int] | None = None,
        template: str = DUOT5_TEMPLATE,
        name: str | None = None,
        **options: Any,
    ) -> None:
        super().__init__(name or f"duot5:{model_name_or_path}", calibrator=options.pop("calibrator", None))
        if top_k < 2:
            raise ValueError("top_k must be >= 2 for pairwise re-ranking")
        if aggregation not in ("sym-sum", "sum"):
            raise ValueError(f"aggregation={aggregation!r}; expected 'sym-sum' or 'sum'")
        self._setup(model_name_or_path, "duoT5", options)
        self.top_k, self.aggregation, self.template = top_k, aggregation, template
        self._set_tokens(model_name_or_path, tokens)

    def _forward(self, batch: list[dict[str, list[int]]]) -> np.ndarray:
        logits = self._first_step_logits(batch)
        return (logits[:, self.true_id] - logits[:, self.false_id]).sigmoid().cpu().numpy()

    def pair_probabilities(self, query: str, docs: list[str]) -> np.ndarray:
        """Matrix ``P[i, j] = p(d_i > d_j)`` (diagonal NaN)."""
        pairs = list(itertools.permutations(range(len(docs)), 2))
        feats = [
            self._encode_template(
                self.template, {"query": query, "doc0": docs[i], "doc1": docs[j]}, ("doc0", "doc1")
            )
            for i, j in pairs
        ]
        p = self._run(feats, self._forward, False, self.name) if pairs else np.zeros(0)
        out = np.full((len(docs), len(docs)), np.nan)
        for (i, j), v in zip(pairs, p):
            out[i, j] = v
        return out

    def _score_many(self, queries: list[str], docs_lists: list[list[Document]], show_progress: bool = False):
        out = []
        for q, docs in zip(queries, docs_lists):
            k = min(self.top_k, len(docs))
            p = self.pair_probabilities(q, [d.text for d in docs[:k]])
            off = ~np.eye(k, dtype=bool)
            agg = np.where(off, p, 0.0).sum(1)
            if self.aggregation == "sym-sum":
                agg = agg + np.where(off, 1.0 - p.T, 0.0).sum(1)
            tail = -np.arange(1, len(docs) - k + 1, dtype=np.float64)
            out.append(np.concatenate([agg, tail]))
        return out
