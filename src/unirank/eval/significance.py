"""Paired significance tests over per-query metric values, and multiple-comparison correction.

Everything is plain numpy (no scipy needed at run time); the test suite checks each test against scipy's
own implementation on the same numbers.

- :func:`paired_t_test`: Student's paired t-test (two-sided), the p-value from the t distribution through a
  regularised incomplete beta function.
- :func:`randomization_test`: paired randomisation (sign-flip permutation) test of the mean difference;
  exact (every one of the ``2**n`` sign patterns) when ``2**n <= n_resamples``, else Monte Carlo with the
  ``(count + 1) / (n_resamples + 1)`` estimate.
- :func:`bootstrap_test`: paired bootstrap test of the mean difference (the bootstrap distribution shifted to
  the null, Efron & Tibshirani 1993, §16.4) with a percentile confidence interval.
- :func:`bootstrap_ci`: paired bootstrap percentile confidence interval of the mean difference (seeded; the
  same resamples as :func:`bootstrap_test` with the same seed).
- :func:`holm` (Holm-Bonferroni, controls the family-wise error) and :func:`benjamini_hochberg` (controls
  the false discovery rate) adjust a family of p-values.

>>> a = [0.50, 0.62, 0.31, 0.80, 0.45, 0.70, 0.66, 0.52]
>>> b = [0.41, 0.60, 0.30, 0.61, 0.47, 0.52, 0.60, 0.50]
>>> round(paired_t_test(a, b).p_value, 4)
0.0434
>>> randomization_test(a, b).exact
True
>>> [round(p, 3) for p in holm([0.01, 0.04, 0.03])]
[0.03, 0.06, 0.06]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = [
    "CORRECTIONS",
    "TESTS",
    "TestResult",
    "adjust",
    "benjamini_hochberg",
    "bootstrap_ci",
    "bootstrap_test",
    "holm",
    "paired_arrays",
    "paired_t_test",
    "randomization_test",
    "student_t_sf",
]

TESTS = ("t", "randomization", "bootstrap")
CORRECTIONS = ("holm", "bh", "none")


@dataclass(frozen=True)
class TestResult:
    """One paired test of ``a`` against ``b``: ``mean_diff = mean(a - b)``, two-sided ``p_value``."""

    __test__ = False  # not a pytest class

    test: str
    statistic: float
    p_value: float
    mean_diff: float
    n: int
    resamples: int = 0
    exact: bool = False
    ci_low: float = math.nan
    ci_high: float = math.nan

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def paired_arrays(a: Sequence[float] | Mapping[str, float], b: Sequence[float] | Mapping[str, float]):
    """Two aligned float arrays; mappings (per-query values) are aligned on their keys, which must match."""
    if isinstance(a, Mapping) or isinstance(b, Mapping):
        if not (isinstance(a, Mapping) and isinstance(b, Mapping)):
            raise TypeError("pass both systems as sequences or both as {qid: value} mappings")
        if set(a) != set(b):
            only = sorted(set(a) ^ set(b))
            raise ValueError(f"the two systems were scored on different queries (e.g. {only[:3]})")
        keys = sorted(a)
        a, b = [a[k] for k in keys], [b[k] for k in keys]
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"paired samples need equal 1-d shapes, got {x.shape} and {y.shape}")
    if len(x) < 2:
        raise ValueError(f"a paired test needs at least 2 queries, got {len(x)}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("paired samples contain NaN or infinite values")
    return x, y


# -- Student t distribution -------------------------------------------------------------------------------
def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        even = m * (b - m) * x / ((qam + m2) * (a + m2))
        odd = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        for num in (even, odd):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta ``I_x(a, b)``."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    ln_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(ln_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(ln_front) * _betacf(b, a, 1.0 - x) / b


def student_t_sf(t: float, df: float) -> float:
    """Survival function ``P(T > t)`` of Student's t with ``df`` degrees of freedom.

    >>> round(student_t_sf(2.0, 10), 6)
    0.036694
    """
    if df <= 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    if math.isinf(t):
        return 0.0 if t > 0 else 1.0
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return tail if t > 0 else 1.0 - tail


def paired_t_test(a: Any, b: Any) -> TestResult:
    """Two-sided paired t-test of ``mean(a - b) == 0`` (same numbers as ``scipy.stats.ttest_rel``).

    A constant non-zero difference gives ``t = ±inf, p = 0``; all-zero differences give ``t = nan, p = 1``.
    """
    x, y = paired_arrays(a, b)
    d = x - y
    n = len(d)
    mean = float(np.mean(d))
    sd = float(np.std(d, ddof=1))
    if sd == 0.0 or sd <= 1e-15 * max(1.0, abs(mean)):
        t = math.nan if mean == 0.0 else math.copysign(math.inf, mean)
        return TestResult("t", t, 1.0 if mean == 0.0 else 0.0, mean, n)
    t = mean / (sd / math.sqrt(n))
    p = min(1.0, 2.0 * student_t_sf(abs(t), n - 1))
    return TestResult("t", t, p, mean, n)


def randomization_test(a: Any, b: Any, n_resamples: int = 10_000, seed: int | None = 0) -> TestResult:
    """Paired randomisation test: the mean difference against its distribution under random sign flips.

    Exact when ``2**n <= n_resamples``; the two-sided p-value counts ``|T*| >= |T|``.
    """
    x, y = paired_arrays(a, b)
    _check_resamples(n_resamples)
    d = x - y
    n = len(d)
    obs = float(np.mean(d))
    exact = n <= 62 and 2**n <= n_resamples
    tol = 1e-12 * max(1.0, float(np.max(np.abs(d))))
    count, total = 0, 0
    rng = np.random.default_rng(seed)
    chunk = max(1, min(n_resamples, 2**20 // max(n, 1)))
    todo = 2**n if exact else n_resamples
    start = 0
    while start < todo:
        size = min(chunk, todo - start)
        if exact:
            codes = np.arange(start, start + size, dtype=np.int64)[:, None]
            signs = 1.0 - 2.0 * ((codes >> np.arange(n, dtype=np.int64)) & 1)
        else:
            signs = rng.choice(np.array([-1.0, 1.0]), size=(size, n))
        null = signs @ d / n
        count += int(np.count_nonzero(np.abs(null) >= abs(obs) - tol))
        total += size
        start += size
    p = count / total if exact else (count + 1) / (total + 1)
    return TestResult("randomization", obs, min(1.0, p), obs, n, total, exact)


def bootstrap_test(
    a: Any, b: Any, n_resamples: int = 10_000, seed: int | None = 0, confidence: float = 0.95
) -> TestResult:
    """Paired bootstrap test of ``mean(a - b) == 0`` with a percentile confidence interval.

    The p-value is ``(#{|m* - m| >= |m|} + 1) / (B + 1)`` over ``B`` bootstrap means ``m*`` of the
    differences (the bootstrap distribution shifted to mean 0 under the null).
    """
    x, y = paired_arrays(a, b)
    d = x - y
    obs = float(np.mean(d))
    means = _bootstrap_means(d, n_resamples, seed)
    low, high = _percentile_ci(means, confidence)
    tol = 1e-12 * max(1.0, float(np.max(np.abs(d))))
    count = int(np.count_nonzero(np.abs(means - obs) >= abs(obs) - tol))
    p = (count + 1) / (n_resamples + 1)
    return TestResult("bootstrap", obs, min(1.0, p), obs, len(d), n_resamples, False, low, high)


def bootstrap_ci(
    a: Any, b: Any, n_resamples: int = 10_000, seed: int | None = 0, confidence: float = 0.95
) -> tuple[float, float]:
    """Paired bootstrap percentile interval of ``mean(a - b)``: queries resampled with replacement.

    Seeded: the same ``seed`` gives the same interval (and the resamples of :func:`bootstrap_test`).

    >>> low, high = bootstrap_ci([0.5, 0.7, 0.9, 0.6], [0.4, 0.6, 0.5, 0.6], n_resamples=2000)
    >>> round(low, 3), round(high, 3)
    (0.025, 0.325)
    """
    x, y = paired_arrays(a, b)
    return _percentile_ci(_bootstrap_means(x - y, n_resamples, seed), confidence)


def _bootstrap_means(d: np.ndarray, n_resamples: int, seed: int | None) -> np.ndarray:
    _check_resamples(n_resamples)
    n = len(d)
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples)
    chunk = max(1, 2**20 // n)
    for start in range(0, n_resamples, chunk):
        size = min(chunk, n_resamples - start)
        means[start : start + size] = d[rng.integers(0, n, size=(size, n))].mean(axis=1)
    return means


def _percentile_ci(means: np.ndarray, confidence: float) -> tuple[float, float]:
    if isinstance(confidence, bool) or not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    alpha = 1.0 - confidence
    low, high = np.quantile(means, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(low), float(high)


def _check_resamples(n_resamples: int) -> None:
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, int) or n_resamples < 1:
        raise ValueError(f"n_resamples must be a positive integer, got {n_resamples!r}")


# -- multiple comparisons ---------------------------------------------------------------------------------
def _pvalues(pvalues: Sequence[float]) -> np.ndarray:
    p = np.asarray(pvalues, dtype=float)
    if p.ndim != 1:
        raise ValueError("p-values must be a flat sequence")
    if np.any(np.isnan(p)) or np.any((p < 0) | (p > 1)):
        raise ValueError(f"p-values must lie in [0, 1], got {p.tolist()}")
    return p


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down; family-wise error control), in the input order."""
    p = _pvalues(pvalues)
    m = len(p)
    order = np.argsort(p, kind="stable")
    stepped = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out = np.empty(m)
    out[order] = np.minimum(1.0, stepped)
    return out.tolist()


def benjamini_hochberg(pvalues: Sequence[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (step-up; false discovery rate control), in the input order.

    >>> [round(p, 4) for p in benjamini_hochberg([0.01, 0.04, 0.03])]
    [0.03, 0.04, 0.04]
    """
    p = _pvalues(pvalues)
    m = len(p)
    order = np.argsort(p, kind="stable")
    scaled = p[order] * m / np.arange(1, m + 1)
    stepped = np.minimum.accumulate(scaled[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(1.0, stepped)
    return out.tolist()


def adjust(pvalues: Sequence[float], method: str = "holm") -> list[float]:
    """Adjust a family of p-values: ``"holm"``, ``"bh"`` (Benjamini-Hochberg) or ``"none"``."""
    key = str(method).lower().replace("-", "").replace("_", "")
    if key in ("holm", "holmbonferroni"):
        return holm(pvalues)
    if key in ("bh", "benjaminihochberg", "fdr"):
        return benjamini_hochberg(pvalues)
    if key == "none":
        return _pvalues(pvalues).tolist()
    raise ValueError(f"unknown correction {method!r}; use one of {CORRECTIONS}")


def run_test(name: str, a: Any, b: Any, n_resamples: int = 10_000, seed: int | None = 0) -> TestResult:
    """Run the test called ``name`` (one of :data:`TESTS`)."""
    if name == "t":
        return paired_t_test(a, b)
    if name == "randomization":
        return randomization_test(a, b, n_resamples, seed)
    if name == "bootstrap":
        return bootstrap_test(a, b, n_resamples, seed)
    raise ValueError(f"unknown significance test {name!r}; use one of {TESTS}")
