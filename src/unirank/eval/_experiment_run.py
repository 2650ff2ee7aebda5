"""Running an experiment config (see :mod:`unirank.eval.experiment`): data, first stages, cached units."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__
from ._files import atomic_write
from .io import Dataset, Run, read_corpus, read_qrels, read_queries
from .metrics import EvalResult, evaluate

if TYPE_CHECKING:
    from ..base import Ranker
    from .experiment import DatasetSpec, ExperimentConfig, FirstStage, RerankerSpec

__all__ = ["ExperimentResult", "Group", "Unit", "run_experiment"]

logger = logging.getLogger("unirank.eval.experiment")


@dataclass
class Unit:
    """One evaluated system: a first stage (``reranker is None``) or a re-ranker at a depth over it."""

    dataset: str
    first_stage: str
    reranker: str | None
    depth: int | None
    key: str
    run: Run
    latency: dict[str, float] = field(default_factory=dict)  # seconds per query
    candidates: dict[str, int] = field(default_factory=dict)  # candidates handed to the re-ranker
    scored: dict[str, int] = field(default_factory=dict)  # documents scored over all stages
    computed: bool = False
    path: Path | None = None

    @property
    def label(self) -> str:
        return self.first_stage if self.reranker is None else f"{self.reranker}@{self.depth}"


@dataclass
class Group:
    """Everything evaluated over one (dataset, first stage)."""

    dataset: Dataset
    first_stage: str
    units: list[Unit]
    evals: dict[str, EvalResult]
    analysis: dict[str, Any] = field(default_factory=dict)


@dataclass
class ExperimentResult:
    """The outcome of :func:`run_experiment`; ``computed`` / ``reused`` list unit labels."""

    config: ExperimentConfig
    out_dir: Path
    groups: list[Group]
    computed: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    report_html: Path | None = None
    report_md: Path | None = None

    def summary_text(self) -> str:
        from .metrics import format_table

        parts = []
        for g in self.groups:
            rows = {label: ev.aggregate for label, ev in g.evals.items()}
            parts.append(f"{g.dataset.name} / {g.first_stage}\n{format_table(rows, label='system')}")
        return "\n\n".join(parts)


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.@+-]+", "_", text).strip("_")[:60] or "x"


def _read_unit(path: Path) -> dict[str, Any] | None:
    try:
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, EOFError) as exc:
        logger.warning("ignoring unreadable cache file %s (%s)", path, exc)
        return None
    return data if isinstance(data, dict) and isinstance(data.get("run"), dict) else None


def _write_unit(path: Path, data: Mapping[str, Any]) -> None:
    with atomic_write(path) as fh:
        json.dump(data, fh, separators=(",", ":"))


def _load_dataset(spec: DatasetSpec) -> Dataset:
    from .datasets import load_dataset

    if spec.source is not None:
        ds = load_dataset(spec.source, split=spec.split, rel_level=spec.rel_level)
        ds.name = spec.name
    else:
        qrels = read_qrels(spec.qrels)
        queries = {q: t for q, t in read_queries(spec.topics).items() if q in qrels}
        ds = Dataset(spec.name, read_corpus(spec.corpus), queries, qrels, {}, spec.rel_level or 1)
    for name, path in spec.runs.items():
        ds.runs[name] = path
    if spec.max_queries is not None:
        keep = [q for q in ds.queries if q in ds.qrels][: spec.max_queries]
        ds.queries = {q: ds.queries[q] for q in keep}
        ds.qrels = {q: ds.qrels[q] for q in keep}
    return ds


class _Hashes:
    """Per-dataset content fingerprints (document texts hashed once)."""

    def __init__(self, ds: Dataset) -> None:
        self.ds = ds
        self._docs: dict[str, str] = {}

    def doc(self, docid: str) -> str:
        h = self._docs.get(docid)
        if h is None:
            d = self.ds.corpus.get(docid)
            text = "\x00missing" if d is None else d.text + "\x00" + str(d.metadata.get("title", ""))
            h = self._docs[docid] = hashlib.sha1(text.encode()).hexdigest()[:16]
        return h

    def corpus(self) -> str:
        return _digest(sorted((d, self.doc(d)) for d in self.ds.corpus))


class _Runner:
    def __init__(self, cfg: ExperimentConfig, cache: Path, resume: bool, show_progress: bool) -> None:
        self.cfg, self.cache, self.resume, self.show_progress = cfg, cache, resume, show_progress
        self.rankers: dict[str, Ranker] = {}
        self.computed: list[str] = []
        self.reused: list[str] = []

    def ranker(self, rr: RerankerSpec) -> Ranker:
        if rr.name not in self.rankers:
            from ..reranker import Reranker

            self.rankers[rr.name] = rr.ranker if rr.ranker is not None else Reranker(rr.spec, **rr.options)
        return self.rankers[rr.name]

    def close(self) -> None:
        own = {x.name for x in self.cfg.rerankers if x.ranker is None}
        for name, r in self.rankers.items():
            if name in own:  # rankers the caller passed in stay theirs to close
                with contextlib.suppress(Exception):
                    r.close()

    def _cached(self, path: Path, key: str, label: str) -> dict[str, Any] | None:
        data = _read_unit(path) if self.resume else None
        if data is not None and data.get("key") == key:
            self.reused.append(label)
            logger.info("reusing %s from %s", label, path.name)
            return data
        return None

    def _store(self, path: Path, data: dict[str, Any], label: str) -> None:
        _write_unit(path, data)
        self.computed.append(label)
        logger.info("computed %s in %.1f s", label, data.get("wall_s", 0.0))

    def first_stage(self, ds: Dataset, fs: FirstStage, hashes: _Hashes, max_depth: int) -> Unit:
        label = f"{ds.name}/{fs.name}"
        if fs.run is not None:
            try:
                run = ds.get_run(fs.run)
            except KeyError as exc:
                raise ValueError(f"dataset {ds.name!r}, first stage {fs.name!r}: {exc.args[0]}") from None
            run = {q: list(run[q]) for q in run if q in ds.queries}
            return Unit(ds.name, fs.name, None, None, _digest(run), run)
        fields = fs.fields
        if fields == "auto":
            fields = "multi" if any(d.metadata.get("title") for d in ds.corpus.values()) else "flat"
        k = max(fs.k, max_depth)
        key = _digest({"v": __version__, "bm25": fields, "k": k, "corpus": hashes.corpus(), "q": ds.queries})
        path = self.cache / f"{_safe(ds.name)}.{_safe(fs.name)}.{key[:16]}.json.gz"
        data = self._cached(path, key, label)
        if data is None:
            from ..methods.lexical import BM25Retriever

            t0 = time.perf_counter()
            retriever = BM25Retriever(fields=fields).index(ds.corpus, show_progress=self.show_progress)
            qids = list(ds.queries)
            t1 = time.perf_counter()
            results = retriever.retrieve_many(
                [ds.queries[q] for q in qids], k=k, show_progress=self.show_progress
            )
            per_query = (time.perf_counter() - t1) / max(1, len(qids))
            run = {q: [(r.id, float(r.score)) for r in res] for q, res in zip(qids, results)}
            data = {
                "key": key,
                "run": run,
                "latency": dict.fromkeys(qids, per_query),
                "wall_s": time.perf_counter() - t0,
            }
            self._store(path, data, label)
        run = {q: [(str(d), float(s)) for d, s in v] for q, v in data["run"].items()}
        return Unit(ds.name, fs.name, None, None, key, run, data.get("latency", {}), path=path)

    def unit(self, ds: Dataset, first: Unit, rr: RerankerSpec, depth: int, hashes: _Hashes) -> Unit:
        label = f"{ds.name}/{first.first_stage}/{rr.name}@{depth}"
        qids = [q for q in first.run if ds.queries.get(q, "").strip()]
        cands = {q: [[d, hashes.doc(d)] for d, _ in first.run[q][:depth]] for q in qids}
        what = (
            {"spec": rr.spec, "options": rr.options}
            if rr.ranker is None
            else {"instance": rr.spec, "name": rr.name}
        )
        key = _digest(
            {
                "v": __version__,
                "reranker": what,
                "depth": depth,
                "q": {q: ds.queries[q] for q in qids},
                "cands": cands,
                "below": _digest(first.run),
            }
        )
        path = (
            self.cache
            / f"{_safe(ds.name)}.{_safe(first.first_stage)}.{_safe(rr.name)}@{depth}.{key[:16]}.json.gz"
        )
        data = self._cached(path, key, label)
        if data is None:
            data = self._compute(ds, first.run, qids, rr, depth)
            data["key"] = key
            self._store(path, data, label)
        run = {q: [(str(d), float(s)) for d, s in v] for q, v in data["run"].items()}
        return Unit(
            ds.name,
            first.first_stage,
            rr.name,
            depth,
            key,
            run,
            data["latency"],
            data["candidates"],
            data["scored"],
            path=path,
        )

    def _compute(
        self, ds: Dataset, first: Run, qids: list[str], rr: RerankerSpec, depth: int
    ) -> dict[str, Any]:
        from tqdm.auto import tqdm

        from .job import rerank_run

        ranker = self.ranker(rr)
        _clear_caches(ranker)  # every unit is timed cold: no embeddings left over from another depth
        n_cand = {q: sum(1 for d, _ in first[q][:depth] if d in ds.corpus) for q in qids}
        run: Run = {}
        latency: dict[str, float] = {}
        bq = self.cfg.batch_queries
        t_start = time.perf_counter()
        with tqdm(total=len(qids), disable=not self.show_progress, desc=f"{rr.name}@{depth}") as bar:
            for start in range(0, len(qids), bq):
                batch = qids[start : start + bq]
                t0 = time.perf_counter()
                part = rerank_run(
                    ranker, ds, {q: first[q] for q in batch}, depth, len(batch), show_progress=False
                )
                dt = time.perf_counter() - t0
                weights = [max(1, n_cand[q]) for q in batch]
                for q, w in zip(batch, weights):
                    latency[q] = dt * w / sum(weights)
                run.update(part)
                bar.update(len(batch))
        return {
            "run": run,
            "latency": latency,
            "candidates": n_cand,
            "scored": {q: _scored(ranker, n) for q, n in n_cand.items()},
            "wall_s": time.perf_counter() - t_start,
            "reranker": rr.name,
            "spec": rr.spec,
            "depth": depth,
        }


def _clear_caches(ranker: Any) -> None:
    """Empty a ranker's (and a pipeline's stages') score / embedding caches before a unit is timed."""
    for stage, _ in getattr(ranker, "stages", []):
        _clear_caches(stage)
    if callable(getattr(ranker, "clear_cache", None)):
        ranker.clear_cache()
    elif callable(getattr(getattr(ranker, "_cache", None), "clear", None)):
        ranker._cache.clear()  # EmbeddingRanker's LRU of document embeddings


