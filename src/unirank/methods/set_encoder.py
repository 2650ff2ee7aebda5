"""Set-Encoder: a listwise cross-encoder with permutation-invariant inter-passage attention.

Schlatt et al., "Set-Encoder: Permutation-Invariant Inter-Passage Attention for Listwise Passage Re-Ranking
with Cross-Encoders" (ECIR 2025); checkpoints ``webis/set-encoder-base`` / ``-large`` (ELECTRA), reference
implementation ``lightning_ir.models.cross_encoders.set_encoder``. The mechanics, as the reference runs them:

- every candidate of a query is its own sequence ``[CLS] [INT] query [SEP] passage [SEP]`` (query cut to
  ``query_length`` tokens, passage to ``doc_length``; token types 0 up to the first ``[SEP]``, 1 after), with
  ordinary positions ``0..L-1``: no position depends on where the passage sits in the list;
- in every self-attention layer, every token of passage *i* attends to its own sequence **and** to the
  ``[INT]`` hidden states of the other passages of the same set (keys/values projected by the same layer;
  its own ``[INT]`` is already in its sequence, so that extra slot is masked). A set is attended to as a set,
  a sum over keys, so permuting the candidates permutes the scores and changes nothing else;
- sets smaller than the training ``depth`` (100) are, with ``sample_missing_docs`` (on in the published
  checkpoints), padded in each layer with ``depth - n`` fake ``[INT]`` states drawn from
  ``N(mean, std)`` of the set's real ones (``std = 0`` for a single passage). The reference draws them from
  torch's global RNG; here each set draws from its own generator seeded with ``seed``, so scores are
  reproducible, do not depend on batching, and stay permutation-invariant (mean/std are symmetric);
- the score is ``linear([CLS] state)``: a single unbounded logit (:attr:`ScoreKind.LOGIT`).

Without missing-passage sampling (``sample_missing=False``) a set of one passage is exactly a plain
cross-encoder over ``[CLS] [INT] query [SEP] passage [SEP]``. The published checkpoints' tokenizers call the
interaction token ``[DOC]`` (id 30522, the name of the training code); lightning-ir 0.0.6 instead appends a
fresh ``[INT]`` (id 30523, an embedding row never trained). Here the token is read from the checkpoint:
``[INT]`` if the tokenizer has it, else ``[DOC]``, or ``interaction_token=`` to choose.

Candidate lists longer than ``set_size`` (default: the checkpoint's ``depth``) are cut into
``ceil(n / set_size)`` sets of near-equal size, each scored as its own set, so passages only see their set.
``split="order"`` keeps input-order neighbours together (first-stage rank windows, like training); scores are
then invariant to permutations inside a set only. ``split="hash"`` forms sets from a hash of the texts, so any
permutation of the whole list permutes the scores exactly, at the price of mixing rank windows.

The backbone loads with transformers' own ``ElectraModel`` / ``BertModel`` (no remote code); the layers are
run here with the extra inter-passage keys (embeddings, Q/K/V projections, output and feed-forward blocks are
the backbone's own modules).
"""

from __future__ import annotations

import hashlib
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..backends import hf
from ..base import Capabilities, Ranker
from ..errors import SpecError
from ..types import Document, ScoreKind

__all__ = ["INTERACTION_TOKENS", "SetEncoderRanker", "read_set_encoder_config", "split_sets"]

logger = logging.getLogger(__name__)

#: backbone_model_type -> transformers class (both share the BERT layer layout)
BACKBONES = {"electra": "ElectraModel", "bert": "BertModel"}
#: interaction-token names tried in order: lightning-ir's, then the published checkpoints' legacy name
INTERACTION_TOKENS = ("[INT]", "[DOC]")
SPLITS = ("order", "hash")


