"""Prompt templates for LLM re-rankers, as named data.

Templates are ``str.format`` strings with named fields: pointwise prompts use ``{query}`` and ``{document}``;
listwise prompts use ``{query}``, ``{num}`` (the window size) and, per passage, ``{id}`` and ``{passage}``.
Pass a name from :data:`PROMPTS` or your own template string / dataclass to any LLM ranker.

>>> p = get_prompt("yesno")
>>> p.labels
('yes', 'no')
>>> p.render("what causes rain", "Rain is water.").endswith("Answer:")
True
>>> get_prompt("Q: {query} D: {document} Relevant?", kind="pointwise").labels
('yes', 'no')
>>> bge = get_prompt("bge-gemma")  # FlagEmbedding's bge-reranker-v2-gemma format; scored by logit('Yes')
>>> bge.score, bge.render("rain", "Rain is water.").splitlines()[:2]
('yes', ['A: rain', 'B: Rain is water.'])
>>> m = render_listwise(get_prompt("rankzephyr", "listwise"), "rain", ["a", "b"], ["1", "2"])
>>> [x["role"] for x in m]
['system', 'user']
>>> "[2] b" in m[1]["content"]
True
"""

from __future__ import annotations

import string
from dataclasses import dataclass, replace
from typing import Any

__all__ = [
    "PROMPTS",
    "ListwisePrompt",
    "PointwisePrompt",
    "cap_pieces",
    "get_prompt",
    "identifiers",
    "messages_to_text",
    "render_listwise",
]


@dataclass(frozen=True)
class PointwisePrompt:
    """A (query, document) prompt whose next token is one of ``labels`` (yes/no, or grades ``0..k``), or,
    for query likelihood, a prompt from the document alone followed by ``continuation``."""

    name: str
    template: str
    labels: tuple[str, ...] = ("yes", "no")
    label_prefix: str = " "  # what precedes a label word when the model writes it (" yes" after "Answer:")
    continuation: str = " {query}"  # query likelihood: the scored text after the prompt
    #: a local engine tokenizes each piece on its own (no special tokens) and joins the ids, as reference
    #: rerankers do; ``template`` is then ``"".join(pieces)`` (what a server gets). Empty: one string.
    pieces: tuple[str, ...] = ()
    #: with ``pieces``: ``"auto"`` prepends the tokenizer's BOS when it has one other than PAD
    #: (FlagEmbedding's rule), ``"none"`` adds nothing
    bos: str = "none"
    score: str = "yes-no"  # "yes-no": logit(yes) - logit(no); "yes": the raw logit of the first label
    instruction: str = ""  # fills an ``{instruction}`` field of the template
    #: what fills ``{instruction}`` when ``instruction`` is not empty (an empty one fills in nothing)
    instruction_format: str = "{instruction}"
    #: with ``pieces``, a reference's token caps (local engines; :func:`cap_pieces`): the pieces from the
    #: ``{query}`` one through the ``{document}`` one hold at most ``max_pair_tokens`` and the ``{query}``
    #: piece at most ``max_query_tokens`` (``None``: three quarters of the pair cap), the ``{document}`` piece
    #: ``max_doc_tokens``. ``None`` pair cap: only the context limits.
    max_pair_tokens: int | None = None
    max_query_tokens: int | None = None
    max_doc_tokens: int | None = None
    cap_rule: str = "mxbai"  # how the caps combine: "mxbai", "flagembedding" or "total" (see cap_pieces)

    def _instruction(self) -> str:
        return self.instruction_format.format(instruction=self.instruction) if self.instruction else ""

    def render(self, query: str, document: str) -> str:
        return self.template.format(query=query, document=document, instruction=self._instruction())

    def render_pieces(self, query: str, document: str) -> list[str]:
        """The formatted ``pieces`` (``[render(...)]`` when the prompt has none)."""
        parts = self.pieces or (self.template,)
        return [x.format(query=query, document=document, instruction=self._instruction()) for x in parts]


