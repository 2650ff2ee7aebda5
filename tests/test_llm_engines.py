"""LLM engines: the local causal-LM engine against raw transformers, and the OpenAI-compatible client
against a loopback server backed by the same real model (retries, Retry-After, timeouts, concurrency,
keys)."""
# ruff: noqa: F811

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from _llm_fixtures import tiny_causal_lm, tiny_engine, tiny_server  # noqa: F401
from unirank.backends.openai_compat import OpenAICompatEngine, ServerError


def _raw_model(path):
    import transformers

    return transformers.AutoModelForCausalLM.from_pretrained(path).eval()


def test_next_token_and_continuation_logprobs_match_raw_transformers(tiny_engine, tiny_causal_lm):
    import torch

    model = _raw_model(tiny_causal_lm)
    prompts = [
        tiny_engine.encode(t) for t in ("what causes rain", "a much longer prompt about the weather today")
    ]
    got = tiny_engine.next_token_logprobs(prompts)  # batched, right-padded
    conts = [tiny_engine.encode(" water vapour", special=False), tiny_engine.encode(" no", special=False)]
    got_c = tiny_engine.continuation_logprobs(prompts, conts)
    for ids, row, cont, crow in zip(prompts, got, conts, got_c):
        with torch.no_grad():
            full = model(torch.tensor([ids + cont])).logits[0].log_softmax(-1)
        np.testing.assert_allclose(row, full[len(ids) - 1].numpy(), atol=1e-4)
        want = [float(full[len(ids) - 1 + j, t]) for j, t in enumerate(cont)]
        np.testing.assert_allclose(crow, want, atol=1e-4)


def test_greedy_generation_matches_an_argmax_loop(tiny_engine, tiny_causal_lm):
    import torch

    model = _raw_model(tiny_causal_lm)
    ids = tiny_engine.encode("rank these passages")
    seq = list(ids)
    with torch.no_grad():
        for _ in range(5):
            seq.append(int(model(torch.tensor([seq])).logits[0, -1].argmax()))
    want = tiny_engine.tokenizer.decode(seq[len(ids) :], skip_special_tokens=True)
    assert tiny_engine.generate([ids], 5)[0] == want


def test_prompt_over_the_context_is_a_clear_error(tiny_engine):
    with pytest.raises(ValueError, match="context limit of 512"):
        tiny_engine.next_token_logprobs([[5] * 600])


def test_server_logprobs_are_the_models(tiny_server, tiny_engine):
    e = OpenAICompatEngine("test-model", base_url=tiny_server.base_url)
    got = e.complete("what causes rain", max_tokens=1, logprobs=5)
    row = tiny_engine.next_token_logprobs([tiny_engine.encode("what causes rain")])[0]
    np.testing.assert_allclose(
        sorted(got.top_logprobs[0].values(), reverse=True), np.sort(row)[::-1][:5], atol=1e-4
    )
    chat = e.chat([{"role": "user", "content": "hello"}], max_tokens=3, top_logprobs=3)
    assert isinstance(chat.text, str) and len(chat.top_logprobs[0]) == 3


def test_retries_honour_retry_after_then_succeed(tiny_server):
    e = OpenAICompatEngine("test-model", base_url=tiny_server.base_url, backoff=0.01, max_retries=3)
    tiny_server.faults += ["429:0.3", "500", "garbage"]
    t0 = time.perf_counter()
    got = e.complete("rain", max_tokens=1)
    assert isinstance(got.text, str)
    assert len(tiny_server.requests) == 4
    gap = tiny_server.requests[1]["t"] - tiny_server.requests[0]["t"]
    assert gap >= 0.28, gap  # waited for Retry-After
    assert time.perf_counter() - t0 < 5


def test_exhausted_retries_and_timeouts_raise_a_typed_error_without_breaking_the_loop(tiny_server):
    e = OpenAICompatEngine(
        "test-model", base_url=tiny_server.base_url, backoff=0.01, max_retries=1, timeout=0.3
    )
    tiny_server.faults += ["slow:1", "slow:1"]

    async def main():
        with pytest.raises(ServerError, match="2 attempts"):
            await e.acomplete("rain", max_tokens=1)
        tiny_server.faults += ["empty", "500"]
        with pytest.raises(ServerError, match="HTTP 500"):
            await e.acomplete("rain", max_tokens=1)
        return (await e.acomplete("rain", max_tokens=1)).text  # the loop still works

    assert isinstance(asyncio.run(main()), str)


def test_client_errors_are_not_retried(tiny_server):
    e = OpenAICompatEngine("test-model", base_url=tiny_server.base_url, backoff=0.01)
    with pytest.raises(ServerError, match="HTTP 400"):
        e.complete("rain", max_tokens=1, logprobs=10**9)  # over the server's limit
    assert len(tiny_server.requests) == 1


