"""Compiled / bucketed / packed forwards of the cross-encoder (unirank.backends.compiled): eager's scores."""

from __future__ import annotations

import logging

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from unirank.backends import compiled  # noqa: E402
from unirank.errors import MissingExtraError, SpecError  # noqa: E402

QUERIES = ["what causes rain", "how do cats purr", "x", "who wrote the odyssey"]
DOCS = [
    "Rain forms when water vapour condenses into droplets heavy enough to fall.",
    "short",
    "A much longer passage about weather, clouds, humidity and the water cycle " * 5,
    "Homer, by tradition.",
    "Cats purr by vibrating the muscles of the larynx while breathing in and out.",
    "rain rain rain",
    "Purring is also a sign of stress in some cats, not only of contentment, as vets note.",
]


def _batch(tok, n_rows: int, start: int = 0):
    qs = [QUERIES[(start + i) % len(QUERIES)] for i in range(n_rows)]
    ds = [DOCS[(start + i) % len(DOCS)] for i in range(n_rows)]
    return dict(tok(qs, ds, padding=True, return_tensors="pt"))


def _eager(model, inputs):
    with torch.inference_mode():
        return model(**inputs).logits.float()[:, 0]


def test_buckets_cover_and_bound_padding():
    for n in range(1, 300):
        b = compiled.bucket_rows(n)
        assert n <= b and (b - n) * 3 <= b  # at most a third of a bucket is padding rows
    assert len({compiled.bucket_rows(n) for n in range(1, 257)}) == 16  # few distinct row counts
    for w in range(1, 513):
        b = compiled.bucket_width(w, 512)
        assert w <= b <= 512 and (b % compiled.WIDTH_BUCKET == 0 or b == 512) and b - w < 32
    assert compiled.bucket_width(509, 510) == 510 and compiled.bucket_width(600, 512) == 600


def test_padded_rows_and_columns_score_the_same_eagerly(make_tiny_bert):
    path = make_tiny_bert(num_labels=1)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(path).eval()
    tok = transformers.AutoTokenizer.from_pretrained(path)
    inputs = _batch(tok, 5)
    padded = compiled.pad_batch(inputs, 8, 96)
    assert padded["input_ids"].shape == (8, 96) and int(padded["attention_mask"][5:].sum()) > 0
    torch.testing.assert_close(_eager(model, padded)[:5], _eager(model, inputs), atol=1e-5, rtol=0)


def test_compile_option_errors():
    with pytest.raises(SpecError, match="needs a CUDA device"):
        compiled.check_compile("cudagraphs", "cpu")
    with pytest.raises(SpecError, match="not one of"):
        compiled.check_compile("tensorrt", "cpu")
    assert compiled.check_compile(None, "cpu") is None
    assert compiled.check_compile("inductor", "cpu") == "inductor"
    with pytest.raises(SpecError, match="not one of"):
        compiled.check_attn_implementation("fast", "cpu")
    if importlib_util_find("flash_attn") is None:
        with pytest.raises(MissingExtraError, match="pip install flash-attn"):
            compiled.check_attn_implementation("flash_attention_2", "cpu")
    assert compiled.check_attn_implementation("sdpa", "cpu") == "sdpa"


def importlib_util_find(name: str):
    import importlib.util

    return importlib.util.find_spec(name)


@pytest.fixture(scope="module")
def compiled_ranker(make_tiny_bert):
    """A tiny BERT cross-encoder with compile='inductor' (the one compile of this file) and its eager twin."""
    from unirank.methods.cross_encoder import CrossEncoderRanker

    path = make_tiny_bert(num_labels=1, seed=3)
    fast = CrossEncoderRanker(str(path), device="cpu", compile="inductor", batch_size=3)
    eager = CrossEncoderRanker(str(path), device="cpu", batch_size=3)
    return fast, eager


