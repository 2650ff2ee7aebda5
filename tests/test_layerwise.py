"""bge-reranker-v2-minicpm-layerwise (``layerwise``) on a tiny random MiniCPM layer-wise checkpoint
(FlagEmbedding's key layout), against a hand-written MiniCPM forward (embeddings x scale_emb, residual
branches x scale_depth / sqrt(L), RMSNorm, RoPE, GQA attention, SiLU MLP, per-layer scalar heads).

Reference parity (issue 14): FlagEmbedding 1.4.2 ``LayerWiseFlagLLMReranker.compute_score`` on this
checkpoint, fp32 CPU, transformers 4.51.3 in its own environment (it does not import under transformers 5 and
breaks under 4.57): max |unirank - FlagEmbedding| = 8.3e-7 over cutoff layers 2, 4, 5 and a 500-token query
(1.4e-6 when the issue was filed). Command and record: ``tests/test_reference_parity.py``. The defaults differ
on purpose: unirank's ``cutoff_layer`` is 28 (the model card's example), FlagEmbedding's the last layer.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from unirank.methods.layerwise import LAYERWISE_PROMPT, LayerwiseRanker  # noqa: E402

WORDS = [
    *"<unk> <s> </s> <pad> A B : Given a query and passage , determine whether the contains an".split(),
    *"answer to by providing prediction of either ' Yes or No . what causes rain clouds cats purr".split(),
    *"water falls from".split(),
    "\n",
    " ",
]
CFG = {
    "architectures": ["LayerWiseMiniCPMForCausalLM"],
    "model_type": "minicpm",
    "hidden_size": 32,
    "intermediate_size": 48,
    "num_hidden_layers": 5,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "scale_emb": 12,
    "scale_depth": 1.4,
    "dim_model_base": 8,
    "start_layer": 2,
    "head_multi": True,
    "head_type": "simple",
    "hidden_act": "silu",
    "pretraining_tp": 1,
    "rope_scaling": None,
    "bos_token_id": 1,
    "eos_token_id": 2,
}


def save_tiny_layerwise(out, seed=0):
    from safetensors.torch import save_file
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers

    out.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"\w+|[^\w\s]|\s"), behavior="isolated")
    transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    ).save_pretrained(out)
    cfg = {**CFG, "vocab_size": len(WORDS)}
    (out / "config.json").write_text(json.dumps(cfg))
    rng = np.random.RandomState(seed)
    h, i, hd = cfg["hidden_size"], cfg["intermediate_size"], cfg["hidden_size"] // cfg["num_attention_heads"]
    kv = cfg["num_key_value_heads"] * hd

    def w(*shape):
        return torch.from_numpy(rng.normal(0, 0.3, shape).astype("float32"))

    state = {"model.embed_tokens.weight": w(len(WORDS), h), "model.norm.weight": 1 + w(h)}
    for n in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{n}"
        state |= {
            f"{p}.input_layernorm.weight": 1 + w(h),
            f"{p}.post_attention_layernorm.weight": 1 + w(h),
            f"{p}.self_attn.q_proj.weight": w(h, h),
            f"{p}.self_attn.k_proj.weight": w(kv, h),
            f"{p}.self_attn.v_proj.weight": w(kv, h),
            f"{p}.self_attn.o_proj.weight": w(h, h),
            f"{p}.mlp.gate_proj.weight": w(i, h),
            f"{p}.mlp.up_proj.weight": w(i, h),
            f"{p}.mlp.down_proj.weight": w(h, i),
        }
    for j in range(cfg["num_hidden_layers"] - cfg["start_layer"] + 1):
        state[f"lm_head.{j}.linear_head.weight"] = w(1, h)
    save_file(state, str(out / "model.safetensors"))
    return out, state, cfg


def _rms(x, weight, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def _rope(x, pos, theta):
    half = x.shape[-1] // 2
    freq = 1.0 / theta ** (torch.arange(0, half, dtype=torch.float32) / half)
    ang = pos[:, None].float() * freq[None]
    cos, sin = torch.cat([ang.cos()] * 2, -1), torch.cat([ang.sin()] * 2, -1)
    rot = torch.cat([-x[..., half:], x[..., :half]], -1)
    return x * cos + rot * sin


def hand_score(state, cfg, ids, cutoff):
    """MiniCPM written out for one unpadded sequence: the cutoff layer's head on the last token."""
    n, nh, nkv = len(ids), cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd, eps, depth = cfg["hidden_size"] // nh, cfg["rms_norm_eps"], cfg["num_hidden_layers"]
    x = state["model.embed_tokens.weight"][torch.tensor(ids)] * cfg["scale_emb"]
    pos = torch.arange(n)
    mask = torch.full((n, n), float("-inf")).triu(1)
    for layer in range(cutoff):
        g = lambda k, layer=layer: state[f"model.layers.{layer}.{k}"]  # noqa: E731
        y = _rms(x, g("input_layernorm.weight"), eps)
        q = (y @ g("self_attn.q_proj.weight").T).view(n, nh, hd).transpose(0, 1)
        k = (y @ g("self_attn.k_proj.weight").T).view(n, nkv, hd).transpose(0, 1)
        v = (y @ g("self_attn.v_proj.weight").T).view(n, nkv, hd).transpose(0, 1)
        q, k = _rope(q, pos, cfg["rope_theta"]), _rope(k, pos, cfg["rope_theta"])
        k, v = k.repeat_interleave(nh // nkv, 0), v.repeat_interleave(nh // nkv, 0)
        att = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(hd) + mask, -1) @ v
        x = x + (att.transpose(0, 1).reshape(n, -1) @ g("self_attn.o_proj.weight").T) * (
            cfg["scale_depth"] / math.sqrt(depth)
        )
        y = _rms(x, g("post_attention_layernorm.weight"), eps)
        mlp = (
            torch.nn.functional.silu(y @ g("mlp.gate_proj.weight").T) * (y @ g("mlp.up_proj.weight").T)
        ) @ g("mlp.down_proj.weight").T
        x = x + mlp * (cfg["scale_depth"] / math.sqrt(depth))
    h = _rms(x, state["model.norm.weight"], eps)
    head = state[f"lm_head.{cutoff - cfg['start_layer']}.linear_head.weight"]
    return float((h[-1] @ head.T)[0])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return save_tiny_layerwise(tmp_path_factory.mktemp("layerwise") / "m")


