"""The experiment report's comparisons: marks that show direction, paired bootstrap intervals, improved /
degraded query counts, the significance table in summary.md, and depths beyond the candidate list."""

from __future__ import annotations

import json

import numpy as np
import pytest

from unirank.base import Ranker
from unirank.eval import load_dataset
from unirank.eval._experiment_data import real_depths
from unirank.eval.experiment import run_experiment
from unirank.eval.significance import bootstrap_ci, paired_t_test
from unirank.types import ScoreKind

pytest.importorskip("matplotlib")


class Reverse(Ranker):
    """The first stage's order upside down (worst candidate first): significantly worse."""

    score_kind = ScoreKind.RANK

    def __init__(self) -> None:
        super().__init__("reverse")

    def _score_many(self, queries, docs_lists, show_progress=False):
        return [np.arange(len(docs), dtype=float) for docs in docs_lists]


class Oracle(Ranker):
    """Scores = the judged grade of each candidate: significantly better."""

    score_kind = ScoreKind.UNBOUNDED

    def __init__(self, qrels_by_text: dict[str, dict[str, int]]) -> None:
        super().__init__("oracle")
        self.qrels = qrels_by_text

    def _score_many(self, queries, docs_lists, show_progress=False):
        return [
            np.array([float(self.qrels[q].get(d.id, 0)) for d in docs])
            for q, docs in zip(queries, docs_lists)
        ]


@pytest.fixture(scope="module")
def exp(tmp_path_factory):
    ds = load_dataset("trec-dl-2019")
    oracle = Oracle({ds.queries[q]: ds.qrels[q] for q in ds.qrels})
    cfg = {
        "name": "directions",
        "datasets": ["trec-dl-2019"],
        "rerankers": [{"name": "reverse", "ranker": Reverse()}, {"name": "oracle", "ranker": oracle}],
        "depths": [20],
        "metrics": ["nDCG@10", "RR@10"],
        "significance": {"resamples": 2000, "seed": 7},
    }
    out = tmp_path_factory.mktemp("directions")
    return run_experiment(cfg, out_dir=out), out


def _comparison(group, system, metric):
    (c,) = [c for c in group.analysis["comparisons"] if c["system"] == system and c["metric"] == metric]
    return c


def test_marks_show_direction_and_name_tests_and_correction(exp):
    res, out = exp
    (g,) = res.groups
    worse, better = _comparison(g, "reverse@20", "nDCG@10"), _comparison(g, "oracle@20", "nDCG@10")
    assert worse["direction"] == "worse" and worse["mean_diff"] < 0
    assert better["direction"] == "better" and better["mean_diff"] > 0
    assert worse["significant_by"] == better["significant_by"] == ["t", "randomization", "bootstrap"]
    md = (out / "summary.md").read_text(encoding="utf-8")
    ev = g.evals
    low = f"{ev['reverse@20'].aggregate['nDCG@10']:.4f}▼†‡§"
    high = f"{ev['oracle@20'].aggregate['nDCG@10']:.4f}▲†‡§"
    assert f"| reverse@20 | {low} |" in md and f"| oracle@20 | {high} |" in md
    legend = md.splitlines()[2]
    for words in (
        "▲ / ▼",
        "better / worse",
        "Holm-Bonferroni",
        "† paired t-test",
        "‡ paired randomisation",
        "§ paired bootstrap",
        "95 % paired bootstrap",
        "2000 resamples",
        "seed 7",
        "+ / −",
    ):
        assert words in legend
    html = (out / "report.html").read_text(encoding="utf-8")
    assert low in html and high in html and "Holm-Bonferroni" in html


def test_bootstrap_interval_and_improved_degraded_counts(exp):
    res, out = exp
    (g,) = res.groups
    base = g.evals[g.units[0].label].per_query
    for system in ("reverse@20", "oracle@20"):
        for metric in ("nDCG@10", "RR@10"):
            c = _comparison(g, system, metric)
            sys_q = g.evals[system].per_query[metric]
            assert (c["ci_low"], c["ci_high"]) == bootstrap_ci(sys_q, base[metric], 2000, 7)
            assert c["ci_low"] <= c["mean_diff"] <= c["ci_high"]
            diffs = [sys_q[q] - base[metric][q] for q in base[metric]]
            assert c["mean_diff"] == pytest.approx(np.mean(diffs))
            assert c["improved"] == sum(d > 1e-12 for d in diffs)
            assert c["degraded"] == sum(d < -1e-12 for d in diffs)
            assert c["improved"] + c["degraded"] + c["unchanged"] == len(diffs) == 43
            assert c["p"]["t"] == pytest.approx(paired_t_test(sys_q, base[metric]).p_value)
    md = (out / "summary.md").read_text(encoding="utf-8")
    c = _comparison(g, "oracle@20", "nDCG@10")
    ci = f"{c['mean_diff']:+.4f} [{c['ci_low']:+.4f}, {c['ci_high']:+.4f}]"
    row = f"| oracle@20 | bm25 | nDCG@10 | {c['mean_diff']:+.4f} | [{c['ci_low']:+.4f}, {c['ci_high']:+.4f}]"
    assert f"| {ci} | {c['improved']} | {c['degraded']} |" in md  # main table: Δ (CI), +, −
    assert "Significance (vs the baseline" in md and row in md  # the significance table, in summary.md too
    sig_rows = [
        line
        for line in md.splitlines()
        if line.startswith(("| reverse@20 | bm25 | ", "| oracle@20 | bm25 | "))
    ]
    sig_rows = [line for line in sig_rows if "| nDCG@10 |" in line or "| RR@10 |" in line]
    assert len(sig_rows) == 4 and all(r.rstrip(" |").endswith(("▼†‡§", "▲†‡§")) for r in sig_rows)
    data = json.loads((out / "results.json").read_text())
    assert data["groups"][0]["analysis"]["comparisons"][0]["confidence"] == 0.95


def test_real_depths_fold_depths_beyond_the_candidates():
    assert real_depths([10, 50, 200, 500], 100) == ([10, 50, 100], [200, 500])
    assert real_depths([10, 100, 200], 100) == ([10, 100], [200])
    assert real_depths([5, 20], 100) == ([5, 20], [])


@pytest.mark.parametrize(
    "depths,labels,note",
    [
        ([50, 200], ["bm25@50", "bm25@100"], "evaluated once as bm25@100 (every candidate)"),
        ([100, 200], ["bm25@100"], "not evaluated (the same re-ranking as bm25@100)"),
    ],
)
def test_depth_beyond_the_candidate_list_is_not_a_new_system(tmp_path, depths, labels, note):
    cfg = {
        "datasets": [{"name": "dl19", "source": "trec-dl-2019", "max_queries": 3}],
        "rerankers": ["bm25"],
        "depths": depths,
        "metrics": ["nDCG@10"],
        "significance": {"resamples": 100},
    }
    res = run_experiment(cfg, out_dir=tmp_path)
    (g,) = res.groups
    assert [u.label for u in g.units] == ["bm25", *labels]
    assert res.computed == [f"dl19/bm25/{lab}" for lab in labels]
    assert not any("@200" in p.name for p in (tmp_path / "cache").iterdir())
    expected = f"bm25: depth 200 exceeds the 100 candidates per query of first stage 'bm25'; {note}"
    assert g.notes == [expected]
    assert f"note: {expected}" in (tmp_path / "summary.md").read_text(encoding="utf-8")
    assert json.loads((tmp_path / "results.json").read_text())["groups"][0]["notes"] == [expected]
