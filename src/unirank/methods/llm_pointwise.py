"""Pointwise LLM re-rankers: yes/no relevance logits, fine-grained graded labels, query likelihood.

Spec grammar (shared by ``llm-pointwise:``, ``llm-listwise:`` and ``icr:``)::

    llm-pointwise:<model>                 a local causal LM: HF id, folder, file.gguf, or "gemma3-270m"
    llm-pointwise:openai:<server model>   an OpenAI-compatible server ($OPENAI_BASE_URL / $OPENAI_API_KEY)
    llm-pointwise:<server model>  + base_url="http://host:8000/v1"   (base_url also selects the server)

Options: ``mode="yesno"`` (default), ``"graded"`` or ``"likelihood"``; ``prompt=`` a name from
:data:`unirank.prompts.PROMPTS` or your own template string; ``labels=`` the label words; ``score=``
(yes/no mode) ``"yes-no"`` or ``"yes"`` (default: the prompt's); ``instruction=`` fills the prompt's
``{instruction}`` field; ``max_doc_tokens=`` cuts each document to that many tokens (local, or a server
engine with ``tokenizer=``, which then sends the local prompt token for token; a server without one cuts
to ``max_doc_words`` words). Decoder rerankers as their reference code defines them:
``prompt="qwen3-reranker"`` (Qwen3-Reranker), ``prompt="bge-gemma"`` (BAAI/bge-reranker-v2-gemma, score
``"yes"``), ``prompt="mxbai-v2"`` (mixedbread-ai/mxbai-rerank-*-v2). With local engines they keep their
reference's token caps (:func:`unirank.prompts.cap_pieces`): Qwen3-Reranker the card's 8,192-token prompt,
mxbai-v2 the query at most 6,144 tokens and query + document 8,192, bge-gemma FlagEmbedding's
``max_length=512`` (query 384, passage 512); the document's tail goes first; ``max_pair_tokens=`` (the
reference's ``max_length``) / ``max_query_tokens=`` change them, ``None`` lifts one.
Local engine options (``gguf_file``, ``device``, ``dtype``, ``max_length``, ``batch_size``) and server options
(``api_key``, ``timeout``, ``max_retries``, ``concurrency``, ``endpoint="completions"|"chat"``,
``top_logprobs``) pass through; ``engine=`` reuses an already built engine.

Scores:

- ``yesno``: ``logit(yes) - logit(no)`` at the next token (:attr:`ScoreKind.LOGIT`; ``sigmoid`` of it is
  P(yes | yes or no)), as monoT5 / Qwen3-Reranker / mxbai-rerank-v2 do. With ``score="yes"`` (local engines
  only): the raw next-token logit of the first label, as FlagEmbedding scores bge-reranker-v2-gemma
  (:attr:`ScoreKind.UNBOUNDED`; its ``sigmoid`` is that library's ``normalize=True`` score).
- ``graded``: the expected label ``sum_k k * P(k)`` under the label-token distribution restricted to the
  labels ``0..K`` (ERank / ProRank style; :attr:`ScoreKind.UNBOUNDED`, in ``[0, K]``).
- ``likelihood``: mean log-probability of the query tokens given the document, p(query | doc) (UPR;
  also a "reviewer" score for generated candidates; :attr:`ScoreKind.UNBOUNDED`).

A server's ``top_logprobs`` list may miss a label; the label then gets the smallest listed log-probability
(an upper bound). When it lists none of the labels (no log-probabilities, a reasoning model's ``<think>``),
the pair scores NaN with a warning: flooring every label would give every document the same score.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import numpy as np

from ..base import PointwiseRanker, _aggregate
from ..prompts import PointwisePrompt, cap_pieces, get_prompt
from ..types import Document, ScoreKind
from .llm_cost import LLMCostMixin
from .llm_fit import encode_texts, fit_document, fit_text, fit_texts, truncate_texts
from .llm_server import pointwise_mass, record_mass

__all__ = ["LLMPointwiseRanker", "build_engine", "fit_document", "fit_text", "has_label", "label_logprob"]

logger = logging.getLogger(__name__)

_SERVER_OPTIONS = ("base_url", "api_key", "timeout", "max_retries", "backoff", "max_backoff", "concurrency")
_SERVER_OPTIONS += ("headers", "transport", "check_model", "tokenizer", "log_path", "max_length")
_SERVER_OPTIONS += ("enable_thinking", "reasoning_effort")
_LOCAL_OPTIONS = ("gguf_file", "device", "dtype", "max_length", "batch_size", "max_tokens_per_batch")
_LOCAL_OPTIONS += ("trust_remote_code", "allow_pickle", "revision", "cache_converted", "attn_implementation")
_LOCAL_OPTIONS += ("padding_side", "share_prefix", "pipeline")


def build_engine(model: Any, options: dict[str, Any]) -> Any:
    """The engine a model argument names (see the grammar above); consumes engine options from ``options``.

    ``model`` may already be an engine (``CausalLM`` / ``OpenAICompatEngine``).
    """
    from ..backends.causal_lm import CausalLM
    from ..backends.openai_compat import OpenAICompatEngine

    engine = options.pop("engine", None)
    if engine is not None or isinstance(model, (CausalLM, OpenAICompatEngine)):
        return engine if engine is not None else model
    if not model:
        raise ValueError("an LLM ranker needs a model (e.g. 'gemma3-270m' or 'openai:<name>') or engine=")
    model = str(model)
    if model.startswith("openai:") or options.get("base_url"):
        kw = {k: options.pop(k) for k in _SERVER_OPTIONS if k in options}
        return OpenAICompatEngine(model.removeprefix("openai:"), **kw)
    kw = {k: options.pop(k) for k in _LOCAL_OPTIONS if k in options}
    return CausalLM.shared(model, **kw)


def is_local(engine: Any) -> bool:
    return hasattr(engine, "next_token_logprobs")


def label_logprob(top: dict[str, float], label: str, prefix: str = " ") -> float:
    """A label's log-probability from a server's top-logprobs: the token ``prefix + label`` (what a local
    engine scores), else ``label``, else the variants equal to it without surrounding whitespace, summed; the
    smallest listed value when absent (an upper bound), ``-inf`` for an empty list.

    >>> label_logprob({" yes": -0.5, "yes": -2.0, " no": -1.5}, "yes")
    -0.5
    >>> label_logprob({" no": -1.5}, "yes")
    -1.5
    """
    for exact in (prefix + label, label):
        if exact in top:
            return float(top[exact])
    hits = [v for t, v in top.items() if t.strip() == label]
    if hits:
        return float(np.logaddexp.reduce(hits))
    return float(min(top.values())) if top else float("-inf")


def has_label(top: dict[str, float], label: str, prefix: str = " ") -> bool:
    """Whether a server's top-logprobs list holds ``label`` in any of the spellings
    :func:`label_logprob` accepts.

    >>> has_label({"<think>": -0.1}, "yes"), has_label({" yes": -1.0}, "yes")
    (False, True)
    """
    return prefix + label in top or label in top or any(t.strip() == label for t in top)


class LLMPointwiseRanker(LLMCostMixin, PointwiseRanker):
    """Scores each (query, document) with a causal LM (see the module docstring for modes and specs).

    >>> r = LLMPointwiseRanker("gemma3-270m", mode="yesno")                  # doctest: +SKIP
    >>> r.rank("what causes rain", ["Rain is condensed vapour.", "Cats purr."]).top(1)  # doctest: +SKIP
    """

    def __init__(
        self,
        model: Any = None,
        *,
        mode: str = "yesno",
        prompt: Any = None,
        labels: tuple[str, ...] | list[str] | None = None,
        endpoint: str = "completions",
        top_logprobs: int = 20,
        max_doc_words: int = 300,
        max_doc_tokens: int | None = None,
        long_docs: str = "truncate",
        passage_tokens: int | None = None,
        passage_overlap: int = 32,
        max_passages: int = 128,
        name: str | None = None,
        score: str | None = None,
        instruction: str | None = None,
        max_query_tokens: int | str | None = "prompt",
        max_pair_tokens: int | str | None = "prompt",
        **options: Any,
    ) -> None:
        modes = {"yesno": "pointwise", "graded": "graded", "likelihood": "likelihood"}
        if mode not in modes:
            raise ValueError(f"mode={mode!r}; expected one of {sorted(modes)}")
        if endpoint not in ("completions", "chat"):
            raise ValueError(f"endpoint={endpoint!r}; expected 'completions' or 'chat'")
        super().__init__(
            name or f"llm-pointwise:{model}",
            long_docs=long_docs,
            passage_tokens=passage_tokens,
            passage_overlap=passage_overlap,
            max_passages=max_passages,
            calibrator=options.pop("calibrator", None),
        )
        from .reasoning import REASONING_OPTIONS, PointwiseReasoner  # reasoning=True: think, then label

        think = {k: options.pop(k) for k in REASONING_OPTIONS if k in options}
        reasoning = options.pop("reasoning", False)
        self.engine = build_engine(model, options)
        if options:
            raise TypeError(f"unknown option(s) for llm-pointwise: {sorted(options)}")
        self.mode, self.endpoint, self.top_logprobs = mode, endpoint, top_logprobs
        if max_doc_tokens is not None and (isinstance(max_doc_tokens, bool) or max_doc_tokens < 1):
            raise ValueError(f"max_doc_tokens must be an integer >= 1 or None, got {max_doc_tokens!r}")
        self.max_doc_words, self.max_doc_tokens = max_doc_words, max_doc_tokens
        default = {"yesno": "yesno", "graded": "graded", "likelihood": "query-likelihood"}[mode]
        default = "rank1" if reasoning and mode == "yesno" else default
        over: dict[str, Any] = {"labels": tuple(labels)} if labels is not None else {}
        if instruction is not None:
            over["instruction"] = instruction
        for key, cap in (("max_query_tokens", max_query_tokens), ("max_pair_tokens", max_pair_tokens)):
            if cap != "prompt":
                if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
                    raise ValueError(f"{key} must be an integer >= 1 or None, got {cap!r}")
                over[key] = cap
        self.prompt: PointwisePrompt = get_prompt(prompt or default, modes[mode], **over)
        if mode != "likelihood" and len(self.prompt.labels) < 2:
            raise ValueError(f"mode={mode!r} needs at least two labels, got {self.prompt.labels}")
        if mode == "likelihood" and not is_local(self.engine) and endpoint == "chat":
            raise ValueError("mode='likelihood' needs prompt log-probabilities: use endpoint='completions'")
        self.score_by = score or self.prompt.score
        if self.score_by not in ("yes-no", "yes"):
            raise ValueError(f"score={self.score_by!r}; expected 'yes-no' or 'yes'")
        if self.score_by == "yes" and (mode != "yesno" or not is_local(self.engine)):
            raise ValueError("score='yes' (a raw logit) needs mode='yesno' and a local engine")
        logit = mode == "yesno" and self.score_by == "yes-no"
        self.score_kind = ScoreKind.LOGIT if logit else ScoreKind.UNBOUNDED
        self._suffix, self._label_ids = "", []
        #: the server path renders the local path's exact prompt: the engine has a tokenizer (tokenizer=)
        self.same_prompt = is_local(self.engine) or getattr(self.engine, "tokenizer", None) is not None
        if mode != "likelihood" and self.same_prompt:
            self._suffix, self._label_ids = self._local_labels()
        #: with ``reasoning=True``: its ``stats`` (trace lengths, calls) and ``traces`` (``keep_traces=True``)
        self.reasoner = PointwiseReasoner(self, **think) if reasoning else None
        self.stats: dict[str, Any] = {}  # "label_mass": the labels' first-token mass (llm_server.record_mass)

    def _local_labels(self) -> tuple[str, list[int]]:
        """Label token ids. When ``prefix + label`` starts with a bare-space token (Gemma writes " 0" as "▁",
        "0"), the space moves into the prompt and the label's own token is used."""
        pre = self.prompt.label_prefix
        encs = [self.engine.encode(pre + w, special=False) for w in self.prompt.labels]
        tok = self.engine.tokenizer
        if pre and all(len(e) > 1 and not tok.decode(e[:1]).strip() for e in encs):
            return pre, [self.engine.encode(w, special=False)[0] for w in self.prompt.labels]
        ids = [e[0] for e in encs]
        if len(set(ids)) < len(ids):
            raise ValueError(f"labels {self.prompt.labels} do not start with distinct tokens")
        return "", ids

    def _values(self) -> np.ndarray:
        try:
            return np.array([float(x) for x in self.prompt.labels])
        except ValueError:
            return np.arange(len(self.prompt.labels), dtype=np.float64)[::-1]

    def _piece_ids(self, query: str, doc: str) -> list[int]:
        """Token ids of a ``pieces`` prompt: each piece tokenized alone, BOS per ``prompt.bos``; the query's
        and the document's pieces cut to the prompt's caps and the context (:func:`cap_pieces`)."""
        return self._pieces_many([query], [doc])[0]

    def _pieces_many(self, queries: list[str], docs: list[str]) -> list[list[int]]:
        """:meth:`_piece_ids` of many pairs, every piece of every pair tokenised in one batched call."""
        e, tok = self.engine, self.engine.tokenizer
        rendered = [self.prompt.render_pieces(q, d) for q, d in zip(queries, docs)]
        uniq = list(dict.fromkeys(x for r in rendered for x in r))  # template pieces, a query's pieces: once
        ids_of = dict(zip(uniq, encode_texts(e, uniq, special=False)))
        flat = [ids_of[x] for r in rendered for x in r]
        suffix = [encode_texts(e, [self._suffix], special=False)[0]] if self._suffix else []
        bos = tok.bos_token_id
        head = [bos] if self.prompt.bos == "auto" and bos is not None and bos != tok.pad_token_id else []
        out, at = [], 0
        for r in rendered:
            ids = cap_pieces(self.prompt, [*flat[at : at + len(r)], *suffix], e.max_length, len(head))
            out.append(head + [t for x in ids for t in x])
            at += len(r)
        return out

    def _finish_labels(self, lp: np.ndarray) -> np.ndarray:
        if self.mode == "yesno" and self.score_by == "yes":
            return lp[:, 0]
        if self.mode == "yesno":
            return lp[:, 0] - lp[:, 1]
        p = np.exp(lp - lp.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        return p @ self._values()

    def _cut(self, text: str) -> str:
        """The document as the prompt holds it before the context fit: ``max_doc_tokens`` tokens where the
        engine has a tokenizer, else ``max_doc_words`` whitespace words (a server without ``tokenizer=``)."""
        return self._cut_many([text])[0]

    def _cut_many(self, texts: list[str]) -> list[str]:
        if self.same_prompt:
            if self.max_doc_tokens is None:
                return list(texts)
            return truncate_texts(self.engine.tokenizer, texts, self.max_doc_tokens)
        n = self.max_doc_words
        return [" ".join(t.split()[:n]) if len(t.split()) > n else t for t in texts]

    def fit(self, render: Any, text: str, reserve: int = 0) -> tuple[str, list[int]]:
        """The document text a prompt holds and the prompt's token ids (``[]`` on a server whose context is
        unknown): :meth:`_cut`, then cut further until ``render(doc)`` plus ``reserve`` fits the context."""
        return self.fit_many([render], [text], [reserve])[0]

    def fit_many(
        self, renders: list[Any], texts: list[str], reserves: list[int] | None = None
    ) -> list[tuple[str, list[int]]]:
        """:meth:`fit` of many prompts: the cuts and the prompts' tokens each from one batched call."""
        docs = self._cut_many(texts)
        if not self.same_prompt or getattr(self.engine, "max_length", None) is None:
            return [(d, []) for d in docs]
        return fit_texts(self.engine, renders, docs, reserves)

    # -- local --------------------------------------------------------------------------------------------
    def _score_pairs(self, queries: list[str], texts: list[str], show_progress: bool = False) -> np.ndarray:
        if not is_local(self.engine):
            from ..backends.openai_compat import run_sync

            return run_sync(self._ascore_pairs(queries, texts))  # type: ignore[no-any-return]
        if self.reasoner is not None:
            return self.reasoner.score_pairs(queries, texts)
        if self.mode == "likelihood":
            uniq = list(dict.fromkeys(queries))
            cont_of = dict(
                zip(
                    uniq,
                    encode_texts(
                        self.engine, [self.prompt.continuation.format(query=q) for q in uniq], special=False
                    ),
                )
            )
            conts = [cont_of[q] for q in queries]
            render = self.prompt.template.format
            fitted = self.fit_many(
                [lambda d: render(document=d)] * len(texts), texts, [len(c) for c in conts]
            )
            prompts = [ids for _, ids in fitted]
            return np.array([float(np.mean(x)) for x in self.engine.continuation_logprobs(prompts, conts)])
        if self.prompt.pieces:
            prompts = self._pieces_many(queries, texts)
        else:
            renders = [lambda d, q=q: self.prompt.render(q, d) + self._suffix for q in queries]
            prompts = [ids for _, ids in self.fit_many(renders, texts)]
        if self.score_by == "yes":
            return self._finish_labels(self.engine.next_token_logits(prompts, self._label_ids))
        lp = self.engine.next_token_logprobs(prompts, self._label_ids)
        finite = np.isfinite(lp)
        for mass in np.where(finite, np.exp(np.where(finite, lp, 0.0)), 0.0).sum(1).tolist():
            record_mass(self.stats, mass, self.name)  # label_mass of each row
        return self._finish_labels(lp)

    # -- server -------------------------------------------------------------------------------------------
    async def _aone(self, query: str, text: str) -> np.ndarray:
        if self.reasoner is not None:
            return await self.reasoner.aone(query, text)
        e = self.engine
        if self.mode == "likelihood":
            cont = self.prompt.continuation.format(query=query)
            reserve = len(e.encode(cont, special=False)) if self.same_prompt else 0
            doc = self.fit(lambda d: self.prompt.template.format(document=d), text, reserve)[0]
            prompt = self.prompt.template.format(document=doc)
            got = await e.acomplete(prompt + cont, max_tokens=0, echo=True, logprobs=0)
            vals = [
                lp
                for lp, off in zip(got.token_logprobs, got.text_offset)
                if off >= len(prompt) and lp is not None
            ]
            return np.array([np.mean(vals) if vals else np.nan])
        doc = self.fit(lambda d: self.prompt.render(query, d) + self._suffix, text)[0]
        prompt = self.prompt.render(query, doc)
        if self.endpoint == "chat":
            got = await e.achat(
                [{"role": "user", "content": prompt}], max_tokens=1, top_logprobs=self.top_logprobs
            )
        else:
            got = await e.acomplete(prompt + self._suffix, max_tokens=1, logprobs=self.top_logprobs)
        top = got.top_logprobs[0] if got.top_logprobs else {}
        # a /completions prompt ends with the suffix, which then holds the label's space
        pre = "" if self._suffix and self.endpoint != "chat" else self.prompt.label_prefix
        record_mass(self.stats, pointwise_mass(top, self.prompt.labels, pre), self.name)
        if not any(has_label(top, w, pre) for w in self.prompt.labels):
            # no log-probabilities, or none for any label (a reasoning model's first token is "<think>"):
            # the smallest-listed fallback would give every document the same score
            logger.warning(
                "%s: the server's first-token log-probabilities name none of the labels %s (got %s); "
                "the pair is scored NaN",
                self.name,
                list(self.prompt.labels),
                sorted(top, key=lambda t: -top[t])[:5] if top else "none",
            )
            return np.array([np.nan])
        lp = np.array([[label_logprob(top, w, pre) for w in self.prompt.labels]])
        if not np.isfinite(lp).all():
            return np.array([np.nan])
        return self._finish_labels(lp)

    async def _ascore_pairs(self, queries: list[str], texts: list[str]) -> np.ndarray:
        got = await asyncio.gather(*(self._aone(q, t) for q, t in zip(queries, texts)))
        return np.concatenate(got) if got else np.zeros(0)

    async def _ascore_many(
        self, queries: list[str], docs_lists: list[list[Document]], show_progress: bool = False
    ) -> list[np.ndarray]:
        if is_local(self.engine):
            return await super()._ascore_many(queries, docs_lists, show_progress)
        pair_q, pair_t, owner = [], [], []
        for li, (q, docs) in enumerate(zip(queries, docs_lists)):
            for di, doc in enumerate(docs):
                pieces = [doc.text] if self.long_docs == "truncate" else self._split_passages(doc.text)
                for piece in pieces or [""]:
                    pair_q.append(q)
                    pair_t.append(piece)
                    owner.append((li, di))
        flat = await self._ascore_pairs(pair_q, pair_t)
        how = "first" if self.long_docs == "truncate" else self.long_docs
        return _aggregate(flat, owner, [len(d) for d in docs_lists], how)
