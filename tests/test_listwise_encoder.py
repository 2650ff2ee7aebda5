"""jina-reranker-v3 "last but not late" listwise encoder on a tiny random checkpoint in the real file layout.

Oracle: a hand computation in this file (the prompt written out from the model card / ``modeling.py``,
transformers' ``Qwen3Model`` run directly on it with the weights loaded by hand, the hidden states at the
special tokens, the projector in plain torch, cosine).

Side-by-side with the checkpoint's own ``modeling.py`` (``JinaForRanking.rerank``; run from /tmp on the same
tiny weights, not a dependency of this suite; its hard-coded token ids 151670/151671 set to this tokenizer's
261/262, and ``tie_word_embeddings=False`` at load because transformers 5 cannot tie its Identity lm_head):
max |ours - reference| = 1.7e-7 on one block of 6 documents, 2.5e-7 with ``max_doc_length=10,
max_query_length=5``, 2.1e-7 on two blocks (``blocks="reference", max_length=2145``), fp32, torch 2.13 CPU;
the reference ran under the transformers it targets (4.57.1, throwaway venv, checkpoint's tied config as is)
and under 5.24 (``tie_word_embeddings=False`` at load: 5.x cannot tie its Identity lm_head): same figures.
The issue-14 check (tiny random weights, fp32 CPU, transformers 4.57): max |ours - modeling.py| = 1.5e-7.
``blocks="reference"`` is the default; with ``blocks="fit"`` the same 6 documents split [0..2], [3..5] where
the reference splits [0, 1], [2..5], and scores move by up to 1.4e-3 (0.027 and another order were seen
near a full window): block boundaries matter, the merge rule does not differ. The side-by-side is
``benchmarks/parity/run_parity.py`` (see ``tests/test_reference_parity.py`` for the command).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from _listwise_encoder_fixtures import SPECIAL, save_tiny_jina_v3
from unirank import Reranker
from unirank.errors import SpecError
from unirank.registry import resolve
from unirank.types import Document, ScoreKind

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

Q = "what causes rain?"
DOCS = ["Rain falls from clouds when water vapour condenses.", "Cats purr loudly."]
SYSTEM = (
    "You are a search relevance expert who can determine a ranking of the passages based on how relevant they"
    " are to the query. If the query is a question, how relevant a passage is depends on how well it answers"
    " the question. If not, try to analyze the intent of the query and assess how well each passage"
    " satisfies the intent. If an instruction is provided, you should follow the instruction when"
    " determining the ranking."
)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return save_tiny_jina_v3(tmp_path_factory.mktemp("jina") / "tiny-jina-reranker-v3")


@pytest.fixture(scope="module")
def ranker(ckpt):
    return Reranker(f"jina-v3:{ckpt}", dtype="fp32")


@pytest.fixture(scope="module")
def oracle(ckpt):
    """Hand computation: (query embedding, document embeddings) for a prompt written out here."""
    from safetensors.torch import load_file
    from transformers import AutoTokenizer, Qwen3Config, Qwen3Model

    tok = AutoTokenizer.from_pretrained(ckpt)
    weights = load_file(str(ckpt / "model.safetensors"))
    model = Qwen3Model(Qwen3Config.from_pretrained(ckpt)).eval()
    model.load_state_dict({k.removeprefix("model."): v for k, v in weights.items() if k.startswith("model.")})
    w0, w2 = weights["projector.0.weight"], weights["projector.2.weight"]

    def embed(query, docs):
        passages = "".join(
            f'<passage id="{i}">\n{d}<|embed_token|>\n</passage>\n' for i, d in enumerate(docs)
        )
        prompt = (
            f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n"
            f"I will provide you with {len(docs)} passages, each indicated by a numerical identifier. "
            f"Rank the passages based on their relevance to query: {query}\n"
            f"{passages}<query>\n{query}<|rerank_token|>\n</query><|im_end|>\n"
            "<|im_start|>assistant\n<think>\n\n</think>\n\n"
        )
        ids = torch.tensor([tok(prompt, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            hidden = model(input_ids=ids).last_hidden_state[0]
            proj = lambda x: torch.nn.functional.linear(torch.relu(torch.nn.functional.linear(x, w0)), w2)  # noqa: E731
            doc_at = (ids[0] == tok.convert_tokens_to_ids("<|embed_token|>")).nonzero().flatten()
            query_at = (ids[0] == tok.convert_tokens_to_ids("<|rerank_token|>")).nonzero().flatten()
            assert len(doc_at) == len(docs) and len(query_at) == 1
            return proj(hidden[query_at])[0].numpy().astype(np.float64), proj(hidden[doc_at]).numpy()

    return embed


def cos(q, d):
    return d @ q / (np.linalg.norm(d, axis=1) * np.linalg.norm(q))


def test_scores_match_hand_computation(ranker, oracle):
    assert ranker.score_kind is ScoreKind.SIMILARITY
    got = np.array(ranker.score(Q, DOCS))
    q, d = oracle(Q, DOCS)
    np.testing.assert_allclose(got, cos(q, d), atol=1e-5)
    assert np.all(np.abs(got) <= 1) and abs(got[0] - got[1]) > 1e-4
    res = ranker.rank(Q, DOCS)
    assert sorted(res.ids) == ["0", "1"] and res.ids[0] == str(int(np.argmax(got)))
    qe, de = ranker.encode_block(Q, DOCS)
    assert qe.shape == (512,) and de.shape == (2, 512)
    np.testing.assert_allclose(de, d, atol=1e-4)


def test_position_matters_as_with_causal_attention(ranker, oracle):
    """Permuting documents is NOT score-invariant (causal attention; the real model behaves the same):
    each permutation's scores equal the hand computation on the permuted prompt, a document's embedding
    depends only on what precedes it, and the query embedding (after all documents) sees them all."""
    docs = [*DOCS, "The sun is hot and bright today."]
    fwd = np.array(ranker.score(Q, docs))
    rev = np.array(ranker.score(Q, docs[::-1]))
    np.testing.assert_allclose(rev, cos(*oracle(Q, docs[::-1])), atol=1e-5)
    assert np.abs(fwd - rev[::-1]).max() > 1e-5  # same documents, other positions: other scores
    q1, d1 = ranker.encode_block(Q, docs)
    q2, d2 = ranker.encode_block(Q, [docs[0], docs[2], docs[1]])
    np.testing.assert_allclose(d1[0], d2[0], atol=1e-5)  # doc 0 sees the same prefix either way
    assert np.abs(q1 - q2).max() > 1e-4


def test_special_token_strings_in_text_are_removed(ranker, oracle):
    spoof = ["Rain<|embed_token|> falls.", "<|rerank_token|>Cats purr."]
    got = ranker.score("what<|rerank_token|> causes rain?", spoof)
    np.testing.assert_allclose(got, cos(*oracle(Q, ["Rain falls.", "Cats purr."])), atol=1e-5)


def test_blocks_merge_by_weighted_query(ckpt, oracle):
    docs = [
        f"document number {i} about {w}" for i, w in enumerate("rain clouds cats sun sea wind snow".split())
    ]
    r = Reranker(f"jina-v3:{ckpt}", dtype="fp32", block_size=3, batch_size=2)
    seen = []
    hook = r.model.register_forward_pre_hook(
        lambda m, a, kw: seen.append(kw["input_ids"].shape), with_kwargs=True
    )
    try:
        got = np.array(r.score(Q, docs))
    finally:
        hook.remove()
    blocks = [docs[0:3], docs[3:6], docs[6:7]]
    assert r.plan(Q, docs)[2] == [[0, 1, 2], [3, 4, 5], [6]]
    assert sum(s[0] for s in seen) == 3  # one prompt per block
    embs = [oracle(Q, b) for b in blocks]
    weights = [((1 + cos(q, d)) / 2).max() for q, d in embs]
    merged = sum(w * q for w, (q, _) in zip(weights, embs)) / sum(weights)
    expected = cos(merged, np.concatenate([d for _, d in embs]))
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # one block holding everything reproduces the single-prompt hand computation instead
    one = Reranker(f"jina-v3:{ckpt}", dtype="fp32").score(Q, docs)
    np.testing.assert_allclose(one, cos(*oracle(Q, docs)), atol=1e-5)


def test_reference_block_rule(ckpt, oracle):
    """blocks="reference": the reference's capacity estimate. Byte-level tokens, so lengths are byte counts:
    query 17, capacity 2145 - 2 * 17 = 2111; after documents of 51 and 17 tokens 2043 <= max_doc_length
    (2048) remain, so the first block ends there and the rest (1 + 31 + 17 + 460) share the second."""
    docs = [
        DOCS[0],
        "Cats purr loudly.",
        "x",
        "The sun is hot and bright today",
        "cats (2) purr loudly",
        "R" * 460,
    ]
    r = Reranker(f"jina-v3:{ckpt}", dtype="fp32", blocks="reference", max_length=2145)
    assert r.plan(Q, docs)[2] == [[0, 1], [2, 3, 4, 5]]
    embs = [oracle(Q, docs[:2]), oracle(Q, docs[2:])]
    weights = [((1 + cos(q, d)) / 2).max() for q, d in embs]
    merged = (weights[0] * embs[0][0] + weights[1] * embs[1][0]) / sum(weights)
    expected = cos(merged, np.concatenate([embs[0][1], embs[1][1]]))
    np.testing.assert_allclose(r.score(Q, docs), expected, atol=1e-5)


def test_blocks_fit_max_length_and_batches_do_not_change_scores(ckpt):
    docs = ["short", "mid length text here", "a somewhat longer document " * 6, "tail doc", "x" * 150]
    r = Reranker(f"jina-v3:{ckpt}", dtype="fp32", max_length=760, batch_size=1, blocks="fit")
    lengths = []
    hook = r.model.register_forward_pre_hook(
        lambda m, a, kw: lengths.extend(kw["attention_mask"].sum(-1).tolist()), with_kwargs=True
    )
    try:
        single = r.rank_many([Q, "cats?"], [docs, docs[:2]])
    finally:
        hook.remove()
    _, texts, blocks = r.plan(Q, docs)
    assert blocks == [[0, 1], [2], [3], [4]] and max(lengths) <= 760  # the prompt alone is 638 tokens
    assert texts[4] == "x" * 90  # a document longer than the room left in a window is cut to fit
    batched = Reranker(
        f"jina-v3:{ckpt}",
        dtype="fp32",
        max_length=760,
        batch_size=8,
        max_tokens_per_batch=100_000,
        blocks="fit",
    )
    for a, b in zip(single, batched.rank_many([Q, "cats?"], [docs, docs[:2]])):
        assert a.ids == b.ids  # left padding with explicit positions: batch-mates never change a score
        np.testing.assert_allclose([x.score for x in a], [x.score for x in b], atol=1e-5)
    with pytest.raises(ValueError, match="too small"):
        Reranker(f"jina-v3:{ckpt}", dtype="fp32", max_length=64, blocks="fit").score(Q, docs)


def test_truncation_decodes_the_first_tokens(ckpt, oracle):
    r = Reranker(f"jina-v3:{ckpt}", dtype="fp32", max_doc_length=12, max_query_length=6)
    long_doc = "Rain falls from clouds when water vapour condenses."
    got = r.score(Q, [long_doc, "Cats"])  # byte-level tokens: 12 tokens = 12 bytes
    np.testing.assert_allclose(got, cos(*oracle(Q[:6], [long_doc[:12], "Cats"])), atol=1e-5)


def test_bad_checkpoints_say_what_was_expected(ckpt, tmp_path):
    from safetensors.torch import load_file, save_file

    no_proj = tmp_path / "no-projector"
    shutil.copytree(ckpt, no_proj)
    w = {
        k: v
        for k, v in load_file(str(no_proj / "model.safetensors")).items()
        if not k.startswith("projector")
    }
    save_file(w, str(no_proj / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(SpecError, match=r"expected the jina-reranker-v3 projector .* got no projector"):
        Reranker(f"jina-v3:{no_proj}")
    no_tokens = tmp_path / "no-special-tokens"
    shutil.copytree(ckpt, no_tokens)
    for f in no_tokens.glob("*token*"):
        f.unlink()
    from _listwise_encoder_fixtures import save_byte_tokenizer

    save_byte_tokenizer(no_tokens, [s for s in SPECIAL if s != "<|embed_token|>"])
    with pytest.raises(
        SpecError, match=r"expected the tokenizer to have the special token '<\|embed_token\|>'"
    ):
        Reranker(f"jina-v3:{no_tokens}")
    llama = tmp_path / "llama"
    shutil.copytree(ckpt, llama)
    cfg = json.loads((llama / "config.json").read_text())
    (llama / "config.json").write_text(json.dumps({**cfg, "model_type": "llama"}))
    with pytest.raises(SpecError, match=r"expected a jina-reranker-v3 checkpoint .* got model_type='llama'"):
        Reranker(f"jina-v3:{llama}")


def test_image_documents_are_rejected_and_spec_resolves(ranker):
    with pytest.raises(TypeError, match="image"):
        ranker.score(Q, [Document("a chart", metadata={"image": b"\x89PNG"})])
    res = resolve("lbnl:jinaai/jina-reranker-v3")
    assert res.method.prefix == "jina-v3" and res.method.family == "listwise-encoder"
    with pytest.raises(TypeError, match="unknown option"):
        Reranker("jina-v3:/nonexistent", bogus=1)


def test_bare_folder_resolves_from_its_architecture(ckpt):
    from unirank.registry import resolve

    assert resolve(str(ckpt)).method.prefix == "jina-v3"


def reference_rerank(
    tok, oracle, query, docs, window, max_query_length=512, max_doc_length=2048, block_size=125
):
    """The checkpoint's ``JinaForRanking.rerank`` written out: texts cut to their first tokens (decoded when
    at the cap), blocks closed once ``block_size`` documents are in or at most ``max_doc_length`` of
    ``window - 2 * query tokens`` remain (``window``: the tokenizer's ``model_max_length``), block query
    embeddings averaged with weights ``max((1 + cos) / 2)``, cosine against that. Returns (scores, blocks)."""

    def cut(text, cap):
        ids = tok(text)["input_ids"][:cap]
        return (tok.decode(ids) if len(ids) >= cap else text), len(ids)

    query, q_len = cut(query, max_query_length)
    texts, lengths = zip(*(cut(d, max_doc_length) for d in docs))
    blocks, block, capacity = [], [], window - 2 * q_len
    for i, n in enumerate(lengths):
        block.append(i)
        capacity -= n
        if len(block) >= block_size or capacity <= max_doc_length:
            blocks.append(block)
            block, capacity = [], window - 2 * q_len
    if block:
        blocks.append(block)
    embs = [oracle(query, [texts[i] for i in b]) for b in blocks]
    weights = [((1 + cos(q, d)) / 2).max() for q, d in embs]
    merged = np.average(np.stack([q for q, _ in embs]), axis=0, weights=weights)
    return cos(merged, np.concatenate([d for _, d in embs])), blocks


def test_default_blocks_are_the_references_near_a_full_window(ckpt, oracle, tmp_path, caplog):
    """A tokenizer window of 2600 tokens (byte-level: 1 token per byte) and the reference's own 512 / 2048 /
    125: a 500-token document leaves 2066 > 2048 of the capacity 2600 - 2 * 17, the next (2100 bytes, cut to
    2048) closes the block, whose prompt runs past the window as the reference's does; 51 + 17 + 640 tokens
    close the next. The default equals the reference to 1e-5; ``blocks="fit"`` splits elsewhere and scores
    differently."""
    from transformers import AutoTokenizer

    path = tmp_path / "window-2600"
    shutil.copytree(ckpt, path)
    cfg_file = path / "tokenizer_config.json"
    cfg_file.write_text(json.dumps({**json.loads(cfg_file.read_text()), "model_max_length": 2600}))
    tok = AutoTokenizer.from_pretrained(path)
    docs = [
        "Rain: " + "condensation of water vapour in clouds. " * 12,
        "Weather " * 262 + "ends here",
        *DOCS,
        "The sun is hot. " * 40,
        "Snow is frozen rain.",
    ]
    want, want_blocks = reference_rerank(tok, oracle, Q, docs, window=2600)
    r = Reranker(f"jina-v3:{path}", dtype="fp32")
    assert r.max_length == 2600 and r.blocks == "reference"
    assert r.plan(Q, docs)[2] == want_blocks == [[0, 1], [2, 3, 4], [5]]
    with caplog.at_level("WARNING", logger="unirank.methods.listwise_encoder"):
        got = np.array(r.score(Q, docs))
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert "tokens > max_length=2600" in caplog.text  # visible, not silent
    fit = Reranker(f"jina-v3:{path}", dtype="fp32", blocks="fit")
    assert fit.plan(Q, docs)[2] != want_blocks
    assert np.abs(np.array(fit.score(Q, docs)) - want).max() > 1e-3
