"""Running an experiment config (see :mod:`unirank.eval.experiment`): data, first stages, cached units."""

from __future__ import annotations

import contextlib
import gzip
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
from ..errors import EvalInputError
from ._experiment_data import Hashes, digest, evaluate_in, fold_note, judged, prepare_dataset, real_depths
from ._files import atomic_write
from .io import Dataset, Run
from .metrics import EvalResult

if TYPE_CHECKING:
    from ..base import Ranker
    from .experiment import ExperimentConfig, FirstStage, RerankerSpec

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
    """Everything evaluated over one (dataset, first stage); ``skipped_queries``: judged queries without
    text left out of every row (``skip_queries_without_text``)."""

    dataset: Dataset
    first_stage: str
    units: list[Unit]
    evals: dict[str, EvalResult]
    analysis: dict[str, Any] = field(default_factory=dict)
    skipped_queries: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # e.g. depths folded into the candidate list's length

    @property
    def rel_level(self) -> int:
        """The relevance level every binary metric of this group used."""
        return self.evals[self.units[0].label].rel_level

    def header(self) -> str:
        """What the group's numbers are over: judged queries, those with text, skipped ones, how many
        first-stage queries are judged, the relevance level (:func:`~unirank.eval.job.eval_header`)."""
        from .job import eval_header

        head = eval_header(self.dataset, self.first_stage, self.evals[self.units[0].label])
        return "\n".join([head, *(f"note: {n}" for n in self.notes)])


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
            table = format_table(rows, label="system")
            parts.append(f"{g.dataset.name} / {g.first_stage}\n{g.header()}\n{table}")
        return "\n\n".join(parts)


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

    def first_stage(self, ds: Dataset, fs: FirstStage, hashes: Hashes, max_depth: int) -> Unit:
        label = f"{ds.name}/{fs.name}"
        if fs.run is not None:
            try:
                run = ds.get_run(fs.run)
            except KeyError as exc:
                raise ValueError(f"dataset {ds.name!r}, first stage {fs.name!r}: {exc.args[0]}") from None
            given = sorted(run)
            run = {q: list(run[q]) for q in run if q in ds.queries}
            if given and not run:
                raise EvalInputError(
                    f"dataset {ds.name!r}, first stage {fs.name!r}: none of the run's {len(given)} queries "
                    f"is a query of the dataset (run: {given[:3]}, dataset: {sorted(ds.queries)[:3]}); "
                    "wrong run file, or query ids written differently?",
                    qids=given,
                )
            return Unit(ds.name, fs.name, None, None, digest(run), run)
        fields = fs.fields
        if fields == "auto":
            fields = "multi" if any(d.metadata.get("title") for d in ds.corpus.values()) else "flat"
        k = max(fs.k, max_depth)
        key = digest({"v": __version__, "bm25": fields, "k": k, "corpus": hashes.corpus(), "q": ds.queries})
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

    def unit(self, ds: Dataset, first: Unit, rr: RerankerSpec, depth: int, hashes: Hashes) -> Unit:
        label = f"{ds.name}/{first.first_stage}/{rr.name}@{depth}"
        qids = [q for q in first.run if ds.queries.get(q, "").strip()]
        cands = {q: [[d, hashes.doc(d)] for d, _ in first.run[q][:depth]] for q in qids}
        what = (
            {"spec": rr.spec, "options": rr.options}
            if rr.ranker is None
            else {"instance": rr.spec, "name": rr.name}
        )
        key = digest(
            {
                "v": __version__,
                "reranker": what,
                "depth": depth,
                "q": {q: ds.queries[q] for q in qids},
                "cands": cands,
                "below": digest(first.run),
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
    *,
    rel_level: int | None = None,
    skip_queries_without_text: bool | None = None,
) -> ExperimentResult:
    """Run (or resume) an experiment and write its report; see :mod:`unirank.eval.experiment`.

    ``config`` is a YAML / JSON path, a dict or an :class:`~unirank.eval.experiment.ExperimentConfig`.
    With ``resume=False`` every unit is recomputed (and the cache overwritten). ``rel_level`` (every
    dataset) and ``skip_queries_without_text`` override the config's. Every dataset is loaded and checked
    before any unit is computed; what is refused (:class:`~unirank.errors.EvalInputError`) is listed in
    :mod:`unirank.eval.experiment`.

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
    loaded = [prepare_dataset(spec, cfg, rel_level, skip_queries_without_text) for spec in cfg.datasets]
    runner = _Runner(cfg, cache, resume, show_progress)
    groups: list[Group] = []
    try:
        for spec, (ds, skipped) in zip(cfg.datasets, loaded):
            qrels = judged(ds, skipped)
            hashes = Hashes(ds)
            depths = spec.depths or cfg.depths
            stages = spec.first_stages or cfg.first_stages
            if stages is None:
                stages = [FirstStage(n.split(".")[0], n) for n in ds.runs] or [FirstStage("bm25")]
            all_depths = [d for rr in cfg.rerankers for d in (rr.depths or depths)]
            for fs in stages:
                first = runner.first_stage(ds, fs, hashes, max(all_depths))
                where = f"dataset {ds.name!r}, first stage {fs.name!r}"
                # checked before any re-ranking: an empty first stage, or one with no judged query
                evals = {
                    first.label: evaluate_in(where, qrels, first.run, cfg.metrics, ds.rel_level, skipped)
                }
                units, notes = [first], []
                longest = max((len(v) for v in first.run.values()), default=0)
                for rr in cfg.rerankers:
                    wanted = rr.depths or depths
                    real, folded = real_depths(wanted, longest)
                    if folded:
                        notes.append(fold_note(rr.name, folded, wanted, longest, fs.name))
                        logger.warning("dataset %r: %s", ds.name, notes[-1])
                    units += [runner.unit(ds, first, rr, d, hashes) for d in real]
                for u in units[1:]:
                    at = f"{where}, system {u.label!r}"
                    evals[u.label] = evaluate_in(at, qrels, u.run, cfg.metrics, ds.rel_level, skipped)
                groups.append(Group(ds, fs.name, units, evals, skipped_queries=list(skipped), notes=notes))
    finally:
        runner.close()
    result = ExperimentResult(cfg, out, groups, runner.computed, runner.reused)
    for g in groups:
        g.analysis = analyse_group(g, cfg)
    write_report(result)
    return result