@dataclass(frozen=True)
class ListwisePrompt:
    """A listwise ranking prompt as chat messages.

    ``per_passage_turns`` (RankGPT) puts each passage in its own user turn followed by an assistant
    acknowledgement; otherwise (RankZephyr) all passages go in one user turn. An empty ``system`` sends no
    system turn; ``{id_list}`` in ``suffix`` lists every identifier as ``list_item`` (LRL).
    """

    name: str
    system: str
    prefix: str
    passage: str
    suffix: str
    per_passage_turns: bool = False
    ack: str = "Received passage [{id}]."
    first_ack: str = "Okay, please provide the passages."
    list_item: str = "[{id}]"


_YESNO = (
    "Query: {query}\nDocument: {document}\nIs the document relevant to the query? Answer yes or no.\nAnswer:"
)
# Qwen3-Reranker model card (huggingface.co/Qwen/Qwen3-Reranker-0.6B, "Transformers Usage"): prefix and
# suffix are tokenized apart from "<Instruct>: ...\n<Query>: ...\n<Document>: ..."; score P(yes | yes, no).
_QWEN3_PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the "
    'Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
)
_QWEN3_PIECES = (
    _QWEN3_PREFIX,
    "<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {document}",
    "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
)
# FlagEmbedding FlagLLMReranker (inference/reranker/decoder_only/base.py, bge-reranker-v2-gemma card):
# [BOS] + "A: {query}" + "\n" + "B: {passage}" + "\n" + prompt, each tokenized alone; score = logit('Yes').
_BGE_INSTRUCTION = (
    "Given a query A and a passage B, determine whether the passage contains an answer to the query by "
    "providing a prediction of either 'Yes' or 'No'."
)
_BGE_PIECES = ("A: {query}", "\n", "B: {document}", "\n", "{instruction}")
# mxbai-rerank v2 (pip mxbai-rerank, MxbaiRerankV2): Qwen chat prefix + "query: ..." (after "instruction:
# ...\n" when there is one) + "\n" + "document: ..." + "\n" + task prompt + chat suffix, each tokenized alone;
# score = logit('1') - logit('0').
# Its caps: "query: ..." keeps its first 6144 tokens, "query: ..." + "\n" + "document: ..." its first 8192
# (the document's tail goes), both lowered when the context is smaller (see cap_pieces).
_MXBAI_PIECES = (
    "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
    "<|im_start|>user\n",
    "{instruction}query: {query}",
    "\n",
    "document: {document}",
    "\n",
    "You are a search relevance expert who evaluates how well documents match search queries. For each "
    "query-document pair, carefully analyze the semantic relationship between them, then provide your "
    "binary relevance judgment (0 for not relevant, 1 for relevant).\nRelevance:",
    "<|im_end|>\n<|im_start|>assistant\n",
)
_GRADED = (
    "Query: {query}\nDocument: {document}\n"
    "How relevant is the document to the query, on a scale from 0 (not relevant) to 3 (perfectly "
    "relevant)?\nRelevance:"
)
_QLM = "Passage: {document}\nPlease write a question based on this passage.\nQuestion:"

_RANK_SYSTEM = (
    "You are {who}, an intelligent assistant that can rank passages based on their relevancy to the query."
)
_RANKGPT_SUFFIX = (
    "Search Query: {query}. \nRank the {num} passages above based on their relevance to the search query. "
    "The passages should be listed in descending order using identifiers. The most relevant passages should "
    "be listed first. The output format should be [] > [], e.g., [{ex1}] > [{ex2}]. Only response the "
    "ranking results, do not say any word or explain."
)
_ZEPHYR_SUFFIX = (
    "Search Query: {query}.\nRank the {num} passages above based on their relevance to the search query. "
    "All the passages should be included and listed using identifiers, in descending order of relevance. "
    "The output format should be [] > [], e.g., [{ex1}] > [{ex2}]. Only respond with the ranking results, "
    "do not say any word or explain."
)

