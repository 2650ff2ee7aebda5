"""Issue 15, the server paths: FIRST and pointwise over ``chat`` work or fail loudly, the expected tokens'
probability mass is recorded, one prompt on the local and the server path, usage and cost estimates.
Every server is the loopback fake backed by the same tiny causal LM as the local engine."""
# ruff: noqa: F811

from __future__ import annotations

import asyncio
import logging

import numpy as np
import pytest

from _llm_fixtures import _serve, tiny_causal_lm, tiny_engine, tiny_server  # noqa: F401
from unirank import Reranker
from unirank.backends.openai_compat import EndpointError, ServerError
from unirank.methods.llm_listwise import FirstWindow
from unirank.methods.llm_server import MIN_LABEL_MASS
from unirank.types import Document

Q = "what causes rain"
WORDS = ["rain falls", "cats purr", "sun shines", "fog rolls", "snow"]
WORDS += ["wind blows", "tides", "hail", "dew", "mist"]
DOCS = [Document(t, str(i)) for i, t in enumerate(WORDS)]
ALL = 100_000  # top_logprobs: the tiny server lists every token


def _first(server, **kw):
    opts = dict(base_url=server.base_url, method="first", window_size=5, top_logprobs=ALL, max_retries=0)
    return Reranker("llm-listwise:test-model", **{**opts, **kw})


# -- 1. FIRST over chat --------------------------------------------------------------------------------------
def test_first_over_chat_prefills_the_answer_and_matches_local(tiny_engine, tiny_server):
    local = FirstWindow(tiny_engine, prompt="rankzephyr", window_size=5).window_logprobs(Q, DOCS[:5])
    r = _first(tiny_server, endpoint="chat")
    remote = asyncio.run(r.window.awindow_logprobs(Q, DOCS[:5]))
    np.testing.assert_allclose(remote, local, atol=1e-3)
    sent = tiny_server.requests[-1]["payload"]
    assert sent["messages"][-1] == {"role": "assistant", "content": "["} and sent["continue_final_message"]


def test_first_over_chat_on_a_server_that_ignores_the_prefill_raises(tiny_server):
    tiny_server.chat_prefill, tiny_server.fresh_turn = False, True  # answers " <<", 1 identifier in top 20
    r = _first(tiny_server, endpoint="chat", window_size=10, top_logprobs=20)
    with pytest.raises(EndpointError, match=r"only 1 of 10 identifiers.*' <<'.*endpoint='completions'"):
        r.rank(Q, DOCS)


def test_first_over_chat_on_a_server_that_rejects_the_prefill_raises(tiny_server):
    tiny_server.chat_prefill = "reject"
    with pytest.raises(EndpointError, match=r"continue_final_message.*endpoint='completions'"):
        _first(tiny_server, endpoint="chat").rank(Q, DOCS[:5])


def test_first_records_the_identifiers_mass_and_warns_when_low(tiny_engine, tiny_server, caplog):
    r = _first(tiny_server, window_size=4, stride=2)
    with caplog.at_level(logging.WARNING):
        r.rank(Q, DOCS[:6])
    local = FirstWindow(tiny_engine, prompt="rankzephyr", window_size=4)
    masses = []
    for w in (DOCS[2:6], DOCS[0:4]):  # the sliding windows, back to front, under the order of the first one
        masses.append(float(np.exp(local.window_logprobs(Q, w)).sum()))
    m = r.stats["label_mass"]
    assert m["calls"] == r.stats["windows"] == 2 and m["low"] == 2  # a random tiny model: mass ~ 1e-3
    assert m["min"] < MIN_LABEL_MASS and m["mean"] == pytest.approx(np.mean(masses), rel=0.2, abs=1e-4)
    assert sum("probability mass" in x.getMessage() for x in caplog.records) == 1  # once per ranker