def read_set_encoder_config(path: Path) -> dict[str, Any]:
    """The checkpoint's ``config.json``, checked to be a Set-Encoder this module can run.

    Raises :class:`SpecError` naming what was expected when it is not.
    """
    cfg = hf.read_json(path / "config.json")
    if cfg.get("model_type") != "set-encoder":
        raise SpecError(
            f"{path} is not a Set-Encoder checkpoint: expected config.json model_type 'set-encoder' "
            f"(lightning-ir layout, e.g. webis/set-encoder-base), got {cfg.get('model_type')!r}"
        )
    backbone = cfg.get("backbone_model_type")
    if backbone not in BACKBONES:
        raise SpecError(f"Set-Encoder backbone_model_type {backbone!r}; expected one of {sorted(BACKBONES)}")
    if cfg.get("pooling_strategy", "first") != "first":
        raise SpecError(f"pooling_strategy={cfg['pooling_strategy']!r}; expected 'first' (the [CLS] state)")
    if cfg.get("scoring_strategy", "rank") != "rank":
        raise SpecError(f"scoring_strategy={cfg['scoring_strategy']!r}; expected 'rank' (one logit)")
    return cfg


def split_sets(texts: list[str], set_size: int, how: str = "order") -> list[list[int]]:
    """Cut candidate indices into ``ceil(n / set_size)`` sets of near-equal size.

    >>> split_sets(["a", "b", "c", "d", "e"], 2)
    [[0, 1], [2, 3], [4]]
    >>> def texts_per_set(texts):  # "hash" sets depend on the texts, not on their order
    ...     return sorted(sorted(texts[i] for i in s) for s in split_sets(texts, 2, "hash"))
    >>> texts_per_set(["a", "b", "c"]) == texts_per_set(["c", "a", "b"])
    True
    """
    if how not in SPLITS:
        raise ValueError(f"split={how!r}; expected one of {SPLITS}")
    if set_size < 1:
        raise ValueError(f"set_size must be >= 1, got {set_size}")
    n = len(texts)
    if n == 0:
        return []
    order = list(range(n))
    if how == "hash":
        order.sort(key=lambda i: (hashlib.sha1(texts[i].encode("utf-8")).hexdigest(), texts[i]))
    k = math.ceil(n / set_size)
    base, extra = divmod(n, k)
    out, start = [], 0
    for j in range(k):
        size = base + (1 if j < extra else 0)
        out.append(order[start : start + size])
        start += size
    return out


