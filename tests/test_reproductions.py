"""docs/reproductions.md: its fast rows' commands, run as written, print the figures the page shows (to 1e-4);
the page lists every row of scripts/reproductions.py, with the same figures as docs/reproductions.json."""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import sys
from pathlib import Path

import pytest

from unirank.cli import main

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "reproductions.md"
ROW = re.compile(r"^\| (?P<what>[^|]+) \| `(?P<cmd>[^`]+)` \| (?P<rest>.*)\|$")


def _script():
    spec = importlib.util.spec_from_file_location("reproductions", ROOT / "scripts" / "reproductions.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def _doc_rows() -> list[dict]:
    out = []
    for line in DOC.read_text(encoding="utf-8").splitlines():
        m = ROW.match(line)
        if m:
            cells = [c.strip() for c in m["rest"].split("|")]
            out.append({"what": m["what"].strip(), "cmd": m["cmd"], "cells": cells, "ci": cells[-1] == "CI"})
    return out


def _printed(text: str, metrics: list[str]) -> dict[str, float]:
    """The last row of the table ``unirank eval`` printed, by column name."""
    lines = [line.split() for line in text.strip().splitlines()]
    (head,) = [i for i, cols in enumerate(lines) if cols[:1] == ["run"] and metrics[0] in cols]
    header, last = lines[head], lines[-1]
    values = dict(zip(header[1:], last[1 - len(header) :]))  # a row's label may hold spaces
    return {m: float(values[m]) for m in metrics}


def test_page_lists_every_row_of_the_script_with_the_stored_figures():
    mod = _script()
    doc = {r["cmd"]: r for r in _doc_rows()}
    stored = json.loads((ROOT / "docs" / "reproductions.json").read_text())["rows"]
    for row in mod.rows():
        assert row.command in doc, row.id
        cells = doc[row.command]["cells"]
        if row.id in stored:
            assert cells[: len(mod.METRICS)] == [f"{stored[row.id]['metrics'][m]:.4f}" for m in mod.METRICS]
        assert doc[row.command]["ci"] == row.fast
    assert {r.dataset for r in mod.rows()} == {"trec-dl-2019", "trec-dl-2020", "scifact"}  # every bundled set
    from unirank.eval.datasets import available_datasets

    assert sorted(mod.DATASETS) == available_datasets()


@pytest.mark.parametrize("row", [r for r in _doc_rows() if r["ci"]], ids=lambda r: r["cmd"].split()[3:6:2])
def test_fast_rows_print_the_figures_on_the_page(row, capsys):
    mod = _script()
    argv = shlex.split(row["cmd"])
    assert argv[0] == "unirank"
    assert main(argv[1:]) == 0
    printed = _printed(capsys.readouterr().out, mod.METRICS)
    expected = [float(c) for c in row["cells"][: len(mod.METRICS)]]
    assert [printed[m] for m in mod.METRICS] == pytest.approx(expected, abs=1e-4)
