"""Evaluation sets bundled with unirank (found through ``importlib.resources``), or any BEIR folder.

Bundled (see each folder's ``SOURCE.md`` for origin and licence):

- ``"trec-dl-2019"``: TREC DL 2019 passage, 43 queries, complete graded qrels, BM25 top-100 run, and the 4,297
  passages of that run. Binary metrics count grade >= 2 as relevant.
- ``"trec-dl-2020"``: TREC DL 2020 passage, built the same way: 54 queries, complete graded qrels, BM25
  top-100 run and its 5,396 passages; no query in common with DL 2019. Grade >= 2 is relevant.
- ``"scifact"``: BEIR SciFact test split, 300 queries, 5,183 abstracts, binary qrels.

Any ``ir_datasets`` id works as ``"irds:<id>"`` (``"irds:msmarco-passage/trec-dl-2019/judged"``), through
:mod:`unirank.eval.irds`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from .io import Dataset, load_beir

__all__ = ["available_datasets", "dataset_folder", "load_dataset"]


@dataclass(frozen=True)
class _Bundled:
    folder: str
    rel_level: int
    aliases: tuple[str, ...]


_BUNDLED: dict[str, _Bundled] = {
    "trec-dl-2019": _Bundled(
        "trec-dl-2019", 2, ("dl19", "trec-dl-2019-passage", "msmarco-passage/trec-dl-2019")
    ),
    "trec-dl-2020": _Bundled(
        "trec-dl-2020", 2, ("dl20", "trec-dl-2020-passage", "msmarco-passage/trec-dl-2020")
    ),
    "scifact": _Bundled("scifact", 1, ("beir/scifact", "beir-scifact")),
}


def available_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset` (besides a folder path).

    >>> available_datasets()
    ['scifact', 'trec-dl-2019', 'trec-dl-2020']
    """
    return sorted(_BUNDLED)


def _resolve(name: str) -> str | None:
    key = name.strip().lower()
    for canonical, spec in _BUNDLED.items():
        if key == canonical or key in spec.aliases:
            return canonical
    return None


def dataset_folder(name: str) -> Any:
    """The folder of a bundled dataset (a ``Path``, or a resources Traversable for zipped installs)."""
    canonical = _resolve(name)
    if canonical is None:
        raise ValueError(f"unknown dataset {name!r}; bundled: {available_datasets()}")
    return resources.files("unirank").joinpath("data", _BUNDLED[canonical].folder)


def load_dataset(
    name_or_path: str | os.PathLike[str], split: str = "test", rel_level: int | None = None
) -> Dataset:
    """Load a bundled dataset by name, an ``ir_datasets`` id as ``"irds:<id>"`` (see :mod:`unirank.eval.irds`;
    the split is part of the id), or a BEIR-style folder by path.

    ``rel_level`` (the minimum grade counted relevant by binary metrics) defaults to the dataset's convention:
    2 for the bundled TREC DL sets and TREC DL ir_datasets ids, 1 for SciFact and other ids; for a folder, the
    ``rel_level`` of its ``unirank.json`` (``{"rel_level": 2}``), else 1.

    >>> ds = load_dataset("trec-dl-2019")
    >>> len(ds.queries), ds.rel_level, sorted(ds.runs)
    (43, 2, ['bm25.top100'])
    >>> len(load_dataset("dl20").queries)
    54
    """
    if isinstance(name_or_path, str) and name_or_path.strip().lower().startswith("irds:"):
        from .irds import load_irds

        return load_irds(name_or_path.strip(), rel_level=rel_level)
    canonical = _resolve(str(name_or_path)) if isinstance(name_or_path, str) else None
    if canonical is not None:
        spec = _BUNDLED[canonical]
        level = spec.rel_level if rel_level is None else rel_level
        return load_beir(dataset_folder(canonical), split=split, rel_level=level, name=canonical)
    path = Path(name_or_path)
    if not path.is_dir():
        raise ValueError(
            f"unknown dataset {str(name_or_path)!r}: not a bundled name {available_datasets()} "
            "and not a folder"
        )
    return load_beir(path, split=split, rel_level=rel_level)
