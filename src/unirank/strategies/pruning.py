"""Progressive top-k pruning: when only the top ``k`` of ``n`` candidates are wanted, spend the full model
only on candidates that a cheaper stage could not rule out.

:class:`TopKPruner` runs one or more cheap stages over the candidates, keeps the best ``keep`` of each stage
(plus any candidate within ``margin`` of the last kept score), and scores the survivors with the full
ranker; with ``error_z`` a second full round re-checks the pruned candidates against the error the last
cheap stage made on this query's survivors (full minus cheap score: its median and spread), so the extra
work goes only where the measured error leaves the top-k boundary open. This is the GRATING idea (a
cheap, correlated estimate of every candidate's score, and full compute only where the top-k boundary is
still undecided) in its model-agnostic form: a stage is any :class:`~unirank.base.Ranker`.
:func:`early_exit` builds the natural cheap stage of a cross-encoder: the same model stopped after its
first ``L`` transformer layers, which costs ``L / num_layers`` of a full forward. A model's own head was
trained on the last layer and says little at layer ``L``, so :func:`fit_exit_heads` distils the full score
into a linear head per early layer (ridge regression on the CLS + mean state, fitted once on unlabelled
(query, candidate) pairs) and ``early_exit(ce, L, head)`` scores with it.

Exactness trade-off: the result is the exact top-k of the full ranker whenever every true top-k candidate
survives the cheap stages, which is guaranteed when a cheap stage orders candidates exactly like the full
ranker (and ``keep >= k``), and otherwise holds with a probability that grows with ``keep`` and with the
cheap stage's agreement; the pruned candidates are returned below the survivors with score ``-inf``.
``docs/benchmarks-speed.md`` measures it on TREC DL 2019. :attr:`TopKPruner.stats` counts compute in
"full-forward equivalents" (a cheap pair costs ``cost`` of a full pair).

>>> from unirank import Reranker
>>> bm25 = Reranker("bm25")
>>> p = TopKPruner(bm25, [(bm25, 2)], k=1)
>>> p.rank("rain", ["sun", "rain rain", "snow", "rain"]).top(1)[0].text
'rain rain'
>>> p.stats["full_pairs"], p.stats["cheap_pairs"]
(2, 4)
"""

from __future__ import annotations

import copy
import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..base import Ranker
from ..types import Document

__all__ = ["ExitHead", "TopKPruner", "early_exit", "fit_exit_head", "fit_exit_heads"]

logger = logging.getLogger(__name__)


class TopKPruner(Ranker):
    """Score with cheap stages first, keep the likely top ``keep``, score only those with ``full``.

    Args:
        full: the ranker whose top-k is wanted.
        stages: ``[(cheap_ranker, keep), ...]`` applied in order; each keeps its best ``keep`` candidates
            (at least ``k``) of those still alive.
        k: the number of results that must be right; ``keep`` values below ``k`` are raised to ``k``.
        margin: also keep candidates whose cheap score is within ``margin`` of the last kept one.
        error_z: if set, a second full round checks the candidates the last cheap stage pruned against the
            error that stage made on this query: with ``d`` = full - cheap score over the survivors (their
            median ``mu``, standard deviation ``sd``) and ``t`` the ``k``-th best full score, every pruned
            candidate with ``cheap + mu + error_z * sd >= t`` is scored in full too. The extra work goes where
            the cheap stage's own measured error says the boundary is still open (DL19 / DL20 with an int8
            twin as cheap stage: ``keep=10, error_z=2`` ~13 full pairs per query, exact top-10 set on 95 %
            of the queries; docs/benchmarks-speed.md). The spread needs at least two survivors: with fewer
            (``keep=1``), or fewer than ``k`` successful full scores, every pruned candidate is re-checked.
        costs: cost of one cheap pair per stage relative to one full pair (for :attr:`stats`); by default a
            stage's ``pruning_cost`` attribute (set by :func:`early_exit`) or 1.0.
    """

    def __init__(
        self,
        full: Ranker,
        stages: Sequence[tuple[Ranker, int]],
        k: int = 10,
        margin: float = 0.0,
        costs: Sequence[float] | None = None,
        name: str | None = None,
        error_z: float | None = None,
    ) -> None:
        super().__init__(name or f"prune({full.name})")
        if k < 1:
            raise ValueError("k must be >= 1")
        if not stages:
            raise ValueError("at least one cheap stage is needed")
        if any(int(keep) < 1 for _, keep in stages):
            raise ValueError("every stage must keep >= 1 candidates")
        if margin < 0:
            raise ValueError("margin must be >= 0")
        if error_z is not None and not error_z >= 0:
            raise ValueError("error_z must be >= 0 (or None)")
        self.error_z = None if error_z is None else float(error_z)
        self.full = full
        self.stages = [(r, max(int(keep), k)) for r, keep in stages]
        self.k = k
        self.margin = margin
        if costs is not None and len(costs) != len(self.stages):
            raise ValueError("costs must have one value per stage")
        self.costs = (
            [float(c) for c in costs]
            if costs is not None
            else [float(getattr(r, "pruning_cost", 1.0)) for r, _ in self.stages]
        )
        self.score_kind = full.score_kind
        self.reset_stats()

    def reset_stats(self) -> None:
        self.stats: dict[str, float] = {
            "candidates": 0,
            "cheap_pairs": 0,
            "full_pairs": 0,
            "second_round_pairs": 0,
            "compute": 0.0,
        }

    @property
    def compute_saving(self) -> float:
        """Full-only compute / this compute (``> 1`` is a saving), over everything scored so far."""
        return self.stats["candidates"] / self.stats["compute"] if self.stats["compute"] else 1.0

    def _score_many(
        self, queries: list[str], docs_lists: list[list[Document]], show_progress: bool = False
    ) -> list[np.ndarray]:
        alive = [np.arange(len(d)) for d in docs_lists]
        self.stats["candidates"] += sum(len(d) for d in docs_lists)
        last_cheap: dict[int, np.ndarray] = {}  # query -> the last cheap stage's scores (nan: not scored)
        for (ranker, keep), cost in zip(self.stages, self.costs):
            todo = [i for i, a in enumerate(alive) if len(a) > keep]
            if not todo:
                continue
            got = ranker._score_nonempty(
                [queries[i] for i in todo], [[docs_lists[i][j] for j in alive[i]] for i in todo], False
            )
            n = sum(len(alive[i]) for i in todo)
            self.stats["cheap_pairs"] += n
            self.stats["compute"] += n * cost
            for i, s in zip(todo, got):
                last_cheap[i] = np.full(len(docs_lists[i]), np.nan)
                last_cheap[i][alive[i]] = s
                alive[i] = alive[i][_survivors(s, keep, self.margin)]
        scores = self._score_full(queries, docs_lists, alive, show_progress)
        if self.error_z is not None and last_cheap:
            extra = {
                i: _second_round(last_cheap[i], scores[i], alive[i], self.k, self.error_z) for i in last_cheap
            }
            extra = {i: e for i, e in extra.items() if len(e)}
            if extra:
                todo = list(extra)
                got = self._score_full(
                    [queries[i] for i in todo], [docs_lists[i] for i in todo], [extra[i] for i in todo], False
                )
                self.stats["second_round_pairs"] += sum(len(e) for e in extra.values())
                for i, s in zip(todo, got):
                    scores[i][extra[i]] = s[extra[i]]
        return scores

    def _score_full(
        self, queries: list[str], docs_lists: list[list[Document]], chosen: list[np.ndarray], progress: bool
    ) -> list[np.ndarray]:
        """Full scores of the ``chosen`` candidates of each query (``-inf`` elsewhere)."""
        full = self.full._score_nonempty(
            queries, [[docs_lists[i][j] for j in a] for i, a in enumerate(chosen)], progress
        )
        out = []
        for i, (a, s) in enumerate(zip(chosen, full)):
            self.stats["full_pairs"] += len(a)
            self.stats["compute"] += len(a)
            scores = np.full(len(docs_lists[i]), -np.inf)
            scores[a] = s
            out.append(scores)
        return out


