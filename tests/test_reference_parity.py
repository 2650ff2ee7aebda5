"""Parity with the authors' code, kept in the suite (issue 14).

Five families were run side by side with their reference implementations by
``benchmarks/parity/run_parity.py`` on tiny random weights (fp32, CPU). None of the references imports under
transformers 5 (unirank's), so each ran in an environment of its own:

===========  ==============================================================  =========  ============  ======
family       reference (cases)                                               max |d|    transformers  issue
===========  ==============================================================  =========  ============  ======
mxbai-v2     mxbai-rerank 0.1.6 ``MxbaiRerankV2.predict`` (5: short; a       3.8e-6     4.57.1        1.3e-5
             420-token query + 480-token document at a 512 window; a long
             document; caps scaled to ``max_length=96``; an instruction)
bge-gemma    FlagEmbedding 1.4.2 ``FlagLLMReranker.compute_score`` (4:       4.8e-7     4.51.3        --
             short; a 420-token query; caps scaled to ``max_length=128``)
layerwise    FlagEmbedding 1.4.2 ``LayerWiseFlagLLMReranker.compute_score``  8.3e-7     4.51.3        1.4e-6
             (5: cutoff layers 2 / 4 / 5, its default = the last layer, a
             500-token query)
set-encoder  lightning-ir 0.0.6 ``CrossEncoderModule.score`` (8, five with   2.4e-6     4.57.1        2.4e-6
             stand-ins sampled at the same seed)
jina-v3      the checkpoint's ``modeling.py`` ``JinaForRanking.rerank`` (2:  1.9e-7     4.57.1        1.5e-7
             one block; three blocks near a full window)
===========  ==============================================================  =========  ============  ======

("issue": the figures measured independently when issue 14 was filed.) On the same cases the previous defaults
were off: jina-v3 with ``blocks="fit"`` by 1.3e-2 and in another order near the full window, and mxbai-v2
without the reference's caps refused the long-query cases (the query took the whole window) and ignored an
instruction; bge-gemma, cut only at the model's context, refused the long query too and kept up to 8,192
passage tokens where FlagEmbedding keeps 512.

The commands (FlagEmbedding 1.4.2 breaks on transformers 4.57 -- ``DynamicCache.get_usable_length`` -- so
it ran under 4.51.3; the reference packages were installed with ``pip install --no-deps --target DIR`` into
throwaway folders put first on ``PYTHONPATH``, never into unirank's venv)::

    .venv/bin/python benchmarks/parity/run_parity.py build /tmp/parity
    PYTHONPATH=/tmp/ref457 .venv/bin/python benchmarks/parity/run_parity.py reference /tmp/parity \\
        --jina-modeling /tmp/jina/modeling.py       # transformers 4.57.1, mxbai-rerank, lightning-ir
    PYTHONPATH=/tmp/ref451 .venv/bin/python benchmarks/parity/run_parity.py reference /tmp/parity
                                                    # transformers 4.51.3, FlagEmbedding (added to the file)
    .venv/bin/python benchmarks/parity/run_parity.py compare /tmp/parity

The reference scores of that run are kept in ``benchmarks/parity/recorded_reference.json``; this module
rebuilds the same checkpoints, scores them with unirank and checks them against the record within each
family's tolerance, so a change that breaks parity fails here without the reference packages. It also checks
the script's own reporting (skips name their reason; failures and differences over tolerance exit 1).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "parity"))

import run_parity

FAMILIES = ["mxbai-v2", "bge-gemma", "layerwise", "set-encoder", "jina-v3"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("parity")
    cases = run_parity.build_cases(root)
    return cases, run_parity.unirank_scores(cases)


def test_unirank_equals_the_recorded_reference_scores(run):
    cases, ours = run
    recorded = json.loads(run_parity.RECORDED.read_text())
    rows, ok = run_parity.compare(ours, recorded)
    assert [r["family"] for r in rows] == FAMILIES and all("max_abs" in r for r in rows), rows
    assert ok, run_parity.report(rows)
    for row in rows:
        assert row["cases"] == len(cases[row["family"]]) == len(recorded[row["family"]]["scores"])
        assert row["max_abs"] <= run_parity.TOLERANCE[row["family"]]
    assert recorded["layerwise"]["transformers"] == "4.51.3"
    # the long cases are really long: the mxbai-v2 query exceeds 3/4 of the window, jina-v3 has 3 blocks
    assert len(cases["mxbai-v2"][1]["query"].split()) > 400
    from unirank import Reranker

    near = cases["jina-v3"][1]
    blocks = Reranker(f"jina-v3:{near['path']}", dtype="fp32").plan(near["query"], near["docs"])[2]
    assert len(blocks) == 3


def test_reference_step_says_why_it_skipped(tmp_path):
    empty: dict[str, list] = {f: [] for f in FAMILIES}
    got = run_parity.reference_scores(empty, {"jina_modeling": None})
    assert "--jina-modeling" in got["jina-v3"]["skipped"]
    for family in FAMILIES[:4]:  # not in unirank's venv (and none imports under transformers 5)
        assert "does not import here" in got[family]["skipped"], got[family]
    # a family measured in an earlier environment keeps its scores when it skips in the next one
    before = {"layerwise": {"reference": "FlagEmbedding", "scores": [[1.0]], "transformers": "4.51.3"}}
    merged = run_parity.reference_scores(empty, {}, before)
    assert merged["layerwise"] == before["layerwise"] and "skipped" in merged["mxbai-v2"]


def test_compare_flags_differences_failures_and_skips(tmp_path, capsys):
    ours = {f: [[0.5, 0.25]] for f in FAMILIES}
    ref = {
        "mxbai-v2": {"reference": "r", "scores": [[0.5, 0.25 + 5e-5]], "transformers": "x"},
        "bge-gemma": {"reference": "r", "scores": [[0.5, 0.25]], "transformers": "x"},
        "layerwise": {"reference": "r", "scores": [[0.5, 0.25]], "transformers": "x"},
        "set-encoder": {"skipped": "lightning-ir does not import here"},
        "jina-v3": {"reference": "r", "scores": [[0.5, 0.25]], "transformers": "x"},
    }
    rows, ok = run_parity.compare(ours, ref)
    assert ok and rows[0]["max_abs"] == pytest.approx(5e-5)  # mxbai's 1e-4: left padding, no position ids
    assert "set-encoder  skipped: lightning-ir does not import here" in run_parity.report(rows)
    over = {**ref, "layerwise": {"reference": "r", "scores": [[0.5, 0.2501]], "transformers": "x"}}
    rows, ok = run_parity.compare(ours, over)
    assert not ok and "OVER" in run_parity.report(rows)
    failed = {**ref, "jina-v3": {"failed": "AttributeError: boom"}}
    assert not run_parity.compare(ours, failed)[1]
    for name, data in (("cases", {}), ("unirank", ours), ("reference", over)):
        (tmp_path / f"{name}.json").write_text(json.dumps(data))
    assert run_parity.main(["compare", str(tmp_path)]) == 1
    (tmp_path / "reference.json").write_text(json.dumps(ref))
    assert run_parity.main(["compare", str(tmp_path)]) == 0
    assert "max |unirank - reference|" in capsys.readouterr().out