PROMPTS: dict[str, PointwisePrompt | ListwisePrompt] = {
    "yesno": PointwisePrompt("yesno", _YESNO),
    "qwen3-reranker": PointwisePrompt(
        "qwen3-reranker",
        "".join(_QWEN3_PIECES),
        label_prefix="",
        pieces=_QWEN3_PIECES,
        instruction="Given a web search query, retrieve relevant passages that answer the query",
        max_pair_tokens=8192,  # the card's max_length: prefix + pair (cut from its end) + suffix
        cap_rule="total",
    ),
    "bge-gemma": PointwisePrompt(
        "bge-gemma",
        "".join(_BGE_PIECES),
        labels=("Yes", "No"),
        label_prefix="",
        pieces=_BGE_PIECES,
        bos="auto",
        score="yes",
        instruction=_BGE_INSTRUCTION,
        max_pair_tokens=512,  # FlagLLMReranker(max_length=512): query 384, passage 512 (cap_pieces)
        cap_rule="flagembedding",
    ),
    "mxbai-v2": PointwisePrompt(
        "mxbai-v2",
        "".join(_MXBAI_PIECES),
        labels=("1", "0"),
        label_prefix="",
        pieces=_MXBAI_PIECES,
        instruction_format="instruction: {instruction}\n",
        max_pair_tokens=8192,  # MxbaiRerankV2(max_length=8192); its query cap is max_length * 3 // 4
    ),
    "graded": PointwisePrompt("graded", _GRADED, labels=("0", "1", "2", "3")),
    "query-likelihood": PointwisePrompt("query-likelihood", _QLM, labels=()),
    "rankgpt": ListwisePrompt(
        "rankgpt",
        _RANK_SYSTEM.format(who="RankGPT"),
        "I will provide you with {num} passages, each indicated by number identifier []. \n"
        "Rank the passages based on their relevance to query: {query}.",
        "[{id}] {passage}",
        _RANKGPT_SUFFIX,
        per_passage_turns=True,
    ),
    "rankzephyr": ListwisePrompt(
        "rankzephyr",
        _RANK_SYSTEM.format(who="RankLLM"),
        "I will provide you with {num} passages, each indicated by a numerical identifier []. "
        "Rank the passages based on their relevance to the search query: {query}.\n",
        "[{id}] {passage}",
        _ZEPHYR_SUFFIX,
    ),
}

_MODE_DEFAULTS = {"pointwise": "yesno", "graded": "graded", "likelihood": "query-likelihood"}


def _fields(template: str) -> set[str]:
    return {f for _, f, _, _ in string.Formatter().parse(template) if f}


def get_prompt(prompt: Any, kind: str = "pointwise", **overrides: Any) -> Any:
    """A prompt by name, a user template string (pointwise kinds), or a prompt object; ``overrides``
    replace fields (``labels=("0", "1", "2")``).

    ``kind`` is ``"pointwise"``, ``"graded"``, ``"likelihood"`` or ``"listwise"``.
    """
    if isinstance(prompt, str) and prompt in PROMPTS:
        obj: Any = PROMPTS[prompt]
    elif isinstance(prompt, str):
        if kind == "listwise":
            known = sorted(k for k, v in PROMPTS.items() if isinstance(v, ListwisePrompt))
            raise ValueError(f"unknown listwise prompt {prompt!r}; known: {known} (or a ListwisePrompt)")
        need = {"document"} if kind == "likelihood" else {"query", "document"}
        missing = need - _fields(prompt)
        if missing:
            raise ValueError(f"prompt template lacks the field(s) {sorted(missing)}: {prompt!r}")
        base = PROMPTS[_MODE_DEFAULTS[kind]]
        obj = replace(base, name="custom", template=prompt)  # type: ignore[type-var]
    elif isinstance(prompt, (PointwisePrompt, ListwisePrompt)):
        obj = prompt
    else:
        raise TypeError(
            f"prompt must be a name, a template string or a prompt object, not {type(prompt).__name__}"
        )
    want = ListwisePrompt if kind == "listwise" else PointwisePrompt
    if not isinstance(obj, want):
        raise ValueError(f"prompt {getattr(obj, 'name', obj)!r} is not a {kind} prompt")
    if overrides.get("instruction") and "instruction" not in _fields(getattr(obj, "template", "")):
        raise ValueError(f"prompt {obj.name!r} has no {{instruction}} field: instruction= would be ignored")
    return replace(obj, **overrides) if overrides else obj


