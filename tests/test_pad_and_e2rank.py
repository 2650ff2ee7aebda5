"""Decoder cross-encoders whose tokenizer has no pad token (issue 14, item 1).

A Llama / Qwen / GPT-2 ``*ForSequenceClassification`` head scores the last token that is not
``config.pad_token_id``; padded with any other id, every row shorter than the longest in its batch was scored
at a padding position. Checked on tiny random models (byte-level tokenizer without a pad token, both padding
sides): a batch equals one pair at a time, and sentence-transformers' ``CrossEncoder`` (which refuses a
folder without a pad token, so it reads a copy whose tokenizer pads with the config's id) is the oracle.
E2Rank built as its authors build it (item 2) is tested in ``test_embedding_listwise.py``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from unirank import Reranker
from unirank.errors import SpecError

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

Q = "what causes rain"
DOCS = [
    "rain falls",
    "cats purr when they are happy and warm",
    "x",
    "the sun is a very large star, and clouds form when water vapour cools",
]
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]


def save_tokenizer(out: Path, side: str, *, pad: bool = False, eos: bool = True) -> None:
    """A byte-level BPE tokenizer like Qwen's (ids 0..255 bytes, then the special tokens), by default with no
    pad token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIAL)  # ids 256.. in this order, whichever of them get a role below
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>" if eos else None,
        pad_token="<|endoftext|>" if pad else None,
        model_max_length=512,
        padding_side=side,
    )
    assert fast.convert_tokens_to_ids(SPECIAL) == list(range(256, 256 + len(SPECIAL)))
    fast.save_pretrained(out)


def build_seqcls(out: Path, arch: str, side: str, pad_id: int | None, eos: bool = True) -> Path:
    """A tiny random decoder reranker (vocab 6000: the ONNX export traces sample ids up to 5320)."""
    out.mkdir(parents=True, exist_ok=True)
    save_tokenizer(out, side, eos=eos)
    common = {"vocab_size": 6000, "num_labels": 1, "pad_token_id": pad_id}
    common["eos_token_id"] = 258 if eos else None
    dec = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4}
    dec |= {"num_key_value_heads": 2, "max_position_embeddings": 512}
    if arch == "qwen3":
        cfg = transformers.Qwen3Config(head_dim=16, **dec, **common)
        model = transformers.Qwen3ForSequenceClassification(cfg)
    elif arch == "llama":
        model = transformers.LlamaForSequenceClassification(transformers.LlamaConfig(**dec, **common))
    else:  # absolute position embeddings: left padding shifts them unless position ids are given
        cfg = transformers.GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=512, **common)
        model = transformers.GPT2ForSequenceClassification(cfg)
    torch.manual_seed(0)
    with torch.no_grad():  # larger activations than the default init, so scores spread out
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.5)
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def seqcls(tmp_path_factory):
    made: dict[tuple, Path] = {}

    def get(arch: str, side: str, pad_id: int | None = 256, eos: bool = True) -> Path:
        key = (arch, side, pad_id, eos)
        if key not in made:
            made[key] = build_seqcls(tmp_path_factory.mktemp(f"{arch}-{side}"), *key)
        return made[key]

    return get


def _one_at_a_time(path: Path, docs: list[str]) -> np.ndarray:
    tok = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(path).eval()
    out = []
    with torch.no_grad():  # batch of one: no padding, so the pad id cannot matter
        for d in docs:
            out.append(float(model(**tok(Q, d, return_tensors="pt")).logits[0, 0]))
    return np.array(out)


