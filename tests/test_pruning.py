"""Top-k pruning: exact when the cheap stage orders exactly, compute counted, early exit is faithful."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from unirank.base import PointwiseRanker
from unirank.methods.cross_encoder_exit import early_exit
from unirank.strategies.pruning import TopKPruner, _second_round, _survivors
from unirank.types import ScoreKind


class Overlap(PointwiseRanker):
    score_kind = ScoreKind.UNBOUNDED

    def __init__(self, scale=1.0, shift=0.0, **kw):
        super().__init__(f"overlap*{scale}+{shift}", **kw)
        self.scale, self.shift, self.pairs = scale, shift, 0

    def _score_pairs(self, queries, texts, show_progress=False):
        self.pairs += len(texts)
        # word overlap + a deterministic per-text tie-breaker (str hash() changes with PYTHONHASHSEED)
        s = [
            len(set(q.split()) & set(t.split())) + (zlib.crc32(t.encode()) % 99991) / 1e6
            for q, t in zip(queries, texts)
        ]
        return np.array(s) * self.scale + self.shift


def _docs(n, seed):
    rng = np.random.default_rng(seed)
    words = "rain snow cloud water vapour cat dog purr storm wind".split()
    return [" ".join(rng.choice(words, size=int(rng.integers(2, 9)))) + f" #{i}" for i in range(n)]


@pytest.mark.parametrize("seed", range(5))
def test_exact_when_cheap_stage_orders_exactly(seed):
    full = Overlap()
    cheap = Overlap(scale=3.0, shift=-1.0)  # a monotone transform: exactly the same order
    pr = TopKPruner(full, [(cheap, 15)], k=10, costs=[0.25])
    queries = ["rain cloud storm", "cat purr"]
    docs = [_docs(100, seed), _docs(60, seed + 100)]
    ref = full.rank_many(queries, docs, top_k=10)
    full.pairs = 0
    got = pr.rank_many(queries, docs, top_k=10)
    for a, b in zip(ref, got):
        assert a.indices == b.indices and a.scores == b.scores
    assert pr.stats["cheap_pairs"] == 160 and pr.stats["full_pairs"] == 30 and full.pairs == 30
    assert pr.stats["compute"] == pytest.approx(160 * 0.25 + 30)
    assert pr.compute_saving == pytest.approx(160 / (160 * 0.25 + 30))


def test_pruned_candidates_rank_last_and_short_lists_skip_the_cheap_stage():
    full, cheap = Overlap(), Overlap(scale=2.0)
    pr = TopKPruner(full, [(cheap, 5)], k=3)
    res = pr.rank("rain", _docs(20, 1))
    assert np.isneginf(res.scores[5:]).all() and np.isfinite(res.scores[:5]).all()
    pr.reset_stats()
    pr.rank("rain", _docs(4, 2))  # 4 <= keep: nothing to prune
    assert pr.stats["cheap_pairs"] == 0 and pr.stats["full_pairs"] == 4


class Table(PointwiseRanker):
    """Scores looked up by text (a full model and its noisy cheap twin, with known scores)."""

    score_kind = ScoreKind.UNBOUNDED

    def __init__(self, table, name="table"):
        super().__init__(name)
        self.table, self.pairs = table, 0

    def _score_pairs(self, queries, texts, show_progress=False):
        self.pairs += len(texts)
        return np.array([self.table[t] for t in texts])


def _noisy_pair(seed, n=100, noise=0.1, offset=0.0):
    rng = np.random.default_rng(seed)
    texts = [f"doc {i}" for i in range(n)]
    f = rng.normal(0.0, 1.0, n)
    c = f + offset + rng.normal(0.0, noise, n)
    return texts, Table(dict(zip(texts, f)), "full"), Table(dict(zip(texts, c)), "cheap"), f


def test_second_round_recovers_what_the_cheap_error_puts_below_the_cut():
    """keep=k alone loses true top-10 members to the cheap stage's noise; the second round, sized by the
    error measured on the survivors (offset included), brings them back for a few extra full pairs."""
    plain = fixed = 0
    extra = []
    for seed in range(40):
        texts, full, cheap, f = _noisy_pair(seed, offset=2.5)  # a constant offset is learned, not a cost
        truth = set(np.argsort(-f)[:10].tolist())
        a = TopKPruner(full, [(cheap, 10)], k=10).rank("q", texts, top_k=10)
        pr, full.pairs = TopKPruner(full, [(cheap, 10)], k=10, error_z=3.0), 0
        b = pr.rank("q", texts, top_k=10)
        plain += set(a.indices) == truth
        fixed += set(b.indices) == truth
        assert pr.stats["full_pairs"] == 10 + pr.stats["second_round_pairs"] == full.pairs
        extra.append(pr.stats["second_round_pairs"])
        got = {i: s for i, s in zip(b.indices, b.scores)}
        assert all(got[i] == pytest.approx(f[i]) for i in b.indices)  # full scores, not cheap ones
    assert plain <= 30 and fixed >= 38
    assert 0 < np.mean(extra) < 15


def test_second_round_edge_cases():
    texts, full, cheap, f = _noisy_pair(1, n=30, noise=0.0, offset=-1.0)
    pr = TopKPruner(full, [(cheap, 5)], k=5, error_z=2.0)  # exact up to an offset: nothing to re-check
    assert set(pr.rank("q", texts, top_k=5).indices) == set(np.argsort(-f)[:5].tolist())
    assert pr.stats["second_round_pairs"] == 0 and full.pairs == 5
    _, full, cheap, _ = _noisy_pair(2, n=30, noise=0.5)
    pr = TopKPruner(full, [(cheap, 5)], k=5, error_z=1e9)  # an unbounded error re-checks everything
    pr.rank("q", texts)
    assert pr.stats["second_round_pairs"] == 25 and full.pairs == 30
    pr.reset_stats()
    pr.rank("q", texts[:4])  # nothing pruned: no second round
    assert pr.stats["second_round_pairs"] == 0
    with pytest.raises(ValueError, match="error_z"):
        TopKPruner(full, [(cheap, 5)], k=5, error_z=-1.0)


def test_second_round_rechecks_everything_where_the_error_cannot_be_measured():
    texts, full, cheap, f = _noisy_pair(3, n=12, noise=1.0)
    for keep, k, z in ((1, 1, 2.0), (3, 3, float("inf"))):  # one survivor: no spread; z = inf: unbounded
        pr = TopKPruner(full, [(cheap, keep)], k=k, error_z=z)
        res = pr.rank("q", texts, top_k=k)
        assert pr.stats["second_round_pairs"] == 12 - keep
        assert set(res.indices) == set(np.argsort(-f)[:k].tolist())
    c = np.array([5.0, 4.0, 3.0, 2.0, 1.0])
    alive = np.array([0, 1, 2])
    # full scores failed (NaN / -inf) on the survivors: the boundary is unknown
    assert _second_round(c, np.array([np.nan, -np.inf, 1.0, 0, 0]), alive, 2, 1.0).tolist() == [3, 4]
    # a +inf full score is a score (the best), not a failure
    got = _second_round(c, np.array([np.inf, 4.0, 3.0, 0, 0]), alive, 2, 0.0)
    assert got.tolist() == []


def test_survivors_margin_and_nan():
    s = np.array([5.0, 1.0, 4.9, 3.0, np.nan])
    assert _survivors(s, 2, 0.0).tolist() == [0, 2, 4]  # NaN never prunes
    assert _survivors(s[:4], 1, 0.2).tolist() == [0, 2]  # within the margin of the last kept
    assert _survivors(s[:4], 3, 0.0).tolist() == [0, 2, 3]


def test_bad_arguments():
    r = Overlap()
    with pytest.raises(ValueError):
        TopKPruner(r, [], k=3)
    with pytest.raises(ValueError):
        TopKPruner(r, [(r, 5)], k=0)
    with pytest.raises(ValueError):
        TopKPruner(r, [(r, 5)], k=3, costs=[1.0, 2.0])
    with pytest.raises(ValueError):
        TopKPruner(r, [(r, 5)], k=3, margin=-1)


def test_early_exit_matches_hidden_states_oracle(make_tiny_bert):
    import torch

    from unirank import Reranker
    from unirank.backends import hf

    path = make_tiny_bert("seqcls", seed=21)
    ce = Reranker(f"ce:{path}", device="cpu")
    docs = _docs(12, 3)
    before = ce.score("rain cloud", docs)
    ee = early_exit(ce, 1)
    assert ee.pruning_cost == pytest.approx(0.5)
    got = np.array(ee.score("rain cloud", docs))
    feats = hf.tokenize(ce.tokenizer, ["rain cloud"] * len(docs), docs, ce.max_length)
    with torch.inference_mode():
        inputs = hf.collate(feats, ce.tokenizer, "cpu")
        h1 = ce.model.bert(**inputs, output_hidden_states=True).hidden_states[1]
        oracle = ce.model.classifier(ce.model.bert.pooler(h1))[:, 0].numpy()
    np.testing.assert_allclose(got, oracle, atol=1e-5)
    assert ce.score("rain cloud", docs) == before  # the original keeps all its layers
    np.testing.assert_allclose(early_exit(ce, 2).score("rain cloud", docs), before, atol=1e-6)
    with pytest.raises(ValueError):
        early_exit(ce, 3)
    pr = TopKPruner(ce, [(ee, 6)], k=3)
    res = pr.rank("rain cloud", docs, top_k=3)
    assert len(res) == 3 and pr.stats["compute"] == pytest.approx(12 * 0.5 + 6)


@pytest.mark.parametrize("num_labels", [1, 2])
def test_fitted_exit_head_is_the_ridge_fit_and_scores_linearly(make_tiny_bert, num_labels):
    import torch

    from unirank import Reranker
    from unirank.backends import hf
    from unirank.methods.cross_encoder_exit import fit_exit_head

    path = make_tiny_bert("seqcls", num_labels=num_labels, seed=22)
    ce = Reranker(f"ce:{path}", device="cpu")
    queries = ["rain cloud", "purring cats", "entropy of gas", "water cycle"]
    docs = [_docs(20, 5 + i) for i in range(len(queries))]
    head = fit_exit_head(ce, 1, queries, docs, l2=1e-6)
    assert head.pairs == 80 and head.weight.shape == (2 * ce.model.config.hidden_size,)
    # oracle: numpy least squares (with intercept) of the full score on the layer-1 CLS + mean state
    qs = [q for q, d in zip(queries, docs) for _ in d]
    feats = hf.tokenize(ce.tokenizer, qs, [x for d in docs for x in d], ce.max_length)
    with torch.inference_mode():
        inputs = hf.collate(feats, ce.tokenizer, "cpu")
        h1 = ce.model(**inputs, output_hidden_states=True).hidden_states[1].numpy().astype(np.float64)
    mask = inputs["attention_mask"].numpy()[:, :, None]
    cls = np.hstack([h1[:, 0], (h1 * mask).sum(1) / mask.sum(1)])  # CLS state, masked mean
    full = np.concatenate([ce.score(q, d) for q, d in zip(queries, docs)])
    design = np.hstack([cls, np.ones((len(cls), 1))])
    coef = np.linalg.lstsq(design, full, rcond=None)[0]
    np.testing.assert_allclose(design @ coef, cls @ head.weight + head.bias, atol=2e-3)
    resid = full - (cls @ head.weight + head.bias)
    centred = full - full.mean()
    assert head.r2 == pytest.approx(1 - resid @ resid / (centred @ centred), abs=1e-4)
    # early_exit with the head scores exactly w . feats_1 + b, and leaves the original model intact
    ee = early_exit(ce, 1, head=head)
    got = np.concatenate([ee.score(q, d) for q, d in zip(queries, docs)])
    np.testing.assert_allclose(got, cls @ head.weight + head.bias, atol=1e-4)
    np.testing.assert_allclose(np.concatenate([ce.score(q, d) for q, d in zip(queries, docs)]), full)
    with pytest.raises(ValueError, match="layer 1"):
        early_exit(ce, 2, head=head)
    other = type(head)(1, np.zeros(6, np.float32), 0.0, 1.0, 0.0, 2)  # fitted on another model
    with pytest.raises(ValueError, match="another model"):
        early_exit(ce, 1, head=other)
    assert head == head and head != other  # compared by identity (it holds an array)
    with pytest.raises(ValueError):
        fit_exit_head(ce, 3, queries, docs)


def test_int8_cheap_stage_before_the_fp32_model(make_tiny_bert):
    """The measured setup of docs/benchmarks-speed.md: ONNX int8 twin as the cheap stage, ONNX fp32 as the
    full model. Survivors are the int8 top ``keep`` and carry exactly the fp32 scores."""
    pytest.importorskip("onnxruntime")
    from unirank import Reranker

    path = make_tiny_bert("seqcls", seed=21)
    full = Reranker(f"ce:{path}", device="cpu", backend="onnx")
    cheap = Reranker(f"ce:{path}", device="cpu", backend="onnx", quantize="int8")
    pruner = TopKPruner(full, [(cheap, 8)], k=3, costs=[0.4])
    docs = _docs(20, seed=3)
    query = "rain cloud storm"
    got = pruner.rank(query, docs)
    ref = np.array(full.score(query, docs))
    alive = set(_survivors(np.array(cheap.score(query, docs)), 8, 0.0).tolist())
    by_index = {r.index: r.score for r in got}
    assert {i for i, s in by_index.items() if np.isfinite(s)} == alive
    for i in alive:
        assert by_index[i] == pytest.approx(ref[i], abs=1e-6)
    top = [r.index for r in got.top(3)]
    assert top == sorted(alive, key=lambda i: -ref[i])[:3]
    assert pruner.stats["full_pairs"] == 8 and pruner.stats["cheap_pairs"] == 20
    assert pruner.compute_saving == pytest.approx(20 / (20 * 0.4 + 8))


def test_int8_cheap_stage_with_the_error_sized_second_round(make_tiny_bert):
    """The same setup with ``error_z``: the second round adds exactly the pruned candidates that
    ``_second_round`` picks from the int8 and fp32 scores, and they too carry the fp32 scores."""
    pytest.importorskip("onnxruntime")
    from unirank import Reranker

    path = make_tiny_bert("seqcls", seed=21)
    full = Reranker(f"ce:{path}", device="cpu", backend="onnx")
    cheap = Reranker(f"ce:{path}", device="cpu", backend="onnx", quantize="int8")
    docs, query = _docs(30, seed=4), "rain cloud storm"
    ref, c = np.array(full.score(query, docs)), np.array(cheap.score(query, docs))
    first = _survivors(c, 3, 0.0)
    known = np.full(len(docs), -np.inf)
    known[first] = ref[first]
    sizes = []
    for z in (0.0, 2.0, 5.0, 10.0, 20.0, 50.0, 1e6):
        expected = set(first.tolist()) | set(_second_round(c, known, first, 3, z).tolist())
        pruner = TopKPruner(full, [(cheap, 3)], k=3, error_z=z)
        by_index = {r.index: r.score for r in pruner.rank(query, docs)}
        assert {i for i, s in by_index.items() if np.isfinite(s)} == expected
        assert all(by_index[i] == pytest.approx(ref[i], abs=1e-6) for i in expected)
        assert pruner.stats["second_round_pairs"] == len(expected) - 3
        sizes.append(len(expected))
    assert sizes == sorted(sizes) and sizes[-1] == 30, sizes  # wider error bands re-check more ...
    assert any(3 < n < 30 for n in sizes), sizes  # ... some but not all in between
