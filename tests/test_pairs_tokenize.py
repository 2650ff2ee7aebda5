"""Pair tokenisation once per query (unirank.backends.pairs) equals the tokenizer's own pair encoding.

Oracle: ``hf.tokenize`` (one tokenizer call per pair, ``longest_first``) and ``hf.collate``, over thousands of
seeded random pairs (long ones that need truncation on either side, empty documents, non-ASCII text), both
padding sides, on three tokenizer families: BERT WordPiece (the packaged MiniLM), a RoBERTa-style byte-level
BPE (``<s> q </s></s> d </s>``) and an XLM-R-style Unigram / Metaspace tokenizer, both trained here offline.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from unirank.backends import hf, pairs

CORPUS = (
    "what causes rain water vapour condenses into droplets clouds fall cats purr dogs bark the sun shines "
    "naïve café über Zürich 東京 北京 😀 🎉 hyphen-ated words, punctuation! and numbers 1234 56.78"
).split()


def _corpus_lines(n=400, seed=0):
    rng = random.Random(seed)
    return [" ".join(rng.choice(CORPUS) for _ in range(rng.randint(1, 30))) for _ in range(n)]


def roberta_style(tmp):
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_corpus_lines(), trainer)
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_input_names=["input_ids", "attention_mask"],
    )
    fast.save_pretrained(tmp)
    return transformers.AutoTokenizer.from_pretrained(tmp)


def xlmr_style(tmp):
    import transformers
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(
        vocab_size=2000,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
        unk_token="<unk>",
        show_progress=False,
    )
    tok.train_from_iterator(_corpus_lines(), trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_input_names=["input_ids", "attention_mask"],
    )
    fast.save_pretrained(tmp)
    return transformers.AutoTokenizer.from_pretrained(tmp)


@pytest.fixture(scope="module", params=["bert", "roberta", "xlmr"])
def family(request, minilm_path, tmp_path_factory):
    import transformers

    if request.param == "bert":
        return request.param, transformers.AutoTokenizer.from_pretrained(minilm_path)
    build = roberta_style if request.param == "roberta" else xlmr_style
    return request.param, build(tmp_path_factory.mktemp(request.param))


def _random_pairs(n, seed):
    rng = random.Random(seed)

    def text(lo, hi):
        if rng.random() < 0.05:
            return ""
        return " ".join(rng.choice(CORPUS) for _ in range(rng.randint(lo, hi)))

    queries = [text(0, 6) if rng.random() < 0.8 else text(20, 120) for _ in range(n // 10)]
    return [rng.choice(queries) for _ in range(n)], [
        text(0, 40) if rng.random() < 0.6 else text(40, 300) for _ in range(n)
    ]


def test_template_is_the_tokenizers_own(family):
    name, tok = family
    tpl = pairs.pair_template(tok, 512)
    assert tpl is not None
    expect = {"bert": ((101,), (102,), (102,)), "roberta": ((0,), (2, 2), (2,)), "xlmr": ((0,), (2, 2), (2,))}
    assert (tpl.prefix, tpl.middle, tpl.suffix) == expect[name]
    assert tpl.n_added == tok.num_special_tokens_to_add(pair=True)
    assert ("token_type_ids" in tpl.keys) == (name == "bert")


@pytest.mark.parametrize("max_length", [24, 61, 128])
def test_random_pairs_equal_the_tokenizer(family, max_length):
    name, tok = family
    tpl = pairs.pair_template(tok, max_length)
    assert tpl is not None
    # the oracle itself (the tokenizers library's pair truncation) is slow on long Unigram pairs cut short
    qs, ds = _random_pairs(400 if (name, max_length) == ("xlmr", 24) else 1200, seed=max_length)
    ref = hf.tokenize(tok, qs, ds, max_length)
    got = pairs.tokenize_pairs(tok, tpl, qs, ds, max_length)
    assert got.lengths == [len(r["input_ids"]) for r in ref]
    truncated = sum(len(r["input_ids"]) == max_length for r in ref)
    assert truncated > len(qs) // 10  # the truncation rule is really exercised
    for side in (False, True):
        for start in range(0, len(qs), 256):
            idx = list(range(start, min(start + 256, len(qs))))
            want = hf.collate([ref[i] for i in idx], tok, "cpu", padding_side="left" if side else "right")
            have = got.collate(idx, left=side)
            assert set(have) == set(want)
            for k in want:
                np.testing.assert_array_equal(have[k], want[k].numpy(), err_msg=k)


def test_longest_first_matches_the_tokenizer_on_every_length(minilm_path):
    """Every (query, document) length combination up to 20 x 20 at odd and even budgets."""
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(minilm_path)
    n1, n2 = np.meshgrid(np.arange(21), np.arange(21))
    n1, n2 = n1.ravel(), n2.ravel()
    qs = [" ".join(["rain"] * int(a)) for a in n1]
    ds = [" ".join(["cats"] * int(b)) for b in n2]
    for max_length in (11, 12, 20):
        enc = tok(qs, ds, truncation="longest_first", max_length=max_length)
        ref1 = [ids.count(4542) for ids in enc["input_ids"]]
        ref2 = [ids.count(8870) for ids in enc["input_ids"]]
        a, b = pairs.longest_first(n1, n2, max_length - 3)
        assert a.tolist() == ref1 and b.tolist() == ref2


def test_huge_documents_are_cut_exactly_like_the_classic_path(minilm_path):
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(minilm_path)
    big = "rain " * 50_000
    spaced = "x" * 2000 + " " + "😀" * 30000  # the cut lands in a word-less tail: that pair is redone
    qs, ds = ["q", big, "what", "q2"], [big, "short", spaced, ""]
    tpl = pairs.pair_template(tok, 64)
    got = pairs.tokenize_pairs(tok, tpl, qs, ds, 64)
    assert [got.features(i) for i in range(4)] == hf.tokenize(tok, qs, ds, 64)


def test_tokenizers_the_fast_path_cannot_prove_are_refused(minilm_path):
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(minilm_path)
    tok.truncation_side = "left"
    assert pairs.pair_template(tok, 64) is None

    class Slow:
        is_fast = False

    assert pairs.pair_template(Slow(), 64) is None

    class Lying:  # a fast tokenizer whose pair encoding does not contain its single encodings
        is_fast = True
        truncation_side = "right"

        def __call__(self, a, b=None, **kw):
            return {"input_ids": [[1, 2, 3]] * len(a), "attention_mask": [[1, 1, 1]] * len(a)}

    assert pairs.pair_template(Lying(), 64) is None


def test_own_backend_ignores_the_wrappers_state_and_is_thread_safe(minilm_path):
    """The fast path encodes with a private copy of the Rust tokenizer: truncation / padding a caller left on
    the wrapper's backend changes nothing, the wrapper's state is left as it was, and concurrent calls (the
    feeder thread beside a caller's own tokenizer calls) give the same ids."""
    from concurrent.futures import ThreadPoolExecutor

    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(minilm_path)
    tpl = pairs.pair_template(tok, 96)
    assert tpl is not None and tpl.backend is not None
    assert tpl.backend is not tok.backend_tokenizer
    qs, ds = _random_pairs(600, seed=7)
    ref = hf.tokenize(tok, qs, ds, 96)
    tok.backend_tokenizer.enable_truncation(5)  # state another caller may leave behind
    tok.backend_tokenizer.enable_padding(length=40)
    got = pairs.tokenize_pairs(tok, tpl, qs, ds, 96)
    assert [got.features(i) for i in range(len(qs))] == ref
    assert tok.backend_tokenizer.truncation["max_length"] == 5  # untouched
    tok.backend_tokenizer.no_truncation()
    tok.backend_tokenizer.no_padding()
    with ThreadPoolExecutor(4) as pool:
        outs = list(pool.map(lambda _: pairs.tokenize_pairs(tok, tpl, qs, ds, 96), range(8)))
    for out in outs:
        np.testing.assert_array_equal(
            out.collate(range(len(qs)))["input_ids"], got.collate(range(len(qs)))["input_ids"]
        )


def test_encode_plain_equals_the_wrapper_without_special_tokens(family):
    _, tok = family
    tpl = pairs.pair_template(tok, 128)
    texts = [t for pair in zip(*_random_pairs(300, seed=3)) for t in pair]
    ids, lens = pairs.encode_plain(tok, texts, tpl.backend)
    ref = tok(texts, add_special_tokens=False)["input_ids"]
    assert lens.tolist() == [len(r) for r in ref]
    assert ids.tolist() == [t for r in ref for t in r]
    ids2, lens2 = pairs.encode_plain(tok, texts)  # no backend: the wrapper's call
    assert ids2.tolist() == ids.tolist() and lens2.tolist() == lens.tolist()


@pytest.mark.parametrize("max_length", [12, 40, 128])
def test_single_texts_equal_the_tokenizer_with_and_without_a_suffix(family, max_length):
    """unirank.backends.texts: the proven template path equals hf.tokenize (and the classic path), with E2Rank
    style suffix ids appended only to rows that do not end with them."""
    from unirank.backends import texts

    _, tok = family
    tpl = texts.text_template(tok, max_length)
    assert tpl is not None and tpl.backend is not None
    qs, ds = _random_pairs(500, seed=max_length + 1)
    items = ds[:400] + qs[:100] + ["x " * 5000, ""]
    ref = hf.tokenize(tok, items, None, max_length)
    got = texts.tokenize_texts(tok, items, max_length, template=tpl)
    assert [got.features(i) for i in range(len(items))] == [{k: r[k] for k in tpl.keys} for r in ref]
    assert sum(len(r["input_ids"]) == max_length for r in ref) > 20  # truncation really exercised
    suffix = tuple(ref[0]["input_ids"][-2:])  # some rows already end with it (never twice), others get it
    fast = texts.tokenize_texts(tok, items, max_length - 2, suffix, template=tpl)
    slow = texts.tokenize_texts(tok, items, max_length - 2, suffix)
    base = hf.tokenize(tok, items, None, max_length - 2)
    ended = 0
    for i, r in enumerate(base):
        ends = tuple(r["input_ids"][-2:]) == suffix
        ended += ends
        want = r["input_ids"] if ends else r["input_ids"] + list(suffix)
        assert fast.features(i)["input_ids"] == want == slow.features(i)["input_ids"]
    assert 0 < ended < len(items)
