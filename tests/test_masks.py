"""Expanded attention masks (unirank.backends.masks): verified per model, scores unchanged.

Oracles: the same model run with its stock 2-D mask (transformers builds the 4-D form itself), and
sentence-transformers on the packaged MiniLM for the embedding ranker.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers

from unirank import Reranker
from unirank.backends import masks

QUERIES = ["what causes rain", "who wrote hamlet"]
DOCS = [
    [
        "Rain forms when water vapour condenses.",
        "cats",
        "Clouds hold droplets that grow until they fall as rain.",
    ],
    ["Shakespeare wrote Hamlet around 1600.", "A play.", ""],
]


def _scores(ranker):
    return np.concatenate([ranker.score(q, d) for q, d in zip(QUERIES, DOCS)])


@pytest.mark.parametrize("impl, form", [("sdpa", "bool"), ("eager", "additive")])
def test_form_follows_the_attention_implementation_and_scores_do_not_change(make_tiny_bert, impl, form):
    path = make_tiny_bert()
    fast = Reranker(f"ce:{path}", device="cpu")
    if impl == "eager":
        fast.model.set_attn_implementation("eager")
        fast.mask_form = masks.verify(fast.model, fast.tokenizer)
    assert fast.mask_form == form
    stock = Reranker(f"ce:{path}", device="cpu")
    if impl == "eager":
        stock.model.set_attn_implementation("eager")
    stock.mask_form = None
    np.testing.assert_allclose(_scores(fast), _scores(stock), atol=1e-6)


def test_expand_drops_an_all_ones_mask_and_pads_with_the_dtype_minimum():
    m = torch.tensor([[1, 1, 0]])
    add = masks.expand(m, "additive", torch.float16)
    assert add.dtype == torch.float16 and add[0, 0, 0].tolist() == [0.0, 0.0, torch.finfo(torch.float16).min]
    assert masks.expand(m, "bool")[0, 0, 0].tolist() == [True, True, False]
    assert masks.expand(torch.ones(4, 7, dtype=torch.long), "additive") is None


def test_a_model_that_rejects_a_4d_mask_keeps_the_stock_path(make_tiny_bert):
    ranker = Reranker(f"ce:{make_tiny_bert()}", device="cpu")

    class Strict(torch.nn.Module):  # stands for a remote-code model that only takes a 2-D mask
        def __init__(self, inner):
            super().__init__()
            self.inner, self.config = inner, inner.config

        def forward(self, attention_mask=None, **kw):
            if attention_mask is not None and attention_mask.dim() != 2:
                raise ValueError("2-D mask expected")
            return self.inner(attention_mask=attention_mask, **kw)

    assert masks.verify(Strict(ranker.model), ranker.tokenizer) is None
    decoder_cfg = transformers.BertConfig(is_decoder=True)
    assert masks.verify(type("M", (), {"config": decoder_cfg})(), ranker.tokenizer) is None


def test_embedding_ranker_with_the_expanded_mask_equals_sentence_transformers(minilm_path):
    st = pytest.importorskip("sentence_transformers")
    ranker = Reranker(f"embed:{minilm_path}", device="cpu", cache_size=0)
    assert ranker.mask_form == "bool"
    model = st.SentenceTransformer(str(minilm_path), device="cpu")
    texts = [t for d in DOCS for t in d] + QUERIES
    ref = model.encode(texts, convert_to_numpy=True, normalize_embeddings=True)
    got = ranker.encode(texts)
    np.testing.assert_allclose(got, ref, atol=1e-5)
