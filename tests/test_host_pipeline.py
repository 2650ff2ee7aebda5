"""The host pipeline (unirank.backends.feeder): same scores as the classic path, failures isolated the same
way, no thread left behind, and bf16 embeddings that rank like fp32.

Oracle for parity: the classic path of the same ranker (``hf.tokenize`` per pair, Python-list collation,
one forward per batch), reached by switching the pipeline off (``pair_template = None`` / ``backend`` path)
or by calling the classic functions directly.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from unirank.backends.feeder import Prefetcher


def _feeder_threads():
    return [t for t in threading.enumerate() if t.name.startswith("unirank-feeder") and t.is_alive()]


def _dl19(n_queries, depth):
    from unirank.eval.datasets import load_dataset

    ds = load_dataset("trec-dl-2019")
    run = ds.get_run("bm25")
    qids = sorted(run)[:n_queries]
    return [ds.queries[q] for q in qids], [[ds.corpus[d].text for d, _ in run[q][:depth]] for q in qids]


# -- Prefetcher ------------------------------------------------------------------------------------------


def test_prefetcher_yields_everything_in_order_and_stays_bounded():
    made = []

    def produce():
        for i in range(50):
            made.append(i)
            yield i

    with Prefetcher(produce(), depth=2) as feed:
        first = next(feed)
        time.sleep(0.2)  # the producer can run ahead by the queue (2) plus the item it holds, no further
        assert first == 0 and len(made) <= 4
        rest = list(feed)
    assert [first, *rest] == list(range(50)) and not _feeder_threads()


def test_producer_error_reaches_the_consumer_and_the_thread_ends():
    def produce():
        yield 1
        raise KeyError("tokenizer broke")

    with pytest.raises(KeyError, match="tokenizer broke"):
        with Prefetcher(produce()) as feed:
            assert next(feed) == 1
            next(feed)
    assert not _feeder_threads()


def test_consumer_error_stops_and_joins_the_producer():
    closed = threading.Event()

    def produce():
        try:
            yield from range(10_000)
        finally:
            closed.set()

    with pytest.raises(RuntimeError, match="forward failed"):
        with Prefetcher(produce(), depth=1) as feed:
            for i in feed:
                if i == 3:
                    raise RuntimeError("forward failed")
    assert closed.is_set() and not _feeder_threads()


# -- cross-encoder ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dl19_small():
    return _dl19(2, 25)


def test_cross_encoder_pipeline_equals_the_classic_path(minilm_cross_encoder, dl19_small):
    from unirank import Reranker

    ce = Reranker(f"ce:{minilm_cross_encoder}", device="cpu")
    assert ce.pair_template is not None and ce.cls_only_last_layer
    queries, docs = dl19_small
    docs = [[*d, "", "x " * 2000] for d in docs]  # an empty document and one that must be truncated
    new = [ce.score(q, d) for q, d in zip(queries, docs)]
    ce.pair_template = None
    old = [ce.score(q, d) for q, d in zip(queries, docs)]
    diff = max(float(np.max(np.abs(np.array(a) - np.array(b)))) for a, b in zip(new, old))
    assert diff < 1e-5
    assert not _feeder_threads()


@pytest.mark.parametrize("num_labels", [2, 3])
def test_multi_label_heads_and_small_batches(make_tiny_bert, num_labels):
    from unirank import Reranker

    path = make_tiny_bert("seqcls", num_labels=num_labels, seed=5)
    label = 1 if num_labels == 2 else 2
    ce = Reranker(f"ce:{path}", device="cpu", batch_size=3, max_tokens_per_batch=64, label=label)
    docs = [f"rain {'cloud ' * i} water" for i in range(40)]
    new = np.array(ce.score("what causes rain", docs))
    ce.pair_template = None
    np.testing.assert_allclose(new, ce.score("what causes rain", docs), atol=1e-5)


def test_a_failing_batch_is_isolated_like_the_classic_path(make_tiny_bert, caplog):
    from unirank import Reranker

    path = make_tiny_bert("seqcls", seed=6)
    ce = Reranker(f"ce:{path}", device="cpu", batch_size=4)
    docs = [f"doc {i} " + "word " * (i % 7) for i in range(30)]
    ref = np.array(ce.score("query", docs))
    real = ce._forward_inputs
    calls = []

    def flaky(inputs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("CUDA out of memory (simulated)")
        return real(inputs)

    ce._forward_inputs = flaky
    got = np.array(ce.score("query", docs))
    np.testing.assert_allclose(got, ref, atol=1e-5)  # the failed batch was re-scored on the classic path
    assert any("retrying it on the classic path" in r.message for r in caplog.records)

    def broken(batch):  # the classic forward fails too: every item alone, then NaN, never a plausible score
        raise ValueError("bad weights")

    ce._forward_inputs = lambda inputs: (_ for _ in ()).throw(ValueError("bad weights"))
    ce._forward = broken
    with pytest.raises(RuntimeError, match="all 30 items failed"):
        ce.score("query", docs)
    assert not _feeder_threads()


def test_tokenizer_failure_propagates_without_leaving_a_thread(make_tiny_bert, monkeypatch):
    from unirank import Reranker
    from unirank.backends import pairs

    ce = Reranker(f"ce:{make_tiny_bert('seqcls', seed=7)}", device="cpu")

    def boom(*a, **k):
        raise MemoryError("host out of memory while tokenising")

    monkeypatch.setattr(pairs, "tokenize_pairs", boom)
    with pytest.raises(MemoryError, match="while tokenising"):
        ce.score("q", ["a", "b"])
    assert not _feeder_threads()


# -- embedding ranker -------------------------------------------------------------------------------------


def test_embedding_pipeline_equals_the_classic_path(minilm_path, dl19_small):
    from unirank import Reranker
    from unirank.backends import hf

    emb = Reranker(f"embed:{minilm_path}", device="cpu", cache_size=0)
    _, docs = dl19_small
    texts = [x for d in docs for x in d] + ["", "rain " * 3000]
    got = emb.encode(texts)
    feats = hf.tokenize(emb.tokenizer, texts, None, emb.max_length)
    import torch

    with torch.inference_mode():
        ref = hf.run_model(feats, emb._forward, max_tokens=4096, batch_size=64)
    assert np.max(np.abs(got - ref)) < 1e-5
    assert not _feeder_threads()


def test_e2rank_suffix_and_left_padding_match_the_classic_path(minilm_path):
    from unirank import Reranker
    from unirank.backends import hf

    emb = Reranker(f"embed:{minilm_path}", device="cpu", cache_size=0)
    emb.tokenizer.padding_side = "left"
    texts = ["rain falls", "cats purr loudly at night", "x " * 600]
    suffix = (2003,)
    got = emb.encode(texts, suffix_ids=suffix)
    feats = hf.tokenize(emb.tokenizer, texts, None, emb.max_length - 1)
    for f in feats:
        if f["input_ids"][-1:] != [2003]:
            f["input_ids"] += [2003]
            f["attention_mask"] += [1]
            f["token_type_ids"] += [0]
    import torch

    with torch.inference_mode():
        ref = hf.run_model(feats, emb._forward, max_tokens=4096, batch_size=64)
    assert np.max(np.abs(got - ref)) < 1e-5


@pytest.mark.parametrize("dtype", ["bf16"])  # fp16 passes too (tau >= 0.99) but runs ~5x slower on a CPU
def test_half_precision_embeddings_rank_like_fp32(minilm_path, dtype):
    from scipy.stats import kendalltau

    from unirank import Reranker

    queries, docs = _dl19(4, 50)
    full = Reranker(f"embed:{minilm_path}", device="cpu")
    half = Reranker(f"embed:{minilm_path}", device="cpu", dtype=dtype)
    for q, d in zip(queries, docs):
        tau = kendalltau(full.score(q, d), half.score(q, d))[0]
        assert tau >= 0.99, (dtype, q, tau)
