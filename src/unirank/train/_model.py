"""The model to fine-tune: a packaged name, a sequence-classification folder (kept as it is), or a base
encoder / sentence-transformers folder (a fresh 1-logit head)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import SpecError

__all__ = ["LoadedModel", "load_for_training", "scores_from_logits"]

logger = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    path: Path
    decoder: bool
    fresh_head: bool
    max_length: int


class _DropLoadReport(logging.Filter):
    """Holds back transformers' load report while a fresh head is created; keeps it when more than the
    head's weights were missing (``only_head`` False), so that it is still shown."""

    def __init__(self) -> None:
        super().__init__()
        self.dropped = ""
        self.only_head = True

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if "LOAD REPORT" not in text:
            return True
        self.dropped = text
        missing = [ln.split("|")[0].strip() for ln in text.splitlines() if "MISSING" in ln and "|" in ln]
        self.only_head = all(m.startswith(("classifier.", "score.")) for m in missing)
        return False


def _weights_dir(path: Path) -> Path:
    """A sentence-transformers folder keeps its transformer in the ``Transformer`` module's folder (often the
    root itself); any other folder is its own."""
    from ..backends.hf import read_json

    modules = read_json(path / "modules.json").get("_") or []
    for m in modules:
        if isinstance(m, dict) and str(m.get("type", "")).endswith("models.Transformer"):
            sub = path / str(m.get("path") or "")
            if (sub / "config.json").is_file():
                return sub
    return path


def load_for_training(
    name: str, *, max_length: int, seed: int, trust_remote_code: bool = False
) -> LoadedModel:
    """Load ``name`` for training (in train mode, fp32 weights, on the CPU; the Trainer moves it)."""
    from ..backends import hf
    from ..backends.padding import align_pad_token, is_decoder_only

    torch, transformers = hf.torch_modules()
    path = _weights_dir(hf.local_model_dir(name))
    config = hf.read_json(path / "config.json")
    if not config:
        raise SpecError(f"model {name!r}: {path} has no config.json; is it a Hugging Face model folder?")
    if not any(path.glob("*.safetensors")):
        raise SpecError(
            f"model {name!r}: {path} has no .safetensors weights (pickled weights are not loaded)"
        )
    archs = [str(a) for a in config.get("architectures") or []]
    seqcls = any(a.endswith("ForSequenceClassification") for a in archs)
    transformers.set_seed(seed)  # a fresh head starts from the same weights for the same seed
    tokenizer = hf.load_tokenizer(path, trust_remote_code=trust_remote_code)
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code, "use_safetensors": True}
    if not seqcls:
        kwargs["num_labels"] = 1
    quiet = _DropLoadReport()
    report_logger = logging.getLogger("transformers.modeling_utils")
    if not seqcls:  # the head is new by design: one line of ours instead of transformers' table
        report_logger.addFilter(quiet)
    try:
        model = transformers.AutoModelForSequenceClassification.from_pretrained(
            str(path), dtype=torch.float32, **kwargs
        )
    finally:
        report_logger.removeFilter(quiet)
    if quiet.dropped and not quiet.only_head:
        logger.warning("%s", quiet.dropped)
    num_labels = int(model.config.num_labels)
    if num_labels not in (1, 2):
        raise SpecError(
            f"model {name!r} has a {num_labels}-label head; training needs a relevance score: a 1-logit head "
            "(or a 2-label head, scored logit[1] - logit[0]); start from its base encoder instead"
        )
    if not seqcls:
        logger.warning(
            "%s has no sequence-classification head (architectures=%s): training a fresh 1-logit head",
            name,
            archs,
        )
    decoder = is_decoder_only(model.config)
    if decoder:
        align_pad_token(tokenizer, model.config, required=True)
    else:
        tokenizer.padding_side = "right"
    model.train()
    length = hf.max_model_length(tokenizer, model.config, max_length)
    if length < max_length:
        logger.warning("max_length %d exceeds what %s allows; using %d", max_length, name, length)
    return LoadedModel(model, tokenizer, path, decoder, not seqcls, length)


def scores_from_logits(logits: Any) -> Any:
    """One relevance score per row: the logit of a 1-logit head, ``logit[1] - logit[0]`` of a 2-label head
    (the convention of ``ce:``)."""
    x = logits.float()
    return x[:, 0] if x.shape[-1] == 1 else x[:, 1] - x[:, 0]
