"""A tiny random Set-Encoder checkpoint in the layout of webis/set-encoder-base (lightning-ir).

The weights are drawn from a seeded ``torch.Generator`` in sorted parameter-name order, not from
transformers' initialisers, so the same seed gives the same checkpoint under any transformers version
(the lightning-ir reference scores in ``test_set_encoder.py`` were measured on exactly these weights).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
HIDDEN = 32


def build_set_encoder(
    out: Path,
    tokenizer_src: Path,
    *,
    depth: int = 100,
    sample_missing_docs: bool = True,
    token: str | None = "[INT]",
    seed: int = 0,
    head_rows: int = 1,
    backbone: str = "electra",
) -> Path:
    """Save config.json (model_type set-encoder, ELECTRA or BERT backbone), model.safetensors (backbone at
    top level plus ``linear.weight`` / ``linear.bias``) and a BERT-uncased tokenizer with ``token`` added."""
    import torch
    import transformers
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dims = {"hidden_size": HIDDEN, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
    if backbone == "electra":
        # vocab padded to a multiple of 8 after the added token, as in the real checkpoints;
        # embedding_size != hidden exercises ELECTRA's embeddings_project
        cfg = transformers.ElectraConfig(vocab_size=30528, embedding_size=16, **dims)
        names = transformers.ElectraModel(cfg).state_dict()
    else:
        cfg = transformers.BertConfig(vocab_size=30528, **dims)
        names = transformers.BertModel(cfg, add_pooling_layer=False).state_dict()
    gen = torch.Generator().manual_seed(seed)
    weights = {}
    for name in sorted(names):
        x = torch.randn(tuple(names[name].shape), generator=gen) * 0.2
        weights[name] = (1.0 + x) if name.endswith("LayerNorm.weight") else x
    weights["linear.weight"] = torch.randn((head_rows, HIDDEN), generator=gen)
    weights["linear.bias"] = torch.randn((head_rows,), generator=gen)
    save_file(
        {k: v.contiguous() for k, v in weights.items()}, str(out / "model.safetensors"), {"format": "pt"}
    )
    config = {k: v for k, v in cfg.to_dict().items() if k not in ("transformers_version", "dtype")}
    config.update(
        model_type="set-encoder",
        backbone_model_type=backbone,
        architectures=[f"SetEncoder{type(cfg).__name__[:-6]}Model"],
        add_extra_token=token is not None,
        depth=depth,
        sample_missing_docs=sample_missing_docs,
        query_length=32,
        doc_length=256,
        pooling_strategy="first",
        linear_bias=True,
    )
    (out / "config.json").write_text(json.dumps(config, indent=2))
    for name in TOKENIZER_FILES:
        if (Path(tokenizer_src) / name).is_file():
            shutil.copy(Path(tokenizer_src) / name, out / name)
    if token is not None:
        tok = transformers.AutoTokenizer.from_pretrained(str(out))
        tok.add_tokens([token], special_tokens=True)
        tok.save_pretrained(str(out))
    return out