def test_inductor_ranker_matches_eager_with_bucket_padding(compiled_ranker):
    fast, eager = compiled_ranker
    assert fast.cls_only_last_layer and eager.cls_only_last_layer  # the [CLS]-only last layer is on in both
    got = fast.rank_many(QUERIES[:2], [DOCS, DOCS[:4]])  # batches of 3, 3, 1 and 3, 1 rows
    ref = eager.rank_many(QUERIES[:2], [DOCS, DOCS[:4]])
    for g, r in zip(got, ref):
        assert [h.index for h in g] == [h.index for h in r]
        np.testing.assert_allclose([h.score for h in g], [h.score for h in r], atol=1e-5, rtol=0)
    cf = fast._fast
    assert cf.failure is None and cf.shapes
    assert all(w % compiled.WIDTH_BUCKET == 0 and rows >= 2 for rows, w in cf.shapes)  # columns were padded
    assert any(rows == 2 for rows, _ in cf.shapes)  # a one-row batch got a copy of its row


def test_inductor_with_bucketed_rows_drops_the_padding_rows(compiled_ranker):
    fast, eager = compiled_ranker
    cf = fast._fast
    cf.bucket_all_rows = True  # the cudagraphs bucketing, on the same compiled function (dynamic shapes)
    try:
        for n in (5, 7, 1):
            inputs = _batch(fast.tokenizer, n, start=n)
            with torch.inference_mode():
                got = cf(inputs)
            assert got.shape == (n,)
            width = compiled.bucket_width(inputs["input_ids"].shape[1], 512)
            assert (max(compiled.bucket_rows(n), 2), width) in cf.shapes
            torch.testing.assert_close(got, _eager(eager.model, inputs), atol=1e-5, rtol=0)
    finally:
        cf.bucket_all_rows = False
    assert cf.failure is None


def _no_compiler():
    import torch._inductor.config as cfg

    return cfg.patch({"cpp.cxx": (None, "/nonexistent/c++"), "force_disable_caches": True})


def test_failed_compile_falls_back_to_eager_with_one_warning(make_tiny_bert, caplog):
    path = make_tiny_bert(num_labels=1, seed=5)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(path).eval()
    tok = transformers.AutoTokenizer.from_pretrained(path)

    def scorer(**inputs):
        return model(**inputs).logits.float()[:, 0]

    cf = compiled.CompiledForward(scorer, "inductor", "cpu", 512)
    with caplog.at_level(logging.WARNING, logger="unirank.backends.compiled"), _no_compiler():
        with torch.inference_mode():
            outs = [(cf(b), b) for b in (_batch(tok, 3), _batch(tok, 1, 2), _batch(tok, 4, 1))]
    for got, b in outs:
        torch.testing.assert_close(got, _eager(model, b), atol=0, rtol=0)
    warnings = [r for r in caplog.records if r.name == "unirank.backends.compiled"]
    assert len(warnings) == 1 and "compiler" in warnings[0].getMessage().lower()
    assert "eager" in warnings[0].getMessage() and cf.failure is not None


def test_batch_failing_eagerly_raises_and_keeps_compile_on(make_tiny_bert, caplog):
    path = make_tiny_bert(num_labels=1, seed=6)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(path).eval()

    def scorer(**inputs):
        return model(**inputs).logits.float()[:, 0]

    cf = compiled.CompiledForward(scorer, "inductor", "cpu", 512)
    bad = {"input_ids": torch.full((2, 5), 10**6), "attention_mask": torch.ones(2, 5, dtype=torch.long)}
    with caplog.at_level(logging.WARNING, logger="unirank.backends.compiled"), _no_compiler():
        with torch.inference_mode(), pytest.raises(IndexError):
            cf(bad)
    assert cf.failure is None and not [r for r in caplog.records if r.name == "unirank.backends.compiled"]


def _tiny(kind: str):
    common = dict(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=48, max_position_embeddings=520, num_labels=2)  # fmt: skip
    cfg, cls = {
        "bert": (transformers.BertConfig, transformers.BertForSequenceClassification),
        "roberta": (transformers.RobertaConfig, transformers.RobertaForSequenceClassification),
        "electra": (transformers.ElectraConfig, transformers.ElectraForSequenceClassification),
    }[kind]
    if kind == "roberta":
        common["pad_token_id"] = 1  # positions start at pad + 1
    torch.manual_seed(7)
    return cls(cfg(**common)).eval()


