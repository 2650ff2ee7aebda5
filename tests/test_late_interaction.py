"""ColBERT MaxSim against PyLate on the same tiny checkpoint (saved by PyLate itself), within 1e-4."""

from __future__ import annotations

import numpy as np
import pytest

from _family_fixtures import save_tiny_colbert
from unirank import Reranker
from unirank.errors import SpecError
from unirank.types import Document

torch = pytest.importorskip("torch")

Q = "what causes rain?"
DOCS = [
    "Rain falls, from clouds when water vapour condenses into droplets that get heavy; " * 3,
    "cats purr.",
    "the sun shines!!",
    "Dogs (mostly) bark at night: loud, short, sharp sounds.",
]


@pytest.fixture(scope="module")
def colbert_path(make_tiny_bert, tmp_path_factory):
    pytest.importorskip("pylate")
    bert = make_tiny_bert("encoder", seed=5)
    return save_tiny_colbert(
        bert, tmp_path_factory.mktemp("colbert") / "tiny-colbert", query_length=12, document_length=20
    )


def _pylate(path):
    from pylate import models

    # pylate 1.2 targets sentence-transformers 5; the venv has 6.2. Two shims restore the ST 5 contract pylate
    # calls (length sort helper; Transformer.tokenize honouring padding / max_seq_length). Everything ColBERT
    # specific (markers, [MASK] expansion, skiplist, normalisation, MaxSim) stays pylate's own code.
    # ST 6 also no longer hands pylate the saved lengths, so they are passed as saved in the checkpoint.
    m = models.ColBERT(str(path), device="cpu", trust_remote_code=True, query_length=12, document_length=20)
    if not hasattr(m, "_text_length"):
        m._text_length = m._input_length
    first = m._first_module()

    def tokenize(texts, padding=True, **_):
        return first.tokenizer(
            [str(t).strip() for t in texts],
            padding=padding,
            truncation="longest_first",
            return_tensors="pt",
            max_length=first.max_seq_length,
        )

    first.tokenize = tokenize
    return m


def test_maxsim_matches_pylate(colbert_path):
    from pylate import scores

    ours = Reranker(f"colbert:{colbert_path}", batch_size=2)
    got = ours.score(Q, DOCS)
    ref_model = _pylate(colbert_path)
    qe = ref_model.encode([Q], is_query=True)[0]
    de = ref_model.encode(DOCS, is_query=False)
    ref = [
        float(scores.colbert_scores_pairwise(torch.tensor(qe)[None], torch.tensor(d)[None])[0]) for d in de
    ]
    np.testing.assert_allclose(got, ref, atol=1e-4)
    assert np.ptp(got) > 1e-3
    q_ours = ours.encode_queries([Q])[0]
    assert q_ours.shape == (12, 8)  # [MASK]-augmented to query_length
    np.testing.assert_allclose(q_ours, qe, atol=1e-5)
    for a, b in zip(ours.encode_documents(DOCS), de):  # same kept tokens: no padding, no punctuation
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_padding_never_changes_a_score(colbert_path):
    r = Reranker(f"colbert:{colbert_path}")
    alone = r.score(Q, [DOCS[1]])[0]
    with_long = r.score(Q, [DOCS[0], DOCS[1]])[1]
    assert alone == pytest.approx(with_long, abs=1e-6)
    (emb,) = r.encode_documents([DOCS[1]])
    ids = r.tokenizer(DOCS[1])["input_ids"]
    assert emb.shape[0] == len(ids) + 1 - 1  # + [D] marker, - the "." of the skiplist
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_precomputed_document_embeddings_are_used(colbert_path):
    from unirank.methods.late_interaction import ColBERTRanker

    r = ColBERTRanker(str(colbert_path))
    direct = r.score(Q, DOCS)
    store = dict(zip(["a", "b", "c", "d"], r.encode_documents(DOCS)))
    pre = ColBERTRanker(str(colbert_path), doc_embeddings=store)
    # texts are placeholders: only the stored embeddings can give these scores
    docs = [Document("placeholder", i) for i in store]
    np.testing.assert_allclose(pre.score(Q, docs), direct, atol=1e-6)
    r.add_documents([Document(DOCS[2], "x")])
    assert r.score(Q, [Document(DOCS[2], "x")])[0] == pytest.approx(direct[2], abs=1e-6)
    # an id reused for another text is not served the stale embedding
    assert r.score(Q, [Document(DOCS[3], "x")])[0] == pytest.approx(direct[3], abs=1e-6)


def test_not_a_colbert_checkpoint_and_image_documents(colbert_path, make_tiny_bert):
    with pytest.raises(SpecError, match="not a ColBERT checkpoint"):
        Reranker(f"colbert:{make_tiny_bert('seqcls')}")
    r = Reranker(f"colbert:{colbert_path}")
    with pytest.raises(TypeError, match="image document"):
        r.rank(Q, [Document("caption", "p1", {"image": "scan.png"})])


def test_stanford_hf_colbert_layout_matches_the_same_weights_in_pylate_layout(make_tiny_bert, tmp_path):
    """A Stanford ``HF_ColBERT`` folder ([unused0]/[unused1] markers, ``linear.weight`` next to ``bert.*``,
    lengths in ``artifact.metadata``) scores exactly like the PyLate folder holding the same weights."""
    import json
    import shutil

    from safetensors.torch import load_file, save_file

    bert = make_tiny_bert("encoder", seed=6)
    pylate_dir = save_tiny_colbert(
        bert,
        tmp_path / "pylate",
        query_length=12,
        document_length=20,
        query_prefix="[unused0]",
        document_prefix="[unused1]",
    )
    stanford = tmp_path / "stanford"
    stanford.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(pylate_dir / name, stanford / name)
    config = json.loads((pylate_dir / "config.json").read_text())
    config["architectures"] = ["HF_ColBERT"]
    (stanford / "config.json").write_text(json.dumps(config))
    weights = {f"bert.{k}": v for k, v in load_file(str(pylate_dir / "model.safetensors")).items()}
    weights["linear.weight"] = load_file(str(pylate_dir / "1_Dense" / "model.safetensors"))["linear.weight"]
    save_file(weights, str(stanford / "model.safetensors"), metadata={"format": "pt"})
    meta = {"query_token_id": "[unused0]", "doc_token_id": "[unused1]", "query_maxlen": 12, "doc_maxlen": 20}
    (stanford / "artifact.metadata").write_text(json.dumps(meta))
    a = Reranker(f"colbert:{pylate_dir}").score(Q, DOCS)
    b = Reranker(f"colbert:{stanford}")
    assert b.query_prefix_id == b.tokenizer.convert_tokens_to_ids("[unused0]")
    np.testing.assert_allclose(b.score(Q, DOCS), a, atol=1e-5)
