"""Optimizers for fine-tuning: AdamW and Lion, with no weight decay on biases and normalisation weights.

``Lion`` subclasses ``torch.optim.Optimizer`` and is built on first access, so importing this module does not
import torch.

>>> import torch
>>> model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 1))
>>> opt = build_optimizer(model, {"name": "lion", "lr": 3e-5, "weight_decay": 0.1})
>>> type(opt).__name__, [(len(g["params"]), g["weight_decay"]) for g in opt.param_groups]
('Lion', [(2, 0.1), (4, 0.0)])
>>> build_optimizer(model, {"name": "sgd"})
Traceback (most recent call last):
...
unirank.errors.SpecError: unknown optimizer 'sgd'; choose one of: adamw, lion
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ..errors import SpecError

if TYPE_CHECKING:
    import torch

    Lion: Any  # built on first access by the module __getattr__ below

__all__ = ["OPTIMIZER_NAMES", "Lion", "build_optimizer", "param_groups"]

logger = logging.getLogger(__name__)

OPTIMIZER_NAMES = ("adamw", "lion")
_DEFAULTS: dict[str, dict[str, Any]] = {
    "adamw": {"lr": 2e-5, "weight_decay": 0.01, "betas": (0.9, 0.999), "eps": 1e-8},
    "lion": {"lr": 1e-4, "weight_decay": 0.0, "betas": (0.9, 0.99)},
}


def _check(lr: Any, betas: Any, weight_decay: Any, where: str) -> tuple[float, tuple[float, float], float]:
    def number(x: Any) -> bool:
        return not isinstance(x, bool) and isinstance(x, (int, float)) and math.isfinite(x)

    if not number(lr) or lr <= 0:
        raise SpecError(f"{where}: lr must be a positive number, got {lr!r}")
    if not number(weight_decay) or weight_decay < 0:
        raise SpecError(f"{where}: weight_decay must be a number >= 0, got {weight_decay!r}")
    if (
        not isinstance(betas, (list, tuple))
        or len(betas) != 2
        or not all(number(b) and 0 <= b < 1 for b in betas)
    ):
        raise SpecError(f"{where}: betas must be two numbers in [0, 1), e.g. [0.9, 0.99]; got {betas!r}")
    return float(lr), (float(betas[0]), float(betas[1])), float(weight_decay)


@functools.cache
def _lion_class() -> type:
    import torch

    class Lion(torch.optim.Optimizer):
        r"""Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms"). Per step, with gradient
        ``g`` and momentum ``m``:

        .. math::
            p \leftarrow p\,(1 - \eta\lambda);\quad
            p \leftarrow p - \eta\,\mathrm{sign}(\beta_1 m + (1 - \beta_1) g);\quad
            m \leftarrow \beta_2 m + (1 - \beta_2) g

        (decoupled weight decay ``λ``). Every coordinate moves by exactly ``lr``, so the paper advises a
        learning rate 3-10x smaller than AdamW's and a weight decay 3-10x larger.

        >>> import torch
        >>> p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
        >>> opt = Lion([p], lr=0.1)
        >>> p.grad = torch.tensor([0.5, -0.1]); opt.step()
        >>> p.detach().tolist()
        [0.8999999761581421, -1.899999976158142]
        """

        def __init__(
            self,
            params: Iterable[Any],
            lr: float = 1e-4,
            betas: tuple[float, float] = (0.9, 0.99),
            weight_decay: float = 0.0,
        ) -> None:
            lr, betas, weight_decay = _check(lr, betas, weight_decay, "Lion")
            super().__init__(params, {"lr": lr, "betas": betas, "weight_decay": weight_decay})

        @torch.no_grad()
        def step(self, closure: Any = None) -> Any:
            loss = None
            if closure is not None:
                with torch.enable_grad():
                    loss = closure()
            for group in self.param_groups:
                lr, wd = group["lr"], group["weight_decay"]
                beta1, beta2 = group["betas"]
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    if p.grad.is_sparse:
                        raise RuntimeError("Lion does not support sparse gradients")
                    state = self.state[p]
                    if "exp_avg" not in state:
                        state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    m, g = state["exp_avg"], p.grad
                    if wd:
                        p.mul_(1.0 - lr * wd)
                    p.add_(torch.lerp(g, m, beta1).sign_(), alpha=-lr)  # lerp(g, m, b1) = b1*m + (1-b1)*g
                    m.lerp_(g, 1.0 - beta2)  # m = b2*m + (1-b2)*g
            return loss

    return Lion


def __getattr__(name: str) -> Any:
    if name == "Lion":
        return _lion_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two parameter groups: decayed weights, and biases + normalisation weights (LayerNorm, RMSNorm...,
    any module whose class name ends in ``Norm``) at ``weight_decay=0``; frozen parameters are left out.

    >>> import torch
    >>> groups = param_groups(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.LayerNorm(2)), 0.01)
    >>> [(len(g["params"]), g["weight_decay"]) for g in groups]
    [(1, 0.01), (3, 0.0)]
    """
    no_decay: set[str] = set()
    for mod_name, module in model.named_modules():
        is_norm = type(module).__name__.lower().endswith("norm")
        for p_name, _ in module.named_parameters(recurse=False):
            full = f"{mod_name}.{p_name}" if mod_name else p_name
            if is_norm or p_name == "bias" or p_name.endswith("_bias"):
                no_decay.add(full)
    decay, plain = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (plain if name in no_decay else decay).append(p)
    groups = [{"params": decay, "weight_decay": float(weight_decay)}, {"params": plain, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def build_optimizer(params: Any, spec: Mapping[str, Any]) -> torch.optim.Optimizer:
    """The optimizer named by ``spec`` (``{"name": "adamw"|"lion", "lr", "weight_decay", "betas"}``, plus
    ``eps`` for AdamW) over ``params``: a model (split with :func:`param_groups`), parameters, or groups.

    Defaults: AdamW lr 2e-5, weight_decay 0.01, betas [0.9, 0.999], eps 1e-8 (``torch.optim.AdamW``);
    Lion lr 1e-4, weight_decay 0, betas [0.9, 0.99].
    """
    import torch

    if not isinstance(spec, Mapping):
        raise SpecError(f"optimizer must be a mapping like {{name: adamw, lr: 3.0e-5}}, got {spec!r}")
    opts = dict(spec)
    name = opts.pop("name", None)
    if name not in _DEFAULTS:
        raise SpecError(f"unknown optimizer {name!r}; choose one of: {', '.join(OPTIMIZER_NAMES)}")
    allowed = _DEFAULTS[name]
    unknown = sorted(set(opts) - set(allowed))
    if unknown:
        raise SpecError(f"optimizer {name!r}: unknown option(s) {unknown}; allowed: {', '.join(allowed)}")
    cfg = {**allowed, **opts}
    lr, betas, wd = _check(cfg["lr"], cfg["betas"], cfg["weight_decay"], f"optimizer {name!r}")
    if isinstance(params, torch.nn.Module):
        params = param_groups(params, wd)
    logger.debug("optimizer %s lr=%g betas=%s weight_decay=%g", name, lr, betas, wd)
    if name == "lion":
        return _lion_class()(params, lr=lr, betas=betas, weight_decay=wd)  # type: ignore[no-any-return]
    eps = cfg["eps"]
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
        raise SpecError(f"optimizer 'adamw': eps must be a positive number, got {eps!r}")
    return torch.optim.AdamW(params, lr=lr, betas=betas, eps=float(eps), weight_decay=wd)
