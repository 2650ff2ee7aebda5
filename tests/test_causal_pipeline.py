"""The local causal-LM engine on the host pipeline (:mod:`unirank.backends.causal_feed`): scores equal the
serial path's (``pipeline=False``: Python-list collation, one batch after another) on Llama-, Qwen- and
Gemma-style models, both padding sides, with and without a pad token, with ``share_prefix`` on and off;
batched prompt tokenisation equals one call per prompt; failed batches are isolated and no feeder thread
outlives a call."""
# ruff: noqa: F811

from __future__ import annotations

import functools
import random
import threading
from pathlib import Path

import numpy as np
import pytest

from _llm_fixtures import make_tiny_causal, tiny_causal_lm  # noqa: F401
from unirank import Reranker
from unirank.backends.causal_lm import CausalLM, cache_dir

PARITY = 1e-5
HEADS = (12, 10)
TAILS = (1, 6, 3, 2, 5, 4, 1, 9)


def _feeders() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("unirank-feeder")]


def _prompts(tok, seed: int = 0) -> list[list[int]]:
    """Prompts of mixed lengths; two groups share a 12- / 10-token head (``share_prefix`` groups), the rest
    stand alone (one longer than the Gemma-style sliding window of 8)."""
    rng = random.Random(seed)
    bos = tok.bos_token_id

    def rand(n: int) -> list[int]:
        return [rng.randrange(1000, 20000) for _ in range(n)]

    heads = [[bos, *rand(n - 1)] for n in HEADS]
    grouped = [heads[i % 2] + rand(t) for i, t in enumerate(TAILS)]
    return grouped + [[bos, *rand(n)] for n in (2, 17, 0, 30)]


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma3"])
@pytest.mark.parametrize("pad", [True, False], ids=["pad", "nopad"])
def test_pipeline_scores_equal_the_serial_path(make_tiny_causal, arch, pad):
    folder = make_tiny_causal(arch, pad=pad)
    worst = 0.0
    for side in ("left", "right"):
        for share in (False, True):
            kw = dict(padding_side=side, share_prefix=share, batch_size=3)
            new, old = CausalLM(folder, **kw), CausalLM(folder, pipeline=False, **kw)
            assert new.pipeline and not old.pipeline
            prompts = _prompts(new.tokenizer)
            conts = [p[1:4] or [1012] for p in _prompts(new.tokenizer, seed=1)]
            for fn, args in (
                ("next_token_logprobs", (prompts,)),
                ("next_token_logprobs", (prompts, [5, 7, 1012])),
                ("next_token_logits", (prompts, [5, 7])),
            ):
                a, b = getattr(new, fn)(*args), getattr(old, fn)(*args)
                assert a.shape == b.shape and np.isfinite(a).all()
                worst = max(worst, float(np.abs(a - b).max()))
            a, b = new.continuation_logprobs(prompts, conts), old.continuation_logprobs(prompts, conts)
            assert [len(x) for x in a] == [len(c) for c in conts]
            worst = max(worst, max(float(np.abs(x - y).max()) for x, y in zip(a, b)))
            assert new.forward_calls == old.forward_calls  # the same batches, the same prefix runs
            assert new.usage.prompt_tokens == old.usage.prompt_tokens and new.usage.calls == old.usage.calls
    print(f"{arch} pad={pad}: max |pipeline - serial| = {worst:.2e}")
    assert worst <= PARITY
    assert not _feeders()


def test_shared_prefix_runs_each_prefix_once_on_the_pipeline(tiny_causal_lm):
    engine = CausalLM(tiny_causal_lm, share_prefix=True, batch_size=16)
    prompts = _prompts(engine.tokenizer)
    engine.next_token_logprobs(prompts, [5, 7])
    # 2 groups: a prefix forward + one batch each; the 4 lone prompts: one batch
    assert engine.forward_calls == 2 * 2 + 1


