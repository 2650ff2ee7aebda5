"""Shared machinery of :mod:`unirank.train.losses`: input checks, masking helpers, option validation."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import SpecError

if TYPE_CHECKING:
    from torch import Tensor

_FILL = -1e30  # finite stand-in for -inf in padded slots: exp() underflows to exactly 0, no inf - inf NaNs


class RankingLoss(Protocol):
    """What the trainer calls: ``loss(scores, labels=..., teacher=..., mask=...) -> scalar``."""

    name: str
    needs: frozenset[str]

    def __call__(
        self, scores: Tensor, *, labels: Tensor | None, teacher: Tensor | None, mask: Tensor
    ) -> Tensor: ...


class _Loss:
    """Shared checks: shapes, the ``needs`` inputs, and zeroing padded slots before any arithmetic."""

    name = ""
    needs: frozenset[str] = frozenset()

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({opts})"

    def __call__(
        self, scores: Tensor, *, labels: Tensor | None, teacher: Tensor | None, mask: Tensor
    ) -> Tensor:
        import torch

        if scores.dim() != 2 or tuple(mask.shape) != tuple(scores.shape) or mask.dtype != torch.bool:
            raise ValueError(
                f"{self.name}: scores must be [B, G] and mask a bool tensor of the same shape; "
                f"got scores {tuple(scores.shape)}, mask {tuple(mask.shape)} {mask.dtype}"
            )
        given = {"labels": labels, "teacher": teacher}
        for need in sorted(self.needs):
            t = given[need]
            if t is None:
                raise SpecError(
                    f"loss {self.name!r} needs {need} for every group, but none were given; "
                    f"use data with {need} or a loss that does not need them"
                )
            if tuple(t.shape) != tuple(scores.shape):
                raise ValueError(
                    f"{self.name}: {need} shape {tuple(t.shape)} != scores {tuple(scores.shape)}"
                )
            if not bool(torch.isfinite(t[mask]).all()):
                raise ValueError(f"{self.name}: {need} hold NaN or inf in non-padding slots")
        s = torch.where(mask, scores.float(), torch.zeros((), device=scores.device))
        lab = (
            torch.where(mask, labels.float(), 0.0) if labels is not None and "labels" in self.needs else None
        )
        tea = (
            torch.where(mask, teacher.float(), 0.0)
            if teacher is not None and "teacher" in self.needs
            else None
        )
        return self._loss(s, lab, tea, mask)

    def _loss(self, s: Tensor, labels: Tensor | None, teacher: Tensor | None, mask: Tensor) -> Tensor:
        raise NotImplementedError


def _positive(what: str, value: Any) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise SpecError(f"loss option {what} must be a positive number, got {value!r}")
    return float(value)


def _choice(what: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise SpecError(f"loss option {what} must be one of {', '.join(allowed)}; got {value!r}")
    return str(value)


def _top_k(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SpecError(f"loss option k must be a positive integer or null, got {value!r}")
    return value


def _masked_mean(values: Tensor, keep: Tensor, anchor: Tensor) -> Tensor:
    """Mean of ``values[keep]``; 0 (still attached to the graph through ``anchor``) when nothing is kept."""
    n = int(keep.sum())
    if n == 0:
        return (anchor * 0.0).sum()
    return values[keep].sum() / n


def _pair_mask(better: Tensor, mask: Tensor) -> Tensor:
    """``[B, G, G]``: both slots real and ``better[b, i] > better[b, j]`` (ties give no pair)."""
    both = mask[:, :, None] & mask[:, None, :]
    return both & (better[:, :, None] > better[:, None, :])


def _log_softmax(x: Tensor, mask: Tensor) -> Tensor:
    """Log-softmax over the real slots of each row (0 in padded slots, never inf)."""
    import torch

    filled = torch.where(mask, x, _FILL)
    return torch.where(mask, filled - torch.logsumexp(filled, dim=-1, keepdim=True), 0.0)
