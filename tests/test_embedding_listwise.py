"""E2Rank-style embedding listwise re-ranking: the enriched query, then cosine.

Oracles: a hand computation with plain transformers (mean pooling, L2) on a tiny BERT for a 2-document
example, and sentence-transformers on the packaged all-MiniLM-L6-v2 (slow). The authors' E2Rank recipe on a
Qwen3-style folder is checked in ``test_pad_and_e2rank.py``."""

from __future__ import annotations

import numpy as np
import pytest

from unirank import Reranker
from unirank.methods.embedding_listwise import E2RANK_TEMPLATE
from unirank.types import Document

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

Q = "what causes rain"
DOCS = ["Rain falls when water vapour condenses.", "Cats purr when they are happy."]


def _mean_pool(path, texts):
    tok = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModel.from_pretrained(path).eval()
    enc = tok(texts, padding=True, truncation=True, max_length=512, return_tensors="pt")
    with torch.no_grad():
        h = model(**enc).last_hidden_state
    m = enc["attention_mask"].unsqueeze(-1).float()
    return torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1).numpy()


def test_two_document_example_hand_computed(make_tiny_bert):
    path = make_tiny_bert("encoder", seed=3)
    r = Reranker(f"e2rank:{path}", num_input_docs=2)
    prompt = E2RANK_TEMPLATE.format(documents=f"[1] {DOCS[0]}\n[2] {DOCS[1]}", query=Q)
    assert r.listwise_query(Q, DOCS) == prompt
    q, d0, d1 = _mean_pool(path, [prompt, *DOCS])
    np.testing.assert_allclose(r.score(Q, DOCS), [q @ d0, q @ d1], atol=1e-5)
    # the enrichment matters: the plain bi-encoder scores differ
    plain = Reranker(f"embed:{path}").score(Q, DOCS)
    assert not np.allclose(plain, r.score(Q, DOCS), atol=1e-4)


def test_only_the_first_candidates_enter_the_prompt_and_the_query_survives(make_tiny_bert):
    path = make_tiny_bert("encoder", seed=3, max_position_embeddings=64)
    r = Reranker(f"e2rank:{path}", num_input_docs=2, max_length=64)
    long_docs = ["rain " * 200, "cats " * 200, "dogs bark"]
    prompt = r.listwise_query(Q, long_docs)
    assert prompt.endswith(f"Search Query: {Q}") and "dogs" not in prompt
    assert len(r.tokenizer(prompt)["input_ids"]) <= 64
    with pytest.raises(TypeError, match="image document"):
        r.rank(Q, [Document("x", "1", {"image": b"png"})])


@pytest.mark.slow
def test_matches_sentence_transformers_on_minilm(minilm_path):
    st = pytest.importorskip("sentence_transformers")
    r = Reranker(f"e2rank:{minilm_path}", num_input_docs=2)
    assert r.recipe == "generic"  # a BERT bi-encoder keeps its own (mean) pooling
    model = st.SentenceTransformer(str(minilm_path), device="cpu")
    q = model.encode([r.listwise_query(Q, DOCS)], normalize_embeddings=True)[0]
    d = model.encode(DOCS, normalize_embeddings=True)
    np.testing.assert_allclose(r.score(Q, DOCS), d @ q, atol=1e-4)
    assert r.rank(Q, DOCS).ids == ["0", "1"]