def test_scores_match_hand_forward(tiny):
    path, state, cfg = tiny
    pairs = [
        ("what causes rain", "water falls from clouds"),
        ("what causes rain", "cats purr"),
        ("cats", "rain " * 40),
    ]
    for cutoff in (2, 4, 5):
        r = LayerwiseRanker(str(path), cutoff_layer=cutoff, max_length=24, batch_size=3)
        got = r._score_pairs([q for q, _ in pairs], [p for _, p in pairs])  # one padded batch
        want = [hand_score(state, cfg, r.features(q, p), cutoff) for q, p in pairs]
        np.testing.assert_allclose(got, want, atol=1e-4)
    # the input layout: [bos] "A: q" "\n" "B: p" "\n" prompt; the passage is cut to max_length tokens first
    ids = r.features("cats", "rain " * 40)
    tok = r.tokenizer
    enc = lambda t: tok(t, add_special_tokens=False)["input_ids"]  # noqa: E731
    prompt, sep = enc(LAYERWISE_PROMPT), enc("\n")
    passage = enc("B: " + "rain " * 40)[:24]
    assert ids == [tok.bos_token_id, *enc("A: cats"), *sep, *passage, *sep, *prompt]


def test_bad_checkpoints(tiny, tmp_path):
    path, _, cfg = tiny
    with pytest.raises(ValueError, match="cutoff_layer"):
        LayerwiseRanker(str(path), cutoff_layer=1)
    # the default (28, the model card's example) does not exist in a 5-layer model: the error names the
    # last layer, FlagEmbedding's default
    with pytest.raises(
        ValueError, match=r"cutoff_layer=28 must be in \[2, 5\].*cutoff_layer=5.*FlagEmbedding"
    ):
        LayerwiseRanker(str(path))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text(
        json.dumps({**cfg, "model_type": "llama", "architectures": ["LlamaForCausalLM"]})
    )
    with pytest.raises(ValueError, match="LayerWiseMiniCPMForCausalLM"):
        LayerwiseRanker(str(bad))


def test_bare_folder_resolves_from_its_architecture(tiny):
    from unirank.registry import resolve

    path = tiny[0] if isinstance(tiny, tuple) else tiny
    assert resolve(str(path)).method.prefix == "layerwise"