def _second_round(cheap: np.ndarray, full: np.ndarray, alive: np.ndarray, k: int, z: float) -> np.ndarray:
    """The pruned candidates (scored by the last cheap stage, not in ``alive``) that could still reach the
    top ``k`` given the cheap stage's error on the survivors: ``cheap + median(d) + z * sd(d) >= t``, with
    ``d = full - cheap`` over the survivors and ``t`` the ``k``-th best full score. Where the error or the
    boundary cannot be measured (fewer than two usable survivors, fewer than ``k`` full scores, an infinite
    ``z``), every pruned candidate is re-checked."""
    pruned = np.setdiff1d(np.flatnonzero(~np.isnan(cheap)), alive)
    if not len(pruned):
        return pruned
    got = full[alive]
    scored = ~np.isnan(got) & (got > -np.inf)  # NaN / -inf: the full ranker failed on that candidate
    usable = np.isfinite(got) & np.isfinite(cheap[alive])
    if scored.sum() < k or usable.sum() < 2 or not np.isfinite(z):
        return pruned
    d = got[usable] - cheap[alive][usable]
    t = np.sort(got[scored])[-k]
    return pruned[cheap[pruned] + float(np.median(d)) + z * float(np.std(d, ddof=1)) >= t]


def _survivors(scores: np.ndarray, keep: int, margin: float) -> np.ndarray:
    """Indices (in input order) of the best ``keep`` scores, plus ties within ``margin`` of the last one."""
    scores = np.asarray(scores, dtype=np.float64)
    failed = ~np.isfinite(scores)  # a failed cheap score never prunes its candidate (nor takes a slot)
    s = np.where(failed, -np.inf, scores)
    order = np.argsort(-s, kind="stable")
    chosen = set(order[:keep].tolist()) | set(np.flatnonzero(failed).tolist())
    cut = s[order[min(keep, len(s)) - 1]]
    if np.isfinite(cut):
        chosen |= set(np.flatnonzero(s >= cut - margin).tolist())
    return np.array(sorted(chosen), dtype=np.int64)


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
    from ..backends import hf

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
    >>> pruner = TopKPruner(ce, [(early_exit(ce, 2, heads[2]), 2)], k=1)
    >>> len(pruner.rank("rain", ["sun", "rain falls", "snow"])), pruner.stats["full_pairs"]
    (3, 2)
    """
    from ..backends import hf

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
    return out


def _head_forward(ranker: Any, base: Any, head: ExitHead, batch: list[dict[str, list[int]]]) -> np.ndarray:
    from ..backends import hf

    inputs = hf.collate(batch, ranker.tokenizer, ranker.device)
    hidden = base(**inputs).last_hidden_state
    feats = _exit_features(hidden, inputs["attention_mask"]).cpu().numpy()
    return feats @ head.weight + np.float32(head.bias)