# -- 2. pointwise over chat ----------------------------------------------------------------------------------
def test_pointwise_over_chat_without_logprobs_warns_and_scores_nan(tiny_server, caplog):
    tiny_server.misbehave = "emptytext"  # empty content, no logprobs: the constant 0.0 scores
    r = Reranker("llm-pointwise:test-model", base_url=tiny_server.base_url, endpoint="chat", max_retries=0)
    with caplog.at_level(logging.WARNING):
        s = r.score(Q, WORDS[:3])
    assert np.isnan(s).all()
    assert any("none of the labels" in x.getMessage() for x in caplog.records)
    assert r.stats["label_mass"] == {"calls": 3, "mean": 0.0, "min": 0.0, "low": 3}


def test_pointwise_label_mass_is_the_same_on_both_paths(tiny_engine, tiny_server):
    local = Reranker("llm-pointwise", engine=tiny_engine)
    remote = Reranker("llm-pointwise:test-model", base_url=tiny_server.base_url, top_logprobs=ALL)
    np.testing.assert_allclose(remote.score(Q, WORDS[:3]), local.score(Q, WORDS[:3]), atol=1e-3)
    a, b = local.stats["label_mass"], remote.stats["label_mass"]
    assert a["calls"] == b["calls"] == 3 and a["mean"] == pytest.approx(b["mean"], rel=1e-3, abs=1e-6)


# -- 6. one prompt on both paths -----------------------------------------------------------------------------
TEMPLATE = (
    "{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }} </{{ m['role'] }}>\n{% endfor %}"
    "{% if add_generation_prompt %}<assistant> {% endif %}"
)


@pytest.fixture(scope="module")
def templated_lm(tiny_causal_lm, tmp_path_factory):
    """The tiny causal LM with a chat template (the local path renders it; so must the server path)."""
    import shutil

    from transformers import AutoTokenizer

    out = tmp_path_factory.mktemp("tiny-chat")
    shutil.copytree(tiny_causal_lm, out, dirs_exist_ok=True)
    tok = AutoTokenizer.from_pretrained(out)
    tok.chat_template = TEMPLATE
    tok.save_pretrained(out)
    return out


@pytest.mark.parametrize("method", ["first", "generate"])
def test_local_and_server_prompts_are_identical(templated_lm, method):
    from unirank.backends.causal_lm import CausalLM

    engine = CausalLM(templated_lm)
    server = _serve(engine, max_logprobs=ALL)
    docs = [Document("photosynthesis " * 30 + "chlorophyll", str(i)) for i in range(3)]  # words != tokens
    try:
        opts = dict(method=method, window_size=3, max_doc_tokens=7, max_new_tokens=4, top_logprobs=ALL)
        local = Reranker("llm-listwise", engine=engine, **opts)
        want = local.window.local_prompt(Q, docs, 4, "[")
        remote = Reranker("llm-listwise:test-model", base_url=server.base_url, tokenizer=templated_lm, **opts)
        assert remote.rank(Q, docs).indices == local.rank(Q, docs).indices
        sent = server.requests[-1]["payload"]["prompt"]
        assert sent.startswith("<system>") and engine.encode(sent) == want
        bare = Reranker("llm-listwise:test-model", base_url=server.base_url, **opts)  # no tokenizer: differs
        bare.rank(Q, docs)
        assert engine.encode(server.requests[-1]["payload"]["prompt"]) != want
    finally:
        server.stop()


# -- usage and cost ------------------------------------------------------------------------------------------
def test_ranker_usage_sums_the_servers_usage(tiny_server):
    r = _first(tiny_server, window_size=3, stride=2)
    before = r.usage.copy()
    r.rank(Q, DOCS[:7])
    spent = r.usage - before
    assert spent.calls == len(tiny_server.requests) == r.stats["calls"] == 3
    assert spent.completion_tokens == 3 and spent.prompt_tokens > 3 * 40 and spent.calls_without_usage == 0