@pytest.mark.parametrize(
    ("arch", "side", "pad_id"),
    [
        ("qwen3", "right", 256),  # config pads with <|endoftext|>, the tokenizer has no pad token
        ("qwen3", "left", 256),
        ("qwen3", "right", None),  # no pad id anywhere but eos: padded with eos on both sides
        ("llama", "right", 256),
        ("llama", "left", None),
        ("gpt2", "left", 256),
        ("gpt2", "right", 256),
    ],
)
def test_a_batch_scores_like_one_pair_at_a_time(seqcls, arch, side, pad_id):
    path = seqcls(arch, side, pad_id)
    alone = _one_at_a_time(path, DOCS)
    assert np.ptp(alone) > 0.1  # the tiny model tells the documents apart
    batched = np.array(Reranker(f"ce:{path}", device="cpu").score(Q, DOCS))
    np.testing.assert_allclose(batched, alone, atol=1e-5)
    single = np.array(Reranker(f"ce:{path}", device="cpu", batch_size=1).score(Q, DOCS))
    np.testing.assert_allclose(single, alone, atol=1e-5)


def test_padding_side_does_not_change_scores(seqcls):
    left = Reranker(f"ce:{seqcls('qwen3', 'left')}", device="cpu").score(Q, DOCS)
    right = Reranker(f"ce:{seqcls('qwen3', 'right')}", device="cpu").score(Q, DOCS)
    np.testing.assert_allclose(left, right, atol=1e-5)


@pytest.mark.parametrize(("arch", "side"), [("qwen3", "right"), ("llama", "left")])
def test_matches_sentence_transformers_cross_encoder(seqcls, tmp_path, arch, side):
    st = pytest.importorskip("sentence_transformers")
    path = seqcls(arch, side)
    fixed = tmp_path / "with-pad"  # the oracle refuses a tokenizer without a pad token: give the copy one
    shutil.copytree(path, fixed)
    save_tokenizer(fixed, side, pad=True)
    oracle = st.CrossEncoder(str(fixed), device="cpu", activation_fn=torch.nn.Identity())
    expected = oracle.predict([(Q, d) for d in DOCS], batch_size=4)
    got = Reranker(f"ce:{path}", device="cpu").score(Q, DOCS)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_a_decoder_without_any_pad_or_eos_id_is_refused(seqcls):
    with pytest.raises(SpecError, match="no pad token"):
        Reranker(f"ce:{seqcls('qwen3', 'right', pad_id=None, eos=False)}", device="cpu")


def test_onnx_export_pads_like_the_model(seqcls, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv("UNIRANK_CACHE", str(tmp_path))
    path = seqcls("qwen3", "right")
    alone = _one_at_a_time(path, DOCS)
    got = Reranker(f"ce:{path}", device="cpu", backend="onnx").score(Q, DOCS)
    np.testing.assert_allclose(got, alone, atol=1e-4)


# -- E2Rank from a plain transformers folder, built as the authors' code builds it (issue 14, item 2) --------
# Reference: github.com/Alibaba-NLP/E2Rank, src/eval.py (EvalModel.__call__, the paper's evaluation) and the
# README's transformers example: the listwise prompt through the chat template with thinking disabled, no eos
# on the query; documents cut to 1024 words and "<|endoftext|>" appended; last-token pooling, L2, cosine.
E2RANK_PROMPT = (
    "Given a web search query and some relevant documents, rerank the documents that answer the query:\n"
    "Documents:\n{documents}\nSearch Query: {query}"
)
QWEN3_CHAT = (  # the parts of Qwen3's chat template that a single user turn touches
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}"
    "{%- endif %}{%- endif %}"
)
E2_DOCS = [
    "Rain  falls when\nwater vapour\tcondenses into droplets.",
    "Cats purr when they are happy.",
    "The sun is a star; clouds are made of tiny water droplets and ice crystals.",
]


def build_e2rank_like(out: Path, side: str) -> Path:
    """A tiny random Qwen3 embedding model saved like E2Rank-0.6B: plain transformers files, a Qwen-style
    tokenizer (pad <|endoftext|>, eos <|im_end|>) with a Qwen3-style chat template, no sentence-transformers
    files."""
    out.mkdir(parents=True, exist_ok=True)
    save_tokenizer(out, side, pad=True)
    tok = transformers.AutoTokenizer.from_pretrained(out)
    tok.chat_template = QWEN3_CHAT
    tok.save_pretrained(out)
    cfg = transformers.Qwen3Config(
        vocab_size=272, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, max_position_embeddings=512, pad_token_id=256, eos_token_id=258,
    )  # fmt: skip
    torch.manual_seed(1)
    model = transformers.Qwen3Model(cfg)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.5)
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def e2rank_like(tmp_path_factory):
    return {
        side: build_e2rank_like(tmp_path_factory.mktemp(f"e2rank-{side}"), side) for side in ("left", "right")
    }