def _poison(engine: CausalLM, fail) -> list[int]:
    """Make the model's forward raise ``fail(input_ids)`` when it returns an exception; returns the sizes of
    the batches it was called with."""
    forward = engine.model.forward
    sizes: list[int] = []

    @functools.wraps(forward)
    def wrapped(*args, **kwargs):
        ids = kwargs["input_ids"]
        sizes.append(int(ids.shape[0]))
        exc = fail(ids)
        if exc is not None:
            raise exc
        return forward(*args, **kwargs)

    engine.model.forward = wrapped
    return sizes


def test_a_failing_item_is_isolated_and_the_rest_score_as_before(tiny_causal_lm, caplog):
    clean = CausalLM(tiny_causal_lm, batch_size=4)
    prompts = _prompts(clean.tokenizer)[:8]
    want = clean.next_token_logprobs(prompts, [5, 7])
    engine = CausalLM(tiny_causal_lm, batch_size=4)
    poison = prompts[5][-1]
    _poison(engine, lambda ids: RuntimeError("bad token") if (ids == poison).any() else None)
    with caplog.at_level("WARNING"):
        got = engine.next_token_logprobs(prompts, [5, 7])
    hit = [i for i, p in enumerate(prompts) if poison in p]
    assert hit == [5]
    assert np.isnan(got[5]).all()
    ok = [i for i in range(len(prompts)) if i != 5]
    # items retried alone run unpadded: equal to float rounding of a different batch (as test_llm_batched)
    np.testing.assert_allclose(got[ok], want[ok], atol=1e-4, rtol=0)
    assert "could not be scored and gets NaN" in caplog.text
    assert not _feeders() and not engine.lock.locked()


def test_out_of_memory_halves_the_batch(tiny_causal_lm, caplog):
    clean = CausalLM(tiny_causal_lm, batch_size=8)
    prompts = _prompts(clean.tokenizer)[:8]
    want = clean.continuation_logprobs(prompts, [[1012, 1013]] * 8)
    engine = CausalLM(tiny_causal_lm, batch_size=8)
    sizes = _poison(engine, lambda ids: RuntimeError("CUDA out of memory") if ids.shape[0] > 2 else None)
    with caplog.at_level("WARNING"):
        got = engine.continuation_logprobs(prompts, [[1012, 1013]] * 8)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=0)
    assert "retrying in halves" in caplog.text
    assert sizes == [8, 8, 4, 2, 2, 4, 2, 2]  # tried, retried whole, halved until it fits
    assert not _feeders()


def test_no_feeder_thread_survives_an_exception(tiny_causal_lm, monkeypatch):
    from unirank.backends import causal_feed

    engine = CausalLM(tiny_causal_lm, batch_size=2)
    prompts = _prompts(engine.tokenizer)
    _poison(engine, lambda ids: RuntimeError("always"))
    with pytest.raises(RuntimeError, match="items failed to score"):
        engine.next_token_logprobs(prompts, [5])
    assert not _feeders() and not engine.lock.locked()

    ok = CausalLM(tiny_causal_lm, batch_size=2)
    real = causal_feed.IdPool.collate
    calls = []

    def broken(self, index, **kw):  # the producer fails while preparing its third batch
        calls.append(1)
        if len(calls) == 3:
            raise ValueError("collation broke")
        return real(self, index, **kw)

    monkeypatch.setattr(causal_feed.IdPool, "collate", broken)
    with pytest.raises(ValueError, match="collation broke"):
        ok.next_token_logprobs(prompts, [5])
    assert not _feeders() and not ok.lock.locked()


def test_a_model_without_position_ids_keeps_the_right_side_only(tiny_causal_lm):
    """A model whose forward takes no ``position_ids``: right padding runs (natural positions), left padding
    fails in every batch as before (it cannot be exact)."""
    ref = CausalLM(tiny_causal_lm, padding_side="right", batch_size=4)
    prompts = _prompts(ref.tokenizer)
    want = ref.next_token_logprobs(prompts, [5, 7])
    for side in ("right", "left"):
        engine = CausalLM(tiny_causal_lm, padding_side=side, batch_size=4)
        forward = engine.model.forward

        def no_positions(input_ids=None, attention_mask=None, logits_to_keep=0, forward=forward):
            return forward(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=logits_to_keep)

        engine.model.forward = no_positions
        if side == "right":
            np.testing.assert_allclose(engine.next_token_logprobs(prompts, [5, 7]), want, atol=PARITY, rtol=0)
        else:
            with pytest.raises(RuntimeError, match="items failed to score"):
                engine.next_token_logprobs(prompts, [5, 7])
        assert not _feeders()


