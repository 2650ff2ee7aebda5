"""ICR: two forward passes whatever the number of documents, and the attention aggregation computed by hand
from the raw transformers attentions of a tiny model."""
# ruff: noqa: F811

from __future__ import annotations

import numpy as np
import pytest

from _llm_fixtures import tiny_causal_lm, tiny_engine  # noqa: F401
from unirank import Reranker
from unirank.errors import SpecError
from unirank.methods.attention import CONTENT_FREE
from unirank.types import Document

Q = "what causes rain"
TEXTS = ["rain forms when vapour condenses", "cats purr", "the sun is a star", "fog", "snow falls in winter"]


def test_two_forward_passes_for_any_number_of_documents(tiny_engine):
    calls = []
    handle = tiny_engine.model.register_forward_hook(lambda *a: calls.append(1))
    try:
        r = Reranker("icr", engine=tiny_engine)
        for n in (1, 3, 5):
            calls.clear()
            scores = r.score(Q, TEXTS[:n])
            assert len(calls) == 2 and len(scores) == n and np.isfinite(scores).all()
    finally:
        handle.remove()


def test_attention_aggregation_by_hand(tiny_engine, tiny_causal_lm):
    import torch
    import transformers

    r = Reranker("icr", engine=tiny_engine)
    docs = [Document(t, str(i)) for i, t in enumerate(TEXTS[:3])]
    model = transformers.AutoModelForCausalLM.from_pretrained(
        tiny_causal_lm, attn_implementation="eager"
    ).eval()
    tok = tiny_engine.tokenizer

    def by_hand(query):
        ids, spans, rows = r.build_input(query, docs)
        for (a, b), d in zip(spans, docs):  # the spans really are the documents' tokens
            assert tok.decode(ids[a:b]) == d.text
        assert tok.decode([ids[i] for i in rows]).replace(" ", "") == query.lower().replace(" ", "")
        with torch.no_grad():
            att = model(torch.tensor([ids]), output_attentions=True).attentions
        total = sum(layer[0].sum(0) for layer in att)  # sum over layers and heads: [seq, seq]
        return np.array([float(total[rows][:, a:b].sum(1).mean()) for a, b in spans])

    want = by_hand(Q) - by_hand(CONTENT_FREE)
    np.testing.assert_allclose(r.score(Q, docs), want, atol=1e-5)
    one_layer = Reranker("icr", engine=tiny_engine, layers=[1], calibrate=False)
    ids, spans, rows = one_layer.build_input(Q, docs)
    with torch.no_grad():
        att = model(torch.tensor([ids]), output_attentions=True).attentions[1][0].sum(0)
    np.testing.assert_allclose(
        one_layer.score(Q, docs), [float(att[rows][:, a:b].sum(1).mean()) for a, b in spans], atol=1e-5
    )


def test_bad_inputs(tiny_causal_lm, tiny_engine):
    from unirank.backends.causal_lm import CausalLM

    small = CausalLM(tiny_causal_lm, max_length=40)
    with pytest.raises(ValueError, match="context limit of 40 tokens is too small for 5 documents"):
        Reranker("icr", engine=small).score(Q, TEXTS)
    with pytest.raises(SpecError, match="attention"):
        Reranker("icr:openai:gpt-4o-mini")
    with pytest.raises(TypeError, match="unknown option"):
        Reranker("icr", engine=tiny_engine, bogus=1)