class SetEncoderRanker(Ranker):
    """Set-Encoder listwise re-ranker: all candidates of a query are scored together, order-free.

    Args:
        model_name_or_path: folder or hub id of a Set-Encoder checkpoint (``config.json`` model_type
            ``set-encoder``, ELECTRA or BERT backbone, a ``linear`` head on the first token).
        device, dtype: as for :class:`~unirank.methods.cross_encoder.CrossEncoderRanker`.
        set_size: most passages per set (default: the checkpoint's ``depth``, 100); longer lists are split.
        split: ``"order"`` (default) or ``"hash"``; the module docstring says what each means for
            permutation invariance.
        sample_missing: pad sets smaller than ``depth`` with sampled interaction states (default: the
            checkpoint's ``sample_missing_docs``); ``seed`` seeds those draws.
        query_length, doc_length: token caps (default: the checkpoint's, 32 / 256).
        interaction_token: the token placed after ``[CLS]`` (default ``[INT]``, else ``[DOC]``).
        max_tokens_per_batch: token budget of a forward; sets are never split across forwards.
        revision, allow_pickle: as for the cross-encoder.

    >>> r = SetEncoderRanker("webis/set-encoder-base")                               # doctest: +SKIP
    >>> r.rank("what causes rain", ["Rain is condensed vapour.", "Cats purr."]).top(1)  # doctest: +SKIP
    """

    score_kind = ScoreKind.LOGIT
    capabilities = Capabilities(pointwise=False, listwise=True)

    def __init__(
        self,
        model_name_or_path: str,
        *,
        device: str | None = None,
        dtype: str | None = None,
        set_size: int | None = None,
        split: str = "order",
        sample_missing: bool | None = None,
        seed: int = 0,
        query_length: int | None = None,
        doc_length: int | None = None,
        interaction_token: str | None = None,
        max_tokens_per_batch: int | None = None,
        revision: str | None = None,
        allow_pickle: bool = False,
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            name or f"set-encoder:{model_name_or_path}", calibrator=kwargs.pop("calibrator", None)
        )
        if kwargs:
            raise TypeError(f"unknown option(s) for a set-encoder: {sorted(kwargs)}")
        if split not in SPLITS:
            raise ValueError(f"split={split!r}; expected one of {SPLITS}")
        torch, transformers = hf.torch_modules()
        self.path = hf.local_model_dir(model_name_or_path, revision=revision, allow_pickle=allow_pickle)
        cfg = read_set_encoder_config(self.path)
        self.depth = int(cfg.get("depth") or 100)
        self.set_size = int(set_size if set_size is not None else self.depth)
        self.query_length = int(query_length or cfg.get("query_length") or 32)
        self.doc_length = int(doc_length or cfg.get("doc_length") or 256)
        if self.set_size < 1 or self.query_length < 1 or self.doc_length < 1:
            raise ValueError("set_size, query_length and doc_length must be >= 1")
        self.sample_missing = bool(
            cfg.get("sample_missing_docs", True) if sample_missing is None else sample_missing
        )
        self.seed, self.split = int(seed), split
        self.int_pos = 1 if cfg.get("add_extra_token", False) else 0
        self.device = hf.pick_device(device)
        self.tokenizer = hf.load_tokenizer(self.path)
        if interaction_token is not None and not self.int_pos:
            raise ValueError("interaction_token= given, but this checkpoint has add_extra_token=false")
        self.int_id = self._interaction_id(interaction_token) if self.int_pos else None
        self.allow_pickle = allow_pickle
        backbone_cfg = {k: v for k, v in cfg.items() if k not in ("model_type", "architectures", "auto_map")}
        config_cls = getattr(transformers, BACKBONES[cfg["backbone_model_type"]].replace("Model", "Config"))
        config = config_cls.from_dict(backbone_cfg)
        extra = {"add_pooling_layer": False} if cfg["backbone_model_type"] == "bert" else {}
        self.model = hf.load_model(
            self.path,
            BACKBONES[cfg["backbone_model_type"]],
            device=self.device,
            dtype=hf.torch_dtype(dtype, self.device),
            allow_pickle=allow_pickle,
            config=config,
            **extra,
        )
        self.head_w, self.head_b = self._load_head(torch, int(config.hidden_size))
        total = 1 + self.int_pos + self.query_length + 1 + self.doc_length + 1
        if total > int(config.max_position_embeddings):
            raise ValueError(
                f"query_length + doc_length give {total} tokens > {config.max_position_embeddings}"
            )
        self.max_tokens_per_batch = max_tokens_per_batch or hf.default_token_budget(self.device)

    # -- checkpoint pieces ----------------------------------------------------------------------------------
    def _interaction_id(self, requested: str | None) -> int:
        added = dict(getattr(self.tokenizer, "added_tokens_encoder", {}) or {})
        names = (requested,) if requested else INTERACTION_TOKENS
        for tok in names:
            if tok in added:
                return int(added[tok])
        raise SpecError(
            f"the tokenizer of {self.path} has none of the interaction tokens {list(names)} "
            "(config add_extra_token=true); pass interaction_token=<its name>"
        )

    def _load_head(self, torch: Any, hidden: int) -> tuple[Any, Any]:
        from safetensors import safe_open

        tensors: dict[str, Any] = {}
        for f in sorted(self.path.glob("*.safetensors")):
            with safe_open(str(f), framework="pt") as fh:
                tensors.update(
                    {k: fh.get_tensor(k) for k in fh.keys() if k.endswith(("linear.weight", "linear.bias"))}
                )
        if not tensors and self.allow_pickle:  # pickled checkpoints only when the caller opted in
            for f in sorted(self.path.glob("*.bin")):
                tensors.update(torch.load(str(f), map_location="cpu", weights_only=True))
        found: dict[str, Any] = {}
        for key, value in tensors.items():
            short = key.split(".", 1)[1] if key.startswith(("electra.", "bert.")) else key
            if short in ("linear.weight", "linear.bias"):
                found[short] = value
        w = found.get("linear.weight")
        if w is None or tuple(w.shape) != (1, hidden):
            got = None if w is None else tuple(w.shape)
            raise SpecError(
                f"{self.path}: expected a Set-Encoder scoring head 'linear.weight' of shape (1, {hidden}) "
                f"(one logit on the [CLS] state), got {got}"
            )
        b = found.get("linear.bias")
        return w.to(self.device, torch.float32), (None if b is None else b.to(self.device, torch.float32))

    # -- scoring --------------------------------------------------------------------------------------------
    def _features(self, query: str, docs: list[Document]) -> list[tuple[list[int], list[int]]]:
        from ..text import safe_prefix

        tok = self.tokenizer
        q = tok(query, add_special_tokens=False, truncation=True, max_length=self.query_length)["input_ids"]
        kw = {"add_special_tokens": False, "truncation": True, "max_length": self.doc_length}
        texts = [safe_prefix(d.text, self.doc_length) for d in docs]
        ds = tok(texts, **kw)["input_ids"]
        for i, d in enumerate(docs):  # a cut prefix that came out short: tokenise the whole text
            if texts[i] is not d.text and len(ds[i]) < self.doc_length:
                ds[i] = tok(d.text, **kw)["input_ids"]
        head = [tok.cls_token_id] + ([self.int_id] if self.int_pos else []) + list(q) + [tok.sep_token_id]
        out = []
        for d in ds:
            tail = [*d, tok.sep_token_id]
            out.append((head + tail, [0] * len(head) + [1] * len(tail)))
        return out

    def _score_many(
        self, queries: list[str], docs_lists: list[list[Document]], show_progress: bool = False
    ) -> list[np.ndarray]:
        from tqdm.auto import tqdm

        from ..batching import run_batches, token_budget_batches

        torch, _ = hf.torch_modules()
        sets: list[list[tuple[list[int], list[int]]]] = []
        owners: list[tuple[int, list[int]]] = []
        for li, (q, docs) in enumerate(zip(queries, docs_lists)):
            feats = self._features(q, docs)
            for idx in split_sets([d.text for d in docs], self.set_size, self.split):
                sets.append([feats[i] for i in idx])
                owners.append((li, idx))
        width = max(len(s) for s in sets)
        cost = [len(s) * max(len(f[0]) for f in s) for s in sets]
        batches = token_budget_batches(cost, max_tokens=self.max_tokens_per_batch, max_batch_size=1024)
        bar = tqdm(total=len(sets), desc=self.name, unit="set", disable=not show_progress, leave=False)
        try:
            with torch.inference_mode():
                flat = run_batches(
                    lambda b: self._forward([sets[i] for i in b], width), batches, len(sets), bar.update
                )
        finally:
            bar.close()
        out = [np.full(len(d), np.nan) for d in docs_lists]
        for row, (li, idx) in zip(flat, owners):
            out[li][idx] = row[: len(idx)]
        return out

    def _forward(self, batch: list[list[tuple[list[int], list[int]]]], width: int) -> np.ndarray:
        """Scores of a batch of whole sets, one row per set, NaN-padded to ``width``."""
        torch, _ = hf.torch_modules()
        dev = self.device
        rows = [f for s in batch for f in s]
        sizes = [len(s) for s in batch]
        length = max(len(ids) for ids, _ in rows)
        pad = self.tokenizer.pad_token_id or 0
        ids = torch.tensor([i + [pad] * (length - len(i)) for i, _ in rows], device=dev)
        types = torch.tensor([t + [0] * (length - len(t)) for _, t in rows], device=dev)
        valid = torch.tensor([[1] * len(i) + [0] * (length - len(i)) for i, _ in rows], device=dev).bool()
        set_of_row = torch.repeat_interleave(
            torch.arange(len(sizes), device=dev), torch.tensor(sizes, device=dev)
        )
        own = torch.cat([torch.arange(n, device=dev) for n in sizes])
        # interaction slots of each set: its passages, plus sampled stand-ins up to `depth` when sampling
        slots = [max(n, self.depth) if self.sample_missing else n for n in sizes]
        slot_idx = torch.arange(max(slots), device=dev)
        slots_t = torch.tensor(slots, device=dev)[set_of_row]
        other_ok = (slot_idx[None] < slots_t[:, None]) & (slot_idx[None] != own[:, None])
        mask = torch.cat([valid, other_ok], 1)[:, None, None, :]
        # gather[s, j]: the row whose interaction state fills slot j of set s (-1: zeros / stand-in)
        starts = np.cumsum([0, *sizes[:-1]]).tolist()
        gather = torch.tensor(
            [[lo + j if j < n else -1 for j in range(max(slots))] for lo, n in zip(starts, sizes)], device=dev
        )
        # sets that get stand-ins: (set, first row, passages, slots, its own seeded generator)
        fill = [
            (si, lo, n, k, torch.Generator().manual_seed(self.seed))
            for si, (lo, n, k) in enumerate(zip(starts, sizes, slots))
            if k > n
        ]
        bb = self.model
        h = bb.embeddings(input_ids=ids, token_type_ids=types)
        if hasattr(bb, "embeddings_project"):
            h = bb.embeddings_project(h)
        for layer in bb.encoder.layer:
            others = self._interaction_states(h[:, self.int_pos], gather, fill)
            h = self._layer(layer, h, others, set_of_row, mask)
        scores = h[:, 0].float() @ self.head_w.T
        if self.head_b is not None:
            scores = scores + self.head_b
        flat = scores[:, 0].detach().cpu().numpy()
        out = np.full((len(batch), width), np.nan)
        start = 0
        for k, n in enumerate(sizes):
            out[k, :n] = flat[start : start + n]
            start += n
        return out

    @staticmethod
    def _interaction_states(inter: Any, gather: Any, fill: list[tuple[int, int, int, int, Any]]) -> Any:
        """``(sets, max slots, hidden)``: each set's interaction states, sampled stand-ins, zero padding."""
        import torch

        out = torch.cat([inter, inter.new_zeros((1, inter.shape[-1]))])[gather]  # -1 picks the zero row
        for si, lo, n, k, gen in fill:
            real = inter[lo : lo + n].float()
            mean = real.mean(0, keepdim=True)
            std = real.std(0, keepdim=True) if n > 1 else torch.zeros_like(mean)
            eps = torch.randn((k - n, real.shape[-1]), generator=gen).to(real.device)
            out[si, n:k] = (mean + std * eps).to(out.dtype)
        return out

    @staticmethod
    def _layer(layer: Any, h: Any, others: Any, set_of_row: Any, mask: Any) -> Any:
        """One transformer layer whose self-attention also reads the set's interaction states."""
        import torch

        sa = layer.attention.self
        rows, length, _ = h.shape
        heads, size = sa.num_attention_heads, sa.attention_head_size

        def split(x: Any) -> Any:
            return x.view(x.shape[0], x.shape[1], heads, size).transpose(1, 2)

        q = split(sa.query(h))
        k = torch.cat([split(sa.key(h)), split(sa.key(others))[set_of_row]], 2)
        v = torch.cat([split(sa.value(h)), split(sa.value(others))[set_of_row]], 2)
        ctx = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        ctx = ctx.transpose(1, 2).reshape(rows, length, heads * size)
        att = layer.attention.output(ctx, h)
        return layer.output(layer.intermediate(att), att)
