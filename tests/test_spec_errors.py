"""Spec resolution errors that point the right way (issue 14, item 10).

A bare PyLate ColBERT folder used to resolve as an embedding model and fail later with "similarity 'MaxSim'
is not supported"; a bare T5 folder got the generic "use an explicit prefix" list; a missing path got a hub-id
error. Each case here failed before the fix.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from _family_fixtures import save_tiny_colbert, save_tiny_t5
from unirank import Reranker
from unirank.errors import SpecError
from unirank.registry import resolve

DOCS = ["Rain falls from clouds when water vapour condenses.", "cats purr.", "the sun shines"]


@pytest.fixture(scope="module")
def pylate_folder(make_tiny_bert, tmp_path_factory) -> Path:
    pytest.importorskip("pylate")
    bert = make_tiny_bert("encoder", seed=3)
    return save_tiny_colbert(
        bert, tmp_path_factory.mktemp("bare-colbert") / "colbert", query_length=12, document_length=20
    )


def test_bare_pylate_folder_resolves_to_colbert_and_scores_like_the_prefix(pylate_folder):
    res = resolve(str(pylate_folder))
    assert res.method.prefix == "colbert"
    assert "MaxSim" in res.reason and "pylate.models.Dense.Dense" in res.reason
    bare = Reranker(str(pylate_folder))
    assert type(bare).__name__ == "ColBERTRanker"
    explicit = Reranker(f"colbert:{pylate_folder}")
    q = "what causes rain"
    np.testing.assert_array_equal(bare.score(q, DOCS), explicit.score(q, DOCS))


def test_colbert_is_read_from_each_of_its_own_signals(tmp_path):
    def folder(name: str, files: dict[str, object]) -> str:
        out = tmp_path / name
        out.mkdir()
        for rel, content in files.items():
            (out / rel).write_text(json.dumps(content))
        return str(out)

    config = {"architectures": ["BertModel"], "model_type": "bert"}
    transformer = {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}
    dense = {"idx": 1, "name": "1", "path": "1_Dense", "type": "pylate.models.Dense.Dense"}
    only_modules = folder("modules", {"config.json": config, "modules.json": [transformer, dense]})
    only_similarity = folder(
        "similarity",
        {
            "config.json": config,
            "modules.json": [transformer],
            "config_sentence_transformers.json": {"similarity_fn_name": "MaxSim"},
        },
    )
    stanford = folder("stanford", {"config.json": {"architectures": ["HF_ColBERT"], "model_type": "bert"}})
    for path in (only_modules, only_similarity, stanford):
        assert resolve(path).method.prefix == "colbert", path
    assert "HF_ColBERT" in resolve(stanford).reason
    # a sentence-transformers folder with a T5 encoder (GTR, sentence-t5) is still an embedding model
    gtr = folder(
        "gtr",
        {
            "config.json": {"architectures": ["T5EncoderModel"], "model_type": "t5"},
            "modules.json": [transformer],
            "config_sentence_transformers.json": {"similarity_fn_name": "cosine"},
        },
    )
    assert resolve(gtr).method.prefix == "embed"


@pytest.mark.parametrize("kind", ["t5", "mt5", "encoder"])
def test_bare_t5_folder_names_the_t5_methods(kind, tmp_path):
    pytest.importorskip("transformers")
    path = save_tiny_t5(tmp_path / kind, kind=kind)
    with pytest.raises(SpecError) as err:
        Reranker(str(path))
    msg = str(err.value)
    for prefix in ("monot5", "rankt5", "duot5", "listt5"):
        assert f"'{prefix}:{path}'" in msg
    assert "T5 checkpoint" in msg
    assert ("encoder-only" in msg) == (kind == "encoder")


@pytest.mark.parametrize(
    "spec", ["./nope", "/tmp/does/not/exist", "../nope/model", "~/no-such-model-dir", "a/b/c"]
)
def test_missing_path_says_the_folder_does_not_exist(spec, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SpecError, match=r"model folder .* does not exist") as err:
        resolve(spec)
    assert "Hugging Face" not in str(err.value) and "prefix" not in str(err.value)


@pytest.mark.parametrize("spec", ["ce:/tmp/nope", "embed:./nope", "colbert:/tmp/does/not/exist"])
def test_missing_path_after_a_prefix_says_the_folder_does_not_exist(spec):
    with pytest.raises(SpecError, match=r"model folder .* does not exist"):
        Reranker(spec)


def test_a_file_is_not_a_model_folder(tmp_path):
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"")
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"")
    with pytest.raises(SpecError, match=r"is a file, not a model folder$"):
        resolve(str(weights))
    with pytest.raises(SpecError, match="llm-pointwise:<file>"):
        Reranker(f"ce:{gguf}")


def test_hub_id_that_is_not_cached_mentions_the_local_folder_too(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SpecError, match=r"neither a local folder \(no folder .*no-owner/no-model\)"):
        resolve("no-owner/no-model")
