"""ICR on a shared prefix: the prompt up to the query runs once, the query and content-free suffixes run as
one batch on its KV cache. Checked against the raw transformers attentions of whole-prompt forwards (oracle),
on Llama-, Qwen2- and Gemma3-style tiny models (Gemma3 with prompts past its sliding window), layer subsets,
one row, and the fallbacks; ``build_input``'s batched tokenisation against per-piece ``encode`` calls."""
# ruff: noqa: F811

from __future__ import annotations

import numpy as np
import pytest

from _llm_fixtures import gemma_engine, make_tiny_causal, tiny_causal_lm, tiny_engine  # noqa: F401
from unirank import Reranker
from unirank.backends.causal_attention import prefix_attention
from unirank.methods.attention import CONTENT_FREE, DOC, HEAD, TAIL
from unirank.types import Document

Q = "what causes rain"
TEXTS = ["rain forms when vapour condenses", "cats purr", "the sun is a star", "fog", "snow falls in winter"]
DOCS = [Document(t, str(i)) for i, t in enumerate(TEXTS)]


def _oracle(model, ids, rows, layers=None):
    """Attention from ``rows`` to every position, summed over heads and ``layers``, from transformers'
    own ``output_attentions`` on ONE whole-prompt forward."""
    import torch

    with torch.no_grad():
        att = model(torch.tensor([ids]), output_attentions=True).attentions
    chosen = range(len(att)) if layers is None else layers
    return sum(att[i][0].sum(0) for i in chosen)[rows].numpy().astype(np.float64)


def _by_hand(r, model, query, docs, layers=None):
    ids, spans, rows = r.build_input(query, docs)
    att = _oracle(model, ids, rows, layers).mean(0)
    return np.array([att[a:b].sum() for a, b in spans])


@pytest.fixture(scope="module")
def engines(make_tiny_causal):
    import transformers

    from unirank.backends.causal_lm import CausalLM

    out = {}
    for arch in ("llama", "qwen2", "gemma3"):
        folder = make_tiny_causal(arch)
        raw = transformers.AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
        out[arch] = (CausalLM(folder, attn_implementation="eager"), raw)
    return out


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma3"])
@pytest.mark.parametrize("layers", [None, [1], [0]])
def test_shared_prefix_scores_equal_two_whole_forwards(engines, arch, layers):
    engine, raw = engines[arch]
    r = Reranker("icr", engine=engine, layers=layers)
    ids_q, _, rows_q = r.build_input(Q, DOCS)
    ids_cf, _, rows_cf = r.build_input(CONTENT_FREE, DOCS)
    assert ids_q[: rows_q[0]] == ids_cf[: rows_cf[0]]  # no cut here: both prompts share the prefix
    if arch == "gemma3":  # the tiny Gemma3's sliding window (8) is far shorter than the prompt
        assert len(ids_q) > 4 * engine.model.config.sliding_window
    want = _by_hand(r, raw, Q, DOCS, layers) - _by_hand(r, raw, CONTENT_FREE, DOCS, layers)
    before = engine.forward_calls
    got = r.score(Q, DOCS)
    assert engine.forward_calls - before == 2  # the prefix, then both suffixes as one batch
    np.testing.assert_allclose(got, want, atol=1e-5)
    if arch == "gemma3" and layers == [0]:  # its sliding layer: the documents are out of the query's window
        assert not want.any()
    else:
        assert np.abs(want).max() > 1e-3  # not vacuous
    uncal = Reranker("icr", engine=engine, layers=layers, calibrate=False)
    np.testing.assert_allclose(uncal.score(Q, DOCS), _by_hand(r, raw, Q, DOCS, layers), atol=1e-5)


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_prefix_attention_rows_of_each_suffix(engines, arch):
    engine, raw = engines[arch]
    prefix = engine.encode("the paragraphs above are about weather and cats and the sun")
    suffixes = [engine.encode(t, special=False) for t in (" rain", " why does fog form at night", " N/A")]
    u0, f0 = engine.usage.prompt_tokens, engine.forward_calls
    c0 = engine.usage.calls
    got = prefix_attention(engine, prefix, suffixes, None)
    assert engine.forward_calls - f0 == 2
    assert engine.usage.calls - c0 == 3  # one per prompt, the prefix's tokens once
    assert engine.usage.prompt_tokens - u0 == len(prefix) + sum(map(len, suffixes))
    n = len(prefix)
    for s, g in zip(suffixes, got):
        want = _oracle(raw, prefix + s, list(range(n, n + len(s))))[:, :n]
        assert g.shape == (len(s), n)
        np.testing.assert_allclose(g, want, atol=1e-5)
    one = prefix_attention(engine, prefix, suffixes[1:2], [1])  # a single row
    want = _oracle(raw, prefix + suffixes[1], list(range(n, n + len(suffixes[1]))), [1])[:, :n]
    np.testing.assert_allclose(one[0], want, atol=1e-5)


