"""Issue 15, reasoning switches for servers: ``enable_thinking`` travels as
``chat_template_kwargs: {"enable_thinking": ...}`` (vLLM / SGLang) on chat requests and into the client-side
chat template of ``/completions`` prompts; ``reasoning_effort`` (OpenAI) on chat requests only; a server that
ignores them and still sends a trace is warned about and parsed after ``</think>``."""
# ruff: noqa: F811

from __future__ import annotations

import logging

import numpy as np
import pytest

from _llm_fixtures import tiny_causal_lm  # noqa: F401
from _reasoning_server import ReasoningServer, rel_docs
from unirank import Reranker
from unirank.backends.openai_compat import OpenAICompatEngine

RELS = [2, 9, 5, 7, 1, 8]
IDEAL = sorted(range(len(RELS)), key=lambda i: -RELS[i])
IGNORED = "although enable_thinking=False"


@pytest.fixture
def server():
    s = ReasoningServer(shape="tagged", trace_words=30).start()  # always thinks, whatever it is asked
    yield s
    s.stop()


def _listwise(server, **kw):
    kw.setdefault("window_size", 6)
    return Reranker("llm-listwise:openai:test-model", base_url=server.base_url, max_retries=0, **kw)


def test_chat_requests_carry_the_switches(server):
    r = _listwise(server, reasoning=True, endpoint="chat", enable_thinking=True, reasoning_effort="low")
    assert r.rank("rain", rel_docs(RELS)).indices == IDEAL
    sent = server.requests[-1]
    assert sent["chat_template_kwargs"] == {"enable_thinking": True} and sent["reasoning_effort"] == "low"
    plain = _listwise(server, endpoint="chat", max_new_tokens=200)  # unset: nothing is sent
    plain.rank("rain", rel_docs(RELS))
    assert "chat_template_kwargs" not in server.requests[-1] and "reasoning_effort" not in server.requests[-1]


def test_completions_requests_carry_no_chat_fields(server):
    r = _listwise(server, reasoning=True, enable_thinking=True, reasoning_effort="high")
    assert r.rank("rain", rel_docs(RELS)).indices == IDEAL
    sent = server.requests[-1]
    assert "prompt" in sent and "chat_template_kwargs" not in sent and "reasoning_effort" not in sent


@pytest.mark.parametrize("reasoning", [True, False])
def test_a_server_that_ignores_enable_thinking_false_is_warned_about_and_parsed(server, caplog, reasoning):
    extra = {"reasoning": True} if reasoning else {"max_new_tokens": 200}
    r = _listwise(server, endpoint="chat", enable_thinking=False, **extra)
    with caplog.at_level(logging.WARNING):
        res = r.rank_many(["rain", "rain"], [rel_docs(RELS), rel_docs(RELS)])
    assert [x.indices for x in res] == [IDEAL, IDEAL]  # read after </think>, not from the (reversed) trace
    assert server.requests[-1]["chat_template_kwargs"] == {"enable_thinking": False}
    assert sum(IGNORED in x.getMessage() for x in caplog.records) == 1  # once per engine


def test_pointwise_reasoning_switches_and_an_ignoring_server(caplog):
    server = ReasoningServer(shape="tagged", trace_words=30).start()
    try:
        r = Reranker(
            "llm-pointwise:openai:test-model",
            base_url=server.base_url,
            max_retries=0,
            reasoning=True,
            enable_thinking=False,
            reasoning_effort="minimal",
        )
        with caplog.at_level(logging.WARNING):
            scores = r.score("rain", rel_docs(RELS))
        p = np.array(RELS) / 10
        np.testing.assert_allclose(scores, np.log(p) - np.log(1 - p), atol=1e-6)  # the label after the trace
        assert IGNORED in caplog.text
        assert all("chat_template_kwargs" not in x for x in server.requests)  # /completions
    finally:
        server.stop()


def test_thinking_switch_reaches_the_client_side_template(tiny_causal_lm, tmp_path):
    """With ``tokenizer=`` a /completions prompt is the chat template rendered client-side: it sees
    ``enable_thinking`` (Qwen3's template writes an empty think block for False)."""
    import shutil

    from transformers import AutoTokenizer

    shutil.copytree(tiny_causal_lm, tmp_path, dirs_exist_ok=True)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    tok.chat_template = (
        "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}<assistant>"
        "{% if enable_thinking is defined and not enable_thinking %}<think>\n\n</think>\n\n{% endif %}"
    )
    server = ReasoningServer(shape="plain").start()
    try:
        prompts = {}
        for flag in (None, False):
            r = _listwise(server, tokenizer=tok, enable_thinking=flag, max_new_tokens=40)
            assert r.rank("rain", rel_docs(RELS)).indices == IDEAL
            prompts[flag] = server.requests[-1]["prompt"]
        assert prompts[False].endswith("<assistant><think>\n\n</think>\n\n[")
        assert prompts[None].endswith("<assistant>[")
    finally:
        server.stop()


def test_switch_values_are_checked():
    with pytest.raises(ValueError, match="enable_thinking"):
        OpenAICompatEngine("m", base_url="http://127.0.0.1:1/v1", enable_thinking="no")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="reasoning_effort"):
        OpenAICompatEngine("m", base_url="http://127.0.0.1:1/v1", reasoning_effort="")
    e = OpenAICompatEngine("m", base_url="http://127.0.0.1:1/v1", enable_thinking=False)
    assert e.chat_extras() == {"chat_template_kwargs": {"enable_thinking": False}}