def cap_pieces(prompt: PointwisePrompt, ids: list[list[int]], context: int, head: int = 0) -> list[list[int]]:
    """Token ids of ``prompt.pieces`` (tokenized alone; any extra trailing pieces count as template) cut as
    the reference rerankers cut them: the ``{query}`` piece to its first ``max_query_tokens`` tokens, then the
    ``{document}`` piece from its end until the span from the query's piece through the document's holds at
    most its cap, and until everything plus ``head`` tokens (a BOS) fits ``context``. The cap, by
    ``cap_rule``:

    - ``"mxbai"`` (mxbai-rerank's ``MxbaiRerankV2``): ``max_pair_tokens``, lowered to what the context leaves
      after the other pieces; the default query cap follows it (``3 * pair // 4``);
    - ``"flagembedding"`` (FlagEmbedding's decoder rerankers, ``max_length``): the document piece first keeps
      ``max_doc_tokens`` (default ``max_pair_tokens``), the query piece ``3 * max_pair_tokens // 4``, and
      BOS + span may hold ``max_pair_tokens`` plus the tokens of the pieces after the document (its
      ``encode_max_length``).
    - ``"total"`` (the Qwen3-Reranker model card's ``max_length``): the whole prompt holds at most
      ``max_pair_tokens``; no query cap of its own.

    Raises ``ValueError`` when the document's piece would have to go entirely.

    >>> p = PointwisePrompt("t", "", pieces=("Q:{query}", "|", "D:{document}", "?"), max_pair_tokens=8)
    >>> cap_pieces(p, [[1] * 9, [2], [3] * 9, [4]], context=100)
    [[1, 1, 1, 1, 1, 1], [2], [3], [4]]
    >>> cap_pieces(p, [[1] * 2, [2], [3] * 9, [4]], context=7)
    [[1, 1], [2], [3, 3, 3], [4]]
    >>> fe = replace(p, cap_rule="flagembedding")
    >>> cap_pieces(fe, [[1] * 9, [2], [3] * 9, [4]], context=100, head=1)
    [[1, 1, 1, 1, 1, 1], [2], [3], [4]]
    """
    if prompt.cap_rule not in ("mxbai", "flagembedding", "total"):
        raise ValueError(f"cap_rule={prompt.cap_rule!r}; expected 'mxbai', 'flagembedding' or 'total'")
    out = [list(x) for x in ids]
    kq = next((i for i, x in enumerate(prompt.pieces) if "{query}" in x), None)
    kd = next(i for i, x in enumerate(prompt.pieces) if "{document}" in x)
    ends = (kd, kd if kq is None else kq)
    span = range(min(ends), max(ends) + 1)
    fixed = head + sum(len(x) for i, x in enumerate(out) if i not in span)
    pair, cap, q_cap = context - fixed, prompt.max_pair_tokens, prompt.max_query_tokens
    if prompt.max_doc_tokens is not None or (cap is not None and prompt.cap_rule == "flagembedding"):
        out[kd] = out[kd][: prompt.max_doc_tokens or cap]
    if cap is not None and prompt.cap_rule == "flagembedding":
        pair = min(pair, cap + sum(len(x) for x in out[max(span) + 1 :]) - head)
        q_cap = cap * 3 // 4 if q_cap is None else q_cap
    elif cap is not None and prompt.cap_rule == "total":
        pair = min(pair, cap - fixed)
    elif cap is not None:
        pair = min(pair, cap)
        q_cap = pair * 3 // 4 if q_cap is None else q_cap
    if kq is not None and kq != kd and q_cap is not None:
        out[kq] = out[kq][: max(q_cap, 0)]
    over = sum(len(out[i]) for i in span) - pair
    if over > 0:
        if over >= len(out[kd]):
            raise ValueError(
                f"the context limit of {context} tokens (query + document: at most {pair}) is too small "
                f"for this prompt ({prompt.name!r}) before any document text"
            )
        out[kd] = out[kd][:-over]
    return out


