"""LoRA adapters merged without PEFT (unirank.backends.lora); oracle: PEFT's own PeftModel forward on the
same saved adapter (PEFT is a dev dependency only), and a hand-built adapter checked by hand without PEFT.
Also a tiny random Qwen2-VL with a merged adapter, end to end through ``Reranker``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from unirank.backends.lora import is_adapter_dir, lora_pairs, merge_lora, read_adapter_config

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
try:
    import peft
except ImportError:  # the hand-computed test still runs
    peft = None
needs_peft = pytest.mark.skipif(peft is None, reason="peft (dev extra) is the oracle")

IDS = [[3, 7, 1, 9, 4, 2, 8], [5, 5, 0, 6, 1, 3, 2]]


def _tiny_llama(path, seed=0, **extra):
    cfg = transformers.LlamaConfig(
        **extra,
        vocab_size=32,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=64,
    )
    torch.manual_seed(seed)
    transformers.LlamaForCausalLM(cfg).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return _tiny_llama(tmp_path_factory.mktemp("lora") / "llama")


def _load(path):
    return transformers.AutoModelForCausalLM.from_pretrained(path).eval()


def _save_adapter(base_path, out, seed=1, **lora):
    """A PEFT LoRA adapter with random (nonzero) A and B, saved by PEFT itself."""
    lora.setdefault("target_modules", ["q_proj", "v_proj", "down_proj"])
    config = peft.LoraConfig(r=lora.pop("r", 4), lora_alpha=lora.pop("lora_alpha", 8), **lora)
    torch.manual_seed(seed)
    model = peft.get_peft_model(_load(base_path), config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.normal_(0.0, 0.5)
    model.save_pretrained(out)
    return out


def _logits(model):
    with torch.no_grad():
        return model(input_ids=torch.tensor(IDS)).logits.numpy()


def test_hand_built_adapter(llama, tmp_path):
    """No PEFT: adapter files written by hand; W' = W + (alpha / r) * B @ A on the named layers only."""
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(5)
    a0, b0 = torch.randn(2, 16, generator=gen), torch.randn(16, 2, generator=gen)  # q_proj: 16 -> 16
    a1, b1 = torch.randn(2, 32, generator=gen), torch.randn(16, 2, generator=gen)  # down_proj: 32 -> 16
    adapter = tmp_path / "hand"
    adapter.mkdir()
    config = {"peft_type": "LORA", "base_model_name_or_path": str(llama), "r": 2, "lora_alpha": 3}
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    p = "base_model.model.model.layers"
    tensors = {
        f"{p}.0.self_attn.q_proj.lora_A.weight": a0,
        f"{p}.0.self_attn.q_proj.lora_B.weight": b0,
        f"{p}.1.mlp.down_proj.lora_A.weight": a1,
        f"{p}.1.mlp.down_proj.lora_B.weight": b1,
    }
    save_file(tensors, str(adapter / "adapter_model.safetensors"))
    base = _load(llama)
    before = {k: v.detach().clone() for k, v in base.state_dict().items()}
    assert sorted(merge_lora(base, adapter)) == [
        "model.layers.0.self_attn.q_proj",
        "model.layers.1.mlp.down_proj",
    ]
    after = base.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"model.layers.0.self_attn.q_proj.weight", "model.layers.1.mlp.down_proj.weight"}
    for key, a, b in [
        ("model.layers.0.self_attn.q_proj.weight", a0, b0),
        ("model.layers.1.mlp.down_proj.weight", a1, b1),
    ]:
        np.testing.assert_allclose((after[key] - before[key]).numpy(), (1.5 * b @ a).numpy(), atol=1e-6)
    # a module the model does not have, and a lone lora_A
    save_file(
        {f"{p}.7.mlp.up_proj.lora_A.weight": a0, f"{p}.7.mlp.up_proj.lora_B.weight": b0},
        str(adapter / "adapter_model.safetensors"),
    )
    with pytest.raises(ValueError, match="does not have"):
        merge_lora(_load(llama), adapter)
    save_file({f"{p}.0.self_attn.q_proj.lora_A.weight": a0}, str(adapter / "adapter_model.safetensors"))
    with pytest.raises(ValueError, match="no lora_A/lora_B pair"):
        merge_lora(_load(llama), adapter)


@needs_peft
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"use_rslora": True, "r": 8, "lora_alpha": 4},
        {"alpha_pattern": {"down_proj": 2.0}, "rank_pattern": {"v_proj": 2}},
    ],
    ids=["plain", "rslora", "patterns"],
)
def test_merge_matches_peft(llama, tmp_path, options):
    adapter = _save_adapter(llama, tmp_path / "adapter", **options)
    assert is_adapter_dir(adapter) and not is_adapter_dir(llama)
    expected = _logits(peft.PeftModel.from_pretrained(_load(llama), adapter).eval())
    base = _load(llama)
    before = _logits(base)
    merged = merge_lora(base, adapter)
    assert len(merged) == 2 * 3  # q_proj, v_proj, down_proj in each of the 2 layers
    got = _logits(base)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert np.abs(got - before).max() > 1e-2  # the adapter really changes the output


