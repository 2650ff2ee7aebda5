"""Listwise LLM rankers: the permutation parser (property-tested), FIRST checked against raw logits,
generation windows, strategies over them, token budgets, and the OpenAI-compatible engine."""
# ruff: noqa: F811

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from _llm_fixtures import tiny_causal_lm, tiny_engine, tiny_server  # noqa: F401
from unirank import Reranker
from unirank.methods.llm_listwise import FirstWindow, GenerationWindow, parse_permutation
from unirank.prompts import identifiers, messages_to_text, render_listwise
from unirank.types import Document, ScoreKind

Q = "what causes rain"
DOCS = [
    Document(t, str(i)) for i, t in enumerate(["rain falls", "cats purr", "sun shines", "fog rolls", "snow"])
]


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(alphabet=st.sampled_from(list("[]>0123456789 ,abcXYZ\n-")), max_size=80),
    n=st.integers(0, 25),
)
def test_any_output_parses_to_a_permutation(text, n):
    for style in ("numeric", "alpha"):
        if style == "alpha" and n > 26:
            continue
        p = parse_permutation(text, n, style)
        assert sorted(p.order) == list(range(n))
        assert p.missing == n - len({i for i in p.order[: n - p.missing]})


@settings(max_examples=100, deadline=None)
@given(perm=st.permutations(list(range(12))))
def test_a_well_formed_output_needs_no_repair(perm):
    text = " > ".join(f"[{i + 1}]" for i in perm)
    p = parse_permutation(text, 12)
    assert p.order == list(perm) and not p.repaired
    alpha = " > ".join(f"[{chr(65 + i)}]" for i in perm)
    assert parse_permutation(alpha, 12, "alpha").order == list(perm)


def test_parser_repairs_are_counted():
    p = parse_permutation("I think [3] > [3] > [7] > [1]", 4)
    assert p.order == [2, 0, 1, 3] and (p.unknown, p.duplicates, p.missing) == (1, 1, 2)
    assert parse_permutation("", 3).order == [0, 1, 2]
    with pytest.raises(TypeError):
        parse_permutation(None, 3)  # type: ignore[arg-type]


def test_first_orders_by_the_raw_first_identifier_logits_in_one_forward(tiny_engine, tiny_causal_lm):
    import torch
    import transformers

    w = FirstWindow(tiny_engine, prompt="rankzephyr", window_size=5)
    before = tiny_engine.forward_calls
    order = w.rank_window(Q, DOCS)
    assert tiny_engine.forward_calls == before + 1
    # oracle: the raw model on the same prompt text
    tok = transformers.AutoTokenizer.from_pretrained(tiny_causal_lm)
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_causal_lm).eval()
    msgs = render_listwise(w.prompt, Q, [d.text for d in DOCS], identifiers(5, "alpha"))
    with torch.no_grad():
        logits = model(**tok(messages_to_text(msgs, tok, "["), return_tensors="pt")).logits[0, -1]
    letters = [tok.convert_tokens_to_ids(c.lower()) for c in "ABCDE"]
    assert order == [int(i) for i in np.argsort(-logits[letters].numpy(), kind="stable")]


def test_generation_window_returns_a_permutation_and_counts_repairs(tiny_engine):
    w = GenerationWindow(tiny_engine, window_size=5, max_new_tokens=8)
    order = w.rank_window(Q, DOCS)
    assert sorted(order) == list(range(5))
    assert w.stats["windows"] == 1 and w.stats["calls"] == 1 and w.stats["repaired"] in (0, 1)
    assert w.rank_window(Q, DOCS[:1]) == [0] and w.stats["calls"] == 1  # one document: no model call


@pytest.mark.parametrize(
    ("method", "strategy"), [("generate", "sliding"), ("first", "sliding"), ("first", "jointrank")]
)
def test_listwise_ranker_under_strategies(method, strategy, tiny_engine):
    r = Reranker(
        "llm-listwise", engine=tiny_engine, method=method, window_size=3, strategy=strategy, max_new_tokens=6
    )
    assert r.score_kind is ScoreKind.RANK
    res = r.rank(Q, DOCS)
    assert sorted(res.indices) == list(range(5))
    assert r.stats["windows"] >= 2


def test_window_too_big_for_the_context_is_a_clear_error(tiny_causal_lm):
    from unirank.backends.causal_lm import CausalLM

    small = CausalLM(tiny_causal_lm, max_length=64)
    w = FirstWindow(small, window_size=5)
    with pytest.raises(ValueError, match="context limit of 64 tokens is too small for a window of 5"):
        w.rank_window(Q, DOCS)
    roomy = CausalLM(tiny_causal_lm, max_length=200)
    long_docs = [Document("rain " * 400, str(i)) for i in range(3)]
    assert sorted(FirstWindow(roomy, window_size=3).rank_window(Q, long_docs)) == [0, 1, 2]  # docs were cut


def test_first_through_the_server_matches_local(tiny_engine, tiny_server):
    local = FirstWindow(tiny_engine, prompt="rankzephyr", window_size=5).window_logprobs(Q, DOCS)
    r = Reranker(
        "llm-listwise:openai:test-model",
        base_url=tiny_server.base_url,
        method="first",
        window_size=5,
        top_logprobs=100_000,
    )
    remote = asyncio.run(r.window.awindow_logprobs(Q, DOCS))
    np.testing.assert_allclose(remote, local, atol=1e-3)
    assert r.rank(Q, DOCS).indices == [int(i) for i in np.argsort(-local, kind="stable")]


@pytest.mark.parametrize("endpoint", ["chat", "completions"])
def test_generation_through_the_server(endpoint, tiny_server):
    r = Reranker(
        "llm-listwise:test-model",
        base_url=tiny_server.base_url,
        endpoint=endpoint,
        window_size=3,
        stride=2,
        max_new_tokens=6,
    )
    res = asyncio.run(r.arank(Q, DOCS))
    assert sorted(res.indices) == list(range(5))
    assert r.stats["calls"] == len(tiny_server.requests) >= 2


def test_unknown_method_and_strategy_options(tiny_engine):
    with pytest.raises(ValueError, match="method"):
        Reranker("llm-listwise", engine=tiny_engine, method="nope")
    with pytest.raises(ValueError, match="unknown options"):
        Reranker("llm-listwise", engine=tiny_engine, bogus=1)
    with pytest.raises(ValueError, match="26"):
        Reranker("llm-listwise", engine=tiny_engine, method="first", window_size=30)
