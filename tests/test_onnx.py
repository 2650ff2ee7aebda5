"""ONNX Runtime engine: exported models agree with torch, int8 keeps the order, export is cached."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

QUERIES = ["what causes rain", "how do cats purr", "define entropy"]
DOCS = [
    "Rain forms when water vapour condenses into droplets heavy enough to fall.",
    "Cats purr by rapidly twitching the muscles of the larynx.",
    "Entropy measures the number of microscopic configurations of a system.",
    "short",
    "A much longer passage about weather, clouds, humidity and the water cycle " * 6,
]


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("UNIRANK_CACHE", str(tmp_path_factory.getbasetemp() / "unirank-cache"))


def _kendall_tau(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import kendalltau

    return float(kendalltau(a, b)[0])


@pytest.mark.parametrize(("num_labels", "threads"), [(1, 1), (2, 2), (3, 2)])
def test_tiny_cross_encoder_onnx_fp32_matches_torch(make_tiny_bert, num_labels, threads):
    from unirank import Reranker

    path = make_tiny_bert("seqcls", num_labels=num_labels, seed=3)
    label = {"label": 1} if num_labels == 3 else {}
    ref = Reranker(f"ce:{path}", device="cpu", **label)
    ox = Reranker(
        f"ce:{path}", device="cpu", backend="onnx", onnx_threads=threads, max_tokens_per_batch=64, **label
    )
    for q in QUERIES:
        a, b = np.array(ref.score(q, DOCS)), np.array(ox.score(q, DOCS))
        np.testing.assert_allclose(b, a, atol=1e-4, rtol=0)


def test_tiny_embedding_onnx_fp32_matches_torch(make_tiny_bert):
    from unirank import Reranker

    path = make_tiny_bert("encoder", seed=4)
    ref = Reranker(f"embed:{path}", device="cpu")
    ox = Reranker(f"embed:{path}", device="cpu", backend="onnx")
    for q in QUERIES:
        np.testing.assert_allclose(ox.score(q, DOCS), ref.score(q, DOCS), atol=1e-4, rtol=0)


def test_export_is_cached_and_keyed_by_options(make_tiny_bert, tmp_path):
    from unirank.backends.onnx import onnx_model_file

    path = make_tiny_bert("seqcls", seed=5)
    first = onnx_model_file(path, "seqcls", cache_dir=tmp_path)
    stamp = first.stat().st_mtime_ns
    again = onnx_model_file(path, "seqcls", cache_dir=tmp_path)
    assert again == first and again.stat().st_mtime_ns == stamp  # served from the cache, not re-exported
    q = onnx_model_file(path, "seqcls", quantize="int8", cache_dir=tmp_path)
    assert q != first and q.is_file()
    assert not [p for p in (tmp_path / "onnx").iterdir() if p.name.startswith(".tmp")]  # no leftovers
    other = make_tiny_bert("seqcls", seed=6)  # different weights -> different key
    assert onnx_model_file(other, "seqcls", cache_dir=tmp_path).parent != first.parent


def test_int8_keeps_order_on_tiny_model(make_tiny_bert):
    from unirank import Reranker

    path = make_tiny_bert("encoder", seed=7)
    ref = Reranker(f"embed:{path}", device="cpu")
    q8 = Reranker(f"embed:{path}", device="cpu", backend="onnx", quantize="int8")
    docs = [f"passage {i} about " + " ".join(DOCS[i % len(DOCS)].split()[: 3 + i % 7]) for i in range(30)]
    taus = [_kendall_tau(np.array(ref.score(q, docs)), np.array(q8.score(q, docs))) for q in QUERIES]
    assert min(taus) > 0.8, taus


def test_bert_is_written_as_one_fused_graph_and_int8_quantises_attention(make_tiny_bert, tmp_path):
    import onnx

    from unirank.backends.onnx import onnx_model_file

    path = make_tiny_bert("seqcls", seed=8)
    fp = {n.op_type for n in onnx.load(str(onnx_model_file(path, "seqcls", cache_dir=tmp_path))).graph.node}
    assert {"EmbedLayerNormalization", "Attention", "LayerNormalization", "Gelu"} <= fp
    assert "Softmax" not in fp  # attention is one fused operator, not a dozen small ones
    q8 = onnx_model_file(path, "seqcls", quantize="int8", cache_dir=tmp_path)
    ops = [n.op_type for n in onnx.load(str(q8)).graph.node]
    # a cross-encoder reads only [CLS] after the last layer: that layer attends from the [CLS] row alone
    assert ops.count("QAttention") == 1 and ops.count("MultiHeadAttention") == 1 and "Attention" not in ops
    enc = [n.op_type for n in onnx.load(str(onnx_model_file(path, "encoder", cache_dir=tmp_path))).graph.node]
    assert enc.count("Attention") == 2 and "MultiHeadAttention" not in enc


@pytest.mark.parametrize("kind", ["seqcls", "encoder"])
def test_split_cls_graph_is_exact_and_int8_gives_the_cls_row_its_own_matmuls(make_tiny_bert, tmp_path, kind):
    import onnx
    import onnxruntime as ort
    import torch
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    from unirank.backends.onnx import onnx_model_file
    from unirank.backends.onnx_bert import build_bert_graph

    path = make_tiny_bert(kind, seed=9)
    auto = AutoModelForSequenceClassification if kind == "seqcls" else AutoModel
    model, tok = auto.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    build_bert_graph(model, kind, names, tmp_path / "split.onnx", split_cls=True)
    enc = tok(QUERIES[:2] * 2, DOCS[:4], padding=True, return_tensors="np")
    feed = {n: enc[n].astype(np.int64) for n in names}
    got = ort.InferenceSession(str(tmp_path / "split.onnx")).run(None, feed)[0]
    with torch.no_grad():
        out = model(**{n: torch.from_numpy(v) for n, v in feed.items()})
    ref = (out.logits if kind == "seqcls" else out.last_hidden_state).numpy()
    mask = feed["attention_mask"].astype(bool)
    if kind == "encoder":  # padded rows are not defined by either side
        got, ref = got[mask], ref[mask]
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)

    q8 = onnx.load(str(onnx_model_file(path, kind, quantize="int8", cache_dir=tmp_path)))
    plain = onnx.load(str(onnx_model_file(path, kind, quantize="int8", split_cls=False, cache_dir=tmp_path)))
    layers = model.config.num_hidden_layers
    split_layers = layers - 1 if kind == "seqcls" else layers  # a cross-encoder's last layer is [CLS]-only
    head = {"pooler/MatMul", "classifier/MatMul"} if kind == "seqcls" else set()
    for graph in (q8, plain):  # every per-token weight matmul is int8; the once-per-pair head stays fp32
        assert {n.name for n in graph.graph.node if n.op_type == "MatMul"} == head
    # the [CLS] copies of attention-output, FFN-in and FFN-out are int8 matmuls of their own (own scale) ...
    cls_int8 = [n for n in q8.graph.node if n.op_type == "MatMulInteger" and "/cls" in n.name]
    plain_cls = [n for n in plain.graph.node if n.op_type == "MatMulInteger" and "/cls" in n.name]
    assert len(cls_int8) - len(plain_cls) == 3 * split_layers
    # ... on the same int8 weights: the file stores each weight once
    size = {id(g): sum(len(i.raw_data) for i in g.graph.initializer) for g in (q8, plain)}
    assert size[id(q8)] < 1.02 * size[id(plain)]


def test_models_the_fused_graph_does_not_cover_use_the_generic_export(make_tiny_bert, tmp_path):
    import onnx

    from unirank import Reranker
    from unirank.backends.onnx import onnx_model_file

    path = make_tiny_bert("seqcls", seed=9, hidden_act="gelu_new")  # tanh-approximated GELU: not fused
    ops = {n.op_type for n in onnx.load(str(onnx_model_file(path, "seqcls", cache_dir=tmp_path))).graph.node}
    assert "EmbedLayerNormalization" not in ops
    ref = Reranker(f"ce:{path}", device="cpu")
    ox = Reranker(f"ce:{path}", device="cpu", backend="onnx")
    np.testing.assert_allclose(ox.score(QUERIES[0], DOCS), ref.score(QUERIES[0], DOCS), atol=1e-4, rtol=0)


def test_generic_export_works_for_a_vocabulary_smaller_than_the_sample_ids(minilm_path, tmp_path):
    """The tracing sample stays inside the model's vocabulary (a 300-token model failed to export)."""
    import torch
    import transformers

    from unirank.backends.onnx import make_session, onnx_model_file

    config = transformers.BertConfig(
        vocab_size=300, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        hidden_act="gelu_new", num_labels=1,
    )  # gelu_new: not the fused graph, the torch export
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config).eval()
    model.save_pretrained(tmp_path / "m")
    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_path)
    path = onnx_model_file(tmp_path / "m", "seqcls", model=model, tokenizer=tokenizer, cache_dir=tmp_path)
    ids = torch.tensor([[1, 17, 299, 5, 2, 0], [1, 9, 8, 2, 0, 0]])
    mask = (ids != 0).long()
    feed = {"input_ids": ids.numpy(), "attention_mask": mask.numpy(), "token_type_ids": 0 * ids.numpy()}
    session = make_session(path)
    names = {i.name for i in session.get_inputs()}
    got = session.run(None, {k: v for k, v in feed.items() if k in names})[0]
    with torch.no_grad():
        want = model(input_ids=ids, attention_mask=mask).logits.numpy()
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_bad_backend_options(make_tiny_bert):
    from unirank import Reranker

    path = make_tiny_bert("seqcls", seed=3)
    with pytest.raises(ValueError, match="backend"):
        Reranker(f"ce:{path}", device="cpu", backend="tensorrt")
    with pytest.raises(ValueError, match="backend='onnx'"):
        Reranker(f"ce:{path}", device="cpu", quantize="int8")
    with pytest.raises(ValueError, match="quantize"):
        Reranker(f"ce:{path}", device="cpu", backend="onnx", quantize="int4")
    with pytest.raises(ValueError, match="fp32"):
        Reranker(f"ce:{path}", device="cpu", backend="onnx", dtype="bf16")


