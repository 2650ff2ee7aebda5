"""Reasoning rerankers (issue 15): the answer is read after the last ``</think>`` (or from the server's
reasoning field), never from the trace; thinking budgets, forced closes, trace lengths; Rank1-style pointwise
labels after the trace; the prompt presets."""
# ruff: noqa: F811

from __future__ import annotations

import logging

import numpy as np
import pytest

from _llm_fixtures import tiny_causal_lm, tiny_engine  # noqa: F401
from _reasoning_server import ReasoningServer, rel_docs
from unirank import Reranker
from unirank.methods.llm_listwise import strip_reasoning
from unirank.methods.reasoning import Split, split_reasoning
from unirank.prompts import PROMPTS, ListwisePrompt, get_prompt, render_listwise
from unirank.prompts_presets import PRESETS, THINKING

RELS = [2, 9, 5, 7, 1, 8]
IDEAL = sorted(range(len(RELS)), key=lambda i: -RELS[i])


def _serve(**kw):
    return ReasoningServer(**kw).start()


def _listwise(server, **kw):
    kw.setdefault("window_size", 6)
    return Reranker("llm-listwise:openai:test-model", base_url=server.base_url, max_retries=0, **kw)


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("<think>[3] ... [1] ... [2]</think>\n[2] > [1] > [3]", "[2] > [1] > [3]"),
        ("[3] first? then [1] </think>\n[2] > [1] > [3]", "[2] > [1] > [3]"),  # template opened it
        ("<think>a [1]</think> [1] > [2] <think>no, [2]</think> [2] > [1]", "[2] > [1]"),  # the LAST one
        ("<think>[1]?</think> <answer>[2] > [1]</answer>", "[2] > [1]"),
        ("<think>[3] [1] [2] and the budget ran out", None),
        ("[2] > [1]", "[2] > [1]"),
    ],
)
def test_split_reasoning(text, answer):
    assert split_reasoning(text).answer == answer


def test_split_reasoning_server_field():
    assert split_reasoning("[2] > [1]", reasoning="[1] looks weak") == Split("[2] > [1]", "[1] looks weak")


def test_strip_reasoning_reads_after_the_last_close():
    # issue 15.5: with the trace opened by the chat template (no "<think>" in the output) the old parser read
    # the passages named while thinking
    assert strip_reasoning("[3] ... [1] ... [2] </think>\n[2] > [1] > [3]") == "[2] > [1] > [3]"
    assert strip_reasoning("<think>[3] [1] [2]") == ""


@pytest.mark.parametrize("shape", ["noopen", "tagged"])
def test_chat_generation_ranks_by_the_final_answer_not_the_trace(shape):
    """Issue 15.5 against a server: the trace names the passages worst first, the answer best first."""
    server = _serve(shape=shape)
    try:
        r = _listwise(server, endpoint="chat", max_new_tokens=400)
        assert r.rank("rain", rel_docs(RELS)).indices == IDEAL
        assert r.stats["repaired"] == 0
    finally:
        server.stop()


@pytest.mark.parametrize("shape", ["tagged", "noopen", "answer"])
def test_reasoning_listwise_completions(shape):
    server = _serve(shape=shape, trace_words=40)
    try:
        r = _listwise(server, reasoning=True, max_reasoning_tokens=200, keep_traces=True)
        assert r.rank("rain", rel_docs(RELS)).indices == IDEAL
        sent = server.requests[-1]
        assert "stop" not in sent and not sent["prompt"].endswith("[")  # no newline stop, no prefill
        assert sent["max_tokens"] >= 200
        st = r.stats
        assert st["reasoning_calls"] == 1 and st["forced"] == 0 and st["repaired"] == 0
        assert st["reasoning_chars"] == len(r.window.traces[0]["trace"]) > 100
        assert "[" + str(IDEAL[-1] + 1) + "]" in r.window.traces[0]["trace"]  # the trace named it first
    finally:
        server.stop()


def test_reasoning_budget_forces_the_close_and_prefills_the_answer():
    server = _serve(shape="tagged", trace_words=300)
    try:
        r = _listwise(server, reasoning=True, max_reasoning_tokens=30)
        assert r.rank("rain", rel_docs(RELS)).indices == IDEAL
        assert r.stats["forced"] == 1 and r.stats["calls"] == 2
        assert server.requests[-1]["prompt"].endswith("</think>\n\n[")
    finally:
        server.stop()


