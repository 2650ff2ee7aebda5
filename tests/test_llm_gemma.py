"""Every LLM method end to end on the real packaged Gemma 3 270M GGUF: through the local engine (ONE converted
model shared by the session) and through the OpenAI-compatible engine against a loopback server."""
# ruff: noqa: F811

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from _llm_fixtures import gemma_engine, gemma_server  # noqa: F401
from unirank import Reranker
from unirank.prompts import PROMPTS

pytestmark = pytest.mark.slow

Q = "what causes rain"
DOCS = [
    "Rain forms when water vapour in clouds condenses into droplets heavy enough to fall.",
    "Cats purr when they are content.",
    "The stock market fell sharply on Monday.",
]


def test_pointwise_modes_on_gemma_match_the_raw_logits(gemma_engine):
    import torch

    yesno = Reranker("llm-pointwise", engine=gemma_engine)
    tok, model = gemma_engine.tokenizer, gemma_engine.model
    yes, no = tok.convert_tokens_to_ids("▁yes"), tok.convert_tokens_to_ids("▁no")
    want = []
    for d in DOCS:
        with torch.no_grad():
            logits = model(**tok(PROMPTS["yesno"].render(Q, d), return_tensors="pt")).logits[0, -1]
        want.append(float(logits[yes] - logits[no]))
    np.testing.assert_allclose(yesno.score(Q, DOCS), want, atol=1e-3)
    graded = Reranker("llm-pointwise", engine=gemma_engine, mode="graded").score(Q, DOCS)
    assert all(0 <= x <= 3 for x in graded)
    ql = Reranker("llm-pointwise", engine=gemma_engine, mode="likelihood").score(Q, DOCS)
    assert int(np.argmax(ql)) == 0  # the rain passage makes the query likeliest


@pytest.mark.parametrize("method", ["generate", "first"])
def test_listwise_on_gemma(method, gemma_engine):
    r = Reranker(
        "llm-listwise", engine=gemma_engine, method=method, window_size=3, max_doc_tokens=24, max_new_tokens=8
    )
    assert sorted(r.rank(Q, DOCS).indices) == [0, 1, 2]
    assert r.stats["calls"] == 1


def test_icr_on_gemma_takes_two_forwards(gemma_engine):
    before = gemma_engine.forward_calls
    s = Reranker("icr", engine=gemma_engine).score(Q, DOCS)
    assert gemma_engine.forward_calls - before == 2 and np.isfinite(s).all()
    assert gemma_engine.model.config._attn_implementation != "eager"  # restored for the other methods


def test_every_server_method_on_gemma(gemma_engine, gemma_server):
    url = gemma_server.base_url
    local = Reranker("llm-pointwise", engine=gemma_engine).score(Q, DOCS)
    remote = Reranker("llm-pointwise:openai:gemma", base_url=url, top_logprobs=50).score(Q, DOCS)
    np.testing.assert_allclose(remote, local, atol=2e-3)  # " yes" / " no" are in Gemma's top 50 here
    ql = Reranker("llm-pointwise:openai:gemma", base_url=url, mode="likelihood").score(Q, DOCS)
    assert int(np.argmax(ql)) == 0
    first = Reranker(
        "llm-listwise:openai:gemma", base_url=url, method="first", window_size=3, max_doc_tokens=40
    )
    assert sorted(first.rank(Q, DOCS).indices) == [0, 1, 2]
    gen = Reranker(
        "llm-listwise:openai:gemma", base_url=url, endpoint="chat", window_size=3, max_doc_tokens=40
    )
    assert sorted(asyncio.run(gen.arank(Q, DOCS)).indices) == [0, 1, 2]


@pytest.mark.parametrize(("mode", "max_doc_tokens"), [("yesno", 12), ("graded", 12)])
def test_pointwise_server_prompt_is_the_local_prompt_on_gemma(
    gemma_engine, gemma_server, mode, max_doc_tokens
):
    """Gemma's SentencePiece tokenizer on the server path (tokenizer=): the server is sent the local prompt
    token for token; graded labels ("0".."3" are "▁", "0" in Gemma) move the space into the prompt on both
    paths."""
    seen: list[list[int]] = []
    real = gemma_engine.next_token_logprobs

    def spy(prompts, token_ids=None):
        seen.extend(list(p) for p in prompts)
        return real(prompts, token_ids)

    opts = dict(mode=mode, max_doc_tokens=max_doc_tokens)
    gemma_engine.next_token_logprobs = spy
    try:
        want = Reranker("llm-pointwise", engine=gemma_engine, **opts).score(Q, DOCS)
    finally:
        del gemma_engine.next_token_logprobs
    before = len(gemma_server.requests)
    remote = Reranker(
        "llm-pointwise:openai:gemma",
        base_url=gemma_server.base_url,
        tokenizer=gemma_engine.tokenizer,
        top_logprobs=50,
        **opts,
    )
    got = remote.score(Q, DOCS)
    sent = [r["payload"]["prompt"] for r in gemma_server.requests[before:]]
    # requests arrive concurrently, in any order; DOCS[0] is cut to 12 tokens on both paths
    assert sorted(gemma_engine.encode(s) for s in sent) == sorted(seen)
    assert len(seen[0]) < len(gemma_engine.encode(remote.prompt.render(Q, DOCS[0])))
    if mode == "yesno":
        np.testing.assert_allclose(got, want, atol=2e-3)
    else:  # labels outside the top 50 get the smallest listed value: an upper bound, same order here
        assert np.isfinite(got).all()