@pytest.mark.parametrize("kind", ["bert", "roberta", "electra"])
def test_packed_rows_score_like_padded_rows(kind, minilm_path):
    """The packing of ``unpadded=True`` (positions restarting per pair, the head reading each pair's first
    token), checked with a block-diagonal mask: FlashAttention's varlen kernel needs CUDA."""
    model = _tiny(kind)
    tok = transformers.AutoTokenizer.from_pretrained(minilm_path)
    inputs = _batch(tok, 6)
    if kind == "roberta":  # RoBERTa pads with its pad id (1); MiniLM's id 1 is never a real token
        inputs["input_ids"] = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, 1)
        inputs.pop("token_type_ids")

    def score(logits):
        x = logits.float()
        return x[:, 1] - x[:, 0]

    packed = compiled.PackedForward(model, score, varlen=False)
    flat, cu, longest = compiled.pack_batch(inputs, packed.offset)
    lengths = inputs["attention_mask"].sum(1)
    assert cu.tolist() == [0, *lengths.cumsum(0).tolist()] and longest == int(lengths.max())
    assert flat["input_ids"].shape == (1, int(lengths.sum()))
    first = flat["position_ids"][0, cu[:-1].long()]
    assert (first == packed.offset).all() and (flat["input_ids"][0, cu[:-1].long()] == 101).all()  # [CLS]
    with torch.inference_mode():
        got = packed(inputs)
        ref = score(model(**inputs).logits)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)


def test_unpadded_needs_flash_attention(make_tiny_bert):
    from unirank.methods.cross_encoder import CrossEncoderRanker

    with pytest.raises(SpecError, match="flash_attention_2"):
        CrossEncoderRanker(str(make_tiny_bert(num_labels=1)), device="cpu", unpadded=True)


def test_compile_spec_errors(make_tiny_bert):
    from unirank import Reranker

    path = make_tiny_bert(num_labels=1)
    with pytest.raises(SpecError, match="CUDA"):
        Reranker(f"ce:{path}", device="cpu", compile="cudagraphs")
    with pytest.raises(SpecError, match="choose one"):
        Reranker(f"ce:{path}", device="cpu", compile="inductor", backend="onnx")


def test_attn_implementation_eager_and_sdpa_agree(make_tiny_bert):
    from unirank.methods.cross_encoder import CrossEncoderRanker

    path = str(make_tiny_bert(num_labels=1, seed=9))
    rankers = [CrossEncoderRanker(path, device="cpu", attn_implementation=a) for a in ("eager", "sdpa")]
    assert [r.model.config._attn_implementation for r in rankers] == ["eager", "sdpa"]
    a, b = (r.score(QUERIES[0], DOCS) for r in rankers)
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)


def test_device_bench_adds_compiled_rows_when_asked(tmp_path, minilm_path):
    """``unirank bench --device``'s cross-encoder part: a ``unirank-inductor`` row (timed, compile time apart)
    and its parity row against ``unirank-default``; CPU asks for it explicitly (CUDA runs both modes)."""
    from unirank._bench_gpu import build_models, load_inputs
    from unirank._bench_gpu_paths import DeviceBench

    queries, texts, _ = load_inputs(1, 5)
    rows = []
    bench = DeviceBench("cpu", queries, texts, 1, 1, rows.append, compile_modes=("inductor", "cudagraphs"))
    assert bench.compile_modes == ("inductor",)  # no CUDA graphs on a CPU
    assert DeviceBench("cpu", queries, texts, 1, 1, rows.append).compile_modes == ()  # off unless asked
    ce_dir, _, weights = build_models("tiny", minilm_path, tmp_path)
    bench.cross_encoder("tiny", ce_dir, weights)
    timed = next(r for r in rows if r.get("path") == "unirank-inductor" and r["event"] == "ce")
    assert timed["compile_s"] > 0 and timed["s_median"] > 0 and timed["fallback"] is None and timed["shapes"]
    par = next(r for r in rows if r["event"] == "parity" and r["path"] == "unirank-inductor")
    assert par["ref"] == "unirank-default" and par["max_abs_diff"] < 1e-5