# -- batched prompt tokenisation --------------------------------------------------------------------------
TEXTS = [
    "what causes rain",
    "",
    "  spaced   out  ",
    "naïve café 東京 😀 über-long, hyphen-ated",
    "Rain is water vapour that condenses into drops.\nCats purr.",
    "a" * 300,
]


def _qwen_style(out: Path):
    """Byte-level BPE, no BOS (Qwen2 tokenizers add no special tokens to a prompt)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(TEXTS * 3, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")


def _gemma_style(out: Path):
    """SentencePiece-style: spaces to "▁" by the normalizer, BOS prepended, no pad token."""
    from tokenizers import Tokenizer, models, normalizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=False))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.train_from_iterator(TEXTS * 3, trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<bos>"]))
    bos = tok.token_to_id("<bos>")
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", bos)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", unk_token="<unk>")


def _real_gemma():
    """The packaged Gemma 3 tokenizer when a converted copy is cached here (else the test skips it)."""
    from transformers import AutoTokenizer

    found = sorted((cache_dir() / "gguf").glob("*/tokenizer.json")) if (cache_dir() / "gguf").is_dir() else []
    if not found:
        pytest.skip("no converted Gemma 3 270M in the unirank cache")
    return AutoTokenizer.from_pretrained(str(found[0].parent))


@pytest.mark.parametrize("style", ["llama", "qwen", "gemma", "gemma-real"])
def test_encode_many_equals_one_call_per_text(tiny_causal_lm, tmp_path, style):
    engine = CausalLM(tiny_causal_lm)
    if style == "qwen":
        engine.tokenizer = _qwen_style(tmp_path)
    elif style == "gemma":
        engine.tokenizer = _gemma_style(tmp_path)
    elif style == "gemma-real":
        engine.tokenizer = _real_gemma()
    for special in (True, False):
        want = [engine.encode(t, special) for t in TEXTS]
        assert engine.encode_many(TEXTS, special) == want
        assert any(want)
    assert engine._own_backend() is not None  # the Rust tokenizer copy was proven and used
    engine.pipeline = False  # one call per text: the same
    assert engine.encode_many(TEXTS) == [engine.encode(t) for t in TEXTS]
    engine.pipeline = True
    bos = engine.tokenizer.bos_token_id
    assert (engine.encode_many(["x"])[0][:1] == [bos]) == (style != "qwen")
    assert engine.encode_many([]) == []


@pytest.mark.parametrize("style", ["llama", "gemma"])
def test_truncate_texts_equals_truncate_tokens(tiny_causal_lm, tmp_path, style):
    from unirank.methods.llm_fit import truncate_texts
    from unirank.text import truncate_tokens

    tok = CausalLM(tiny_causal_lm).tokenizer if style == "llama" else _gemma_style(tmp_path)
    texts = [*TEXTS, "water " * 400, " ".join(TEXTS) * 3]
    for budget in (1, 3, 8, 40):
        assert truncate_texts(tok, texts, budget) == [truncate_tokens(tok, t, budget) for t in texts]


class _Counting:
    """A tokenizer wrapper that counts calls (everything else goes to the real tokenizer)."""

    def __init__(self, tok) -> None:
        self.tok, self.calls = tok, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.tok(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.tok, name)


QUERIES = ["what causes rain", "how do cats purr", "stock market crash"]
DOCS = [
    [f"passage {j} about {w} and weather number {j * 7 % 5} " * (j + 1) for j in range(7)] for w in QUERIES
]


@pytest.mark.parametrize(
    "options",
    [
        {"mode": "yesno"},
        {"mode": "graded", "max_doc_tokens": 12},
        {"mode": "likelihood"},
        {"mode": "yesno", "prompt": "qwen3-reranker"},
    ],
    ids=["yesno", "graded-cut", "likelihood", "pieces"],
)
def test_pointwise_rank_many_tokenises_in_batches_with_equal_scores(tiny_causal_lm, options):
    n_pairs = sum(map(len, DOCS))
    for context in (80, 512):  # 80: some prompts are cut to the context (one at a time, as before)
        new = CausalLM(tiny_causal_lm, max_length=context)
        old = CausalLM(tiny_causal_lm, max_length=context, pipeline=False)
        scores, calls = {}, {}
        for key, engine in (("new", new), ("old", old)):
            r = Reranker("llm-pointwise", engine=engine, **options)
            engine.encode_many(["warm-up"])  # the fast path's one-time proof on probe texts
            engine.tokenizer = counter = _Counting(engine.tokenizer)
            res = r.rank_many(QUERIES, DOCS)
            scores[key] = np.array([[x.score for x in sorted(one, key=lambda x: x.index)] for one in res])
            calls[key] = counter.calls
        print(f"{options} context={context}: tokenizer calls {calls}")
        np.testing.assert_allclose(scores["new"], scores["old"], atol=PARITY, rtol=0)
        assert np.isfinite(scores["new"]).all()
        assert calls["old"] >= n_pairs  # at least one call per prompt
        if context == 512:
            assert calls["new"] <= 1  # the document cut (prompts, continuations: the Rust tokenizer copy)


@pytest.mark.parametrize("context", [512, 290, 250, 230])
def test_first_window_prompts_equal_one_window_at_a_time(tiny_causal_lm, context):
    """FIRST's prompts of a strategy round: one tokenizer call per kind of text instead of ~window_size + 2
    per window, the same token ids (a window over the context goes through ``local_prompt``'s loop; one
    that cannot fit raises as before)."""
    from unirank.methods.llm_fit import window_prompts
    from unirank.methods.llm_listwise import FirstWindow
    from unirank.types import Document

    engine = CausalLM(tiny_causal_lm, max_length=context)
    win = FirstWindow(engine, window_size=7, max_doc_tokens=20)
    windows = [[Document(t) for t in docs[:n]] for docs, n in zip(DOCS * 2, (7, 3, 5, 6, 2, 4))]
    queries = QUERIES * 2
    want, errors = [], []
    for q, w in zip(queries, windows):
        try:
            want.append(win.local_prompt(q, w, 1, "["))
        except ValueError as exc:  # the prompt needs more than the context before any document text
            want.append(None)
            errors.append(str(exc))
    if errors:
        with pytest.raises(ValueError) as info:
            window_prompts(win, queries, windows, 1, "[")
        assert str(info.value) == errors[0]
    keep = [i for i, x in enumerate(want) if x is not None]
    assert keep
    engine.encode_many(["warm-up"])
    engine.tokenizer = counter = _Counting(engine.tokenizer)
    got = window_prompts(win, [queries[i] for i in keep], [windows[i] for i in keep], 1, "[")
    assert got == [want[i] for i in keep] and all(len(x) <= context - 1 for x in got)
    print(
        f"context={context}: {counter.calls} tokenizer calls for {len(keep)} windows; {len(errors)} refused"
    )
    if context == 512:
        assert counter.calls == 1  # the documents (one budget); the prompts: the Rust tokenizer copy


def test_encode_many_keeps_the_tokenizer_call_when_its_copy_differs(tiny_causal_lm):
    """A tokenizer whose Python call does more than its Rust backend (here: it appends text) fails the
    probe proof, and ``encode_many`` uses the tokenizer's own batched call: still equal to ``encode``."""

    class Appending(_Counting):
        def __call__(self, text, **kwargs):
            self.calls += 1
            more = [t + " rain" for t in text] if isinstance(text, list) else text + " rain"
            return self.tok(more, **kwargs)

    engine = CausalLM(tiny_causal_lm)
    engine.tokenizer = Appending(engine.tokenizer)
    assert engine._own_backend() is None
    before = engine.tokenizer.calls
    got = engine.encode_many(TEXTS)
    assert engine.tokenizer.calls == before + 1
    assert got == [engine.encode(t) for t in TEXTS] and all(x[-1] == got[0][-1] for x in got)