def test_pad_numpy_matches_torch_collate(minilm_path):
    from unirank.backends import hf
    from unirank.backends.onnx import pad_numpy

    tok = hf.load_tokenizer(minilm_path)
    feats = hf.tokenize(tok, QUERIES, DOCS[:3], 64)
    ref = hf.collate(feats, tok, "cpu")
    got = pad_numpy(feats, tok.pad_token_id)
    assert set(got) == set(ref)
    for k in got:
        np.testing.assert_array_equal(got[k], ref[k].numpy())


@pytest.mark.slow
def test_real_minilm_onnx_fp32_and_int8(minilm_cross_encoder, minilm_path):
    from unirank import Reranker
    from unirank.eval.datasets import load_dataset

    ds = load_dataset("trec-dl-2019")
    run = ds.get_run("bm25")
    qid = sorted(run)[0]
    docs = [ds.corpus[d] for d, _ in run[qid][:40]]
    query = ds.queries[qid]
    ref = np.array(Reranker(f"ce:{minilm_cross_encoder}", device="cpu").score(query, docs))
    fp = np.array(Reranker(f"ce:{minilm_cross_encoder}", device="cpu", backend="onnx").score(query, docs))
    np.testing.assert_allclose(fp, ref, atol=1e-4, rtol=0)
    e_ref = np.array(Reranker(f"embed:{minilm_path}", device="cpu").score(query, docs))
    e_fp = np.array(Reranker(f"embed:{minilm_path}", device="cpu", backend="onnx").score(query, docs))
    np.testing.assert_allclose(e_fp, e_ref, atol=1e-4, rtol=0)
    e_q8 = Reranker(f"embed:{minilm_path}", device="cpu", backend="onnx", quantize="int8").score(query, docs)
    assert _kendall_tau(e_ref, np.array(e_q8)) > 0.9


