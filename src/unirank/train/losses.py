"""Ranking losses for fine-tuning cross-encoders: pointwise, pairwise, listwise and distillation.

Every loss takes a padded batch ``scores`` ``[B, G]`` (student logits), ``labels`` / ``teacher`` ``[B, G]``
and a boolean ``mask`` ``[B, G]`` (``False`` = padding slot) and returns a scalar. Padding slots never change
the value or get gradient, whatever they hold (even NaN). The maths runs in float32 with log-softmax and
log-sigmoid.

>>> import torch
>>> loss = get_loss({"name": "kl", "temperature": 2.0})
>>> loss.name, sorted(loss.needs)
('kl', ['teacher'])
>>> s = torch.tensor([[2.0, 0.0, -1.0]])
>>> round(float(loss(s, labels=None, teacher=s.clone(), mask=torch.ones(1, 3, dtype=torch.bool))), 6)
0.0
>>> get_loss("nope")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
unirank.errors.SpecError: unknown loss 'nope'; choose one of: bce, ranknet, margin_mse, softmax_ce, ...
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ..errors import SpecError
from ._loss_base import (
    _FILL,
    RankingLoss,
    _choice,
    _log_softmax,
    _Loss,
    _masked_mean,
    _pair_mask,
    _positive,
    _top_k,
)

if TYPE_CHECKING:
    from torch import Tensor

__all__ = ["LOSS_NAMES", "RankingLoss", "get_loss"]

logger = logging.getLogger(__name__)

LOSS_NAMES = ("bce", "ranknet", "margin_mse", "softmax_ce", "lambdaloss", "kl", "rank_distill")


class BCE(_Loss):
    r"""Pointwise binary cross-entropy on logits:
    :math:`-\frac{1}{N}\sum [y \log\sigma(s) + (1-y)\log\sigma(-s)]` over the ``N`` real slots of the batch,
    with ``y = label / label_max`` (use ``label_max: 3`` for TREC grades 0-3). The loss of monoBERT
    (Nogueira & Cho 2019, "Passage Re-ranking with BERT") and ``torch.nn.BCEWithLogitsLoss``."""

    name = "bce"
    needs = frozenset({"labels"})

    def __init__(self, label_max: float = 1.0) -> None:
        self.label_max = _positive("label_max", label_max)

    def _loss(self, s: Tensor, labels: Tensor | None, teacher: Tensor | None, mask: Tensor) -> Tensor:
        import torch.nn.functional as F

        assert labels is not None
        y = labels / self.label_max
        if bool(((y[mask] < 0) | (y[mask] > 1)).any()):
            raise SpecError(
                f"bce: labels must lie in [0, label_max={self.label_max:g}]; got {labels[mask].min():g}.."
                f"{labels[mask].max():g} (set the loss option label_max to the top grade, e.g. 3 for TREC)"
            )
        per_slot = -(y * F.logsigmoid(s) + (1.0 - y) * F.logsigmoid(-s))
        return _masked_mean(per_slot, mask, s)


class RankNet(_Loss):
    r"""Pairwise logistic loss (Burges et al. 2005, "Learning to Rank using Gradient Descent"):
    :math:`\frac{1}{P}\sum_{(i,j): y_i > y_j} \log(1 + e^{-\sigma (s_i - s_j)})` over the ``P`` pairs of the
    batch (natural log; sentence-transformers' ``RankNetLoss`` defaults to log2, i.e. this value / ln 2)."""

    name = "ranknet"
    needs = frozenset({"labels"})

    def __init__(self, sigma: float = 1.0) -> None:
        self.sigma = _positive("sigma", sigma)

    def _loss(self, s: Tensor, labels: Tensor | None, teacher: Tensor | None, mask: Tensor) -> Tensor:
        import torch.nn.functional as F

        assert labels is not None
        pairs = _pair_mask(labels, mask)
        per_pair = -F.logsigmoid(self.sigma * (s[:, :, None] - s[:, None, :]))
        return _masked_mean(per_pair, pairs, s)


class MarginMSE(_Loss):
    r"""Margin-MSE (Hofstätter et al. 2020, "Improving Efficient Neural Ranking Models with
    Cross-Architecture Knowledge Distillation"):
    :math:`\frac{1}{N}\sum_{b, j \ge 1} ((s_0 - s_j) - (t_0 - t_j))^2` over the ``N`` real non-first
    slots, where slot 0 is the positive of a triple and ``t`` the teacher scores."""

    name = "margin_mse"
    needs = frozenset({"teacher"})

    def _loss(self, s: Tensor, labels: Tensor | None, teacher: Tensor | None, mask: Tensor) -> Tensor:
        assert teacher is not None
        if not bool(mask[:, 0].all()):
            raise ValueError(
                "margin_mse: slot 0 (the positive) is padding in some group; groups must start there"
            )
        diff = (s[:, :1] - s) - (teacher[:, :1] - teacher)
        keep = mask.clone()
        keep[:, 0] = False
        return _masked_mean(diff**2, keep, s)


class SoftmaxCE(_Loss):
    r"""Listwise softmax cross-entropy (ListNet top-one, Cao et al. 2007; the softmax loss of RankT5, Zhuang
    et al. 2023): :math:`-\sum_i p_i \log \mathrm{softmax}(s)_i` averaged over groups, with the target
    ``p = y / sum(y)`` (``target: sum``, TF-Ranking's ``SoftmaxLoss``; groups without a positive label are
    skipped, an all-negative batch gives 0) or ``p = softmax(y)`` (``target: softmax``, original ListNet and
    sentence-transformers' ``ListNetLoss``; every group counts)."""

    name = "softmax_ce"
    needs = frozenset({"labels"})

    def __init__(self, target: str = "sum") -> None:
        self.target = _choice("target", target, ("sum", "softmax"))

    def _loss(self, s: Tensor, labels: Tensor | None, teacher: Tensor | None, mask: Tensor) -> Tensor:
        import torch

        assert labels is not None
        if self.target == "softmax":
            p = _log_softmax(labels, mask).exp() * mask
            groups = mask.any(dim=1)
        else:
            if bool((labels < 0).any()):
                raise ValueError("softmax_ce: labels must be >= 0 with target 'sum' (use target: softmax)")
            total = labels.sum(dim=1, keepdim=True)
            groups = total[:, 0] > 0
            p = labels / torch.where(total > 0, total, 1.0)
        per_group = -(p * _log_softmax(s, mask)).sum(dim=1)
        return _masked_mean(per_group, groups, s)


class KL(_Loss):
    r"""Listwise distillation (Hinton et al. 2015, "Distilling the Knowledge in a Neural Network"):
    :math:`T^2 \cdot \mathrm{KL}(\mathrm{softmax}(t/T) \,\|\, \mathrm{softmax}(s/T))` per group, averaged over
    the groups of the batch (``temperature`` ``T``, default 1)."""

    name = "kl"
    needs = frozenset({"teacher"})

    def __init__(self, temperature: float = 1.0) -> None:
        self.temperature = _positive("temperature", temperature)

    def _loss(self, s: Tensor, labels: Tensor | None, teacher: Tensor | None, mask: Tensor) -> Tensor:
        assert teacher is not None
        t = self.temperature
        log_p = _log_softmax(teacher / t, mask)
        per_group = (log_p.exp() * mask * (log_p - _log_softmax(s / t, mask))).sum(dim=1)
        return _masked_mean(per_group, mask.any(dim=1), s) * (t * t)


def _inv_discount(r: Tensor) -> Tensor:
    """``1 / D(r)`` with the NDCG discount ``D(r) = log2(1 + r)``."""
    import torch

    return 1.0 / torch.log2(1.0 + r)


class LambdaLoss(_Loss):
    r"""LambdaLoss (Wang et al. 2018, "The LambdaLoss Framework for Ranking Metric Optimization"), the
    weighted pairwise loss RankT5 trains with via TF-Ranking. The student's scores place the real docs of a
    group at ranks ``r = 1..n``; gains are :math:`G_i = (2^{y_i} - 1) / \mathrm{maxDCG@k}` and
    :math:`D(r) = \log_2(1 + r)`:

    :math:`-\frac{1}{P}\sum_{y_i > y_j} w_{ij} \log \sigma(\sigma_s (s_i - s_j))` over the ``P`` pairs of the
    batch with ``r_i <= k`` or ``r_j <= k`` (paper Eq. 18; all pairs when ``k`` is null), and ``weighting``:

    - ``ndcg_loss2``: :math:`w = |G_i - G_j| \cdot |1/D(|r_i - r_j|) - 1/D(|r_i - r_j| + 1)|`
    - ``lambdarank``: :math:`w = |G_i - G_j| \cdot |1/D(r_i) - 1/D(r_j)|`
    - ``ndcg_loss2pp`` (default): :math:`\mu \cdot w_{ndcg\_loss2} + w_{lambdarank}`, ``mu`` = 10

    Natural log (sentence-transformers' ``LambdaLoss`` defaults to log2: its value is this one / ln 2).
    Labels must be >= 0; student ties keep the input order."""

    name = "lambdaloss"
    needs = frozenset({"labels"})

    def __init__(
        self, weighting: str = "ndcg_loss2pp", mu: float = 10.0, k: int | None = None, sigma: float = 1.0
    ) -> None:
        self.weighting = _choice("weighting", weighting, ("ndcg_loss2pp", "ndcg_loss2", "lambdarank"))
        self.mu = _positive("mu", mu)
        self.k = _top_k(k)
        self.sigma = _positive("sigma", sigma)

    def _loss(self, s: Tensor, labels: Tensor | None, teacher: Tensor | None, mask: Tensor) -> Tensor:
        import torch
        import torch.nn.functional as F

        assert labels is not None
        if bool((labels < 0).any()):
            raise ValueError("lambdaloss: labels must be >= 0 (gains are 2^label - 1)")
        size = s.shape[1]
        k = min(self.k or size, size)
        order = torch.where(mask, s, _FILL).detach().argsort(dim=1, descending=True, stable=True)
        positions = torch.arange(1, size + 1, device=s.device).expand_as(order)
        rank = torch.empty_like(order).scatter_(1, order, positions).float()  # real docs first: ranks 1..n
        raw_gain = torch.where(mask, torch.pow(2.0, labels) - 1.0, 0.0)
        ideal = raw_gain.sort(dim=1, descending=True).values[:, :k]
        max_dcg = (ideal * _inv_discount(positions[:, :k].float())).sum(dim=1).clamp(min=1e-10)
        gain = raw_gain / max_dcg[:, None]
        gain_diff = (gain[:, :, None] - gain[:, None, :]).abs()
        weight = torch.zeros_like(gain_diff)
        if self.weighting in ("ndcg_loss2", "ndcg_loss2pp"):
            gap = (rank[:, :, None] - rank[:, None, :]).abs().clamp(min=1.0)  # i == j never forms a pair
            delta = (_inv_discount(gap) - _inv_discount(gap + 1.0)).abs()
            weight = weight + (self.mu if self.weighting == "ndcg_loss2pp" else 1.0) * delta * gain_diff
        if self.weighting in ("lambdarank", "ndcg_loss2pp"):
            inv = _inv_discount(rank)
            weight = weight + (inv[:, :, None] - inv[:, None, :]).abs() * gain_diff
        top = rank <= k
        pairs = _pair_mask(labels, mask) & (top[:, :, None] | top[:, None, :])
        per_pair = -weight * F.logsigmoid(self.sigma * (s[:, :, None] - s[:, None, :]))
        return _masked_mean(per_pair, pairs, s)


class RankDistill(_Loss):
    r"""Distillation from a teacher's ranking, as in Rank-DistiLLM (Schlatt et al., ECIR 2025, "Rank-DistiLLM:
    Closing the Effectiveness Gap Between Cross-Encoders and LLMs for Passage Re-Ranking"): the teacher scores
    only give an order (ranks :math:`r_i = 1 + |\{j: t_j > t_i\}|`; tied docs form no pair) and RankNet is
    applied to every pair the teacher orders, :math:`\ell_{ij} = \log(1 + e^{-\sigma (s_i - s_j)})` for
    :math:`t_i > t_j`. ``weighting``:

    - ``none`` (default; what Rank-DistiLLM does): the mean of :math:`\ell_{ij}` over the pairs of the batch.
    - ``inverse_rank_sum`` (FIRST, Reddy et al. 2024): weights :math:`w_{ij} = 1 / (r_i + r_j)`, so mistakes
      at the top cost more; the value is :math:`\sum w_{ij}\ell_{ij} / \sum w_{ij}`.

    ``k`` keeps only pairs whose better doc is in the teacher's top ``k`` (null: all pairs)."""

    name = "rank_distill"
    needs = frozenset({"teacher"})

    def __init__(self, weighting: str = "none", k: int | None = None, sigma: float = 1.0) -> None:
        self.weighting = _choice("weighting", weighting, ("none", "inverse_rank_sum"))
        self.k = _top_k(k)
        self.sigma = _positive("sigma", sigma)

    def _loss(self, s: Tensor, labels: Tensor | None, teacher: Tensor | None, mask: Tensor) -> Tensor:
        import torch.nn.functional as F

        assert teacher is not None
        pairs = _pair_mask(teacher, mask)
        rank = 1.0 + pairs.sum(dim=1).float()  # pairs[b, j, i]: real j ranked strictly above i
        if self.k is not None:
            pairs = pairs & (rank <= self.k)[:, :, None]
        per_pair = -F.logsigmoid(self.sigma * (s[:, :, None] - s[:, None, :]))
        if self.weighting == "none":
            return _masked_mean(per_pair, pairs, s)
        weight = 1.0 / (rank[:, :, None] + rank[:, None, :])
        if not bool(pairs.any()):
            return (s * 0.0).sum()
        return (weight * per_pair)[pairs].sum() / weight[pairs].sum()


_REGISTRY: dict[str, Callable[..., _Loss]] = {
    "bce": BCE,
    "ranknet": RankNet,
    "margin_mse": MarginMSE,
    "softmax_ce": SoftmaxCE,
    "lambdaloss": LambdaLoss,
    "kl": KL,
    "rank_distill": RankDistill,
}
_OPTIONS: dict[str, tuple[str, ...]] = {
    "bce": ("label_max",),
    "ranknet": ("sigma",),
    "margin_mse": (),
    "softmax_ce": ("target",),
    "lambdaloss": ("weighting", "mu", "k", "sigma"),
    "kl": ("temperature",),
    "rank_distill": ("weighting", "k", "sigma"),
}


def get_loss(spec: str | Mapping[str, Any]) -> RankingLoss:
    """The loss named by ``spec``: a name (``"kl"``) or a mapping (``{"name": "kl", "temperature": 2.0}``).

    >>> get_loss({"name": "lambdaloss", "k": 10})
    LambdaLoss(weighting='ndcg_loss2pp', mu=10.0, k=10, sigma=1.0)
    >>> get_loss({"name": "kl", "temp": 2})
    Traceback (most recent call last):
    ...
    unirank.errors.SpecError: loss 'kl': unknown option 'temp'; allowed: temperature
    """
    if isinstance(spec, str):
        name, opts = spec, {}
    elif isinstance(spec, Mapping):
        opts = dict(spec)
        name = opts.pop("name", None)
        if not isinstance(name, str):
            raise SpecError(
                f"a loss mapping needs a 'name' (one of: {', '.join(LOSS_NAMES)}); got {dict(spec)!r}"
            )
    else:
        raise SpecError(f"loss must be a name or a mapping with 'name', got {type(spec).__name__}")
    if name not in _REGISTRY:
        raise SpecError(f"unknown loss {name!r}; choose one of: {', '.join(LOSS_NAMES)}")
    allowed = _OPTIONS[name]
    for key in opts:
        if key not in allowed:
            raise SpecError(
                f"loss {name!r}: unknown option {key!r}; allowed: {', '.join(allowed) or '(none)'}"
            )
    loss = _REGISTRY[name](**opts)
    logger.debug("loss %r", loss)
    return loss
