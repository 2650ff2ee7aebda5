"""Decoder rerankers (Qwen3-Reranker, bge-reranker-v2-gemma, mxbai-rerank-v2) as prompt presets of
``llm-pointwise``, checked on a tiny random causal LM against a hand computation of each reference's code on
the prompt written out here, and against scores the reference packages themselves produced on the same tiny
weights (FlagEmbedding 1.4.2 ``FlagLLMReranker`` and mxbai-rerank 0.1.6 ``MxbaiRerankV2``: neither runs under
transformers 5 -- FlagEmbedding imports ``transformers.modeling_attn_mask_utils``, mxbai-rerank calls
``tokenizer.prepare_for_model`` -- so they ran once in a throwaway venv with transformers 4.51.3).

mxbai-rerank-v2 keeps the reference's caps on long inputs (query 6,144 tokens, query + document 8,192, both
lowered to what a smaller window leaves): checked here against ``MxbaiRerankV2.prepare_inputs`` written out,
and by ``benchmarks/parity/run_parity.py`` against mxbai-rerank 0.1.6 itself (transformers 4.57.1) on short,
long-query, long-document and scaled-cap cases: max |d| = 3.8e-6 (1.3e-5 when issue 14 was filed; command and
record in ``tests/test_reference_parity.py``)."""
# ruff: noqa: F811

from __future__ import annotations

import numpy as np
import pytest

from _llm_fixtures import tiny_causal_lm, tiny_engine  # noqa: F401
from unirank import Reranker
from unirank.prompts import PROMPTS, get_prompt
from unirank.types import ScoreKind

Q = "what causes rain"
DOCS = ["rain forms when water vapour condenses", "cats purr when happy", "the sun is a star"]

# Qwen3-Reranker-0.6B model card, "Transformers Usage" (huggingface.co/Qwen/Qwen3-Reranker-0.6B).
QWEN3_PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the "
    'Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
)
QWEN3_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
QWEN3_TASK = "Given a web search query, retrieve relevant passages that answer the query"


# Scores of the reference packages on the ``tiny_causal_lm`` weights (seed 0) for Q and REF_DOCS, recorded
# with transformers 4.51.3 / torch 2.13 CPU: FlagLLMReranker(path, use_fp16=False, devices="cpu")
# .compute_score(pairs) and MxbaiRerankV2(path, device="cpu", torch_dtype="float32").predict(queries, docs).
REF_DOCS = [*DOCS, "rain " * 300]
REF = {
    "bge-gemma": [6.762956619262695, 6.781158447265625, 6.762799263000488, 6.676692008972168],
    "mxbai-v2": [16.984479904174805, 16.989334106445312, 16.998050689697266, 17.001842498779297],
}


def qwen3_format_instruction(instruction, query, doc):  # the card's format_instruction
    return f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {doc}"


@pytest.fixture(scope="module")
def raw(tiny_causal_lm):
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(tiny_causal_lm)
    return tok, transformers.AutoModelForCausalLM.from_pretrained(tiny_causal_lm).eval()


def _last_logits(raw, ids):
    import torch

    with torch.no_grad():
        return raw[1](torch.tensor([ids])).logits[0, -1]


