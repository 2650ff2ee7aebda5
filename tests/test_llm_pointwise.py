"""Pointwise LLM rankers checked by hand against the raw next-token logits of the transformers model,
locally and through the OpenAI-compatible engine (loopback server on the same weights)."""
# ruff: noqa: F811

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from _llm_fixtures import tiny_causal_lm, tiny_engine, tiny_server  # noqa: F401
from unirank import Reranker
from unirank.prompts import PROMPTS
from unirank.types import ScoreKind

Q = "what causes rain"
DOCS = ["rain forms when water vapour condenses", "cats purr when happy", "the sun is a star"]


@pytest.fixture(scope="module")
def raw(tiny_causal_lm):
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(tiny_causal_lm)
    return tok, transformers.AutoModelForCausalLM.from_pretrained(tiny_causal_lm).eval()


def _last_logits(raw, text):
    import torch

    tok, model = raw
    with torch.no_grad():
        return model(**tok(text, return_tensors="pt")).logits[0, -1]


def test_yesno_is_the_logit_difference_of_the_raw_model(tiny_causal_lm, raw):
    r = Reranker(f"llm-pointwise:{tiny_causal_lm}")
    assert r.score_kind is ScoreKind.LOGIT
    tok = raw[0]
    yes, no = tok.convert_tokens_to_ids("yes"), tok.convert_tokens_to_ids("no")
    want = []
    for d in DOCS:
        logits = _last_logits(raw, PROMPTS["yesno"].template.format(query=Q, document=d))
        want.append(float(logits[yes] - logits[no]))
    np.testing.assert_allclose(r.score(Q, DOCS), want, atol=1e-4)
    assert r.rank(Q, DOCS).indices == list(np.argsort(-np.array(want), kind="stable"))


def test_graded_is_the_expected_label(tiny_engine, raw):
    r = Reranker("llm-pointwise", engine=tiny_engine, mode="graded")
    ids = [raw[0].convert_tokens_to_ids(x) for x in ("0", "1", "2", "3")]
    want = []
    for d in DOCS:
        logits = _last_logits(raw, PROMPTS["graded"].template.format(query=Q, document=d))[ids]
        want.append(float((logits.softmax(-1) * np.arange(4)).sum()))
    np.testing.assert_allclose(r.score(Q, DOCS), want, atol=1e-4)


def test_query_likelihood_is_the_mean_query_log_probability(tiny_engine, raw):
    import torch

    tok, model = raw
    r = Reranker("llm-pointwise", engine=tiny_engine, mode="likelihood")
    want = []
    for d in DOCS:
        p = tok(PROMPTS["query-likelihood"].template.format(document=d))["input_ids"]
        c = tok(" " + Q, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            lp = model(torch.tensor([p + c])).logits[0].log_softmax(-1)
        want.append(float(np.mean([float(lp[len(p) - 1 + j, t]) for j, t in enumerate(c)])))
    np.testing.assert_allclose(r.score(Q, DOCS), want, atol=1e-4)


@pytest.mark.parametrize("mode", ["yesno", "graded", "likelihood"])
def test_server_engine_gives_the_local_scores(mode, tiny_engine, tiny_server):
    local = Reranker("llm-pointwise", engine=tiny_engine, mode=mode).score(Q, DOCS)
    spec = "llm-pointwise:openai:test-model"
    remote = Reranker(spec, base_url=tiny_server.base_url, mode=mode, top_logprobs=100_000)
    np.testing.assert_allclose(remote.score(Q, DOCS), local, atol=1e-3)
    got = asyncio.run(remote.arank(Q, DOCS))  # truly async path
    np.testing.assert_allclose(sorted(got.scores), sorted(local), atol=1e-3)


def test_chat_endpoint_and_missing_labels(tiny_server, caplog):
    r = Reranker("llm-pointwise:test-model", base_url=tiny_server.base_url, endpoint="chat", top_logprobs=5)
    # yes/no are rarely in a random model's top 5: with neither label listed, flooring both would give
    # every document the same score 0.0; such pairs are NaN, with a warning (issue 14)
    scores = r.score(Q, DOCS)
    assert len(scores) == 3 and np.isnan(scores).all()
    assert "name none of the labels" in caplog.text
    with pytest.raises(ValueError, match="completions"):
        Reranker("llm-pointwise:openai:m", base_url=tiny_server.base_url, endpoint="chat", mode="likelihood")


def test_long_documents_are_cut_to_the_context_and_tiny_contexts_fail_clearly(tiny_causal_lm):
    from unirank.backends.causal_lm import CausalLM

    engine = CausalLM(tiny_causal_lm, max_length=64)
    r = Reranker("llm-pointwise", engine=engine)
    s = r.score(Q, ["rain " * 500, "rain"])
    assert all(np.isfinite(s))
    small = CausalLM(tiny_causal_lm, max_length=16)
    with pytest.raises(ValueError, match="context limit of 16 tokens"):
        Reranker("llm-pointwise", engine=small).score(Q, ["rain"])


def test_custom_template_and_bad_options(tiny_engine):
    r = Reranker("llm-pointwise", engine=tiny_engine, prompt="Q: {query} D: {document} relevant?")
    assert r.prompt.name == "custom" and len(r.score(Q, DOCS)) == 3
    with pytest.raises(ValueError, match="lacks"):
        Reranker("llm-pointwise", engine=tiny_engine, prompt="no fields here")
    with pytest.raises(ValueError, match="mode"):
        Reranker("llm-pointwise", engine=tiny_engine, mode="nope")
    with pytest.raises(TypeError, match="unknown option"):
        Reranker("llm-pointwise", engine=tiny_engine, bogus=1)
