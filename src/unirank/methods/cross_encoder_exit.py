"""Early exit for a torch cross-encoder: the same model stopped after its first ``L`` layers, the natural
cheap stage of :class:`~unirank.strategies.pruning.TopKPruner`.

:func:`early_exit` costs ``L / num_layers`` of a full forward. A model's own head was trained on the last
layer and says little at layer ``L``, so :func:`fit_exit_heads` distils the full score into a linear head per
early layer (ridge regression on the CLS + mean state, fitted once on unlabelled (query, candidate) pairs)
and ``early_exit(ce, L, head)`` scores with it. Both run the engine (:mod:`unirank.backends.hf`), which is
why they live here, next to the cross-encoder, and not with the (engine-free) pruning strategy.
"""

from __future__ import annotations

import copy
import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..backends import hf
from ..types import Document

__all__ = ["ExitHead", "early_exit", "fit_exit_head", "fit_exit_heads"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class ExitHead:
    """A linear read-out of the layer-``num_layers`` hidden states, fitted to predict the full model's score.

    Features: the CLS state and the mask-weighted mean of all token states after ``num_layers`` layers
    (``2 * hidden`` values). ``residual_std`` and ``r2`` are measured on the pairs it was fitted on.
    """

    num_layers: int
    weight: np.ndarray
    bias: float
    residual_std: float
    r2: float
    pairs: int


def _encoder_layers(model: Any) -> tuple[str, Any, Any, Any]:
    try:
        return hf.encoder_layers(model)
    except TypeError as exc:
        raise TypeError(f"{exc}; early exit is not supported") from None


def _exit_features(hidden: Any, mask: Any) -> Any:
    """CLS state and masked mean of ``hidden`` (batch, tokens, dim) -> (batch, 2 * dim), float32."""
    hidden = hidden.float()  # fp16 / bf16 sums over many tokens overflow or round
    m = mask.unsqueeze(-1).to(hidden.dtype)
    mean = (hidden * m).sum(1) / m.sum(1).clamp(min=1)
    return __import__("torch").cat([hidden[:, 0], mean], -1)


def fit_exit_heads(
    ranker: Any,
    layers: Sequence[int],
    queries: Sequence[str],
    docs_lists: Sequence[Sequence[str | Document]],
    l2: float = 1e-2,
) -> dict[int, ExitHead]:
    """Distil a torch cross-encoder's score into a linear head on each of its early ``layers``.

    One forward per (query, document) pair with ``output_hidden_states`` gives every early state and the
    full score; each head is the ridge-regression fit (penalty ``l2`` times the mean feature variance) of
    the full score on that layer's CLS + mean-pooled state (pairs that fail to score are left out). Fit on
    queries other than those you evaluate on. The target is the torch model's score, also for a ranker that
    runs ONNX / int8 as its full stage. A fitted head turns :func:`early_exit` into a cheap stage that
    *predicts* the full model, where the model's own head (trained on the last layer) carries little
    signal at early layers.

    >>> import tempfile
    >>> from unirank import Reranker
    >>> from unirank.bench import build_minilm_cross_encoder
    >>> ce = Reranker(f"ce:{build_minilm_cross_encoder(tempfile.mkdtemp())}", device="cpu")
    >>> docs = [["rain falls from clouds", "sunny day", "snow"], ["cats purr", "dogs bark", "fish swim"]]
    >>> heads = fit_exit_heads(ce, [2], ["what causes rain", "why do cats purr"], docs)
    >>> from unirank.strategies.pruning import TopKPruner
    >>> pruner = TopKPruner(ce, [(early_exit(ce, 2, heads[2]), 2)], k=1)
    >>> len(pruner.rank("rain", ["sun", "rain falls", "snow"])), pruner.stats["full_pairs"]
    (3, 2)
    """
    _, _, _, blocks = _encoder_layers(ranker.model)
    layers = sorted({int(x) for x in layers})
    if not layers or not all(1 <= x <= len(blocks) for x in layers):
        raise ValueError(f"layers must be in 1..{len(blocks)}; got {layers}")
    if len(queries) != len(docs_lists):
        raise ValueError("queries and docs_lists must have the same length")
    torch, _ = hf.torch_modules()
    qs = [q for q, d in zip(queries, docs_lists) for _ in d]
    texts = [x.text if isinstance(x, Document) else str(x) for d in docs_lists for x in d]
    if len(texts) < 2:
        raise ValueError("fitting an exit head needs at least 2 (query, document) pairs")
    feats = hf.tokenize(ranker.tokenizer, qs, texts, ranker.max_length)

    def fwd(batch: list[dict[str, list[int]]]) -> np.ndarray:
        inputs = hf.collate(batch, ranker.tokenizer, ranker.device)
        out = ranker.model(**inputs, output_hidden_states=True)
        parts = [_exit_features(out.hidden_states[x], inputs["attention_mask"]).cpu().numpy() for x in layers]
        return np.concatenate([*parts, ranker._logits_to_scores(out.logits)[:, None]], axis=1)

    with torch.inference_mode():
        flat = hf.run_model(feats, fwd, max_tokens=ranker.max_tokens_per_batch, batch_size=ranker.batch_size)
    flat = flat[np.isfinite(flat).all(axis=1)]  # pairs that failed to score carry no information
    if len(flat) < 2:
        raise ValueError("fewer than 2 (query, document) pairs could be scored; cannot fit an exit head")
    y = flat[:, -1].astype(np.float64)
    width = (flat.shape[1] - 1) // len(layers)
    heads = {}
    for i, layer in enumerate(layers):
        x = flat[:, i * width : (i + 1) * width].astype(np.float64)
        mx, my = x.mean(0), y.mean()
        xc, yc = x - mx, y - my
        gram = xc.T @ xc
        lam = max(l2 * float(np.trace(gram)) / gram.shape[0], 1e-8)
        w = np.linalg.solve(gram + lam * np.eye(gram.shape[0]), xc.T @ yc)
        resid = yc - xc @ w
        r2 = 1.0 - float(resid @ resid) / max(float(yc @ yc), 1e-30)
        b = float(my - mx @ w)
        heads[layer] = ExitHead(layer, w.astype(np.float32), b, float(resid.std()), r2, len(y))
    return heads


def fit_exit_head(
    ranker: Any,
    num_layers: int,
    queries: Sequence[str],
    docs_lists: Sequence[Sequence[str | Document]],
    l2: float = 1e-2,
) -> ExitHead:
    """:func:`fit_exit_heads` for one layer."""
    return fit_exit_heads(ranker, [num_layers], queries, docs_lists, l2)[num_layers]


def early_exit(ranker: Any, num_layers: int, head: ExitHead | None = None) -> Any:
    """A copy of a torch cross-encoder (:class:`~unirank.methods.cross_encoder.CrossEncoderRanker`) that
    stops after its first ``num_layers`` transformer layers; the copy shares all weights with ``ranker``.

    Without ``head`` the model's own pooler and classifier read the early CLS state; with an
    :class:`ExitHead` (from :func:`fit_exit_heads`) the score is that head's linear read-out of the early
    states. Its ``pruning_cost`` is ``num_layers / total layers`` (embeddings and head are negligible).
    """
    model = ranker.model
    prefix, base, encoder, layers = _encoder_layers(model)
    total = len(layers)
    if not 1 <= num_layers <= total:
        raise ValueError(f"num_layers must be in 1..{total}")
    if head is not None and head.num_layers != num_layers:
        raise ValueError(f"the head was fitted on layer {head.num_layers}, not {num_layers}")
    hidden = int(getattr(model.config, "hidden_size", 0) or 0)
    if head is not None and hidden and head.weight.shape != (2 * hidden,):
        raise ValueError(
            f"the head has {head.weight.shape[0]} weights; this model needs {2 * hidden} (CLS + mean of "
            f"{hidden}): was it fitted on another model?"
        )
    torch = __import__("torch")
    new_encoder = copy.copy(encoder)
    new_encoder._modules = dict(encoder._modules)
    new_encoder._modules["layer"] = torch.nn.ModuleList(list(layers)[:num_layers])
    new_base = copy.copy(base)
    new_base._modules = dict(base._modules)
    new_base._modules["encoder"] = new_encoder
    new_model = copy.copy(model)
    new_model._modules = dict(model._modules)
    new_model._modules[prefix] = new_base
    out = copy.copy(ranker)
    out.model = new_model
    out._onnx = None
    out.score_cache = None
    out.name = f"{ranker.name}@{num_layers}/{total}" + ("+head" if head is not None else "")
    out.pruning_cost = num_layers / total
    if head is not None:
        out._forward = functools.partial(_head_forward, out, new_base, head)
        out._forward_inputs = functools.partial(_head_forward_inputs, out, new_base, head)
    return out


def _head_forward(ranker: Any, base: Any, head: ExitHead, batch: list[dict[str, list[int]]]) -> np.ndarray:
    inputs = hf.collate(batch, ranker.tokenizer, ranker.device)
    return _head_forward_inputs(ranker, base, head, inputs).cpu().numpy()


def _head_forward_inputs(ranker: Any, base: Any, head: ExitHead, inputs: dict[str, Any]) -> Any:
    """The head's scores of a padded batch, left on the device (the host pipeline's forward)."""
    torch, _ = hf.torch_modules()
    inputs = {k: v.to(ranker.device, non_blocking=True) for k, v in inputs.items()}
    hidden = base(**inputs).last_hidden_state
    feats = _exit_features(hidden, inputs["attention_mask"])
    weight = torch.as_tensor(head.weight, device=feats.device)
    return feats @ weight + float(np.float32(head.bias))
