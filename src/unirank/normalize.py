"""Score normalisation and calibration: turning raw scores into comparable 0..1 values.

``normalize="auto"`` follows the ranker's :class:`~unirank.types.ScoreKind`: logits go through a
sigmoid, probabilities stay, cosine similarities map from [-1, 1] to [0, 1], and scores with no absolute
meaning (BM25, rank-only) are min-max scaled *within the query* (so they are comparable across documents of
one query only — the result says so in ``RankedResults.normalized``). ``"calibrated"`` uses a Platt
calibrator fitted on labelled data (:meth:`unirank.base.Ranker.calibrate`), which is what makes a threshold
carry across models.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .types import ScoreKind

__all__ = ["NORMALIZATIONS", "PlattCalibrator", "minmax", "normalize_scores", "sigmoid", "zscore"]

NORMALIZATIONS = ("none", "auto", "sigmoid", "minmax", "zscore", "calibrated")


def sigmoid(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return np.where(x >= 0, 1.0 / (1.0 + np.exp(-np.abs(x))), np.exp(-np.abs(x)) / (1.0 + np.exp(-np.abs(x))))


def minmax(x: np.ndarray) -> np.ndarray:
    """Min-max to [0, 1]; a constant list maps to all 1.0 (every document is equally the best)."""
    x = np.asarray(x, dtype=np.float64)
    finite = x[np.isfinite(x)]
    if finite.size == 0:
        return x.copy()
    lo, hi = finite.min(), finite.max()
    if hi - lo <= 0:
        return np.where(np.isfinite(x), 1.0, x)
    return (x - lo) / (hi - lo)


def zscore(x: np.ndarray) -> np.ndarray:
    """Standard score (mean 0, std 1); a constant list maps to all 0.0. Not bounded to 0..1."""
    x = np.asarray(x, dtype=np.float64)
    finite = x[np.isfinite(x)]
    if finite.size == 0:
        return x.copy()
    sd = finite.std()
    return (x - finite.mean()) / sd if sd > 0 else np.where(np.isfinite(x), 0.0, x)


@dataclass
class PlattCalibrator:
    """``p(relevant | s) = sigmoid(a * s + b)``, fitted by regularised logistic regression (Newton).

    >>> cal = PlattCalibrator.fit([-2.0, -1.0, 1.0, 2.0], [0, 0, 1, 1])
    >>> [round(float(p), 2) for p in cal([-3.0, 0.0, 3.0])]  # Platt's smoothed targets: never 0 or 1
    [0.12, 0.5, 0.88]
    """

    a: float
    b: float

    @classmethod
    def fit(cls, scores: Sequence[float], labels: Sequence[int | bool], l2: float = 1e-3) -> PlattCalibrator:
        s = np.asarray(scores, dtype=np.float64)
        y = np.asarray(labels, dtype=np.float64)
        if s.shape != y.shape or s.size == 0:
            raise ValueError("scores and labels must be non-empty and of equal length")
        if y.min() == y.max():
            raise ValueError("calibration needs both relevant and non-relevant examples")
        # Platt's target smoothing avoids infinite weights on separable data.
        n_pos, n_neg = float(y.sum()), float((1 - y).sum())
        t = np.where(y > 0, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
        mu, sd = s.mean(), s.std() or 1.0
        z = (s - mu) / sd
        w = np.zeros(2)
        x = np.stack([z, np.ones_like(z)], axis=1)
        for _ in range(100):
            p = sigmoid(x @ w)
            grad = x.T @ (p - t) + l2 * np.array([w[0], 0.0])
            hess = (x * (p * (1 - p))[:, None]).T @ x + l2 * np.diag([1.0, 0.0]) + 1e-12 * np.eye(2)
            step = np.linalg.solve(hess, grad)
            w -= step
            if np.abs(step).max() < 1e-10:
                break
        a = w[0] / sd
        return cls(a=float(a), b=float(w[1] - a * mu))

    def __call__(self, scores: Sequence[float] | np.ndarray) -> np.ndarray:
        return sigmoid(self.a * np.asarray(scores, dtype=np.float64) + self.b)

    def to_dict(self) -> dict[str, float]:
        return {"a": self.a, "b": self.b}


def normalize_scores(
    scores: Sequence[float] | np.ndarray,
    kind: ScoreKind,
    how: str | None,
    calibrator: PlattCalibrator | None = None,
) -> tuple[np.ndarray, str | None]:
    """Return ``(normalised scores, name of the map applied)``; ``how=None`` / ``"none"``: unchanged."""
    x = np.asarray(scores, dtype=np.float64)
    if how is None or how == "none":
        return x, None
    if how not in NORMALIZATIONS:
        raise ValueError(f"unknown normalize={how!r}; expected one of {NORMALIZATIONS}")
    if how == "calibrated":
        if calibrator is None:
            raise ValueError(
                "normalize='calibrated' needs a calibrator: call "
                "ranker.calibrate(queries, docs_lists, labels) "
                "or pass calibrator=PlattCalibrator(a, b) when creating the ranker"
            )
        return calibrator(x), "calibrated"
    if how == "sigmoid":
        return sigmoid(x), "sigmoid"
    if how == "minmax":
        return minmax(x), "minmax"
    if how == "zscore":
        return zscore(x), "zscore"
    # auto: by what the scores mean
    if kind is ScoreKind.LOGIT:
        return sigmoid(x), "sigmoid"
    if kind is ScoreKind.PROBABILITY:
        return np.clip(x, 0.0, 1.0), "probability"
    if kind is ScoreKind.SIMILARITY:
        return np.clip((x + 1.0) / 2.0, 0.0, 1.0), "cosine01"
    return minmax(x), "minmax"


def is_finite(x: float) -> bool:
    return not (math.isnan(x) or math.isinf(x))
