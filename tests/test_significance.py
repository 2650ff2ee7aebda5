"""Paired significance tests and corrections, checked against scipy on the same per-query numbers."""

from __future__ import annotations

import numpy as np
import pytest

from unirank.eval.significance import (
    adjust,
    benjamini_hochberg,
    bootstrap_test,
    holm,
    paired_t_test,
    randomization_test,
    student_t_sf,
)

st = pytest.importorskip("scipy.stats")


def _pair(n: int, seed: int, shift: float = 0.03) -> tuple[np.ndarray, np.ndarray]:
    """Per-query metric-like values in [0, 1] for two systems that differ a little."""
    rng = np.random.default_rng(seed)
    a = rng.random(n)
    b = np.clip(a + rng.normal(shift, 0.12, n), 0.0, 1.0)
    return a, b


@pytest.mark.parametrize("n,seed", [(2, 0), (5, 1), (12, 2), (43, 3), (300, 4)])
def test_t_test_matches_scipy_ttest_rel(n, seed):
    a, b = _pair(n, seed)
    ours = paired_t_test(a, b)
    ref = st.ttest_rel(a, b)
    assert ours.statistic == pytest.approx(ref.statistic, rel=1e-12)
    assert ours.p_value == pytest.approx(ref.pvalue, rel=1e-9, abs=1e-15)
    assert ours.mean_diff == pytest.approx(np.mean(a - b))


def test_t_distribution_tail_matches_scipy():
    for df in (1, 2, 3, 7.5, 30, 299, 5000):
        for t in (-40.0, -3.0, -0.5, 0.0, 0.1, 1.0, 2.5, 8.0, 60.0):
            assert student_t_sf(t, df) == pytest.approx(st.t.sf(t, df), rel=1e-9, abs=1e-300)


def test_t_test_degenerate_differences():
    a = np.array([0.5, 0.6, 0.7])
    same = paired_t_test(a, a)
    assert same.p_value == 1.0 and np.isnan(same.statistic)
    shifted = paired_t_test(a + 0.1, a)
    assert shifted.p_value == 0.0 and shifted.statistic == np.inf


@pytest.mark.parametrize("n,seed", [(6, 0), (10, 5), (13, 7)])
def test_randomization_exact_matches_scipy_permutation_test(n, seed):
    a, b = _pair(n, seed, shift=0.08)
    ours = randomization_test(a, b, n_resamples=2**n)
    assert ours.exact and ours.resamples == 2**n
    ref = st.permutation_test(
        (a, b),
        lambda x, y, axis=-1: np.mean(x - y, axis=axis),
        vectorized=True,
        permutation_type="samples",
        n_resamples=2**n,
        alternative="two-sided",
    )
    assert ours.p_value == pytest.approx(ref.pvalue, rel=1e-12)


def test_randomization_monte_carlo_agrees_with_scipy():
    a, b = _pair(60, 11, shift=0.04)
    ours = randomization_test(a, b, n_resamples=20_000, seed=1)
    assert not ours.exact
    ref = st.permutation_test(
        (a, b),
        lambda x, y, axis=-1: np.mean(x - y, axis=axis),
        vectorized=True,
        permutation_type="samples",
        n_resamples=20_000,
        alternative="two-sided",
        random_state=2,
    )
    se = np.sqrt(ref.pvalue * (1 - ref.pvalue) / 20_000)
    assert abs(ours.p_value - ref.pvalue) < 5 * se + 1e-3
    # and close to the t-test on this many queries (the two tests target the same null)
    assert ours.p_value == pytest.approx(paired_t_test(a, b).p_value, abs=0.03)


def test_bootstrap_agrees_with_scipy_bootstrap():
    a, b = _pair(43, 21, shift=0.05)
    ours = bootstrap_test(a, b, n_resamples=20_000, seed=3, confidence=0.95)
    ref = st.bootstrap(
        (a, b),
        lambda x, y, axis=-1: np.mean(x - y, axis=axis),
        paired=True,
        vectorized=True,
        method="percentile",
        n_resamples=20_000,
        confidence_level=0.95,
        random_state=4,
    )
    sd = np.std(ref.bootstrap_distribution)
    assert ours.ci_low == pytest.approx(ref.confidence_interval.low, abs=0.1 * sd)
    assert ours.ci_high == pytest.approx(ref.confidence_interval.high, abs=0.1 * sd)
    # the same p-value formula on scipy's bootstrap distribution
    d = np.mean(a - b)
    dist = ref.bootstrap_distribution
    ref_p = (np.count_nonzero(np.abs(dist - d) >= abs(d)) + 1) / (len(dist) + 1)
    se = np.sqrt(max(ref_p * (1 - ref_p), 1e-4) / 20_000)
    assert abs(ours.p_value - ref_p) < 5 * se + 1e-3