@pytest.mark.parametrize("sdpa_prefix", [True, False])
def test_prefix_runs_sdpa_suffixes_eager_and_the_engine_is_restored(engines, sdpa_prefix):
    engine, raw = engines["qwen2"]
    seen = []
    handle = engine.model.register_forward_pre_hook(
        lambda *a: seen.append(engine.model.config._attn_implementation)
    )
    prefix, suffix = engine.encode("fog forms at night when air cools"), engine.encode(" fog", special=False)
    try:
        (got,) = prefix_attention(engine, prefix, [suffix], sdpa_prefix=sdpa_prefix)
        assert engine.model.config._attn_implementation == "eager"  # restored
        engine.model.set_attn_implementation("sdpa")  # a shared engine other methods run with SDPA
        (again,) = prefix_attention(engine, prefix, [suffix], sdpa_prefix=sdpa_prefix)
        assert engine.model.config._attn_implementation == "sdpa"  # restored
    finally:
        handle.remove()
        engine.model.set_attn_implementation("eager")
    assert seen == (["sdpa", "eager"] if sdpa_prefix else ["eager", "eager"]) + ["sdpa", "eager"]
    n = len(prefix)
    want = _oracle(raw, prefix + suffix, list(range(n, n + len(suffix))))[:, :n]
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(again, want, atol=1e-5)


def test_fallbacks_run_whole_prompts_with_the_same_scores(tiny_causal_lm, monkeypatch):
    import transformers

    from unirank.backends.causal_lm import CausalLM

    engine = CausalLM(tiny_causal_lm, attn_implementation="eager")
    r = Reranker("icr", engine=engine)
    shared = r.score(Q, DOCS)
    # a cache that cannot be expanded to a batch: the prefix forward is wasted, then two whole forwards
    monkeypatch.delattr(transformers.cache_utils.Cache, "batch_repeat_interleave")
    before = engine.forward_calls
    np.testing.assert_allclose(r.score(Q, DOCS), shared, atol=1e-5)
    assert engine.forward_calls - before == 3
    monkeypatch.undo()
    # a forward without position_ids: decided up front, two whole forwards
    engine.__dict__["_forward_params"]["position_ids"] = False
    before = engine.forward_calls
    np.testing.assert_allclose(r.score(Q, DOCS), shared, atol=1e-5)
    assert engine.forward_calls - before == 2


def test_a_tight_context_cuts_both_passes_the_same_way(tiny_causal_lm):
    from unirank.backends.causal_lm import CausalLM

    engine = CausalLM(tiny_causal_lm, attn_implementation="eager", max_length=80)
    r = Reranker("icr", engine=engine)
    long_q = "why does it rain so much more in the autumn than in the spring"
    ids, spans, rows = r.build_input(long_q, DOCS)
    assert max(b - a for a, b in spans) < max(len(engine.encode(t, False)) for t in TEXTS)  # cut
    _, spans_cf, _ = r.build_input(CONTENT_FREE, DOCS)
    assert spans_cf != spans  # on its own, the short calibration query would leave more room
    prefix = ids[: rows[0]]
    q = ids[rows[0] :]
    cf = engine.encode(" " + CONTENT_FREE, special=False)
    att_q = engine.attention_rows(prefix + q, rows).mean(0)
    att_cf = engine.attention_rows(prefix + cf, list(range(len(prefix), len(prefix) + len(cf)))).mean(0)
    want = [att_q[a:b].sum() - att_cf[a:b].sum() for a, b in spans]  # the query's cut for both
    np.testing.assert_allclose(r.score(long_q, DOCS), want, atol=1e-5)