def test_key_and_base_url_from_environment(tiny_server, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", tiny_server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    OpenAICompatEngine("test-model").complete("rain", max_tokens=1)
    assert tiny_server.requests[-1]["headers"].get("Authorization") == "Bearer sk-test"
    monkeypatch.delenv("OPENAI_API_KEY")
    OpenAICompatEngine("test-model").complete("rain", max_tokens=1)  # a local server needs no key
    assert "Authorization" not in tiny_server.requests[-1]["headers"]


def test_concurrency_limit_is_respected(tiny_server):
    e = OpenAICompatEngine("test-model", base_url=tiny_server.base_url, concurrency=2)
    tiny_server.faults += ["slow:0.3"] * 6

    async def main():
        await asyncio.gather(*(e.acomplete("rain", max_tokens=1) for _ in range(6)))

    t0 = time.perf_counter()
    asyncio.run(main())
    took = time.perf_counter() - t0
    starts = sorted(r["t"] for r in tiny_server.requests)
    # at most two requests are in flight: the 3rd starts only after the 1st (0.3 s) finished
    assert starts[2] - starts[0] >= 0.25 and took >= 0.85


# -- issue 15: engines that fail fast, usage, prompt log -----------------------------------------------------
def test_an_unknown_model_name_is_refused_listing_the_served_names(tiny_server):
    from unirank.backends.openai_compat import UnknownModelError

    e = OpenAICompatEngine("no-such-model", base_url=tiny_server.base_url, backoff=0.01)
    for _ in range(2):  # refused on every call, the list read once
        with pytest.raises(UnknownModelError, match="test-model") as err:
            e.complete("rain", max_tokens=1)
    assert err.value.served == ["test-model"]
    assert tiny_server.requests == [] and tiny_server.gets == ["/v1/models"]
    OpenAICompatEngine("test-model", base_url=tiny_server.base_url).complete("rain", max_tokens=1)


def test_a_server_without_a_models_route_accepts_any_name(tiny_server):
    tiny_server.list_models = False
    got = OpenAICompatEngine("anything", base_url=tiny_server.base_url).complete("rain", max_tokens=1)
    assert isinstance(got.text, str) and len(tiny_server.requests) == 1


@pytest.mark.parametrize(
    "url, why",
    [("127.0.0.1:8000/v1", "no http:// or https:// scheme"), ("ftp://127.0.0.1/v1", "unsupported protocol")],
)
def test_a_base_url_no_request_can_reach_fails_at_once(url, why):
    from unirank import Reranker
    from unirank.backends.openai_compat import ServerConfigError

    t0 = time.perf_counter()
    with pytest.raises(ServerConfigError, match=why):
        OpenAICompatEngine("m", base_url=url, backoff=1.0)
    with pytest.raises(ServerConfigError, match=why):
        Reranker("llm-listwise:m", base_url=url, method="first")
    assert time.perf_counter() - t0 < 1


@pytest.mark.parametrize("status", ["400", "401", "403", "404"])
def test_client_errors_are_raised_after_one_request(tiny_server, status):
    e = OpenAICompatEngine("test-model", base_url=tiny_server.base_url, backoff=0.5, max_retries=4)
    tiny_server.faults.append(status)
    t0 = time.perf_counter()
    with pytest.raises(ServerError, match=f"HTTP {status}"):
        e.complete("rain", max_tokens=1)
    assert len(tiny_server.requests) == 1 and time.perf_counter() - t0 < 1


def test_a_timed_out_request_is_cancelled_before_it_is_resent(tiny_server):
    e = OpenAICompatEngine(
        "test-model", base_url=tiny_server.base_url, backoff=0.2, max_retries=1, timeout=0.4
    )
    tiny_server.faults.append("slow:3")
    assert isinstance(e.complete("rain", max_tokens=1).text, str)  # the retry succeeds
    assert len(tiny_server.requests) == 2 and len(tiny_server.disconnects) == 1
    # the server saw the first request's connection close before the retry arrived
    assert tiny_server.disconnects[0] <= tiny_server.requests[1]["t"]


def test_a_cancelled_task_closes_its_request(tiny_server):
    e = OpenAICompatEngine("test-model", base_url=tiny_server.base_url, timeout=30)
    tiny_server.faults.append("slow:5")

    async def main():
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(e.acomplete("rain", max_tokens=1), 0.3)
        await asyncio.sleep(0.3)

    t0 = time.time()
    asyncio.run(main())
    assert len(tiny_server.disconnects) == 1 and tiny_server.disconnects[0] - t0 < 1.5


def test_usage_sums_the_servers_counts_and_the_log_has_every_request(tiny_server, tmp_path):
    import json

    log = tmp_path / "calls.jsonl"
    e = OpenAICompatEngine("test-model", base_url=tiny_server.base_url, log_path=log)
    e.complete("what causes rain", max_tokens=3, logprobs=2)
    e.chat([{"role": "user", "content": "hello"}], max_tokens=2)
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    want = [r["usage"] for r in (x["response"] for x in lines)]
    assert e.usage.calls == 2 and e.usage.calls_without_usage == 0
    assert e.usage.prompt_tokens == sum(u["prompt_tokens"] for u in want) > 0
    assert e.usage.completion_tokens == sum(u["completion_tokens"] for u in want)
    assert [x["endpoint"] for x in lines] == ["completions", "chat/completions"]
    assert lines[0]["request"]["prompt"] == "what causes rain" and lines[0]["seconds"] >= 0