def test_tests_accept_per_query_mappings_and_reject_mismatches():
    a = {"q1": 0.5, "q2": 0.2, "q3": 0.9}
    b = {"q3": 0.7, "q1": 0.4, "q2": 0.3}
    res = paired_t_test(a, b)
    ref = st.ttest_rel([0.5, 0.2, 0.9], [0.4, 0.3, 0.7])
    assert res.p_value == pytest.approx(ref.pvalue)
    with pytest.raises(ValueError, match="different queries"):
        paired_t_test(a, {"q1": 0.1, "q2": 0.2, "q9": 0.3})
    with pytest.raises(ValueError, match="at least 2"):
        randomization_test([0.1], [0.2])
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_test([0.1, float("nan")], [0.2, 0.3])
    with pytest.raises(ValueError, match="n_resamples"):
        randomization_test([0.1, 0.2], [0.2, 0.3], n_resamples=0)


def test_benjamini_hochberg_matches_scipy():
    rng = np.random.default_rng(0)
    for m in (1, 2, 5, 17):
        p = rng.random(m) ** 3
        assert benjamini_hochberg(p) == pytest.approx(st.false_discovery_control(p, method="bh").tolist())


def test_holm_by_hand_and_properties():
    # sorted 0.01, 0.03, 0.04 -> 3*0.01, max(0.03, 2*0.03), max(0.06, 1*0.04)
    assert holm([0.04, 0.01, 0.03]) == pytest.approx([0.06, 0.03, 0.06])
    rng = np.random.default_rng(1)
    p = rng.random(9) ** 2
    adj = np.array(holm(p))
    assert np.all(adj >= p) and np.all(adj <= 1.0)
    order = np.argsort(p)
    assert np.all(np.diff(adj[order]) >= 0)  # monotone in the raw p order
    assert np.all(adj <= np.minimum(1.0, p * len(p)) + 1e-15)  # never worse than Bonferroni
    assert adjust(p, "none") == pytest.approx(p.tolist())
    with pytest.raises(ValueError, match="unknown correction"):
        adjust(p, "sidak")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm([0.2, 1.5])


def test_bootstrap_ci_matches_scipy_and_the_exact_distribution():
    from unirank.eval.significance import bootstrap_ci

    a, b = _pair(43, 31, shift=0.05)
    ours = bootstrap_ci(a, b, n_resamples=20_000, seed=5)
    assert ours == bootstrap_ci(a, b, n_resamples=20_000, seed=5)  # seeded
    test = bootstrap_test(a, b, n_resamples=20_000, seed=5)
    assert ours == (test.ci_low, test.ci_high)
    ref = st.bootstrap(
        (a, b),
        lambda x, y, axis=-1: np.mean(x - y, axis=axis),
        paired=True,
        vectorized=True,
        method="percentile",
        n_resamples=20_000,
        confidence_level=0.95,
        random_state=6,
    )
    sd = np.std(ref.bootstrap_distribution)
    assert ours[0] == pytest.approx(ref.confidence_interval.low, abs=0.1 * sd)
    assert ours[1] == pytest.approx(ref.confidence_interval.high, abs=0.1 * sd)
    # by hand: differences [0, 0, 1] -> resampled means 0, 1/3, 2/3, 1 with P = 8, 12, 6, 1 / 27;
    # P(mean <= 2/3) = 26/27 < 0.975, so the 95 % interval is [0, 1]
    assert bootstrap_ci([0.5, 0.5, 1.0], [0.5, 0.5, 0.0], n_resamples=50_000, seed=0) == (0.0, 1.0)
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci(a, b, confidence=1.0)
