"""The invariance matrix: every registered method family through the properties any correct re-ranker has.

Rows are the :data:`_invariance_fixtures.CASES` (tiny models built once per session; loopback servers for the
HTTP families); a family registered in :data:`unirank.registry.METHODS` without a row fails
:func:`test_every_registered_family_is_in_the_matrix`. Properties:

- batch invariance: a pair scores the same alone, in a batch of mixed lengths, beside another query's list
  (``rank_many``) and at the smallest batch size (``set`` / ``list`` families: the whole list);
- padding-side invariance: left- and right-padding tokenizers give the same scores;
- order invariance (``pointwise`` / ``set``): shuffling the candidates permutes the scores and nothing else;
  ``list`` families must still return a valid permutation of exactly the documents sent;
- determinism: two runs give identical scores;
- sync and async agree: ``arank_many`` (the truly async path of the HTTP families) gives ``rank_many``'s
  scores.

Failure visibility (no logprobs, empty text, NaN) is in ``test_invariance_failures.py``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from _invariance_fixtures import CASES, DOCS, DOCS2, Q2, Case, Q, models, params, rankers  # noqa: F401
from _llm_fixtures import tiny_causal_lm  # noqa: F401
from unirank.registry import METHODS
from unirank.types import Document


def close(got: Any, want: Any, case: Case, what: str) -> None:
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    assert np.isfinite(want).all(), f"{case.id}: reference scores are not finite: {want}"
    np.testing.assert_allclose(got, want, rtol=0, atol=case.tol, err_msg=f"{case.id}: {what}")


def by_index(res: Any) -> np.ndarray:
    """A RankedResults' scores back in input order."""
    out = np.full(len(res.results), np.nan)
    for r in res.results:
        out[r.index] = r.score
    return out


def test_every_registered_family_is_in_the_matrix() -> None:
    registered = {m.prefix for m in METHODS}
    covered = {c.prefix for c in CASES}
    missing, unknown = registered - covered, covered - registered
    assert not missing, f"families registered in METHODS without a row in the invariance matrix: {missing}"
    assert not unknown, f"matrix rows for prefixes that are not registered: {unknown}"
    assert len({c.id for c in CASES}) == len(CASES)
    for c in CASES:
        assert c.kind in ("pointwise", "set", "list"), c
        assert c.tol == 1e-5 or c.why, f"{c.id}: a tolerance other than 1e-5 needs a reason"
        assert c.batch_option or c.why, f"{c.id}: no batching option needs a reason"


@pytest.mark.parametrize("case", params("batch"))
def test_batch_invariance(case: Case, rankers) -> None:  # noqa: F811
    r = rankers(case)
    whole = r.score(Q, DOCS)
    assert len(whole) == len(DOCS)
    if case.kind == "pointwise":
        alone = [r.score(Q, [d])[0] for d in DOCS]
        close(whole, alone, case, "a pair alone vs in a batch of mixed lengths")
    many = r.rank_many([Q2, Q], [DOCS2, DOCS])
    close(by_index(many[1]), whole, case, "beside another query's list (rank_many)")
    close(by_index(many[0]), r.score(Q2, DOCS2), case, "the other query's list in rank_many")
    if case.batch_option:
        small = rankers(case, **{case.batch_option: case.batch_min})
        close(small.score(Q, DOCS), whole, case, f"{case.batch_option}={case.batch_min}")


def _tokenizers(ranker: Any) -> list[Any]:
    """Every tokenizer a ranker holds (its own, its engine's, its processor's, its window's engine's)."""
    seen: list[Any] = []
    objs = [ranker]
    for name in ("engine", "processor", "strategy", "window"):
        objs += [getattr(o, name) for o in list(objs) if getattr(o, name, None) is not None]
    for o in objs:
        tok = getattr(o, "tokenizer", None)
        if tok is not None and hasattr(tok, "padding_side") and all(tok is not t for t in seen):
            seen.append(tok)
    return seen


@pytest.mark.parametrize("case", params("padding", lambda c: c.padding))
def test_padding_side_invariance(case: Case, rankers) -> None:  # noqa: F811
    r = rankers(case)
    toks = _tokenizers(r)
    assert toks, f"{case.id}: declared tokenizer-based but no tokenizer found"
    before = [t.padding_side for t in toks]
    got = {}
    try:
        for side in ("left", "right"):
            for t in toks:
                t.padding_side = side
            got[side] = r.score(Q, DOCS)
    finally:
        for t, side in zip(toks, before):
            t.padding_side = side
    close(got["left"], got["right"], case, "left vs right padding")


PERM = [3, 5, 0, 4, 1, 2]


def _docs(texts: list[str]) -> list[Document]:
    return [Document(t, f"d{i}", {"n": i}) for i, t in enumerate(texts)]


@pytest.mark.parametrize("case", params("order"))
def test_order_invariance(case: Case, rankers) -> None:  # noqa: F811
    r = rankers(case)
    docs = _docs(DOCS)
    shuffled = [docs[i] for i in PERM]
    res = r.rank(Q, shuffled)
    assert sorted(res.indices) == list(range(len(docs))), f"{case.id}: not a permutation: {res.indices}"
    for item in res.results:  # ids, texts and metadata travel with their document
        sent = shuffled[item.index]
        assert (item.id, item.text, item.metadata) == (sent.id, sent.text, sent.metadata)
    if case.kind == "list":
        return
    base = np.asarray(r.score(Q, docs))
    close(r.score(Q, shuffled), base[PERM], case, "shuffled candidates: scores must be permuted")
    close(by_index(res), base[PERM], case, "rank() of the shuffled list")


@pytest.mark.parametrize("case", params("determinism"))
def test_determinism(case: Case, rankers) -> None:  # noqa: F811
    import random

    import torch

    r = rankers(case)
    runs = []
    for seed in (1, 2):  # a ranker that draws from the global generators would differ between the runs
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        runs.append(r.score(Q, DOCS))
    assert runs[0] == runs[1], f"{case.id}: two runs differ: {runs[0]} vs {runs[1]}"


@pytest.mark.parametrize("case", params("async"))
def test_async_path_gives_the_sync_scores(case: Case, rankers) -> None:  # noqa: F811
    import asyncio

    r = rankers(case)
    sync = r.rank_many([Q2, Q], [DOCS2, DOCS])
    got = asyncio.run(r.arank_many([Q2, Q], [DOCS2, DOCS]))
    for a, b in zip(got, sync):
        close(by_index(a), by_index(b), case, "arank_many vs rank_many")
