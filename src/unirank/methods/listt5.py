"""ListT5 (Yoon et al., ACL 2024): listwise re-ranking with Fusion-in-Decoder and an m-ary tournament sort.

**The window primitive.** Each of ``w <= m`` passages is encoded *separately* by the T5 encoder as
``"Query: {q}, Index: {i}, Context: {passage}"`` (``i`` = 1..w); the encoder outputs are concatenated and the
decoder, cross-attending to all of them, generates the indices as an ordering. ListT5 checkpoints emit the
indices in **ascending** relevance (the last index is the most relevant; ``output_order="descending"`` for
models trained the other way). Decoding here is greedy and constrained to the unused index tokens, so the
output is always a permutation.

**Tournament sort for the top-k.** Leaves are groups of ``m`` candidates; every node ranks its candidates
(one model call) and passes its best ``r`` up; an internal node has ``m // r`` children, so its window holds
at most ``m`` candidates. The root's best is the next result; it is removed and only the nodes on its path
are re-ranked (outputs of every other node are cached and reused, and a window whose candidate set was
ranked before is served from the cache). A window with one candidate needs no call. So for ``n`` candidates:

    calls = sum over tree levels of ceil(n_level / group)   (building the tree)
          + (k - 1) * depth                                  (one path per further result)

whenever no re-ranked window degenerates to a single candidate (e.g. ``n = m**h``, ``r = 1``,
``k < m``: ``(n - 1) / (m - 1) + (k - 1) * h``); :func:`tournament_calls` computes it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from ..backends import hf
from ..base import Capabilities, Ranker
from ..errors import SpecError
from ..types import Document, ScoreKind

__all__ = ["ListT5Ranker", "tournament_calls", "tournament_top_k"]

logger = logging.getLogger(__name__)

LISTT5_TEMPLATE = "Query: {query}, Index: {index}, Context: {document}"


def tournament_calls(n: int, k: int, m: int = 5, r: int = 2) -> int:
    """Model calls of :func:`tournament_top_k` for ``n`` candidates: exact when no re-ranked window shrinks to
    one candidate or repeats a cached set, an upper bound otherwise.

    >>> tournament_calls(125, 4, m=5, r=1)  # 25 + 5 + 1 to build, then 3 paths of depth 3
    40
    """
    sizes, depth, build = n, 0, 0
    group = m
    while True:
        nodes = math.ceil(sizes / group)
        build += nodes
        depth += 1
        if nodes == 1:
            break
        sizes, group = nodes, m // r
    return build + (max(min(k, n), 1) - 1) * depth


def tournament_top_k(
    n: int, rank_window: Callable[[list[int]], list[int]], k: int, m: int = 5, r: int = 2
) -> tuple[list[int], int]:
    """The top ``k`` of ``n`` items by an m-ary tournament; ``rank_window(items)`` orders <= ``m`` items.

    Returns ``(top-k item indices best first, number of rank_window calls)``.

    >>> oracle = lambda items: sorted(items, key=lambda i: -((i * 7) % 10))
    >>> tournament_top_k(10, oracle, k=3, m=4, r=2)[0]  # values (i*7)%10: item 7 -> 9, 4 -> 8, 1 -> 7
    [7, 4, 1]
    """
    if m < 2 or not 1 <= r < m or m // r < 2:
        raise ValueError(f"need m >= 2 and 1 <= r with m // r >= 2 (got m={m}, r={r})")
    if n <= 0 or k <= 0:
        return [], 0
    calls = 0
    cache: dict[frozenset[int], list[int]] = {}

    def run(cands: list[int]) -> list[int]:
        nonlocal calls
        if len(cands) <= 1:
            return list(cands)
        key = frozenset(cands)
        if key not in cache:
            order = list(rank_window(list(cands)))
            if sorted(order) != sorted(cands):
                raise ValueError(f"window ranker returned {order!r} for window {cands!r}")
            calls += 1
            cache[key] = order
        return cache[key]

    # levels[l] = list of nodes; a node is (children indices or leaf items, output)
    leaves = [list(range(s, min(s + m, n))) for s in range(0, n, m)]
    levels: list[list[list[int]]] = [leaves]  # candidate lists per node
    outputs: list[list[list[int]]] = [[run(c)[:r] for c in leaves]]
    fan = m // r
    while len(levels[-1]) > 1:
        prev = outputs[-1]
        groups = [list(range(s, min(s + fan, len(prev)))) for s in range(0, len(prev), fan)]
        levels.append(groups)  # children indices
        outputs.append([run([x for c in g for x in prev[c]])[:r] for g in groups])
    result: list[int] = []
    removed: set[int] = set()
    while len(result) < min(k, n):
        best = outputs[-1][0][0]
        result.append(best)
        removed.add(best)
        if len(result) == min(k, n):
            break
        node = best // m
        leaves[node] = [x for x in leaves[node] if x not in removed]
        outputs[0][node] = run(leaves[node])[:r]
        for lvl in range(1, len(levels)):
            node //= fan
            cands = [x for c in levels[lvl][node] for x in outputs[lvl - 1][c]]
            outputs[lvl][node] = run(cands)[:r]
    return result, calls


def _load_fid_wrapped_encoder(model: Any, path: Any) -> None:
    """Checkpoints saved from FiD's wrapped encoder name its weights ``encoder.encoder.block.N.module.*``,
    which a plain T5 does not load (it would keep a random encoder); load them under their T5 names."""
    from safetensors import safe_open

    state = {}
    for f in sorted(path.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as fh:
            for key in fh.keys():
                if key.startswith("encoder.encoder."):
                    state["encoder." + key[len("encoder.encoder.") :].replace(".module.", ".")] = (
                        fh.get_tensor(key)
                    )
    if not state:
        return
    own = model.state_dict()
    missing = [k for k in own if k.startswith("encoder.") and k not in state and "embed_tokens" not in k]
    unknown = [k for k in state if k not in own]
    if missing or unknown:
        raise SpecError(
            f"{path}: FiD-wrapped encoder weights do not fit T5 (missing {missing[:3]}, "
            f"unexpected {unknown[:3]})"
        )
    model.load_state_dict(state, strict=False)
    logger.info("loaded %d FiD-wrapped encoder tensors from %s", len(state), path)


class ListT5Ranker(Ranker):
    """ListT5 Fusion-in-Decoder listwise reranker with tournament sort.

    Args:
        model_name_or_path: a T5 ``*ForConditionalGeneration`` ListT5 checkpoint.
        window_size: ``m``, passages per model call (ListT5: 5).
        r: winners passed up per node (ListT5: 2).
        top_k: how many results the tournament extracts; the rest follow in input order.
        passage_max_length: tokens per encoded passage (query + index + passage).
        output_order: ``"ascending"`` (ListT5: most relevant index generated last) or ``"descending"``.

    It is also a window ranker (``rank_window``), usable by any strategy in :mod:`unirank.strategies`.
    ``n_calls`` counts the model calls (windows ranked) so far.

    >>> r = ListT5Ranker("Soyoung97/ListT5-base", top_k=10)  # doctest: +SKIP
    >>> r.rank("when was the light bulb invented", ["Coffee is good.", "Edison, 1879."]).ids  # doctest: +SKIP
    ['1', '0']
    """

    score_kind = ScoreKind.RANK
    capabilities = Capabilities(pointwise=False, listwise=True)

    def __init__(
        self,
        model_name_or_path: str,
        *,
        window_size: int = 5,
        r: int = 2,
        top_k: int = 10,
        passage_max_length: int = 256,
        output_order: str = "ascending",
        template: str = LISTT5_TEMPLATE,
        name: str | None = None,
        **options: Any,
    ) -> None:
        from .seq2seq import load_seq2seq, token_id

        super().__init__(name or f"listt5:{model_name_or_path}", calibrator=options.pop("calibrator", None))
        if output_order not in ("ascending", "descending"):
            raise ValueError("output_order must be 'ascending' or 'descending'")
        if top_k < 1:
            raise ValueError("top_k must be >= 1")
        tournament_top_k(1, lambda x: x, 1, window_size, r)  # validates m and r
        keys = ("device", "dtype", "trust_remote_code", "allow_pickle", "revision")
        self.path, self.tokenizer, self.model, self.device = load_seq2seq(
            model_name_or_path, family="ListT5", **{k: options.pop(k) for k in keys if k in options}
        )
        if options:
            raise TypeError(f"unknown option(s) for ListT5: {sorted(options)}")
        _load_fid_wrapped_encoder(self.model, self.path)
        self.window_size, self.r, self.top_k = window_size, r, top_k
        self.passage_max_length, self.output_order, self.template = passage_max_length, output_order, template
        self.index_ids = []
        for i in range(1, window_size + 1):
            ids = self.tokenizer(str(i), add_special_tokens=False)["input_ids"]
            if len(ids) != 1:
                raise SpecError(
                    f"index {i} is not a single token for this tokenizer ({ids}); ListT5 needs it"
                )
            self.index_ids.append(token_id(self.tokenizer, ids[0], f"index {i}"))
        self.n_calls = 0

    # -- the window primitive ---------------------------------------------------------------------------
    def encode_window(self, query: str, docs: list[Document]) -> tuple[Any, Any]:
        """FiD encoding: each passage encoded on its own, the outputs concatenated to ``(1, n*L, d)``."""
        torch, _ = hf.torch_modules()
        texts = [self.template.format(query=query, index=i + 1, document=d.text) for i, d in enumerate(docs)]
        enc = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.passage_max_length, return_tensors="pt"
        ).to(self.device)
        with torch.inference_mode():
            hidden = self.model.get_encoder()(
                input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]
            )
        state = hidden.last_hidden_state
        return state.reshape(1, -1, state.shape[-1]), enc["attention_mask"].reshape(1, -1)

    def index_logits(
        self, query: str, docs: list[Document], prefix: list[int] | None = None, encoded: Any = None
    ) -> np.ndarray:
        """Logits of the index tokens ``1..len(docs)`` at the decoder step after ``prefix`` (0-based)."""
        torch, _ = hf.torch_modules()
        fused, mask = encoded if encoded is not None else self.encode_window(query, docs)
        start = self.model.config.decoder_start_token_id or 0
        dec = [int(start)] + [self.index_ids[p] for p in (prefix or [])]
        with torch.inference_mode():
            out = self.model(
                encoder_outputs=(fused,),
                attention_mask=mask,
                decoder_input_ids=torch.tensor([dec], device=self.device),
            )
        return out.logits[0, -1].float()[self.index_ids[: len(docs)]].cpu().numpy()

    def rank_window(self, query: str, docs: list[Document]) -> list[int]:
        """Order ``<= window_size`` documents, best first (one model call: one FiD encoding, then constrained
        greedy decoding of the indices)."""
        if len(docs) > self.window_size:
            raise ValueError(f"a window holds at most {self.window_size} documents, got {len(docs)}")
        if len(docs) <= 1:
            return list(range(len(docs)))
        self.n_calls += 1
        encoded = self.encode_window(query, docs)
        picks: list[int] = []
        while len(picks) < len(docs) - 1:
            logits = self.index_logits(query, docs, picks, encoded)
            if not picks and not np.isfinite(logits).any():  # NaN logits: argmax would pick index 0
                logger.warning(
                    "%s: the model's index logits are not finite (NaN); the window of %d keeps no real order",
                    self.name,
                    len(docs),
                )
            logits[picks] = -np.inf
            picks.append(int(np.argmax(logits)))
        picks += [i for i in range(len(docs)) if i not in picks]
        return picks[::-1] if self.output_order == "ascending" else picks

    async def arank_window(self, query: str, docs: list[Document]) -> list[int]:
        """Async :meth:`rank_window`, on this ranker's single worker thread (the model is not re-entrant)."""
        import asyncio
        from concurrent.futures import ThreadPoolExecutor

        with self._executor_lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"unirank-{self.name}")
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.rank_window, query, docs)

    # -- ranking --------------------------------------------------------------------------------------------
    def _score_many(self, queries: list[str], docs_lists: list[list[Document]], show_progress: bool = False):
        from ..strategies.base import rank_scores

        out = []
        for q, docs in zip(queries, docs_lists):
            top = self.top_k_indices(q, docs)
            rest = [i for i in range(len(docs)) if i not in set(top)]
            out.append(rank_scores(top + rest, len(docs)))
        return out

    def top_k_indices(self, query: str, docs: list[Document]) -> list[int]:
        """Indices of the tournament's top ``top_k`` documents, best first."""

        def window(items: list[int]) -> list[int]:
            return [items[i] for i in self.rank_window(query, [docs[j] for j in items])]

        return tournament_top_k(len(docs), window, self.top_k, self.window_size, self.r)[0]
