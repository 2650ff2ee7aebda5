"""More prompt presets: LRL, RankVicuna, APEER-style, and the thinking ones (Rank1, Rank-K, ReasonRank).

Merged into :data:`unirank.prompts.PROMPTS` (pass the name as ``prompt=``). Sources, read for their formats:
RankVicuna (Pradeep et al. 2023, rank_llm: Vicuna's system line, the RankLLM user turn); LRL (Ma et al. 2023,
"Zero-Shot Listwise Document Reranking with a Large Language Model": ``PassageN = ...`` lines and
``Sorted Passages = [``); Rank1 (Weller et al. 2025, orionweller/rank1: "Determine if the following passage is
relevant to the query. Answer only with 'true' or 'false'." then ``<think>``, scored by ``true`` / ``false``
after ``</think>``); Rank-K (Yang et al. 2025: one user turn, ties allowed as ``[4] = [1]``, no system line)
and ReasonRank (Liu et al. 2025, 8421BCD/ReasonRank: a system line asking for ``<think>`` and
``<answer>`` tags around the ranking). ``apeer`` is APEER-style (Jin et al. 2024 refine the RankGPT
instruction automatically): a refined instruction in that spirit, not the paper's optimised text.

The thinking presets are meant for ``reasoning=True`` (see :mod:`unirank.methods.reasoning`): without it a
listwise answer is cut at the first newline and a pointwise label is read at the first token, inside the
trace.

>>> from unirank.prompts import get_prompt, render_listwise
>>> get_prompt("rank1").labels
('true', 'false')
>>> m = render_listwise(get_prompt("lrl", "listwise"), "rain", ["wet", "dry"], ["1", "2"])
>>> m[-1]["content"].splitlines()[-3::2]
['Passages = [Passage1, Passage2]', 'Sorted Passages = [']
>>> [x["role"] for x in render_listwise(get_prompt("rank-k", "listwise"), "rain", ["a"], ["1"])]
['user']
"""

from __future__ import annotations

from .prompts import ListwisePrompt, PointwisePrompt

__all__ = ["PRESETS", "THINKING"]

_RANKLLM_PREFIX = (
    "I will provide you with {num} passages, each indicated by a numerical identifier []. "
    "Rank the passages based on their relevance to the search query: {query}.\n"
)
_VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
    "detailed, and polite answers to the user's questions."
)
_VICUNA_SUFFIX = (
    "Search Query: {query}.\nRank the {num} passages above based on their relevance to the search query. "
    "All the passages should be included and listed using identifiers, in descending order of relevance. "
    "The output format should be [] > [], e.g., [{ex2}] > [{ex1}]. Only respond with the ranking results, "
    "do not say any word or explain."
)
_APEER_SYSTEM = (
    "You are RankGPT, an assistant that ranks passages by how well they answer a search query: "
    "direct, specific and correct answers first; length and style do not matter."
)
_APEER_SUFFIX = (
    "Search Query: {query}.\nRank the {num} passages above from the one that best answers the query to the "
    "one that answers it least. Favour passages that address the query directly and completely; passages "
    "that only share words with it come later. List every identifier exactly once, as [] > [], e.g., "
    "[{ex1}] > [{ex2}]. Answer with the ranking only."
)
_REASONRANK_SYSTEM = (  # ReasonRank's own wording, kept as the model was trained on it
    "You are RankLLM, an intelligent assistant that can rank passages based on their relevance to the "
    "query. Given a query and a passage list, you first thinks about the reasoning process in the mind and "
    "then provides the answer (i.e., the reranked passage list). The reasoning process and answer are "
    "enclosed within <think> </think> and <answer> </answer> tags, respectively, i.e., <think> reasoning "
    "process here </think> <answer> answer here </answer>."
)
_REASONRANK_SUFFIX = (
    "Search Query: {query}.\nRank the {num} passages above based on their relevance to the search query. "
    "All the passages should be included and listed using identifiers, in descending order of relevance. "
    "The format of the answer should be [] > [], e.g., [{ex1}] > [{ex2}]."
)
_RANKK_PREFIX = (  # Rank-K's own wording (as ReasonRank's evaluation code reproduces it)
    "Determine a ranking of the passages based on how relevant they are to the query. If the query is a "
    "question, how relevant a passage is depends on how well it answers the question. If not, try analyze "
    "the intent of the query and assess how well each passage satisfy the intent. The query may have typos "
    "and passages may contain contradicting information. However, we do not get into fact-checking. We just "
    "rank the passages based on they relevancy to the query. Sort them from the most relevant to the least. "
    "Answer with the passage number using a format of `[3] > [2] > [4] = [1] > [5]`. Ties are acceptable if "
    "they are equally relevant. I need you to be accurate but overthinking it is unnecessary. Output only "
    "the ordering without any other text.\n Query: {query}\n"
)
_RANK1 = (
    "Determine if the following passage is relevant to the query. Answer only with 'true' or 'false'.\n"
    "Query: {query}\nPassage: {document}\n<think>"
)

PRESETS: dict[str, PointwisePrompt | ListwisePrompt] = {
    "rank1": PointwisePrompt("rank1", _RANK1, labels=("true", "false")),
    "rankvicuna": ListwisePrompt(
        "rankvicuna", _VICUNA_SYSTEM, _RANKLLM_PREFIX, "[{id}] {passage}", _VICUNA_SUFFIX
    ),
    "lrl": ListwisePrompt(
        "lrl",
        "",
        "",
        "Passage{id} = {passage}",
        "Query = {query}\nPassages = [{id_list}]\nSort the Passages by their relevance to the Query.\n"
        "Sorted Passages = [",
        list_item="Passage{id}",
    ),
    "apeer": ListwisePrompt("apeer", _APEER_SYSTEM, _RANKLLM_PREFIX, "[{id}] {passage}", _APEER_SUFFIX),
    "reasonrank": ListwisePrompt(
        "reasonrank", _REASONRANK_SYSTEM, _RANKLLM_PREFIX, "[{id}] {passage}", _REASONRANK_SUFFIX
    ),
    "rank-k": ListwisePrompt("rank-k", "", _RANKK_PREFIX, "[{id}] {passage}", ""),
}

#: the presets written for a model that thinks first (use them with ``reasoning=True``)
THINKING = ("rank1", "reasonrank", "rank-k")