def _scored(ranker: Any, n: int) -> int:
    """Documents a ranker scores for ``n`` candidates (a pipeline scores each stage's head)."""
    from ..pipeline import Pipeline

    if not isinstance(ranker, Pipeline):
        return n
    total, current = 0, n
    for stage, depth in ranker.stages:
        current = min(depth, current) if depth else current
        total += _scored(stage, current)
    return total


def run_experiment(
    config: Any,
    out_dir: str | os.PathLike[str] | None = None,
    resume: bool = True,
    show_progress: bool = False,
) -> ExperimentResult:
    """Run (or resume) an experiment and write its report; see :mod:`unirank.eval.experiment`.

    ``config`` is a YAML / JSON path, a dict or an :class:`~unirank.eval.experiment.ExperimentConfig`.
    With ``resume=False`` every unit is recomputed (and the cache overwritten).

    >>> import tempfile
    >>> cfg = {"datasets": [{"source": "dl19", "max_queries": 3}], "rerankers": ["bm25"], "depths": [5],
    ...        "metrics": ["nDCG@10"], "significance": {"resamples": 100}}
    >>> res = run_experiment(cfg, out_dir=tempfile.mkdtemp())
    >>> [u.label for u in res.groups[0].units], res.computed
    (['bm25', 'bm25@5'], ['dl19/bm25/bm25@5'])
    >>> res.report_html.name, res.report_md.name
    ('report.html', 'summary.md')
    """
    from .analyses import analyse_group
    from .experiment import FirstStage, load_config
    from .report import write_report

    cfg = load_config(config)
    out = Path(out_dir or cfg.out or Path("runs") / _safe(cfg.name))
    cache = Path(cfg.cache_dir) if cfg.cache_dir else out / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    for stale in cache.glob(".*.tmp"):  # left by a killed run (atomic writes never expose them)
        with contextlib.suppress(OSError):
            stale.unlink()
    runner = _Runner(cfg, cache, resume, show_progress)
    groups: list[Group] = []
    try:
        for spec in cfg.datasets:
            ds = _load_dataset(spec)
            hashes = _Hashes(ds)
            depths = spec.depths or cfg.depths
            stages = spec.first_stages or cfg.first_stages
            if stages is None:
                stages = [FirstStage(n.split(".")[0], n) for n in ds.runs] or [FirstStage("bm25")]
            all_depths = [d for rr in cfg.rerankers for d in (rr.depths or depths)]
            for fs in stages:
                first = runner.first_stage(ds, fs, hashes, max(all_depths))
                units = [first]
                for rr in cfg.rerankers:
                    units += [runner.unit(ds, first, rr, d, hashes) for d in rr.depths or depths]
                evals = {u.label: evaluate(ds.qrels, u.run, cfg.metrics, ds.rel_level) for u in units}
                groups.append(Group(ds, fs.name, units, evals))
    finally:
        runner.close()
    result = ExperimentResult(cfg, out, groups, runner.computed, runner.reused)
    for g in groups:
        g.analysis = analyse_group(g, cfg)
    write_report(result)
    return result