def _old_build_input(engine, query, docs, max_doc_tokens):
    """``build_input`` as it tokenised before: one ``encode`` call per piece."""
    enc = engine.encode
    bos = enc("", special=True)
    fixed = len(bos) + len(enc(HEAD, False)) + len(enc(TAIL, False)) + len(enc(" " + query, False))
    fixed += sum(len(enc(DOC.format(i=i + 1), False)) + len(enc("\n\n", False)) for i in range(len(docs)))
    budget = min(max_doc_tokens, (engine.max_length - fixed) // len(docs))
    ids = bos + enc(HEAD, False)
    spans = []
    for i, d in enumerate(docs):
        ids += enc(DOC.format(i=i + 1), False)
        doc_ids = enc(d.text, False)[:budget] or enc(" ", False)[:1]
        spans.append((len(ids), len(ids) + len(doc_ids)))
        ids += doc_ids + enc("\n\n", False)
    ids += enc(TAIL, False)
    q = enc(" " + query, False)
    return ids + q, spans, list(range(len(ids), len(ids) + len(q)))


@pytest.fixture(scope="module")
def bpe_causal(tmp_path_factory):
    """A tiny Llama with a byte-level BPE tokenizer (GPT-2 style: spaces belong to the next token)."""
    import torch
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [HEAD, TAIL, *TEXTS, Q, "[document 1] [document 12]", "naïve café 東京"] * 20
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(corpus, trainer)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")
    out = tmp_path_factory.mktemp("tiny-bpe")
    config = transformers.LlamaConfig(
        vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
        bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).save_pretrained(out)
    fast.save_pretrained(out)
    return out


@pytest.mark.parametrize("which", ["wordpiece", "bpe"])
@pytest.mark.parametrize("tight, max_doc_tokens", [(False, 300), (False, 2), (True, 300)])
def test_build_input_ids_and_spans_as_per_piece_encode(
    which, tight, max_doc_tokens, tiny_causal_lm, bpe_causal
):
    from unirank.backends.causal_lm import CausalLM

    folder = tiny_causal_lm if which == "wordpiece" else bpe_causal
    engine = CausalLM(folder, attn_implementation="eager")
    docs = [*DOCS, Document("", "empty"), Document("naïve café 東京, über-long", "u")]
    if tight:  # room for about 3 tokens per document: the even cut
        engine.max_length = len(_old_build_input(engine, Q, docs, 1)[0]) + 2 * len(docs) + 4
    r = Reranker("icr", engine=engine, max_doc_tokens=max_doc_tokens)
    for query in (Q, CONTENT_FREE, "  spaced\tquery "):
        assert r.build_input(query, docs) == _old_build_input(engine, query, docs, max_doc_tokens)
        assert r.build_input(query, docs[:2]) == _old_build_input(engine, query, docs[:2], max_doc_tokens)
    ids, spans, _ = r.build_input(Q, docs)
    if tight:
        longest = max(len(engine.encode(d.text, False)) for d in docs)
        assert len(ids) <= engine.max_length and max(b - a for a, b in spans) < longest  # the cut applied
    assert all(b > a for a, b in spans[:5])


@pytest.mark.slow
def test_gemma_270m_prefix_past_its_sliding_window(gemma_engine):
    """The packaged Gemma 3 270M (sliding window 512 on 5 of 6 layers): a prompt past the window, the shared
    prefix path vs whole forwards, and ``build_input`` vs per-piece ``encode`` on its tokenizer."""
    window = gemma_engine.model.config.sliding_window
    docs = [*(Document(f"{t}. " * 25, str(i)) for i, t in enumerate(TEXTS)), Document("", "empty")]
    r = Reranker("icr", engine=gemma_engine)
    for query in (Q, CONTENT_FREE):
        assert r.build_input(query, docs) == _old_build_input(gemma_engine, query, docs, 300)
    ids, _, rows = r.build_input(Q, docs)
    assert len(ids) > window + 50
    prefix, n = ids[: rows[0]], rows[0]
    suffixes = [ids[n:], gemma_engine.encode(" " + CONTENT_FREE, special=False)]
    got = prefix_attention(gemma_engine, prefix, suffixes)
    for s, g in zip(suffixes, got):
        want = gemma_engine.attention_rows(prefix + s, list(range(n, n + len(s))))[:, :n]
        np.testing.assert_allclose(g, want, atol=1e-4)
        assert np.abs(want[:, : n - window]).sum() > 0  # the full-attention layer reaches the early documents