def _last_token_unit(model, tok, text: str | None = None, ids: list[int] | None = None) -> np.ndarray:
    enc = tok(text, return_tensors="pt") if ids is None else {"input_ids": torch.tensor([ids])}
    with torch.no_grad():  # one text at a time: no padding, its last token is the last position
        h = model(**enc).last_hidden_state[0, -1]
    return torch.nn.functional.normalize(h, dim=-1).numpy().astype(np.float64)


def e2rank_reference(path: Path, query: str, docs: list[str], num_input_docs: int = 20) -> np.ndarray:
    """The reference's inputs and pooling, written out with plain transformers."""
    tok = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModel.from_pretrained(path).eval()
    docs = [" ".join(d.split()[:1024]) for d in docs]
    listed = "\n".join(f"[{i}] {d}" for i, d in enumerate(docs[:num_input_docs], start=1))
    message = [{"role": "user", "content": E2RANK_PROMPT.format(query=query, documents=listed)}]
    q_text = tok.apply_chat_template(
        message, tokenize=False, add_generation_prompt=True, enable_thinking=False
    )
    q = _last_token_unit(model, tok, q_text)
    return np.array([_last_token_unit(model, tok, d + "<|endoftext|>") @ q for d in docs])


@pytest.mark.parametrize("side", ["left", "right"])
def test_e2rank_folder_matches_the_reference(e2rank_like, side):
    path = e2rank_like[side]
    expected = e2rank_reference(path, Q, E2_DOCS, num_input_docs=2)
    assert np.ptp(expected) > 0.01
    r = Reranker(f"e2rank:{path}", num_input_docs=2, device="cpu")
    assert r.recipe == "e2rank"
    prompt = r.listwise_query(Q, E2_DOCS)
    assert prompt.endswith(
        "Search Query: what causes rain<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    )
    assert (
        "[1] Rain falls when water vapour condenses into droplets.\n[2] Cats" in prompt
        and "[3]" not in prompt
    )
    np.testing.assert_allclose(r.score(Q, E2_DOCS), expected, atol=1e-5)
    one = Reranker(f"e2rank:{path}", num_input_docs=2, device="cpu", batch_size=1)
    np.testing.assert_allclose(one.score(Q, E2_DOCS), expected, atol=1e-5)
    # the generic recipe (mean pooling, nothing appended, no think block) is a different model input
    generic = Reranker(f"e2rank:{path}", num_input_docs=2, device="cpu", recipe="generic")
    assert not np.allclose(generic.score(Q, E2_DOCS), expected, atol=1e-3)


def test_e2rank_keeps_the_document_suffix_when_it_truncates(e2rank_like):
    path = e2rank_like["right"]
    r = Reranker(f"e2rank:{path}", device="cpu", max_length=24)
    long_doc = "rain " * 100
    tok = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModel.from_pretrained(path).eval()
    ids = [*tok(long_doc.strip())["input_ids"][:23], tok.convert_tokens_to_ids("<|endoftext|>")]
    got = r.encode([r.document_text(long_doc)], r.document_prompt, suffix_ids=r.doc_suffix_ids)[0]
    np.testing.assert_allclose(got, _last_token_unit(model, tok, ids=ids), atol=1e-5)


def test_bert_bi_encoders_keep_the_generic_recipe(make_tiny_bert):
    path = make_tiny_bert("encoder", seed=3)
    assert Reranker(f"e2rank:{path}").recipe == "generic"
    with pytest.raises(SpecError, match="chat template"):
        Reranker(f"e2rank:{path}", recipe="e2rank")
    with pytest.raises(ValueError, match="recipe="):
        Reranker(f"e2rank:{path}", recipe="e2")
