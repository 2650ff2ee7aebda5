"""Batches of training groups -> model inputs, and the groups' on-disk cache.

A batch of ``B`` groups becomes the flattened (query, doc) pairs of its real documents (pair encoding,
``truncation="longest_first"`` up to ``max_length``, exactly as ``ce:`` tokenises) plus ``[B, G]`` tensors
(``G`` = the largest group in the batch): ``group_mask`` (False = padding slot), and ``group_labels`` /
``group_teacher`` where the groups have them. The trainer scatters the model's logits into ``[B, G]``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..errors import SpecError

__all__ = ["GroupCollator", "read_groups", "write_groups"]

logger = logging.getLogger(__name__)


class GroupCollator:
    """Collate :class:`~unirank.train.data.TrainGroup` lists for the trainer (see the module docstring)."""

    def __init__(self, tokenizer: Any, max_length: int, *, decoder: bool = False) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.decoder = decoder

    def __call__(self, groups: Sequence[Any]) -> dict[str, Any]:
        import torch

        from ..backends import hf

        width = max(len(g.docs) for g in groups)
        queries = [g.query for g in groups for _ in g.docs]
        docs = [d for g in groups for d in g.docs]
        feats = hf.tokenize(self.tokenizer, queries, docs, self.max_length)
        side = None if self.decoder else "right"
        batch = hf.collate(feats, self.tokenizer, "cpu", position_ids=self.decoder, padding_side=side)
        mask = torch.zeros(len(groups), width, dtype=torch.bool)
        for i, g in enumerate(groups):
            mask[i, : len(g.docs)] = True
        batch["group_mask"] = mask
        for key, attr in (("group_labels", "labels"), ("group_teacher", "teacher")):
            values = [getattr(g, attr) for g in groups]
            if all(v is None for v in values):
                continue
            if any(v is None for v in values):
                raise SpecError(
                    f"some training groups have {attr} and others do not; a batch needs all or none"
                )
            out = torch.zeros(len(groups), width, dtype=torch.float32)
            for i, v in enumerate(values):
                if len(v) != len(groups[i].docs):
                    raise SpecError(
                        f"group {i} ({groups[i].qid}) has {len(v)} {attr} for {len(groups[i].docs)} docs"
                    )
                out[i, : len(v)] = torch.tensor([float(x) for x in v], dtype=torch.float32)
            batch[key] = out
        return batch


def write_groups(groups: Sequence[Any], path: Path) -> None:
    """Write the groups as JSONL (atomically), so a resumed run trains on exactly these."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for g in groups:
            fh.write(json.dumps(asdict(g), ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def read_groups(path: Path) -> list[Any]:
    """The groups :func:`write_groups` wrote."""
    from .data import TrainGroup

    out = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            try:
                out.append(TrainGroup(**json.loads(line)))
            except (json.JSONDecodeError, TypeError) as exc:
                raise SpecError(
                    f"{path}:{lineno}: not a cached training group ({exc}); use --overwrite"
                ) from None
    return out