@needs_peft
def test_tied_output_head(tmp_path):
    """LoRA on a tied lm_head changes the head only (PEFT wraps the head), never the input embeddings."""
    tied = _tiny_llama(tmp_path / "tied", tie_word_embeddings=True)
    adapter = _save_adapter(tied, tmp_path / "adapter", target_modules=["q_proj", "lm_head"])
    expected = _logits(peft.PeftModel.from_pretrained(_load(tied), adapter).eval())
    base = _load(tied)
    emb = base.get_input_embeddings().weight.detach().clone()
    assert base.lm_head.weight is base.get_input_embeddings().weight
    merge_lora(base, adapter)
    np.testing.assert_allclose(_logits(base), expected, atol=1e-5)
    np.testing.assert_array_equal(base.get_input_embeddings().weight.detach().numpy(), emb.numpy())


@needs_peft
def test_scale_hand_computed(llama, tmp_path):
    """scale = alpha / r (alpha / sqrt(r) with rsLoRA): the merged weight is W + scale * B @ A."""
    for rslora, expected_scale in [(False, 6 / 4), (True, 6 / 2)]:
        adapter = _save_adapter(llama, tmp_path / f"a{rslora}", r=4, lora_alpha=6, use_rslora=rslora)
        pairs = lora_pairs(adapter)
        a, b, scale, saved_w = pairs["model.layers.0.self_attn.q_proj"]
        assert saved_w is None
        assert scale == pytest.approx(expected_scale)
        base = _load(llama)
        w0 = base.model.layers[0].self_attn.q_proj.weight.detach().clone()
        merge_lora(base, adapter)
        w1 = base.model.layers[0].self_attn.q_proj.weight.detach()
        np.testing.assert_allclose(w1 - w0, expected_scale * (b @ a).numpy(), atol=1e-6)


@needs_peft
def test_unsupported_adapters_are_refused(llama, tmp_path):
    cases = [
        ({"use_dora": True}, "DoRA"),
        ({"bias": "lora_only"}, "biases"),
        ({"target_modules": ["embed_tokens"]}, "Embedding"),
        ({"modules_to_save": ["lm_head"]}, "not a LoRA A/B"),
    ]
    for i, (options, message) in enumerate(cases):
        adapter = _save_adapter(llama, tmp_path / f"bad{i}", **options)
        with pytest.raises(ValueError, match=message):
            merge_lora(_load(llama), adapter)
    # an adapter for another base model: the shapes do not fit
    other = transformers.LlamaConfig(
        vocab_size=32,
        hidden_size=24,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    transformers.LlamaForCausalLM(other).save_pretrained(tmp_path / "other")
    adapter = _save_adapter(tmp_path / "other", tmp_path / "other-adapter")
    with pytest.raises(ValueError, match="another base model"):
        merge_lora(_load(llama), adapter)
    # not an adapter folder / a non-LoRA peft type
    with pytest.raises(ValueError, match="not a PEFT adapter"):
        read_adapter_config(llama)
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**cfg, "peft_type": "IA3"}))
    with pytest.raises(ValueError, match="only LoRA"):
        read_adapter_config(adapter)


# -- a tiny random Qwen2-VL + a merged adapter, end to end -------------------------------------------------