def _enc(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def test_presets_are_named_templates_with_their_scores():
    assert get_prompt("bge-gemma").score == "yes" and get_prompt("bge-gemma").labels[0] == "Yes"
    assert get_prompt("mxbai-v2").labels == ("1", "0") and get_prompt("mxbai-v2").score == "yes-no"
    p = PROMPTS["qwen3-reranker"]
    assert p.render("Q", "D") == QWEN3_PREFIX + qwen3_format_instruction(QWEN3_TASK, "Q", "D") + QWEN3_SUFFIX
    bge = PROMPTS["bge-gemma"].render("Q", "D")
    assert bge == (
        "A: Q\nB: D\nGiven a query A and a passage B, determine whether the passage contains an answer to "
        "the query by providing a prediction of either 'Yes' or 'No'."
    )


def test_qwen3_reranker_matches_the_model_card_computation(tiny_engine, raw):
    tok = raw[0]
    r = Reranker("llm-pointwise", engine=tiny_engine, prompt="qwen3-reranker")
    assert r.score_kind is ScoreKind.LOGIT
    yes, no = tok.convert_tokens_to_ids("yes"), tok.convert_tokens_to_ids("no")
    want = []
    for d in DOCS:
        # the card: prefix_tokens + tokenizer(pair)["input_ids"] + suffix_tokens; Qwen's tokenizer adds no
        # special tokens to the pair (this tiny WordPiece one would add [CLS], hence add_special_tokens=False)
        ids = _enc(tok, QWEN3_PREFIX) + _enc(tok, qwen3_format_instruction(QWEN3_TASK, Q, d))
        ids += _enc(tok, QWEN3_SUFFIX)
        pair = _last_logits(raw, ids)[[no, yes]].log_softmax(-1)
        want.append(float(pair[1].exp()))  # the card's score: P(yes) over (no, yes)
    got = np.asarray(r.score(Q, DOCS))
    np.testing.assert_allclose(1 / (1 + np.exp(-got)), want, atol=1e-5)
    custom = Reranker("llm-pointwise", engine=tiny_engine, prompt="qwen3-reranker", instruction="Find cats")
    assert not np.allclose(custom.score(Q, DOCS), got)


def test_bge_gemma_is_the_raw_yes_logit(tiny_engine, raw):
    tok = raw[0]
    r = Reranker("llm-pointwise", engine=tiny_engine, prompt="bge-gemma")
    assert r.score_kind is ScoreKind.UNBOUNDED
    got = np.asarray(r.score(Q, DOCS))
    # by hand: [BOS] + "A: q" + "\n" + "B: p" + "\n" + prompt, each tokenized alone; the raw 'Yes' logit
    yes = _enc(tok, "Yes")[0]
    inst = PROMPTS["bge-gemma"].instruction
    want = []
    for d in DOCS:
        ids = [tok.bos_token_id, *_enc(tok, f"A: {Q}"), *_enc(tok, "\n"), *_enc(tok, f"B: {d}")]
        want.append(float(_last_logits(raw, ids + _enc(tok, "\n") + _enc(tok, inst))[yes]))
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_mxbai_v2_is_the_one_minus_zero_logit(tiny_engine, raw):
    tok = raw[0]
    r = Reranker("llm-pointwise", engine=tiny_engine, prompt="mxbai-v2")
    assert r.score_kind is ScoreKind.LOGIT
    got = np.asarray(r.score(Q, DOCS))
    one, zero = _enc(tok, "1")[0], _enc(tok, "0")[0]
    pieces = PROMPTS["mxbai-v2"].pieces
    want = []
    for d in DOCS:
        ids = _enc(tok, pieces[0]) + _enc(tok, f"query: {Q}") + _enc(tok, "\n") + _enc(tok, f"document: {d}")
        ids += _enc(tok, "\n") + _enc(tok, pieces[5]) + _enc(tok, pieces[6])
        logits = _last_logits(raw, ids)
        want.append(float(logits[one] - logits[zero]))
    np.testing.assert_allclose(got, want, atol=1e-4)


@pytest.mark.parametrize("preset", ["bge-gemma", "mxbai-v2"])
def test_presets_give_the_reference_packages_scores(preset, tiny_engine):
    got = Reranker("llm-pointwise", engine=tiny_engine, prompt=preset).score(Q, REF_DOCS)
    np.testing.assert_allclose(got, REF[preset], atol=1e-4)


def test_long_document_is_cut_to_the_context(tiny_causal_lm):
    from unirank.backends.causal_lm import CausalLM

    engine = CausalLM(tiny_causal_lm, max_length=64)
    r = Reranker("llm-pointwise", engine=engine, prompt="bge-gemma")
    assert np.isfinite(r.score(Q, ["rain " * 500])).all()
    tiny = CausalLM(tiny_causal_lm, max_length=8)
    with pytest.raises(ValueError, match="context limit"):
        Reranker("llm-pointwise", engine=tiny, prompt="bge-gemma").score(Q, ["rain"])


def test_bad_score_options():
    with pytest.raises(ValueError, match="score="):
        Reranker("llm-pointwise:openai:m", base_url="http://127.0.0.1:9/v1", prompt="bge-gemma")
    with pytest.raises(ValueError, match="score="):
        Reranker("llm-pointwise:openai:m", base_url="http://127.0.0.1:9/v1", score="logit")


# -- mxbai-rerank-v2: the reference caps on long inputs ---------------------------------------------
LONG_Q = " ".join(f"why does rain fall from cloud {i}" for i in range(70))  # ~420 tokens
LONG_DOC = " ".join(f"water vapour condenses into droplet {i} and falls" for i in range(60))  # ~480 tokens


def mxbai_reference_ids(tok, query, doc, max_length=8192, model_max=512, instruction=None):
    """mxbai-rerank 0.1.6 ``MxbaiRerankV2.prepare_inputs`` written out (``max_length`` its constructor's,
    ``model_max`` the model's ``max_position_embeddings``): template tokens counted once, the query cut to
    ``max_length * 3 // 4`` tokens, the document to what the window leaves, the pair cut to ``max_length``
    from the document's end ("only_second"), then the template around it."""
    prefix, sep, task, suffix = (_enc(tok, PROMPTS["mxbai-v2"].pieces[i]) for i in (0, 2, 5, 6))
    predefined = len(prefix) + len(task) + len(suffix) + len(sep)
    if max_length + predefined > model_max:
        max_length = model_max - predefined
    head = f"instruction: {instruction}\n" if instruction else ""  # one string with the query
    q = _enc(tok, f"{head}query: {query}")[: max_length * 3 // 4]
    d = _enc(tok, f"document: {doc}")[: min(model_max - len(q) - predefined, max_length)]
    pair = (q + sep + d)[:max_length]  # q + sep never reach max_length: only the document loses tokens
    return prefix + pair + sep + task + suffix


def _mxbai_reference_score(raw, query, doc, **kw):
    tok = raw[0]
    logits = _last_logits(raw, mxbai_reference_ids(tok, query, doc, **kw))
    return float(logits[_enc(tok, "1")[0]] - logits[_enc(tok, "0")[0]])


def test_mxbai_v2_default_caps_are_the_references():
    """The preset's defaults are MxbaiRerankV2's: 8,192 tokens of query + document, 6,144 of query (the case
    of the report: a 7,000-token query and a 9,200-token document on a 32k-token model)."""
    from unirank.prompts import cap_pieces

    p = get_prompt("mxbai-v2")
    assert p.max_pair_tokens == 8192 and p.max_query_tokens is None  # None: 3/4 of the pair cap
    pieces = [[0] * 30, [1] * 7000, [2], [3] * 9200, [2], [5] * 50, [6] * 5]
    out = cap_pieces(p, pieces, context=32768)
    assert len(out[1]) == 6144 and len(out[1]) + len(out[2]) + len(out[3]) == 8192
    assert out[3] == [3] * (8192 - 6145) and out[0] == pieces[0] and out[5:] == pieces[5:]


def test_mxbai_v2_long_inputs_match_the_reference_by_default(tiny_engine, raw):
    """On a 512-token model the reference lowers its 8,192 to what the window leaves after the template and
    caps the query at 3/4 of that; unirank's default gives the same ids and scores (a long query used to
    keep all its tokens while the document was cut to nothing but its first few)."""
    r = Reranker("llm-pointwise", engine=tiny_engine, prompt="mxbai-v2")
    cases = [(LONG_Q, LONG_DOC), (Q, LONG_DOC), (LONG_Q, DOCS[0]), (Q, DOCS[1])]
    for q, d in cases:
        assert r._piece_ids(q, d) == mxbai_reference_ids(raw[0], q, d)
    got = [r.score(q, [d])[0] for q, d in cases]
    np.testing.assert_allclose(got, [_mxbai_reference_score(raw, q, d) for q, d in cases], atol=1e-5)
    assert len(_enc(raw[0], f"query: {LONG_Q}")) > 400  # the long query really is cut


def test_mxbai_v2_scaled_caps_match_the_reference(tiny_engine, raw):
    """``max_pair_tokens=96`` plays the reference's ``max_length=96`` (query cap 72) inside a 512 window."""
    r = Reranker("llm-pointwise", engine=tiny_engine, prompt="mxbai-v2", max_pair_tokens=96)
    docs = [LONG_DOC, DOCS[0], " ".join(LONG_DOC.split()[:60])]
    for q in (LONG_Q, Q):
        want = [_mxbai_reference_score(raw, q, d, max_length=96) for d in docs]
        np.testing.assert_allclose(r.score(q, docs), want, atol=1e-5)
        assert [len(r._piece_ids(q, d)) for d in docs] == [
            len(mxbai_reference_ids(raw[0], q, d, max_length=96)) for d in docs
        ]
    n_query = len(_enc(raw[0], f"query: {LONG_Q}"))
    assert len(r._piece_ids(LONG_Q, LONG_DOC)) < len(r._piece_ids(Q, LONG_DOC)) + n_query
    short_q = Reranker("llm-pointwise", engine=tiny_engine, prompt="mxbai-v2", max_query_tokens=10)
    ids = short_q._piece_ids(LONG_Q, DOCS[0])
    assert ids == mxbai_reference_ids(raw[0], LONG_Q[: len("why does rain fall from cloud 0 why")], DOCS[0])
    uncapped = Reranker(
        "llm-pointwise", engine=tiny_engine, prompt="mxbai-v2", max_pair_tokens=None, max_query_tokens=None
    )
    assert len(uncapped._piece_ids(Q, LONG_DOC)) == tiny_engine.max_length  # only the context cuts
    with pytest.raises(ValueError, match="before any document text"):
        uncapped.score(LONG_Q + LONG_Q, [LONG_DOC])
    with pytest.raises(ValueError, match="max_pair_tokens"):
        Reranker("llm-pointwise", engine=tiny_engine, prompt="mxbai-v2", max_pair_tokens=0)


def test_mxbai_v2_instruction_goes_where_the_reference_puts_it(tiny_engine, raw):
    """``instruction=`` becomes MxbaiRerankV2's ``"instruction: ...\\n"`` before ``"query: ..."`` (one string,
    cut with the query); a prompt without an ``{instruction}`` field refuses it instead of ignoring it."""
    r = Reranker("llm-pointwise", engine=tiny_engine, prompt="mxbai-v2", instruction="Find rain")
    for q, d in ((Q, DOCS[0]), (LONG_Q, LONG_DOC)):
        assert r._piece_ids(q, d) == mxbai_reference_ids(raw[0], q, d, instruction="Find rain")
    plain = Reranker("llm-pointwise", engine=tiny_engine, prompt="mxbai-v2")
    assert not np.allclose(r.score(Q, DOCS), plain.score(Q, DOCS))
    with pytest.raises(ValueError, match="no \\{instruction\\} field"):
        Reranker("llm-pointwise", engine=tiny_engine, prompt="yesno", instruction="Find rain")


# -- bge-reranker-v2-gemma: FlagEmbedding's caps -------------------------------------------------------------
def bge_reference_ids(tok, query, doc, max_length=512):
    """FlagEmbedding 1.4.2 ``FlagLLMReranker.compute_score_single_gpu`` written out: ``"A: " + query`` cut
    to ``max_length * 3 // 4`` tokens, ``"B: " + passage`` to ``max_length``, ``[BOS] + query + sep +
    passage`` cut from the passage's end to ``max_length + len(sep) + len(prompt)``, then ``sep + prompt``."""
    sep, prompt = _enc(tok, "\n"), _enc(tok, PROMPTS["bge-gemma"].instruction)
    q = _enc(tok, f"A: {query}")[: max_length * 3 // 4]
    p = _enc(tok, f"B: {doc}")[:max_length]
    pair = [tok.bos_token_id, *q, *sep, *p][: max_length + len(sep) + len(prompt)]
    return pair + sep + prompt


def test_bge_gemma_long_inputs_match_flagembedding(tiny_engine, raw):
    """FlagLLMReranker's defaults (max_length 512: query 384 tokens, passage 512, pair 512 + the prompt's
    tokens) are the preset's; ``max_pair_tokens`` plays its ``max_length``. A long query used to take the
    whole window (and a long passage to keep up to the model's context, 8,192 tokens for gemma)."""
    p = get_prompt("bge-gemma")
    assert (p.max_pair_tokens, p.max_query_tokens, p.cap_rule) == (512, None, "flagembedding")
    r = Reranker("llm-pointwise", engine=tiny_engine, prompt="bge-gemma")
    yes = _enc(raw[0], "Yes")[0]
    for q, d in ((LONG_Q, DOCS[0]), (Q, DOCS[1]), (LONG_Q + LONG_Q, "rain")):
        ids = bge_reference_ids(raw[0], q, d)
        assert r._piece_ids(q, d) == ids
        assert r.score(q, [d])[0] == pytest.approx(float(_last_logits(raw, ids)[yes]), abs=1e-4)
    small = Reranker("llm-pointwise", engine=tiny_engine, prompt="bge-gemma", max_pair_tokens=128)
    for q, d in ((LONG_Q, LONG_DOC), (Q, LONG_DOC), (LONG_Q, DOCS[0])):
        ids = bge_reference_ids(raw[0], q, d, max_length=128)
        assert small._piece_ids(q, d) == ids
        assert small.score(q, [d])[0] == pytest.approx(float(_last_logits(raw, ids)[yes]), abs=1e-4)


def test_qwen3_reranker_long_inputs_match_the_model_card(tiny_engine, raw):
    """The card's ``process_inputs``: the formatted pair cut from its end to ``max_length - len(prefix) -
    len(suffix)`` tokens (``max_length`` 8192), then prefix + pair + suffix; ``max_pair_tokens`` plays
    ``max_length`` (scaled to 160 here: the 512-token model could not hold 8,192)."""
    p = get_prompt("qwen3-reranker")
    assert (p.max_pair_tokens, p.cap_rule) == (8192, "total")
    tok, max_length = raw[0], 160
    prefix, suffix = _enc(tok, QWEN3_PREFIX), _enc(tok, QWEN3_SUFFIX)
    r = Reranker("llm-pointwise", engine=tiny_engine, prompt="qwen3-reranker", max_pair_tokens=max_length)
    yes, no = tok.convert_tokens_to_ids("yes"), tok.convert_tokens_to_ids("no")
    for q, d in ((Q, LONG_DOC), (LONG_Q, DOCS[0]), (Q, DOCS[0])):
        pair = _enc(tok, qwen3_format_instruction(QWEN3_TASK, q, d))
        ids = prefix + pair[: max_length - len(prefix) - len(suffix)] + suffix
        assert r._piece_ids(q, d) == ids and len(ids) <= max_length
        logits = _last_logits(raw, ids)
        assert r.score(q, [d])[0] == pytest.approx(float(logits[yes] - logits[no]), abs=1e-4)
