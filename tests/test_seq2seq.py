"""monoT5 / RankT5 / duoT5 on tiny random T5 checkpoints saved like downloaded ones.

Oracles: ``rerankers``' T5Ranker on the same weights (monoT5), and direct transformers forwards computed by
hand in the test (RankT5, duoT5, the mT5 token table).
"""

from __future__ import annotations

import numpy as np
import pytest

from _family_fixtures import save_tiny_t5
from unirank import Reranker
from unirank.errors import SpecError
from unirank.types import Document

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

Q = "what causes rain"
DOCS = ["rain falls from clouds", "cats purr", "the sun shines hot", "water vapour condenses"]


@pytest.fixture(scope="module")
def t5_path(tmp_path_factory):
    return save_tiny_t5(tmp_path_factory.mktemp("t5") / "tiny-t5", seed=0)


@pytest.fixture(scope="module")
def mt5_path(tmp_path_factory):
    return save_tiny_t5(tmp_path_factory.mktemp("mt5") / "tiny-mt5", seed=1, kind="mt5")


@pytest.fixture(scope="module")
def enc_path(tmp_path_factory):
    return save_tiny_t5(tmp_path_factory.mktemp("t5enc") / "tiny-t5-encoder", seed=2, kind="encoder")


def _first_step_logits(path, text):
    tok = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModelForSeq2SeqLM.from_pretrained(path).eval()
    ids = tok(text, return_tensors="pt").input_ids
    with torch.no_grad():
        return model(input_ids=ids, decoder_input_ids=torch.zeros((1, 1), dtype=torch.long)).logits[0, 0], tok


def test_monot5_matches_rerankers_t5ranker(t5_path):
    t5ranker = pytest.importorskip("rerankers.models.t5ranker")
    ours = Reranker(f"monot5:{t5_path}", batch_size=3)
    assert ours.score_kind.value == "logit"
    scores = np.array(ours.score(Q, DOCS))
    ref = t5ranker.T5Ranker(str(t5_path), device="cpu", dtype="float32", verbose=0)._get_scores(Q, DOCS)
    # rerankers reports softmax([false, true])[true] == sigmoid(logit(true) - logit(false))
    np.testing.assert_allclose(1 / (1 + np.exp(-scores)), ref, atol=1e-5)
    assert np.ptp(scores) > 0.5  # the parity is not trivially all-equal
    probs = ours.rank(Q, DOCS, normalize="auto").scores
    np.testing.assert_allclose(sorted(probs, reverse=True), sorted(ref, reverse=True), atol=1e-5)


def test_monot5_token_table_by_family_and_override(mt5_path, t5_path):
    from unirank.methods.seq2seq import MonoT5Ranker

    r = MonoT5Ranker(str(mt5_path))
    assert r.tokens == ("▁no", "▁yes")  # mT5 checkpoints answer yes/no
    logits, tok = _first_step_logits(mt5_path, f"Query: {Q} Document: {DOCS[0]} Relevant:")
    expected = float(logits[tok.convert_tokens_to_ids("▁yes")] - logits[tok.convert_tokens_to_ids("▁no")])
    assert r.score(Q, DOCS[:1])[0] == pytest.approx(expected, abs=1e-4)
    over = MonoT5Ranker(str(t5_path), tokens=("▁no", "▁yes"))
    logits, tok = _first_step_logits(t5_path, f"Query: {Q} Document: {DOCS[1]} Relevant:")
    expected = float(logits[tok.convert_tokens_to_ids("▁yes")] - logits[tok.convert_tokens_to_ids("▁no")])
    assert over.score(Q, DOCS[1:2])[0] == pytest.approx(expected, abs=1e-4)
    with pytest.raises(SpecError, match="no 'true' token"):
        MonoT5Ranker(str(t5_path), tokens=("▁false", "▁verdadeiro"))


def test_monot5_long_document_keeps_the_relevant_suffix(t5_path):
    from unirank.methods.seq2seq import MonoT5Ranker

    r = MonoT5Ranker(str(t5_path), max_length=24)
    feat = r._encode_template(r.template, {"query": Q, "document": " ".join(DOCS * 20)}, ("document",))
    tail = r.tokenizer(" Relevant:")["input_ids"]
    assert len(feat["input_ids"]) == 24 and feat["input_ids"][-len(tail) :] == tail
    assert np.isfinite(r.score(Q, [" ".join(DOCS * 50)])).all()


def test_rankt5_encoder_decoder_hand_computed(t5_path):
    r = Reranker(f"rankt5:{t5_path}")
    got = r.score(Q, DOCS[:2])
    for doc, score in zip(DOCS[:2], got):
        logits, tok = _first_step_logits(t5_path, f"Query: {Q} Document: {doc}")
        assert score == pytest.approx(float(logits[tok.convert_tokens_to_ids("<extra_id_10>")]), abs=1e-4)


def test_rankt5_encoder_only_hand_computed(enc_path):
    from safetensors.torch import load_file

    r = Reranker(f"rankt5:{enc_path}")
    assert r.encoder_only
    w = load_file(str(enc_path / "model.safetensors"))
    tok = transformers.AutoTokenizer.from_pretrained(enc_path)
    enc = transformers.T5EncoderModel.from_pretrained(enc_path).eval()
    got = r.score(Q, DOCS[:2])
    for doc, score in zip(DOCS[:2], got):
        ids = tok(f"Query: {Q} Document: {doc}", return_tensors="pt").input_ids
        with torch.no_grad():
            first = enc(input_ids=ids).last_hidden_state[0, 0]
        expected = float(first @ w["classifier.weight"][0] + w["classifier.bias"][0])
        assert score == pytest.approx(expected, abs=1e-4)


def test_duot5_sym_sum_hand_computed_on_two_documents(t5_path):
    r = Reranker(f"duot5:{t5_path}", top_k=2)
    tok_ids = None
    p = {}
    for i, j in [(0, 1), (1, 0)]:
        logits, tok = _first_step_logits(
            t5_path, f"Query: {Q} Document0: {DOCS[i]} Document1: {DOCS[j]} Relevant:"
        )
        tok_ids = tok.convert_tokens_to_ids(["▁false", "▁true"])
        p[i, j] = float(torch.softmax(logits[tok_ids], -1)[1])
    expected = [p[0, 1] + (1 - p[1, 0]), p[1, 0] + (1 - p[0, 1])]
    np.testing.assert_allclose(r.score(Q, DOCS[:2]), expected, atol=1e-5)
    # candidates after top_k keep their input order below the re-ranked ones
    res = r.rank(Q, DOCS)
    assert res.indices[2:] == [2, 3] and set(res.indices[:2]) == {0, 1}


def test_family_head_mismatch_and_image_documents(t5_path, enc_path, make_tiny_bert):
    bert = make_tiny_bert("seqcls")
    with pytest.raises(SpecError, match="ForConditionalGeneration"):
        Reranker(f"monot5:{bert}")
    with pytest.raises(SpecError, match="ForConditionalGeneration"):
        Reranker(f"duot5:{enc_path}")
    r = Reranker(f"monot5:{t5_path}")
    img = Document("", "img", {"image": b"\x89PNG..."})
    with pytest.raises(TypeError, match="image document"):
        r.rank(Q, ["text", img])
