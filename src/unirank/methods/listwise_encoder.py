"""Listwise encoders: jina-reranker-v3 "last but not late" interaction (Wang, Li & Xiao, arXiv 2509.25085).

The query and a whole block of candidates share one causal context window of a Qwen3 decoder; each document
ends with ``<|embed_token|>`` and the query, repeated after all documents, ends with ``<|rerank_token|>``.
The last layer's (final-norm) hidden states at those tokens go through the checkpoint's two-layer projector
(``projector.0``: Linear ``hidden -> hidden/2``, ReLU, ``projector.2``: Linear ``hidden/2 -> 512``, no
biases) and every document scores ``cos(projected query, projected document)``. The layout follows the
checkpoint's own ``modeling.py`` (``format_docs_prompts_func``), not the paper's figure (which numbers
passages from 1 and quotes a 256-d output: the released code numbers from 0 and its projector ends at 512)::

    <|im_start|>system\\n{SYSTEM_PROMPT}<|im_end|>\\n<|im_start|>user\\n
    I will provide you with {n} passages, each indicated by a numerical identifier. Rank the passages based on
    their relevance to query: {query}\\n[<instruct>\\n{instruction}\\n</instruct>\\n]
    <passage id="0">\\n{doc 0}<|embed_token|>\\n</passage>\\n ... <passage id="n-1">...</passage>\\n
    <query>\\n{query}<|rerank_token|>\\n</query><|im_end|>\\n<|im_start|>assistant\\n<think>\\n\\n</think>\\n\\n

Attention is causal, so a document's embedding sees only what precedes it (its position matters) while the
query embedding sees every document. More documents than one prompt takes are split into blocks in input
order. The default, ``blocks="reference"``, is the reference ``rerank()``'s rule, so scores equal the
authors' code on any list: documents are cut to ``max_doc_length`` tokens and the query to
``max_query_length`` (reference: 2048 and 512, first tokens, decoded), and a block ends once it holds
``block_size`` documents (125) or fewer than ``max_doc_length`` of ``W - 2 * query tokens`` remain, ``W``
being ``max_length`` when given, else the tokenizer's ``model_max_length`` (the reference's window). That is
an estimate: the passage markup and the instructions are not counted, so a block's prompt can run past the
window by a few tokens per document plus the system prompt (unirank warns, and runs it, as the reference
does). ``blocks="fit"`` counts the real prompt instead: a block ends when the next document would overflow
``max_length``, documents are also cut to what an empty window has room for, and no prompt exceeds the
window; near a full window its blocks, so its scores, differ from the reference's. Either way each block
yields its own query embedding, these are averaged with weights ``max over the block of (1 + cos) / 2``, and
every document is scored against that merged query (:func:`merge_blocks`). The two special token strings
are removed from all input text first. The backbone is transformers' own ``Qwen3Model`` (``trust_remote_code``
never runs the checkpoint's code for it); the projector is read from the safetensors weights.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..backends import hf
from ..base import Capabilities, Ranker
from ..batching import token_budget_batches
from ..errors import SpecError
from ..types import Document, ScoreKind

__all__ = ["DOC_TOKEN", "QUERY_TOKEN", "SYSTEM_PROMPT", "JinaV3Ranker", "build_prompt", "merge_blocks"]

logger = logging.getLogger(__name__)

DOC_TOKEN = "<|embed_token|>"  # id 151670 in jinaai/jina-reranker-v3
QUERY_TOKEN = "<|rerank_token|>"  # id 151671
SYSTEM_PROMPT = (
    "You are a search relevance expert who can determine a ranking of the passages based on how relevant "
    "they are to the query. If the query is a question, how relevant a passage is depends on how well it "
    "answers the question. If not, try to analyze the intent of the query and assess how well each passage "
    "satisfies the intent. If an instruction is provided, you should follow the instruction when determining "
    "the ranking."
)
PROJECTOR_KEYS = ("projector.0.weight", "projector.2.weight")


def _clean(text: str) -> str:
    return text.replace(DOC_TOKEN, "").replace(QUERY_TOKEN, "")


def build_prompt(query: str, docs: Sequence[str], instruction: str | None = None) -> str:
    """The listwise prompt of jina-reranker-v3 for one block (special-token strings in the inputs removed).

    >>> p = build_prompt("rain?", ["Clouds.", "Cats<|rerank_token|>."])
    >>> "I will provide you with 2 passages" in p and "relevance to query: rain?\\n<passage" in p
    True
    >>> print(p[p.index("<passage"):p.index("<|im_end|>\\n<|im_start|>assistant")])
    <passage id="0">
    Clouds.<|embed_token|>
    </passage>
    <passage id="1">
    Cats.<|embed_token|>
    </passage>
    <query>
    rain?<|rerank_token|>
    </query>
    >>> p.endswith("<|im_end|>\\n<|im_start|>assistant\\n<think>\\n\\n</think>\\n\\n")
    True
    """
    query = _clean(query)
    body = (
        f"I will provide you with {len(docs)} passages, each indicated by a numerical identifier. "
        f"Rank the passages based on their relevance to query: {query}\n"
    )
    if instruction:
        body += f"<instruct>\n{_clean(instruction)}\n</instruct>\n"
    body += "\n".join(f'<passage id="{i}">\n{_clean(d)}{DOC_TOKEN}\n</passage>' for i, d in enumerate(docs))
    body += f"\n<query>\n{query}{QUERY_TOKEN}\n</query>"
    return (
        f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n{body}"
        "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    )


def _cosine(q: np.ndarray, docs: np.ndarray) -> np.ndarray:
    denom = np.linalg.norm(docs, axis=1) * np.linalg.norm(q)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(docs @ q / np.where(denom > 0, denom, np.nan), dtype=np.float64)


def merge_blocks(query_embs: Sequence[np.ndarray], doc_embs: Sequence[np.ndarray]) -> np.ndarray:
    """Scores of all documents of one query from its blocks' projected embeddings.

    One block: ``cos(q, d)``. Several: the block query embeddings are averaged with weights
    ``max((1 + cos) / 2)`` of each block, and every document is scored against that merged query.

    >>> merge_blocks([np.array([1.0, 0.0])], [np.array([[1.0, 0.0], [0.0, 2.0]])]).tolist()
    [1.0, 0.0]
    >>> merge_blocks([np.array([1.0, 0.0]), np.array([0.0, 1.0])],
    ...              [np.array([[1.0, 0.0]]), np.array([[1.0, 1.0]])]).round(4).tolist()
    [0.7606, 0.9969]
    """
    qs = [np.asarray(q, dtype=np.float64).reshape(-1) for q in query_embs]
    ds = [np.asarray(d, dtype=np.float64).reshape(len(d), -1) for d in doc_embs]
    if len(qs) == 1:
        return _cosine(qs[0], ds[0])
    weights = np.array([np.nan_to_num((1.0 + _cosine(q, d)) / 2.0, nan=0.0).max() for q, d in zip(qs, ds)])
    if not weights.sum() > 0:
        weights = np.ones(len(qs))
    merged = np.average(np.stack(qs), axis=0, weights=weights)
    return _cosine(merged, np.concatenate(ds))


def _read_projector(path: Path) -> dict[str, Any]:
    from safetensors import safe_open

    index = hf.read_json(path / "model.safetensors.index.json").get("weight_map") or {}
    files = sorted({path / f for k, f in index.items() if k.startswith("projector.")}) or sorted(
        path.glob("*.safetensors")
    )
    found: dict[str, Any] = {}
    for f in files:
        with safe_open(str(f), framework="pt") as fh:
            for key in fh.keys():
                if key.startswith("projector."):
                    found[key] = fh.get_tensor(key)
    return found


class JinaV3Ranker(Ranker):
    """jina-reranker-v3 "last but not late" listwise reranker: cosine of projected special-token states.

    Args:
        model_name_or_path: a ``JinaForRanking`` checkpoint (Qwen3 weights + ``projector.*``), folder or id.
        max_length: tokens per prompt (default: the smaller of the tokenizer's and the model's limits; the
            reference's blocks use the tokenizer's ``model_max_length`` unless this is given).
        block_size: at most this many documents per prompt (reference: 125).
        blocks: ``"reference"`` (default: the reference's blocks, so its scores) or ``"fit"`` (every prompt
            fits ``max_length``; other blocks near a full window). See the module docstring.
        max_query_length, max_doc_length: token caps on the query and on each document (512 / 2048).
        instruction: optional ``<instruct>`` text added to every prompt (the reference passes none).
        batch_size, max_tokens_per_batch: prompts (blocks) per forward and padded-token budget per forward.
        device, revision, allow_pickle: as for the other HF rankers; ``trust_remote_code`` reaches the
            tokenizer only: the forward is always this module's, on transformers' ``Qwen3Model``.
        dtype: default fp32 on CPU and bf16 (the checkpoint's own) on CUDA.

    >>> r = JinaV3Ranker("jinaai/jina-reranker-v3")  # doctest: +SKIP
    >>> r.rank("what causes rain", ["Rain is condensed vapour.", "Cats purr."]).ids  # doctest: +SKIP
    ['0', '1']
    """

    score_kind = ScoreKind.SIMILARITY
    capabilities = Capabilities(pointwise=False, listwise=True)

    def __init__(
        self,
        model_name_or_path: str,
        *,
        max_length: int | None = None,
        block_size: int = 125,
        blocks: str = "reference",
        max_query_length: int = 512,
        max_doc_length: int = 2048,
        instruction: str | None = None,
        batch_size: int = 4,
        max_tokens_per_batch: int | None = None,
        device: str | None = None,
        dtype: str | None = None,
        trust_remote_code: bool = False,
        allow_pickle: bool = False,
        revision: str | None = None,
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(name or f"jina-v3:{model_name_or_path}", calibrator=kwargs.pop("calibrator", None))
        if kwargs:
            raise TypeError(f"unknown option(s) for jina-v3: {sorted(kwargs)}")
        for key, val in (("block_size", block_size), ("batch_size", batch_size)):
            if isinstance(val, bool) or not isinstance(val, int) or val < 1:
                raise ValueError(f"{key} must be an integer >= 1, got {val!r}")
        if blocks not in ("fit", "reference"):
            raise ValueError(f"blocks={blocks!r}; expected 'fit' or 'reference'")
        if max_query_length < 1 or max_doc_length < 1:
            raise ValueError("max_query_length and max_doc_length must be >= 1")
        self.path = hf.local_model_dir(model_name_or_path, revision=revision, allow_pickle=allow_pickle)
        config = hf.read_json(self.path / "config.json")
        archs = config.get("architectures") or []
        if config.get("model_type") != "qwen3":
            raise SpecError(
                f"{model_name_or_path}: expected a jina-reranker-v3 checkpoint (model_type 'qwen3', "
                f"architectures ['JinaForRanking']), got model_type={config.get('model_type')!r}, "
                f"architectures={archs}"
            )
        proj = _read_projector(self.path)
        self.device = hf.pick_device(device)
        self.tokenizer = hf.load_tokenizer(self.path, trust_remote_code=trust_remote_code)
        self.tokenizer.padding_side = "left"
        self.doc_token_id = self._special_id(DOC_TOKEN)
        self.query_token_id = self._special_id(QUERY_TOKEN)
        self.model = hf.load_model(  # the backbone only: never the checkpoint's remote JinaForRanking
            self.path,
            "AutoModel",
            device=self.device,
            dtype=hf.torch_dtype(dtype or ("bf16" if self.device.startswith("cuda") else None), self.device),
            allow_pickle=allow_pickle,
        )
        self.projector = self._build_projector(proj, int(self.model.config.hidden_size))
        self.max_length = hf.max_model_length(self.tokenizer, self.model.config, max_length)
        tok_max = getattr(self.tokenizer, "model_max_length", None)  # the reference's block window
        self.block_window = tok_max if max_length is None and isinstance(tok_max, int) else self.max_length
        self.block_size, self.batch_size, self.blocks = block_size, batch_size, blocks
        self.max_query_length, self.max_doc_length = max_query_length, max_doc_length
        self.instruction = instruction
        self.max_tokens_per_batch = max_tokens_per_batch or hf.default_token_budget(self.device)
        self._passage_overhead = self._count(f'<passage id="100">\n{DOC_TOKEN}\n</passage>\n')

    # -- loading ------------------------------------------------------------------------------------------
    def _special_id(self, token: str) -> int:
        ids = self.tokenizer(token, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise SpecError(
                f"{self.path}: expected the tokenizer to have the special token {token!r} (one id, 151670/"
                f"151671 in jina-reranker-v3), got {len(ids)} ids {ids[:8]}"
            )
        return int(ids[0])

    def _build_projector(self, proj: dict[str, Any], hidden: int) -> Any:
        torch, _ = hf.torch_modules()
        extra = sorted(set(proj) - {*PROJECTOR_KEYS, "projector.0.bias", "projector.2.bias"})
        if any(k not in proj for k in PROJECTOR_KEYS) or extra:
            raise SpecError(
                f"{self.path}: expected the jina-reranker-v3 projector {list(PROJECTOR_KEYS)} (Linear, ReLU, "
                f"Linear) in the safetensors weights, got {sorted(proj) or 'no projector.* weights'}"
            )
        w0, w2 = proj["projector.0.weight"], proj["projector.2.weight"]
        if w0.ndim != 2 or w2.ndim != 2 or w0.shape[1] != hidden or w2.shape[1] != w0.shape[0]:
            raise SpecError(
                f"{self.path}: expected projector.0.weight (mid, {hidden}) and projector.2.weight "
                f"(out, mid), got {tuple(w0.shape)} and {tuple(w2.shape)}"
            )
        layers = []
        for i, w in ((0, w0), (2, w2)):
            bias = proj.get(f"projector.{i}.bias")
            lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=bias is not None)
            lin.load_state_dict({"weight": w, **({"bias": bias} if bias is not None else {})})
            layers.append(lin)
        seq = torch.nn.Sequential(layers[0], torch.nn.ReLU(), layers[1])
        return seq.to(self.device, dtype=next(self.model.parameters()).dtype).eval()

    # -- prompts and blocks -------------------------------------------------------------------------------
    def _count(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _truncate(self, text: str, limit: int) -> tuple[str, int]:
        """``text`` cut to its first ``limit`` tokens (decoded, as the reference does) and its token count."""
        from ..text import safe_prefix

        prefix = safe_prefix(text, limit)
        ids = self.tokenizer(prefix, add_special_tokens=False)["input_ids"]
        if prefix is not text and len(ids) < limit:
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) > limit:
            return self.tokenizer.decode(ids[:limit]), limit
        return text, len(ids)

    def plan(self, query: str, docs: Sequence[str]) -> tuple[str, list[str], list[list[int]]]:
        """The cleaned, truncated query and documents, and the blocks (document indices) that fit a window."""
        q, q_len = self._truncate(_clean(query), self.max_query_length)
        if self.blocks == "reference":
            return (q, *self._reference_blocks(q_len, docs))
        fixed = self._count(build_prompt(q, [], self.instruction))
        room = self.max_length - fixed - self._passage_overhead
        if room < 1:
            raise ValueError(
                f"max_length={self.max_length} is too small: the prompt without documents already needs "
                f"{fixed + self._passage_overhead} tokens"
            )
        cut = [self._truncate(_clean(d), min(self.max_doc_length, room)) for d in docs]
        texts = [t for t, _ in cut]
        blocks: list[list[int]] = []
        current: list[int] = []
        used = fixed
        for i, (_, n) in enumerate(cut):
            cost = n + self._passage_overhead
            if current and (len(current) >= self.block_size or used + cost > self.max_length):
                blocks.append(current)
                current, used = [], fixed
            current.append(i)
            used += cost
        if current:
            blocks.append(current)
        return q, texts, blocks

    def _reference_blocks(self, q_len: int, docs: Sequence[str]) -> tuple[list[str], list[list[int]]]:
        cut = [self._truncate(_clean(d), self.max_doc_length) for d in docs]
        blocks: list[list[int]] = [[]]
        capacity = self.block_window - 2 * q_len
        for i, (_, n) in enumerate(cut):
            blocks[-1].append(i)
            capacity -= n
            if len(blocks[-1]) >= self.block_size or capacity <= self.max_doc_length:
                blocks.append([])
                capacity = self.block_window - 2 * q_len
        return [t for t, _ in cut], [b for b in blocks if b]

    def _fit(self, q: str, texts: list[str], block: list[int]) -> tuple[list[int], list[int]]:
        """Token ids of the longest head of ``block`` whose prompt fits ``max_length`` (the estimate in
        :meth:`plan` can miss by a token or two at BPE boundaries), and that head."""
        while True:
            prompt = build_prompt(q, [texts[i] for i in block], self.instruction)
            ids = list(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])
            if len(ids) <= self.max_length or len(block) == 1 or self.blocks == "reference":
                if len(ids) > self.max_length:  # blocks="reference" (as the reference) or one document
                    logger.warning("jina-v3: prompt of %d tokens > max_length=%d", len(ids), self.max_length)
                return ids, block
            block = block[:-1]

    # -- model ----------------------------------------------------------------------------------------------
    def _forward(self, prompts: list[list[int]]) -> list[tuple[np.ndarray, np.ndarray]]:
        torch, _ = hf.torch_modules()
        feats = [{"input_ids": p, "attention_mask": [1] * len(p)} for p in prompts]
        inputs = hf.collate(feats, self.tokenizer, self.device)
        mask = inputs["attention_mask"]
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding never shifts a prompt's positions
        hidden = self.model(
            input_ids=inputs["input_ids"], attention_mask=mask, position_ids=positions
        ).last_hidden_state
        out = []
        for row, ids in enumerate(inputs["input_ids"]):
            docs_at = torch.nonzero(ids == self.doc_token_id).flatten()
            query_at = torch.nonzero(ids == self.query_token_id).flatten()
            if query_at.numel() != 1:
                raise RuntimeError(f"expected exactly one {QUERY_TOKEN} in a prompt, got {query_at.numel()}")
            emb = self.projector(hidden[row, torch.cat([query_at, docs_at])]).float().cpu().numpy()
            out.append((emb[0], emb[1:]))
        return out

    def encode_block(self, query: str, docs: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Projected embeddings ``(query (dim,), documents (n, dim))`` of ONE prompt holding all ``docs``
        (cleaned and truncated, but never split into blocks)."""
        torch, _ = hf.torch_modules()
        q = self._truncate(_clean(query), self.max_query_length)[0]
        texts = [self._truncate(_clean(d), self.max_doc_length)[0] for d in docs]
        ids = self.tokenizer(build_prompt(q, texts, self.instruction), add_special_tokens=False)["input_ids"]
        with torch.inference_mode():
            return self._forward([list(ids)])[0]

    def _score_many(
        self, queries: list[str], docs_lists: list[list[Document]], show_progress: bool = False
    ) -> list[np.ndarray]:
        torch, _ = hf.torch_modules()
        prompts: list[list[int]] = []
        owners: list[tuple[int, list[int]]] = []  # (query index, document indices) per prompt
        for qi, (query, docs) in enumerate(zip(queries, docs_lists)):
            q, texts, pending = self.plan(query, [d.text for d in docs])
            while pending:
                block = pending.pop(0)
                ids, keep = self._fit(q, texts, block)
                if len(keep) < len(block):
                    pending.insert(0, block[len(keep) :])
                prompts.append(ids)
                owners.append((qi, keep))
        results: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(prompts)
        batches = token_budget_batches([len(p) for p in prompts], self.max_tokens_per_batch, self.batch_size)
        with torch.inference_mode():
            for batch in batches:
                for i, res in zip(batch, self._forward([prompts[i] for i in batch])):
                    if len(res[1]) != len(owners[i][1]):
                        raise RuntimeError(f"{len(res[1])} {DOC_TOKEN} for {len(owners[i][1])} documents")
                    results[i] = res
        out = []
        for qi, docs in enumerate(docs_lists):
            mine = [(keep, results[p]) for p, (owner, keep) in enumerate(owners) if owner == qi]
            order = np.concatenate([np.asarray(keep, dtype=int) for keep, _ in mine])
            scores = merge_blocks([r[0] for _, r in mine], [r[1] for _, r in mine])  # type: ignore[index]
            final = np.empty(len(docs), dtype=np.float64)
            final[order] = scores
            out.append(final)
        logger.debug("jina-v3 scored %d prompts for %d queries", len(prompts), len(queries))
        return out
