"""Tiny checkpoints for the model-family tests, built offline and saved exactly like downloaded ones.

- a T5 tokenizer: a ``tokenizers`` Unigram model (SentencePiece-style ``▁`` word pieces, ``</s>`` appended)
  wrapped as ``T5TokenizerFast``; it has ``▁true``/``▁false``/``▁yes``/``▁no`` and ``<extra_id_*>`` tokens;
- tiny random T5 / mT5 seq2seq models and a T5 encoder with a RankT5 ``classifier`` head;
- a tiny ColBERT saved by pylate itself (Transformer + ``1_Dense`` projection, ``[Q] ``/``[D] `` prefixes).
"""

from __future__ import annotations

import json
from pathlib import Path

WORDS = (
    "the a of and to in is was what why how causes rain water vapour condenses falls from clouds cats purr "
    "dogs bark sun shines hot cold weather query document relevant true false yes no sim não index context "
    "light bulb edison invented coffee"
).split()
CHARS = sorted(set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,:;!?'-()"))


def save_t5_tokenizer(out: Path, extra_ids: int = 16) -> None:
    """Save a small SentencePiece-style T5 tokenizer (no sentencepiece package needed)."""
    import transformers
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [("▁" + w, -5.0) for w in dict.fromkeys([*WORDS, "Query", "Document", "Relevant"])]
    vocab += [("▁", -8.0)] + [("▁" + c, -9.0) for c in CHARS] + [(c, -10.0) for c in CHARS]
    tok = Tokenizer(models.Unigram(vocab, unk_id=2, byte_fallback=False))
    tok.normalizer = normalizers.Replace(" " * 2, " ")
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    fast = transformers.T5TokenizerFast(
        tokenizer_object=tok, eos_token="</s>", unk_token="<unk>", pad_token="<pad>", extra_ids=extra_ids
    )
    fast.save_pretrained(out)


def save_tiny_t5(out: Path, *, seed: int = 0, kind: str = "t5", extra_ids: int = 16) -> Path:
    """A tiny random ``T5ForConditionalGeneration`` (``kind="mt5"``: ``MT5ForConditionalGeneration``;
    ``kind="encoder"``: ``T5EncoderModel`` plus a RankT5 ``classifier`` head in its safetensors)."""
    import torch
    import transformers
    from safetensors.torch import load_file, save_file

    out.mkdir(parents=True, exist_ok=True)
    save_t5_tokenizer(out, extra_ids)
    vocab = len(transformers.AutoTokenizer.from_pretrained(out))
    cfg_cls = transformers.MT5Config if kind == "mt5" else transformers.T5Config
    config = cfg_cls(
        vocab_size=vocab,
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=4,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
        tie_word_embeddings=False,
        relative_attention_num_buckets=8,
        dropout_rate=0.0,
    )
    torch.manual_seed(seed)
    if kind == "encoder":
        model = transformers.T5EncoderModel(config)
        model.save_pretrained(out)
        weights = load_file(str(out / "model.safetensors"))
        weights["classifier.weight"] = torch.randn(1, config.d_model) * 0.5
        weights["classifier.bias"] = torch.tensor([0.25])
        save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})
    else:
        cls = (
            transformers.MT5ForConditionalGeneration
            if kind == "mt5"
            else transformers.T5ForConditionalGeneration
        )
        model = cls(config)
        with torch.no_grad():  # a livelier head than the tiny init, so scores differ clearly across documents
            model.lm_head.weight.normal_(0.0, 2.0)
        model.save_pretrained(out)
    return out


def save_tiny_colbert(bert_dir: Path, out: Path, *, embedding_size: int = 8, **kwargs) -> Path:
    """A tiny ColBERT saved by pylate itself from a tiny BERT encoder folder."""
    import torch
    from pylate import models

    torch.manual_seed(0)
    model = models.ColBERT(
        model_name_or_path=str(bert_dir), embedding_size=embedding_size, device="cpu", **kwargs
    )
    if not hasattr(model, "_model_config"):  # pylate 1.2 + sentence-transformers 5 do not always set it
        model._model_config = {}
    model.save(str(out))
    # sentence-transformers 5 writes extra Dense keys that pylate 1.2's own Dense.load rejects; keep the
    # classic pylate keys so the folder loads in both pylate and unirank
    cfg_path = out / "1_Dense" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    keep = ("in_features", "out_features", "bias", "activation_function")
    cfg_path.write_text(json.dumps({k: cfg[k] for k in keep if k in cfg}, indent=2))
    return out


VLM_WORDS = [
    *"<unk> <pad> <s> </s> True False user assistant USER ASSISTANT Assert the relevance of previous".split(),
    *"image document to following query answer or The is what causes rain cats clouds".split(),
    *[",", ".", ":", "\n", " "],
]


def save_tiny_llava(out: Path, seed: int = 0) -> Path:
    """A tiny random LLaVA (CLIP vision tower + Llama text model) with its processor and a chat template."""
    import torch
    import transformers
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers

    out.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VLM_WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"\w+|[^\w\s]|\s"), behavior="isolated")
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    )
    fast.add_special_tokens({"additional_special_tokens": ["<image>"]})
    chat = (
        "{% for m in messages %}{{ m['role'] | upper }}:{% if m['content'] is string %}{{ m['content'] }}"
        "{% else %}{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>\n{% else %}{{ c['text'] }}"
        "{% endif %}{% endfor %}{% endif %}{{ '\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
    )
    image_proc = transformers.CLIPImageProcessor(
        size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28}
    )
    transformers.LlavaProcessor(
        image_processor=image_proc,
        tokenizer=fast,
        chat_template=chat,
        patch_size=14,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    ).save_pretrained(out)
    config = transformers.LlavaConfig(
        vision_config=transformers.CLIPVisionConfig(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=28,
            patch_size=14,
            projection_dim=16,
        ),
        text_config=transformers.LlamaConfig(
            vocab_size=len(fast),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            max_position_embeddings=256,
            pad_token_id=1,
        ),
        image_token_id=fast.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
    torch.manual_seed(seed)
    model = transformers.LlavaForConditionalGeneration(config)
    with torch.no_grad():
        model.lm_head.weight.normal_(0.0, 2.0)
    model.save_pretrained(out)
    return out