def test_real_minilm_int8_with_the_cls_row_split_off_is_closer_to_fp32(minilm_cross_encoder):
    """MiniLM's [CLS] state carries values ~3x larger than other tokens'; with a scale of its own, the other
    tokens quantise finer (here: mean tau 0.87 -> 0.91, max error 0.16 -> 0.12)."""
    from unirank import Reranker
    from unirank.backends.onnx import OnnxForward, onnx_model_file
    from unirank.eval.datasets import load_dataset

    ds = load_dataset("trec-dl-2019")
    run = ds.get_run("bm25")
    fp = Reranker(f"ce:{minilm_cross_encoder}", device="cpu", backend="onnx")
    q8 = {}
    for split in (False, True):
        q8[split] = Reranker(f"ce:{minilm_cross_encoder}", device="cpu", backend="onnx")
        path = onnx_model_file(minilm_cross_encoder, "seqcls", quantize="int8", split_cls=split)
        q8[split]._onnx = OnnxForward(path, q8[split].tokenizer)
    err = {False: 0.0, True: 0.0}
    tau = {False: [], True: []}
    for qid in sorted(run)[:3]:
        docs = [ds.corpus[d] for d, _ in run[qid][:40]]
        ref = np.array(fp.score(ds.queries[qid], docs))
        for split, r in q8.items():
            got = np.array(r.score(ds.queries[qid], docs))
            err[split] = max(err[split], float(np.abs(got - ref).max()))
            tau[split].append(_kendall_tau(ref, got))
    assert err[True] < err[False]
    assert np.mean(tau[True]) > np.mean(tau[False]) + 0.02


def test_numpy_logit_conversion_matches_torch_and_handles_impossible_classes(make_tiny_bert):
    import torch

    from unirank import Reranker
    from unirank.methods.cross_encoder import _scores_from_logits

    ce = Reranker(f"ce:{make_tiny_bert('seqcls', num_labels=3, seed=4)}", device="cpu", label=2)
    logits = np.random.default_rng(0).normal(0, 5, (16, 3))
    np.testing.assert_allclose(
        _scores_from_logits(logits, 3, 2), ce._logits_to_scores(torch.from_numpy(logits)), atol=1e-5
    )
    assert _scores_from_logits(np.array([[0.0, -np.inf, -np.inf]]), 3, 0)[0] == np.inf


def test_fused_graph_only_for_what_it_can_write(make_tiny_bert):
    import transformers

    from unirank.backends.onnx_bert import supports

    encoder = transformers.BertModel.from_pretrained(make_tiny_bert("encoder", seed=5))
    assert supports(encoder, "encoder") and not supports(encoder, "seqcls")
    assert not supports(encoder, "encoder", ["input_ids", "token_type_ids"])  # no attention mask input
