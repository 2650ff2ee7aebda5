"""Spec checking and group formation shared by the training-data sources (see :mod:`unirank.train.data`).

A source first builds *pools*: one query with its candidate documents (ids, texts, labels, which of them are
positives). A sampling mode then cuts each pool into groups of document indices; the teacher (if any) scores
the pools' documents; :func:`to_train_groups` turns the index groups into :class:`TrainGroup` objects.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import SpecError

logger = logging.getLogger(__name__)

SAMPLING_MODES = ("positives", "ranked", "random")
SELECT_MODES = ("teacher",)


# -- spec helpers -----------------------------------------------------------------------------------------
def check_keys(where: str, spec: Mapping[str, Any], allowed: Sequence[str]) -> None:
    """Refuse keys outside ``allowed``, naming them all, so that a misspelt key is never ignored."""
    unknown = [str(k) for k in spec if k not in allowed]
    if unknown:
        raise SpecError(f"{where}: unknown key(s) {unknown}; allowed keys: {sorted(allowed)}")


def as_mapping(where: str, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise SpecError(f"{where}: expected a mapping of keys, got {value!r}")
    return value


def get_int(where: str, spec: Mapping[str, Any], key: str, default: int | None, minimum: int = 1) -> int:
    value = spec.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SpecError(f"{where}.{key}: expected an integer >= {minimum}, got {value!r}")
    return value


def get_float(where: str, spec: Mapping[str, Any], key: str, default: float, lo: float, hi: float) -> float:
    value = spec.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= float(value) <= hi:
        raise SpecError(f"{where}.{key}: expected a number in [{lo}, {hi}], got {value!r}")
    return float(value)


def get_choice(where: str, spec: Mapping[str, Any], key: str, default: str, choices: Sequence[str]) -> str:
    value = spec.get(key, default)
    if value not in choices:
        raise SpecError(f"{where}.{key}: expected one of {list(choices)}, got {value!r}")
    return str(value)


def get_names(where: str, value: Any) -> list[str]:
    """A name or a list of names (YAML may read numeric ids as numbers: they become strings)."""
    if value is None:
        return []
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        return [str(value)]
    if isinstance(value, Sequence) and all(
        isinstance(v, (str, int)) and not isinstance(v, bool) for v in value
    ):
        return [str(v) for v in value]
    raise SpecError(f"{where}: expected a name or a list of names, got {value!r}")


def grouping(where: str, spec: Mapping[str, Any], has_teacher: bool) -> str:
    """The group formation mode: a ``sampling`` mode, or ``"teacher"`` for ``select: teacher``."""
    if "select" in spec:
        get_choice(where, spec, "select", "teacher", SELECT_MODES)
        if "sampling" in spec:
            raise SpecError(f"{where}: give either `sampling` or `select: teacher`, not both")
        if not has_teacher:
            raise SpecError(f"{where}.select: teacher needs a teacher (data.teacher or the source's teacher)")
        return "teacher"
    return get_choice(where, spec, "sampling", "positives", SAMPLING_MODES)


def fold_text(text: str) -> str:
    """Case- and whitespace-folded text, the key the leakage guards compare."""
    return " ".join(text.lower().split())


# -- pools and groups -------------------------------------------------------------------------------------
@dataclass
class Pool:
    """One query and its candidate documents.

    The first ``ranked`` documents are the candidate list in rank order (``ranked`` and ``random`` sampling
    and ``select: teacher`` use only these); documents after them are extra positives (judged relevant but
    not among the candidates). ``positives`` are indices of the documents that each start a group under
    ``positives`` sampling; every other index among the first ``ranked`` is a negative.
    """

    qid: str
    query: str
    ids: list[str | None]
    texts: list[str]
    labels: list[float] | None
    positives: list[int]
    ranked: int
    teacher: dict[int, float | None] = field(default_factory=dict)


#: A group before conversion: (pool index, document indices in the pool).
IndexGroup = tuple[int, list[int]]


def _chunks(indices: list[int], size: int) -> list[list[int]]:
    """Consecutive chunks; a short tail is kept when it has 2 or more documents (or is the only chunk)."""
    out = [indices[i : i + size] for i in range(0, len(indices), size)]
    if len(out) > 1 and len(out[-1]) < 2:
        out.pop()
    return [c for c in out if c]


def form_groups(pools: Sequence[Pool], mode: str, group_size: int, rng: random.Random) -> list[IndexGroup]:
    """Cut every pool into groups of at most ``group_size`` document indices.

    - ``positives``: one group per positive: the positive first, then ``group_size - 1`` negatives drawn
      uniformly without replacement (seeded) from the pool's non-positive candidates, kept in rank order.
    - ``ranked``: consecutive chunks of the candidate list, best first.
    - ``random``: the candidate list shuffled (seeded), then cut into chunks.
    - ``teacher``: one group per pool: the teacher's top-1 candidate, then ``group_size - 1`` others drawn
      uniformly (seeded) from the rest of the candidates, in teacher order (``pool.teacher`` must be set).
    """
    out: list[IndexGroup] = []
    for pi, pool in enumerate(pools):
        cands = list(range(pool.ranked))
        if mode == "positives":
            pos = set(pool.positives)
            negatives = [i for i in cands if i not in pos]
            for p in pool.positives:
                k = min(group_size - 1, len(negatives))
                out.append((pi, [p, *sorted(rng.sample(negatives, k))]))
        elif mode == "ranked":
            out.extend((pi, c) for c in _chunks(cands, group_size))
        elif mode == "random":
            rng.shuffle(cands)
            out.extend((pi, c) for c in _chunks(cands, group_size))
        elif mode == "teacher":
            scored = [i for i in cands if pool.teacher.get(i) is not None]
            if not scored:
                continue
            order = sorted(scored, key=lambda i: (-float(pool.teacher[i]), i))  # type: ignore[arg-type]
            rest = order[1:]
            picked = set(rng.sample(rest, min(group_size - 1, len(rest))))
            out.append((pi, [order[0], *[i for i in rest if i in picked]]))
        else:  # pragma: no cover - modes are checked when the spec is read
            raise SpecError(f"unknown group formation {mode!r}")
    return out


def to_train_groups(
    pools: Sequence[Pool], groups: Sequence[IndexGroup], *, teacher: bool, mode: str, where: str
) -> list[Any]:
    """:class:`~unirank.train.data.TrainGroup` objects; documents the teacher could not score (a run teacher
    with ``missing: drop``) are left out, and a group left with fewer than 2 documents, or without its
    positive under ``positives`` sampling, is dropped (counted in a log line)."""
    from .data import TrainGroup

    out = []
    dropped = 0
    for pi, idx in groups:
        pool = pools[pi]
        if teacher:
            kept = [i for i in idx if pool.teacher.get(i) is not None]
            if kept != idx and (len(kept) < 2 or (mode == "positives" and kept[0] != idx[0])):
                dropped += 1
                continue
            idx = kept
        out.append(
            TrainGroup(
                query=pool.query,
                docs=[pool.texts[i] for i in idx],
                labels=None if pool.labels is None else [float(pool.labels[i]) for i in idx],
                teacher=[float(pool.teacher[i]) for i in idx] if teacher else None,  # type: ignore[arg-type]
                qid=pool.qid,
                doc_ids=[pool.ids[i] for i in idx],
            )
        )
    if dropped:
        logger.warning("%s: %d groups dropped: the teacher run misses their documents", where, dropped)
    return out