def identifiers(n: int, style: str = "numeric") -> list[str]:
    """Passage identifiers: ``"numeric"`` (1, 2, ...) or ``"alpha"`` (A, B, ...; single tokens, for FIRST).

    >>> identifiers(3, "alpha")
    ['A', 'B', 'C']
    """
    if style == "numeric":
        return [str(i + 1) for i in range(n)]
    if style == "alpha":
        if n > 26:
            raise ValueError(f"alpha identifiers cover at most 26 passages, got a window of {n}")
        return [chr(ord("A") + i) for i in range(n)]
    raise ValueError(f"identifier style {style!r}; expected 'numeric' or 'alpha'")


def render_listwise(
    prompt: ListwisePrompt, query: str, passages: list[str], ids: list[str]
) -> list[dict[str, str]]:
    """Chat messages ranking ``passages`` (labelled ``ids``) for ``query``."""
    num = len(passages)
    ex = (ids + ids)[:2] if ids else ["1", "2"]
    head = prompt.prefix.format(num=num, query=query)
    id_list = ", ".join(prompt.list_item.format(id=i) for i in ids)
    tail = prompt.suffix.format(
        num=num, query=query, ex1=ex[1] if num > 1 else ex[0], ex2=ex[0], id_list=id_list
    )
    msgs = [{"role": "system", "content": prompt.system}] if prompt.system else []
    if prompt.per_passage_turns:
        msgs += [{"role": "user", "content": head}, {"role": "assistant", "content": prompt.first_ack}]
        for i, p in zip(ids, passages):
            msgs.append({"role": "user", "content": prompt.passage.format(id=i, passage=p)})
            msgs.append({"role": "assistant", "content": prompt.ack.format(id=i)})
        msgs.append({"role": "user", "content": tail})
    else:
        body = "\n".join(prompt.passage.format(id=i, passage=p) for i, p in zip(ids, passages))
        msgs.append({"role": "user", "content": "\n".join(x for x in (head, body, tail) if x)})
    return msgs


def messages_to_text(
    messages: list[dict[str, str]],
    tokenizer: Any = None,
    assistant_prefix: str = "",
    template_kwargs: dict[str, Any] | None = None,
) -> str:
    """One prompt string: the tokenizer's chat template when it has one, else a plain transcript (base models
    such as Gemma 3 270M have no template). ``assistant_prefix`` starts the answer (``"["`` for FIRST);
    ``template_kwargs`` are extra template variables (``{"enable_thinking": False}``; a transcript has none).

    >>> messages_to_text([{"role": "user", "content": "hi"}], assistant_prefix="[")
    'User: hi\\n\\nAssistant: ['
    """
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, **(template_kwargs or {})
        )
        bos = getattr(tokenizer, "bos_token", None)
        if bos and text.startswith(bos):  # the tokenizer adds BOS itself
            text = text[len(bos) :]
        return str(text) + assistant_prefix
    parts = []
    for m in messages:
        role = m["role"]
        parts.append(m["content"] if role == "system" else f"{role.capitalize()}: {m['content']}")
    return "\n\n".join(parts) + "\n\nAssistant: " + assistant_prefix


from .prompts_presets import PRESETS as _PRESETS  # noqa: E402  (LRL, RankVicuna, APEER-style, thinking)

PROMPTS.update(_PRESETS)
