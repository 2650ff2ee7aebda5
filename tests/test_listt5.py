"""ListT5: the m-ary tournament against an exact oracle (top-k and model-call count) and the
Fusion-in-Decoder window primitive against a hand-built FiD forward on a tiny random T5."""

from __future__ import annotations

import random

import numpy as np
import pytest

from _family_fixtures import save_tiny_t5
from unirank import Reranker
from unirank.errors import SpecError
from unirank.methods.listt5 import tournament_calls, tournament_top_k
from unirank.types import Document

Q = "what causes rain"
DOCS = ["rain falls", "cats purr", "the sun", "water vapour", "dogs bark", "hot", "cold"]


def _oracle(n: int, seed: int):
    rel = list(range(n))
    random.Random(seed).shuffle(rel)
    calls = []

    def rank(items):
        calls.append(list(items))
        return sorted(items, key=lambda i: -rel[i])

    return rank, sorted(range(n), key=lambda i: -rel[i]), calls


@pytest.mark.parametrize(
    ("n", "k", "m", "r", "expected_calls"), [(125, 4, 5, 1, 31 + 3 * 3), (16, 3, 4, 2, 7 + 2 * 3)]
)
def test_tournament_exact_top_k_and_call_formula(n, k, m, r, expected_calls):
    rank, truth, calls = _oracle(n, seed=n)
    top, n_calls = tournament_top_k(n, rank, k, m, r)
    assert top == truth[:k]
    assert n_calls == len(calls) == expected_calls == tournament_calls(n, k, m, r)
    assert all(len(c) <= m for c in calls)


@pytest.mark.parametrize("seed", range(6))
def test_tournament_random_sizes_exact_and_bounded(seed):
    rng = random.Random(seed)
    n, k, m = rng.randint(1, 60), rng.randint(1, 12), rng.randint(3, 6)
    r = rng.randint(1, m // 2)
    rank, truth, calls = _oracle(n, seed)
    top, n_calls = tournament_top_k(n, rank, k, m, r)
    assert top == truth[: min(k, n)]
    assert n_calls == len(calls) <= tournament_calls(n, k, m, r)
    assert len({frozenset(c) for c in calls}) == len(calls)  # output caching: no window is ranked twice


def test_tournament_rejects_bad_shapes():
    with pytest.raises(ValueError):
        tournament_top_k(10, lambda x: x, 3, m=4, r=3)


@pytest.fixture(scope="module")
def listt5_path(tmp_path_factory):
    return save_tiny_t5(tmp_path_factory.mktemp("listt5") / "tiny-listt5", seed=3)


def test_fid_window_matches_hand_built_fusion_in_decoder(listt5_path):
    import torch
    import transformers

    r = Reranker(f"listt5:{listt5_path}", window_size=5, r=2)
    docs = [Document(DOCS[0], "a"), Document(DOCS[1], "b")]
    tok = transformers.AutoTokenizer.from_pretrained(listt5_path)
    model = transformers.AutoModelForSeq2SeqLM.from_pretrained(listt5_path).eval()
    texts = [f"Query: {Q}, Index: {i + 1}, Context: {d.text}" for i, d in enumerate(docs)]
    with torch.no_grad():
        # each passage encoded on its own (no padding needed one at a time), then concatenated: FiD
        states = [
            model.get_encoder()(input_ids=tok(t, return_tensors="pt").input_ids).last_hidden_state[0]
            for t in texts
        ]
        fused = torch.cat(states)[None]
        logits = model(
            encoder_outputs=(fused,), decoder_input_ids=torch.zeros((1, 1), dtype=torch.long)
        ).logits
    ids = [tok.convert_tokens_to_ids(t) for t in ("▁1", "▁2")]
    expected = logits[0, -1, ids].numpy()
    np.testing.assert_allclose(r.index_logits(Q, docs), expected, atol=1e-4)
    # ListT5 emits ascending relevance: the first generated index is the least relevant
    first = int(np.argmax(expected))
    assert r.rank_window(Q, docs) == [1 - first, first]


def test_listt5_ranker_counts_calls_and_is_a_window_ranker(listt5_path):
    from unirank.strategies.base import WindowRanker

    r = Reranker(f"listt5:{listt5_path}", window_size=3, r=1, top_k=3)
    assert isinstance(r, WindowRanker)
    docs = [Document(t, str(i)) for i, t in enumerate(DOCS)]
    res = r.rank(Q, docs)
    calls_rank = r.n_calls
    top, n_calls = tournament_top_k(
        len(docs), lambda items: [items[i] for i in r.rank_window(Q, [docs[j] for j in items])], 3, 3, 1
    )
    assert res.indices[:3] == top and calls_rank == n_calls <= tournament_calls(len(docs), 3, 3, 1)
    assert sorted(res.indices[3:]) == res.indices[3:]  # the rest keep the input order
    assert res.score_kind.value == "rank"


def test_listt5_bad_inputs(listt5_path, make_tiny_bert):
    with pytest.raises(SpecError, match="ForConditionalGeneration"):
        Reranker(f"listt5:{make_tiny_bert('encoder')}")
    r = Reranker(f"listt5:{listt5_path}")
    with pytest.raises(TypeError, match="image document"):
        r.rank(Q, [Document("", "x", {"image": "page.png"})])
    with pytest.raises(ValueError, match="at most"):
        r.rank_window(Q, [Document(t) for t in DOCS])


def test_fid_wrapped_checkpoint_loads_its_encoder(listt5_path, tmp_path):
    """ListT5 checkpoints saved from FiD's EncoderWrapper: encoder.encoder.block.N.module.* weights."""
    import shutil

    from safetensors.torch import load_file, save_file

    wrapped = tmp_path / "wrapped"
    shutil.copytree(listt5_path, wrapped)
    state = load_file(str(wrapped / "model.safetensors"))
    renamed = {}
    for key, value in state.items():
        if key.startswith("encoder."):
            rest = key[len("encoder.") :]
            if rest.startswith("block."):
                n, _, tail = rest[len("block.") :].partition(".")
                rest = f"block.{n}.module.{tail}"
            key = "encoder.encoder." + rest
        renamed[key] = value
    save_file(renamed, str(wrapped / "model.safetensors"), metadata={"format": "pt"})
    docs = [Document(t, str(i)) for i, t in enumerate(DOCS[:3])]
    plain = Reranker(f"listt5:{listt5_path}").index_logits(Q, docs)
    np.testing.assert_allclose(Reranker(f"listt5:{wrapped}").index_logits(Q, docs), plain, atol=1e-5)