def test_reasoning_chat_separate_field_and_usage():
    server = _serve(shape="separate", trace_words=50)
    try:
        r = _listwise(
            server, reasoning=True, endpoint="chat", max_reasoning_tokens=100, stride=3, window_size=4
        )
        res = r.rank_many(["rain", "rain"], [rel_docs(RELS), rel_docs(RELS[::-1])])
        assert res[0].indices[:2] == IDEAL[:2]
        assert res[1].indices[:2] == [len(RELS) - 1 - i for i in IDEAL[:2]]
        st = r.stats
        assert st["reasoning_calls"] == st["calls"] == 4 and st["reasoning_chars"] > 4 * 100
        usage = getattr(r.engine, "usage", None)  # Part A's counter, where it has landed
        if usage is not None:
            assert usage.calls == 4 and usage.completion_tokens > 4 * 50
    finally:
        server.stop()


def test_reasoning_chat_unterminated_warns_and_keeps_the_input_order(caplog):
    server = _serve(shape="separate", trace_words=300)
    try:
        r = _listwise(server, reasoning=True, endpoint="chat", max_reasoning_tokens=20)
        with caplog.at_level(logging.WARNING):
            assert r.rank("rain", rel_docs(RELS)).indices == list(range(len(RELS)))
        assert r.stats["unterminated"] == 1
        assert "never reached </think>" in caplog.text
    finally:
        server.stop()


def test_reasoning_needs_generation():
    with pytest.raises(ValueError, match="reasoning=True needs method='generate'"):
        Reranker("llm-listwise:openai:m", base_url="http://127.0.0.1:9/v1", method="first", reasoning=True)
    with pytest.raises(ValueError, match="max_reasoning_tokens"):
        Reranker(
            "llm-listwise:openai:m", base_url="http://127.0.0.1:9/v1", reasoning=True, max_reasoning_tokens=0
        )


# -- pointwise (Rank1) ---------------------------------------------------------------------------------------
def _pointwise(server, **kw):
    return Reranker(
        "llm-pointwise:openai:test-model", base_url=server.base_url, max_retries=0, reasoning=True, **kw
    )


@pytest.mark.parametrize(("first_only", "per_doc"), [(False, 1), (True, 2)])
def test_reasoning_pointwise_reads_the_label_after_the_trace(first_only, per_doc):
    server = _serve(first_only=first_only, trace_words=30)
    try:
        r = _pointwise(server, max_reasoning_tokens=100, keep_traces=True)
        assert r.prompt.name == "rank1"
        res = r.rank("rain", rel_docs(RELS))
        assert res.indices == IDEAL
        scores = r.score("rain", rel_docs(RELS))
        p = np.array(RELS) / 10
        np.testing.assert_allclose(scores, np.log(p) - np.log(1 - p), atol=1e-6)
        assert len(server.requests) == 2 * per_doc * len(RELS)
        assert r.reasoner.stats["reasoning_calls"] == 2 * len(RELS)
        assert r.reasoner.stats["calls"] == len(server.requests)
        assert all(t["chars"] > 50 for t in r.reasoner.traces)
        assert "stop" not in server.requests[0]
    finally:
        server.stop()


def test_reasoning_pointwise_chat_separate_field():
    server = _serve(shape="separate")
    try:
        r = _pointwise(server, endpoint="chat")
        assert r.rank("rain", rel_docs(RELS)).indices == IDEAL
    finally:
        server.stop()


def test_reasoning_pointwise_chat_without_label_logprobs_is_nan(caplog):
    server = _serve(shape="tagged", first_only=True)  # chat logprobs of the first token only
    try:
        r = _pointwise(server, endpoint="chat")
        with caplog.at_level(logging.WARNING):
            assert np.isnan(r.score("rain", rel_docs(RELS[:2]))).all()
        assert "after the reasoning trace" in caplog.text
    finally:
        server.stop()


