"""The batched local engine: padded batches of prompts (either side, with or without a pad token) score
exactly as one prompt at a time on Llama-, Qwen- and Gemma-style models, and FIRST windows / pointwise
prompts of many queries run as shared batches with the same rankings."""
# ruff: noqa: F811

from __future__ import annotations

import random
from types import SimpleNamespace

import numpy as np
import pytest

from _llm_fixtures import make_tiny_causal, tiny_causal_lm, tiny_engine  # noqa: F401
from unirank import Reranker
from unirank.backends.causal_batch import collate_ids, prefix_groups
from unirank.backends.causal_lm import CausalLM
from unirank.methods.llm_listwise import FirstWindow
from unirank.types import Document

ATOL = 1e-4


def _prompts(engine: CausalLM, lengths: list[int], seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    bos = engine.tokenizer.bos_token_id
    return [[bos] + [rng.randrange(1000, 20000) for _ in range(n - 1)] for n in lengths]


LENGTHS = [3, 17, 9, 30, 1, 12, 25]  # longer than the Gemma-style sliding window (8) too


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma3"])
@pytest.mark.parametrize("pad", [True, False], ids=["pad", "nopad"])
def test_batched_next_token_equals_one_at_a_time(make_tiny_causal, arch, pad):
    folder = make_tiny_causal(arch, pad=pad)
    got = {}
    for side in ("left", "right"):
        engine = CausalLM(folder, padding_side=side, batch_size=16)
        if not pad:
            assert engine.tokenizer.pad_token_id is None
        prompts = _prompts(engine, LENGTHS)
        before = engine.forward_calls
        batched = engine.next_token_logprobs(prompts)
        assert engine.forward_calls - before == 1  # one padded batch
        single = np.stack([engine.next_token_logprobs([p])[0] for p in prompts])
        np.testing.assert_allclose(batched, single, atol=ATOL, rtol=0)
        assert np.isfinite(batched).all()
        logits = engine.next_token_logits(prompts, [5, 7])
        np.testing.assert_allclose(
            logits, np.stack([engine.next_token_logits([p], [5, 7])[0] for p in prompts]), atol=ATOL, rtol=0
        )
        conts = [p[1:4] or [1012] for p in _prompts(engine, LENGTHS, seed=1)]
        cb = engine.continuation_logprobs(prompts, conts)
        for p, c, row in zip(prompts, conts, cb):
            np.testing.assert_allclose(row, engine.continuation_logprobs([p], [c])[0], atol=ATOL, rtol=0)
        got[side] = batched
    np.testing.assert_allclose(got["left"], got["right"], atol=ATOL, rtol=0)


def test_eager_attention_left_padding_matches(make_tiny_causal):
    engine = CausalLM(make_tiny_causal("llama", pad=False), attn_implementation="eager")
    prompts = _prompts(engine, LENGTHS, seed=3)
    single = np.stack([engine.next_token_logprobs([p])[0] for p in prompts])
    np.testing.assert_allclose(engine.next_token_logprobs(prompts), single, atol=ATOL, rtol=0)


def test_collate_positions_count_real_tokens_only():
    left = collate_ids([[5, 6, 7], [8, 9]], pad_id=0, side="left")
    assert left["input_ids"].tolist() == [[5, 6, 7], [0, 8, 9]]
    assert left["attention_mask"].tolist() == [[1, 1, 1], [0, 1, 1]]
    assert left["position_ids"].tolist() == [[0, 1, 2], [0, 0, 1]]
    right = collate_ids([[5, 6, 7], [8, 9]], pad_id=0, side="right")
    assert right["input_ids"].tolist() == [[5, 6, 7], [8, 9, 0]]
    assert right["position_ids"].tolist() == [[0, 1, 2], [0, 1, 2]]
    with pytest.raises(ValueError, match="padding_side"):
        collate_ids([[1]], pad_id=0, side="middle")
    with pytest.raises(ValueError, match="padding_side"):
        CausalLM("no-such-model", padding_side="up")  # checked before anything loads


QUERIES = ["what causes rain", "how do cats purr", "stock market crash"]
DOCS = [
    [f"passage {j} about {w} and weather number {j * 7 % 5}" for j in range(7)]
    for w in ("rain", "cats", "markets")
]


def test_first_windows_of_many_queries_share_batches(tiny_engine):
    kw = dict(engine=tiny_engine, method="first", window_size=4, stride=2, max_doc_tokens=12)
    one = Reranker("llm-listwise", **kw)
    before = tiny_engine.forward_calls
    singles = [one.rank(q, d) for q, d in zip(QUERIES, DOCS)]
    single_forwards = tiny_engine.forward_calls - before
    many = Reranker("llm-listwise", **kw)
    before = tiny_engine.forward_calls
    batched = many.rank_many(QUERIES, DOCS)
    batched_forwards = tiny_engine.forward_calls - before
    for a, b in zip(singles, batched):
        assert a.indices == b.indices
        np.testing.assert_allclose([x.score for x in a], [x.score for x in b], atol=ATOL)
    assert one.stats["calls"] == many.stats["calls"] == single_forwards == 9  # 3 windows per query
    assert batched_forwards == 3  # one padded batch per sliding-window step, all queries at once
    # the window log-probabilities themselves, batched vs alone
    w = many.window
    prompts = [w.local_prompt(q, [Document(t) for t in docs[:4]], 1, "[") for q, docs in zip(QUERIES, DOCS)]
    np.testing.assert_allclose(
        tiny_engine.next_token_logprobs(prompts),
        np.stack([tiny_engine.next_token_logprobs([p])[0] for p in prompts]),
        atol=ATOL,
        rtol=0,
    )


def test_first_rank_windows_is_local_only():
    server = SimpleNamespace(base_url="http://127.0.0.1:1/v1")  # no next_token_logprobs: a server engine
    assert FirstWindow(server, window_size=4).rank_windows is None


@pytest.mark.parametrize("mode", ["yesno", "graded", "likelihood"])
def test_pointwise_many_queries_equal_one_at_a_time(tiny_engine, mode):
    r = Reranker("llm-pointwise", engine=tiny_engine, mode=mode)
    before = tiny_engine.forward_calls
    many = [
        np.array([x.score for x in sorted(res, key=lambda x: x.index)]) for res in r.rank_many(QUERIES, DOCS)
    ]
    batched_forwards = tiny_engine.forward_calls - before
    for q, d, got in zip(QUERIES, DOCS, many):
        np.testing.assert_allclose(got, r.score(q, d), atol=ATOL, rtol=0)
    assert batched_forwards == 3  # 21 prompts in batches of 8


def test_truncate_tokens_with_a_gemma_style_tokenizer():
    """Gemma's tokenizer turns spaces into "▁" before pre-tokenizing, so it reports ONE word for a whole text;
    token-budget truncation used to cut every longer document to "" (FIRST windows on Gemma were empty)."""
    from tokenizers import Tokenizer, models, normalizers, trainers
    from transformers import PreTrainedTokenizerFast

    from unirank.text import truncate_tokens

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.Replace(" ", "▁")
    text = "The study of anthropology is the study of human beings and their cultures"
    tok.train_from_iterator([text] * 3, trainers.BpeTrainer(vocab_size=60, special_tokens=["<unk>"]))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok)
    assert set(fast(text, add_special_tokens=False).word_ids()) == {0}  # one "word"
    for budget in (3, 8, 15):
        cut = truncate_tokens(fast, text, budget)
        assert cut and text.startswith(cut)
        assert len(fast(cut, add_special_tokens=False)["input_ids"]) <= budget


