"""``dataset:`` training sources: judged queries of an evaluation-style dataset, their candidates and labels.

Keys (besides the common ones of :mod:`unirank.train.data`)::

    dataset: trec-dl-2020        # bundled name, BEIR folder or irds:ID
    split: test                  # qrels split (default test)
    run: bm25                    # a shipped run name or a TREC run file; or:
    mine: {retriever: bm25, depth: 100, ranker: SPEC}   # BM25 over the dataset's corpus (one index), the
                                 #   pool optionally re-scored by any Reranker; the top `depth` kept
    depth: 100                   # candidates per query (default 100)
    queries: {include: [..], exclude: [..], limit: N}   # ids; limit keeps the first N in dataset order
    unjudged: zero               # unjudged candidates get label 0 (default), or `drop` leaves them out
    rel_level: 2                 # grade >= rel_level is a positive (default: the dataset's)

Without ``run`` or ``mine`` the dataset's only shipped run is used. Judged-relevant documents that are in
the corpus but not among the candidates are extra positives (``sampling: positives`` only).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import SpecError
from ._data_spec import Pool, as_mapping, check_keys, get_choice, get_int, get_names

logger = logging.getLogger(__name__)

DATASET_KEYS = ("dataset", "split", "run", "mine", "depth", "queries", "unjudged", "rel_level")
MINE_KEYS = ("retriever", "depth", "ranker")
QUERY_KEYS = ("include", "exclude", "limit")


def dataset_pools(src: Mapping[str, Any], ctx: Any, common: Sequence[str]) -> list[Pool]:
    where = ctx.where
    check_keys(where, src, (*DATASET_KEYS, *common))
    split = str(src.get("split", "test"))
    ds = ctx.dataset(str(src["dataset"]), split)
    level = get_int(where, src, "rel_level", ds.rel_level)
    depth = get_int(where, src, "depth", 100)
    drop_unjudged = get_choice(where, src, "unjudged", "zero", ("zero", "drop")) == "drop"
    qids = select_queries(where, ds, src.get("queries"))
    run = _candidates(src, ctx, ds, qids, depth)
    pools: list[Pool] = []
    n_missing = n_no_pos = 0
    for qid in qids:
        judged = ds.qrels.get(qid, {})
        listed = run.get(qid, [])
        ranked = [d for d in listed if d in ds.corpus]
        n_missing += len(listed) - len(ranked)
        if drop_unjudged:
            ranked = [d for d in ranked if d in judged]
        seen = set(ranked)
        extra = [d for d, g in judged.items() if g >= level and d in ds.corpus and d not in seen]
        ids = ranked + extra
        labels = [float(judged.get(d, 0)) for d in ids]
        positives = [i for i, d in enumerate(ids) if judged.get(d, 0) >= level]
        n_no_pos += not positives
        texts = [ds.corpus[d].text for d in ids]
        pools.append(Pool(qid, ds.queries[qid], list(ids), texts, labels, positives, len(ranked)))
    if n_missing:
        logger.warning("%s: %d candidates are not in the corpus and were left out", where, n_missing)
    if n_no_pos:
        logger.info("%s: %d queries have no document of grade >= %d", where, n_no_pos, level)
    return pools


def select_queries(where: str, ds: Any, spec: Any) -> list[str]:
    """Judged queries with text, in dataset order, after ``include`` / ``exclude`` / ``limit``."""
    no_text = [q for q in ds.qrels if q not in ds.queries]
    if no_text:
        logger.warning(
            "%s: %d judged queries have no text and are skipped (e.g. %s)", where, len(no_text), no_text[:3]
        )
    qids = [q for q in ds.queries if q in ds.qrels]
    if spec is None:
        return qids
    spec = as_mapping(f"{where}.queries", spec)
    check_keys(f"{where}.queries", spec, QUERY_KEYS)
    if "include" in spec:
        include = get_names(f"{where}.queries.include", spec["include"])
        unknown = [q for q in include if q not in ds.queries]
        if unknown:
            raise SpecError(
                f"{where}.queries.include: {len(unknown)} ids are not judged queries: {unknown[:5]}"
            )
        wanted = set(include)
        qids = [q for q in qids if q in wanted]
    if "exclude" in spec:
        exclude = set(get_names(f"{where}.queries.exclude", spec["exclude"]))
        qids = [q for q in qids if q not in exclude]
    if "limit" in spec:
        qids = qids[: get_int(f"{where}.queries", spec, "limit", None)]
    return qids


def _candidates(
    src: Mapping[str, Any], ctx: Any, ds: Any, qids: list[str], depth: int
) -> dict[str, list[str]]:
    where = ctx.where
    if "run" in src and "mine" in src:
        raise SpecError(f"{where}: give either `run` or `mine`, not both")
    if "mine" in src:
        return _mine(f"{where}.mine", as_mapping(f"{where}.mine", src["mine"]), ctx, ds, qids, depth)
    name = src.get("run")
    if name is None:
        if len(ds.runs) != 1:
            raise SpecError(
                f"{where}: give `run:` (a run of {sorted(ds.runs)} or a TREC run file) or "
                "`mine: {retriever: bm25, depth: N}`"
            )
        name = next(iter(ds.runs))
    try:
        run = ds.get_run(str(name))
    except KeyError as exc:
        raise SpecError(f"{where}.run: {exc.args[0]}") from None
    return {q: [d for d, _ in run.get(q, [])[:depth]] for q in qids}


def bm25_index(ctx: Any, key: str, corpus: Mapping[str, Any]) -> Any:
    """One BM25 index per corpus within a :func:`~unirank.train.data.load_groups` call."""
    from ..methods.lexical import BM25Retriever

    cache = ctx.cache if ctx.cache is not None else {}
    if f"bm25:{key}" not in cache:
        cache[f"bm25:{key}"] = BM25Retriever().index(corpus, show_progress=ctx.show_progress)
    return cache[f"bm25:{key}"]


def _mine(
    where: str, spec: Mapping[str, Any], ctx: Any, ds: Any, qids: list[str], depth: int
) -> dict[str, list[str]]:
    check_keys(where, spec, MINE_KEYS)
    get_choice(where, spec, "retriever", "bm25", ("bm25",))
    k = get_int(where, spec, "depth", depth)
    index = bm25_index(ctx, f"dataset:{ds.name}:{len(ds.corpus)}", ds.corpus)
    queries = [ds.queries[q] for q in qids]
    results = index.retrieve_many(queries, k=k, show_progress=ctx.show_progress) if queries else []
    ids = [[r.id for r in res.results] for res in results]
    ranker_spec = spec.get("ranker")
    if ranker_spec is not None:
        from ..reranker import Reranker

        ranker = Reranker(str(ranker_spec))
        docs = [[ds.corpus[d] for d in lst] for lst in ids]
        reranked = ranker.rank_many(queries, docs, show_progress=ctx.show_progress)
        ids = [[lst[r.index] for r in res.results] for lst, res in zip(ids, reranked)]
    return {q: lst[:depth] for q, lst in zip(qids, ids)}