# -- local engine --------------------------------------------------------------------------------------------
class _Scripted:
    """A local engine whose generation is scripted; everything else is the tiny model's."""

    def __init__(self, engine, outputs):
        self._e, self.outputs, self.generated, self.scored = engine, list(outputs), [], []

    def __getattr__(self, name):
        return getattr(self._e, name)

    def generate(self, prompts, max_new_tokens, stop=None):
        self.generated.append((len(prompts), max_new_tokens, stop))
        return [self.outputs.pop(0) for _ in prompts]

    def next_token_logprobs(self, prompts, token_ids=None):
        self.scored.extend(prompts)
        return self._e.next_token_logprobs(prompts, token_ids)


def test_local_reasoning_listwise_and_forced_close(tiny_engine):
    docs = rel_docs(RELS[:3])
    eng = _Scripted(tiny_engine, ["<think>[3] [1] [2]</think>\n[2] > [3] > [1]"])
    r = Reranker("llm-listwise:x", engine=eng, reasoning=True, max_reasoning_tokens=16, window_size=3)
    assert r.rank("rain", docs).indices == [1, 2, 0]
    assert eng.generated[0][2] is None and r.stats["reasoning_tokens"] > 0
    eng.outputs = ["<think>[3] [1] [2] and on and on", "2] > [1] > [3]"]
    assert r.rank("rain", docs).indices == [1, 0, 2]
    assert r.stats["forced"] == 1 and eng.generated[-1][2] == ["\n"]
    # the template opened the trace and the budget ended inside it: no "<think>", no "</think>" in the output
    eng.outputs = ["[3] > [1] > [2] maybe, or", "2] > [3] > [1]"]
    assert r.rank("rain", docs).indices == [1, 2, 0]
    assert r.stats["forced"] == 2


def test_local_reasoning_pointwise_scores_the_token_after_the_trace(tiny_engine):
    eng = _Scripted(tiny_engine, ["the passage is about rain", "nothing here"])
    r = Reranker("llm-pointwise:x", engine=eng, reasoning=True, max_reasoning_tokens=8)
    r.score("rain", rel_docs(RELS[:2]))
    assert eng.generated == [(2, 8, ["</think>"])]
    tail = tiny_engine.tokenizer.decode(eng.scored[0][-8:])
    assert tail.replace(" ", "").endswith("rain</think>"), tail


# -- presets -------------------------------------------------------------------------------------------------
def test_presets_are_registered_and_render():
    for name, p in PRESETS.items():
        assert PROMPTS[name] is p
        if isinstance(p, ListwisePrompt):
            msgs = render_listwise(get_prompt(name, "listwise"), "rain", ["wet", "dry"], ["1", "2"])
            text = "\n".join(m["content"] for m in msgs)
            assert "rain" in text and "wet" in text and "dry" in text and "{" not in text, name
    assert set(THINKING) <= set(PRESETS)
    assert get_prompt("rank1").render("q", "d").endswith("<think>")


def test_lrl_answers_parse():
    server = _serve(shape="plain")
    try:  # LRL names passages "Passage3": the server answers "[3] > ..."; the parser reads both spellings
        r = _listwise(server, prompt="lrl", endpoint="chat")
        assert r.rank("rain", rel_docs(RELS)).indices == IDEAL
        assert "Passage1 = passage 0" in server.requests[0]["messages"][0]["content"]
    finally:
        server.stop()
    assert strip_reasoning("Passage3, Passage1, Passage2") == "[3], [1], [2]"


def test_cost_estimate_counts_the_thinking_budget():
    r = Reranker(
        "llm-listwise:openai:m",
        base_url="http://127.0.0.1:9/v1",
        reasoning=True,
        max_reasoning_tokens=500,
        check_model=False,
    )
    est = r.estimate(num_queries=2, depth=20)
    assert est["completion_tokens"] >= est["calls"] * 500


def test_local_graded_reasoning_expected_label_after_the_trace(tiny_engine):
    """ERank-style: think, then the expected grade over the label tokens 0..3 at the token after the trace."""
    eng = _Scripted(tiny_engine, ["partly about rain", "not at all"])
    r = Reranker("llm-pointwise:x", engine=eng, mode="graded", reasoning=True, max_reasoning_tokens=8)
    got = np.asarray(r.score("rain", rel_docs(RELS[:2])), dtype=float)
    assert np.isfinite(got).all() and ((got >= 0) & (got <= 3)).all()
    assert tiny_engine.tokenizer.decode(eng.scored[1]).replace(" ", "").endswith("notatall</think>")
    assert r.reasoner.stats["reasoning_calls"] == 2
