"""The [CLS]-only last layer of the torch cross-encoder path: exact against the stock forward."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

QUERIES = ["what causes rain", "how do cats purr", "x"]
DOCS = [
    "Rain forms when water vapour condenses into droplets heavy enough to fall.",
    "short",
    "A much longer passage about weather, clouds, humidity and the water cycle " * 4,
]


def _tokenizer(path):
    return transformers.AutoTokenizer.from_pretrained(path)


def _family(kind: str, minilm_path, seed: int = 0, num_labels: int = 2):
    """A tiny seeded seqcls model of ``kind`` with the MiniLM WordPiece tokenizer (pad id 0)."""
    common = dict(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        max_position_embeddings=520,
        num_labels=num_labels,
        pad_token_id=0,
    )
    cfg, cls = {
        "roberta": (transformers.RobertaConfig, transformers.RobertaForSequenceClassification),
        "electra": (transformers.ElectraConfig, transformers.ElectraForSequenceClassification),
        "distilbert": (transformers.DistilBertConfig, transformers.DistilBertForSequenceClassification),
    }[kind]
    if kind == "electra":
        common["embedding_size"] = 16
    if kind == "distilbert":
        common = dict(vocab_size=30522, dim=32, n_layers=2, n_heads=4, hidden_dim=48, num_labels=num_labels)
    torch.manual_seed(seed)
    model = cls(cfg(**common)).eval()
    return model, _tokenizer(minilm_path)


def _stock_and_patched(model, tok):
    from unirank.backends import cls_only

    batch = tok(QUERIES, DOCS, padding=True, truncation=True, max_length=128, return_tensors="pt")
    with torch.inference_mode():
        stock = model(**batch).logits.float().numpy()
    on = cls_only.enable(model, tok)
    with torch.inference_mode():
        patched = model(**batch).logits.float().numpy()
    return on, stock, patched


@pytest.mark.parametrize("num_labels", [1, 3])
def test_bert_ranker_uses_it_and_scores_like_the_stock_model(make_tiny_bert, num_labels):
    from unirank import Reranker

    path = make_tiny_bert("seqcls", num_labels=num_labels, seed=11)
    label = {} if num_labels == 1 else {"label": 2}
    ce = Reranker(f"ce:{path}", device="cpu", **label)
    assert ce.cls_only_last_layer
    stock = transformers.AutoModelForSequenceClassification.from_pretrained(path).eval()
    batch = _tokenizer(path)([QUERIES[0]] * 3, DOCS, padding=True, return_tensors="pt")
    with torch.inference_mode():
        ref = ce._logits_to_scores(stock(**batch).logits)
    np.testing.assert_allclose(np.array(ce.score(QUERIES[0], DOCS)), ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["roberta", "electra"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_other_first_token_families_are_exact(kind, attn, minilm_path):
    model, tok = _family(kind, minilm_path, seed=3)
    model.config._attn_implementation = attn
    on, stock, patched = _stock_and_patched(model, tok)
    assert on
    np.testing.assert_allclose(patched, stock, atol=1e-5, rtol=0)


def test_bf16_is_enabled_within_bf16_noise(make_tiny_bert):
    path = make_tiny_bert("seqcls", seed=12)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(path, dtype=torch.bfloat16).eval()
    on, stock, patched = _stock_and_patched(model, _tokenizer(path))
    assert on
    np.testing.assert_allclose(patched, stock, atol=0.05, rtol=0.02)


def test_unsupported_family_keeps_the_stock_forward(minilm_path):
    model, tok = _family("distilbert", minilm_path)
    on, stock, patched = _stock_and_patched(model, tok)
    assert not on
    np.testing.assert_array_equal(patched, stock)


def test_a_probe_that_disagrees_restores_the_stock_forward(make_tiny_bert, monkeypatch):
    from unirank.backends import cls_only

    path = make_tiny_bert("seqcls", seed=13)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(path).eval()
    right = cls_only._cls_only_forward
    monkeypatch.setattr(
        cls_only, "_cls_only_forward", lambda layer, h, *a, **k: right(layer, h, *a, **k) * 1.5
    )
    on, stock, patched = _stock_and_patched(model, _tokenizer(path))
    assert not on
    assert "forward" not in model.bert.encoder.layer[-1].__dict__
    np.testing.assert_array_equal(patched, stock)


def test_training_mode_uses_the_stock_layer(make_tiny_bert):
    from unirank.backends import cls_only

    path = make_tiny_bert("seqcls", seed=14)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(path).eval()
    tok = _tokenizer(path)
    assert cls_only.enable(model, tok)
    batch = tok(QUERIES, DOCS, padding=True, return_tensors="pt")
    with torch.inference_mode():
        eval_last = model(**batch, output_hidden_states=True).hidden_states[-1]
    model.train()
    train_last = model(**batch, output_hidden_states=True).hidden_states[-1]
    assert eval_last.shape[1] == 1  # [CLS] row only
    assert train_last.shape == (len(QUERIES), batch["input_ids"].shape[1], model.config.hidden_size)


def test_a_tokenizer_that_cannot_pad_keeps_the_stock_forward(make_tiny_bert):
    from unirank.backends import cls_only

    path = make_tiny_bert("seqcls", seed=15)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(path).eval()
    tok = _tokenizer(path)
    tok.pad_token = None  # padding=True now raises inside the probe
    assert not cls_only.enable(model, tok)
    assert "forward" not in model.bert.encoder.layer[-1].__dict__