@pytest.mark.parametrize("opts", [dict(strategy="sliding", stride=2), dict(strategy="jointrank")])
def test_estimate_before_a_run_matches_the_run(tiny_causal_lm, tiny_server, opts):
    docs = [Document("rain " * 12, str(i)) for i in range(9)]  # every document fills its 6-token budget
    r = _first(tiny_server, window_size=4, max_doc_tokens=6, tokenizer=tiny_causal_lm, **opts)
    qtok = len(r.engine.tokenizer(Q, add_special_tokens=False)["input_ids"])
    est = r.estimate(num_queries=2, depth=9, query_tokens=qtok)
    r.rank_many([Q, Q], [docs, docs])
    assert est["calls"] == r.usage.calls == len(tiny_server.requests)
    assert est["completion_tokens"] == r.usage.completion_tokens
    assert est["prompt_tokens"] == pytest.approx(r.usage.prompt_tokens, rel=0.05)
    p = Reranker("llm-pointwise:test-model", base_url=tiny_server.base_url).estimate(num_queries=3, depth=10)
    assert p["calls"] == 30 and p["completion_tokens"] == 30


def _local_prompts(engine, monkeypatch):
    """Record the token ids the local engine is asked to score (the local path's prompts)."""
    seen: list[list[int]] = []
    real = engine.next_token_logprobs

    def spy(prompts, token_ids=None):
        seen.extend(list(p) for p in prompts)
        return real(prompts, token_ids)

    monkeypatch.setattr(engine, "next_token_logprobs", spy)
    return seen


@pytest.mark.parametrize(("mode", "max_doc_tokens"), [("yesno", None), ("graded", 9)])
def test_pointwise_local_and_server_prompts_are_identical(
    tiny_causal_lm, tiny_engine, tiny_server, monkeypatch, mode, max_doc_tokens
):
    """Pointwise over /completions with tokenizer=: the documents are fitted in tokens exactly as the local
    engine fits them (here: a 700-word document cut to the tokenizer's 512-token context, or max_doc_tokens),
    so the server is sent the local prompt token for token."""
    docs = ["photosynthesis " * 350 + "chlorophyll " * 350, "rain falls"]  # words != tokens
    opts = dict(mode=mode, max_doc_tokens=max_doc_tokens, top_logprobs=ALL)
    local = Reranker("llm-pointwise", engine=tiny_engine, **opts)
    seen = _local_prompts(tiny_engine, monkeypatch)
    want = local.score(Q, docs)
    prompts = list(seen)
    empty = len(tiny_engine.encode(local.prompt.render(Q, "")))
    assert len(prompts) == 2 and len(prompts[0]) == (max_doc_tokens + empty if max_doc_tokens else 512)
    remote = Reranker(
        "llm-pointwise:test-model", base_url=tiny_server.base_url, tokenizer=tiny_causal_lm, **opts
    )
    assert remote.engine.max_length == tiny_engine.max_length == 512  # the tokenizer's own limit
    np.testing.assert_allclose(remote.score(Q, docs), want, atol=1e-3)
    sent = sorted((r["payload"]["prompt"] for r in tiny_server.requests), key=len, reverse=True)
    assert [tiny_engine.encode(s) for s in sent] == prompts
    bare = Reranker("llm-pointwise:test-model", base_url=tiny_server.base_url, max_retries=0, **opts)
    if max_doc_tokens is None:  # no tokenizer: 300 *words*, over the server's context
        with pytest.raises(ServerError, match="over the model's context limit of 512"):
            bare.score(Q, docs[:1])


def test_pointwise_server_with_a_tokenizer_but_unknown_context_cuts_by_max_doc_tokens(
    tiny_causal_lm, tiny_server
):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_causal_lm, model_max_length=int(1e30))  # "no limit"
    r = Reranker("llm-pointwise:test-model", base_url=tiny_server.base_url, tokenizer=tok, max_doc_tokens=5)
    assert r.engine.max_length is None
    r.score(Q, ["alpha beta gamma delta epsilon zeta eta theta"])
    assert "alpha beta gamma delta epsilon\n" in tiny_server.requests[-1]["payload"]["prompt"]