QWEN_WORDS = [
    *"<unk> <pad> True False user assistant Assert the relevance of previous image document".split(),
    *"to following query answer or The is what causes rain clouds".split(),
    *[",", ".", ":", "\n", " "],
]
QWEN_SPECIALS = [
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
# Qwen2-VL-Instruct's chat layout (without its default system turn), written for the word-level vocabulary
QWEN_CHAT = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}{{ m['content'] }}"
    "{% else %}{% for c in m['content'] %}{% if c['type'] == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def save_tiny_qwen2_vl(out, seed=0):
    """A tiny random Qwen2VLForConditionalGeneration with its tokenizer (chat template) and image processor.

    No processor class is saved: transformers 5 builds Qwen2VLProcessor with a video processor that needs
    torchvision (not installable beside this torch); the ranker falls back to tokenizer + image processor.
    """
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(QWEN_WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"\w+|[^\w\s]|\s"), behavior="isolated")
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        pad_token="<pad>",
        eos_token="<|im_end|>",
        chat_template=QWEN_CHAT,
    )
    fast.add_special_tokens({"additional_special_tokens": QWEN_SPECIALS})
    fast.save_pretrained(out)
    image_proc = getattr(transformers, "Qwen2VLImageProcessorPil", transformers.Qwen2VLImageProcessor)
    image_proc(min_pixels=4 * 28 * 28, max_pixels=16 * 28 * 28, patch_size=14, merge_size=2).save_pretrained(
        out
    )
    ids = fast.convert_tokens_to_ids
    config = transformers.Qwen2VLConfig(
        text_config={
            "vocab_size": len(fast),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "max_position_embeddings": 256,
            "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]},
        },
        vision_config={
            "depth": 1,
            "embed_dim": 16,
            "hidden_size": 32,
            "num_heads": 2,
            "mlp_ratio": 2,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
    )
    torch.manual_seed(seed)
    model = transformers.Qwen2VLForConditionalGeneration(config)
    with torch.no_grad():
        model.lm_head.weight.normal_(0.0, 2.0)
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def qwen_vl(tmp_path_factory):
    root = tmp_path_factory.mktemp("qwen2vl")
    base = save_tiny_qwen2_vl(root / "base")
    config = peft.LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj", "qkv", "fc2"]
    )
    torch.manual_seed(3)
    model = peft.get_peft_model(transformers.AutoModelForImageTextToText.from_pretrained(base), config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.normal_(0.0, 0.5)
    model.save_pretrained(root / "adapter")
    return base, root / "adapter"


def _qwen_scores(model, docs, query):
    """Oracle inputs built by hand: the chat layout written out, one image token per merged patch."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    image_proc = transformers.AutoImageProcessor.from_pretrained(base.name_or_path)
    tok = transformers.AutoTokenizer.from_pretrained(base.name_or_path)
    prompt = (
        "Assert the relevance of the previous image document to the following query, answer True or False. "
        f"The query is: {query}"
    )
    true_id, false_id = tok.convert_tokens_to_ids(["True", "False"])
    out = []
    for text, img in docs:
        pix = image_proc(images=[img], return_tensors="pt")
        n = int(pix["image_grid_thw"][0].prod()) // 4
        image = f"<|vision_start|>{'<|image_pad|>' * n}<|vision_end|>"
        chat = f"<|im_start|>user\n{image}{text}{prompt}<|im_end|>\n<|im_start|>assistant\n"
        enc = tok([chat], return_tensors="pt")
        enc["mm_token_type_ids"] = (enc["input_ids"] == base.config.image_token_id).long()
        with torch.no_grad():
            logits = model(**enc, **pix).logits[0, -1]
        out.append(float(logits[true_id] - logits[false_id]))
    return out


@needs_peft
def test_qwen2_vl_adapter_end_to_end(qwen_vl, tmp_path):
    from safetensors.torch import load_file, save_file

    from unirank import Reranker
    from unirank.types import Document

    pil = pytest.importorskip("PIL.Image")
    base, adapter = qwen_vl
    rng = np.random.RandomState(0)
    imgs = [pil.fromarray((rng.rand(*shape, 3) * 255).astype("uint8")) for shape in [(50, 40), (30, 60)]]
    pairs = [("", imgs[0]), ("clouds", imgs[1])]
    docs = [Document(text, str(i), {"image": img}) for i, (text, img) in enumerate(pairs)]
    query = "what causes rain"

    base_model = transformers.AutoModelForImageTextToText.from_pretrained(base).eval()
    expected = _qwen_scores(peft.PeftModel.from_pretrained(base_model, adapter).eval(), pairs, query)
    # the spec is the adapter folder: its adapter_config.json names the base model
    got = Reranker(f"vlm:{adapter}").score(query, docs)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    # the same through adapter= next to the base model
    np.testing.assert_allclose(
        Reranker(f"vlm:{base}", adapter=str(adapter)).score(query, docs), got, atol=1e-6
    )
    # without the adapter: the base model's own scores, and the adapter does change them
    plain = Reranker(f"vlm:{base}").score(query, docs)
    fresh = transformers.AutoModelForImageTextToText.from_pretrained(base).eval()
    np.testing.assert_allclose(plain, _qwen_scores(fresh, pairs, query), atol=1e-4)
    assert np.abs(np.array(plain) - np.array(got)).max() > 1e-2

    # an adapter saved by an older transformers (Qwen2-VL's pre-5.0 module names: model.layers.*, visual.*)
    old = tmp_path / "old-layout"
    old.mkdir()
    (old / "adapter_config.json").write_text((adapter / "adapter_config.json").read_text())
    state = load_file(str(adapter / "adapter_model.safetensors"))
    renamed = {
        k.replace("base_model.model.model.language_model.", "base_model.model.model.").replace(
            "base_model.model.model.visual.", "base_model.model.visual."
        ): v
        for k, v in state.items()
    }
    assert any(k.startswith("base_model.model.visual.") for k in renamed)
    assert not any("language_model" in k for k in renamed)
    save_file(renamed, str(old / "adapter_model.safetensors"))
    np.testing.assert_allclose(Reranker(f"vlm:{old}").score(query, docs), got, atol=1e-6)

    with pytest.raises(TypeError, match="itself a LoRA adapter"):
        Reranker(f"vlm:{adapter}", adapter=str(adapter))
    with pytest.raises(ValueError, match="not a PEFT adapter"):
        Reranker(f"vlm:{base}", adapter=str(base))