def test_local_usage_counts_tokens_as_a_server_would(tiny_engine):
    e = tiny_engine
    prompts = _prompts(e, [4, 9, 6], seed=5)
    before = e.usage.copy()
    e.next_token_logprobs(prompts, [5, 6])
    e.continuation_logprobs(prompts, [[1012, 1013]] * 3)
    e.generate([prompts[0]], max_new_tokens=3)
    spent = e.usage - before
    assert spent.calls == 3 + 3 + 1
    assert spent.prompt_tokens == 19 + (19 + 6) + 4
    assert spent.completion_tokens == 3 + 0 + 3  # one scored token per prompt; the decoded tokens


def test_first_batches_uneven_queries_and_window_sizes(tiny_causal_lm):
    """Queries with 7, 3 and 5 candidates: windows of different sizes share batches; one query ends early."""
    queries = QUERIES
    docs = [DOCS[0], DOCS[1][:3], DOCS[2][:5]]
    results = {}
    for side in ("left", "right"):
        kw = dict(method="first", window_size=4, stride=2, max_doc_tokens=12, padding_side=side)
        r = Reranker(f"llm-listwise:{tiny_causal_lm}", **kw)
        assert r.engine.padding_side == side  # the spec option reaches the engine
        many = r.rank_many(queries, docs)
        one = [r.rank(q, d) for q, d in zip(queries, docs)]
        assert [x.indices for x in many] == [x.indices for x in one]
        results[side] = [x.indices for x in many]
    assert results["left"] == results["right"]


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma3"])
def test_shared_prefix_kv_reuse_equals_full_prompts(make_tiny_causal, arch):
    """``share_prefix=True``: prompts sharing a prefix run it once and continue from its expanded KV cache
    (padding between the prefix and each row's own tokens); the scores equal the full prompts' to 1e-4."""
    folder = make_tiny_causal(arch)
    plain = CausalLM(folder, batch_size=4)
    shared = CausalLM(folder, batch_size=4, share_prefix=True)
    rng = random.Random(3)
    head_a, head_b = _prompts(plain, [12], seed=5)[0], _prompts(plain, [10], seed=6)[0]
    tails = [[rng.randrange(1000, 20000) for _ in range(n)] for n in (1, 6, 3, 2, 5, 4, 1)]
    # the Gemma-style window is 8 tokens: its prompts are longer, so they run whole (no grouping there)
    prompts = [head_a + t for t in tails[:4]] + [head_b + t for t in tails[4:]] + [_prompts(plain, [5])[0]]
    want = plain.next_token_logprobs(prompts)
    before = shared.forward_calls
    got = shared.next_token_logprobs(prompts)
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)
    if arch != "gemma3":  # 1 ungrouped prompt + (prefix + 1 batch of 4) + (prefix + 1 batch of 3)
        assert shared.forward_calls - before == 5
    else:  # longer than the 8-token window: padding after the prefix would count in it, so no groups
        assert prefix_groups(prompts, shared) == [] and len(prefix_groups(prompts)) == 2
    np.testing.assert_allclose(
        shared.next_token_logits(prompts, [5, 7]), plain.next_token_logits(prompts, [5, 7]), atol=ATOL, rtol=0
    )
    assert shared.usage.prompt_tokens == plain.usage.prompt_tokens  # billed as whole prompts


def test_shared_prefix_pointwise_ranker_scores_are_unchanged(tiny_causal_lm):
    docs = [f"document {i} about " + "rain clouds " * i for i in range(1, 9)]
    plain = Reranker("llm-pointwise", engine=CausalLM(tiny_causal_lm, batch_size=4))
    shared = Reranker("llm-pointwise", engine=CausalLM(tiny_causal_lm, batch_size=4, share_prefix=True))
    q = ["what causes rain", "why do cats purr"]
    a = plain.rank_many(q, [docs, docs])
    b = shared.rank_many(q, [docs, docs])
    for x, y in zip(a, b):
        np.testing.assert_allclose(sorted(r.score for r in x), sorted(r.score for r in y), atol=ATOL)
    # each query's prompts share "[CLS] query : <query> document : document": 2 prefixes run once
    assert shared.engine.forward_calls == 2 + 2 * 2 < plain.engine.forward_calls + 4
