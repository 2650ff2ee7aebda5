"""``unirank fuse`` and :mod:`unirank.eval.fuse` against ranx (the oracle): the same fused scores and order
for every method and norm both support, the same tuned weights as ranx's ``optimize_fusion``, and the
documented differences (constant lists, ranx's unequal query sets) shown rather than hidden."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest

ranx = pytest.importorskip("ranx")
pytest.importorskip("ir_measures")

from unirank.cli import main  # noqa: E402
from unirank.eval import dataset_folder, read_qrels, read_trec_run, write_trec_run  # noqa: E402
from unirank.eval.fuse import fuse_runs, grid_weights, tune_weights  # noqa: E402

DL19 = dataset_folder("trec-dl-2019")
# ranx's names for unirank's methods and norms
METHODS = {
    "rrf": "rrf",
    "combsum": "sum",
    "combmnz": "mnz",
    "combmax": "max",
    "combmin": "min",
    "combanz": "anz",
}
NORMS = {"minmax": "min-max", "max": "max", "sum": "sum", "zscore": "zmuv", "none": None}


def _runs(
    n_queries: int = 8, seed: int = 0, positive: bool = False
) -> list[dict[str, list[tuple[str, float]]]]:
    """Three runs over the same queries: overlapping, different lengths, distinct continuous scores."""
    rng = np.random.default_rng(seed)
    runs: list[dict[str, list[tuple[str, float]]]] = [{}, {}, {}]
    for q in range(n_queries):
        pool = [f"d{q}_{i}" for i in range(60)]
        for r, (lo, hi, size) in enumerate([(0, 40, 30), (10, 60, 35), (5, 55, 20)]):
            docs = rng.choice(pool[lo:hi], size=size, replace=False)
            scores = rng.gamma(2.0, 3.0, size) if positive else rng.normal(r * 5.0, 1.0 + r, size)
            runs[r][f"q{q}"] = sorted(zip(docs.tolist(), scores.tolist()), key=lambda x: -x[1])
    return runs


def _ranx(run: dict[str, list[tuple[str, float]]]):
    return ranx.Run({q: dict(r) for q, r in run.items()})


def _assert_same(ours: dict[str, list[tuple[str, float]]], theirs) -> None:
    expected = theirs.to_dict()
    assert sorted(ours) == sorted(expected)
    for q, ranking in ours.items():
        assert dict(ranking) == pytest.approx(expected[q], rel=1e-12, abs=1e-12), q
        scores = [s for _, s in ranking]
        assert scores == sorted(scores, reverse=True)  # ranx's order: score, descending (ties: unspecified)


@pytest.mark.parametrize("method", [m for m in METHODS if m != "rrf"])
@pytest.mark.parametrize("norm", list(NORMS))
def test_equals_ranx_fuse(method: str, norm: str) -> None:
    runs = _runs(positive=norm == "max")
    ours = fuse_runs(runs, method, norm=norm)
    theirs = ranx.fuse([_ranx(r) for r in runs], norm=NORMS[norm], method=METHODS[method])
    _assert_same(ours, theirs)


@pytest.mark.parametrize("k", [60, 1, 10])
def test_rrf_equals_ranx(k: int) -> None:
    runs = _runs(seed=1)
    theirs = ranx.fuse([_ranx(r) for r in runs], norm=None, method="rrf", params={"k": k})
    _assert_same(fuse_runs(runs, "rrf", k=k), theirs)


@pytest.mark.parametrize("norm", ["minmax", "zscore"])
def test_weighted_combsum_equals_ranx_wsum(norm: str) -> None:
    runs = _runs(seed=2)
    weights = [0.2, 0.5, 0.3]
    theirs = ranx.fuse([_ranx(r) for r in runs], norm=NORMS[norm], method="wsum", params={"weights": weights})
    _assert_same(fuse_runs(runs, "combsum", norm=norm, weights=weights), theirs)


def test_cli_equals_ranx_on_run_files(tmp_path, capsys) -> None:
    runs = _runs(seed=3)
    paths = []
    for i, run in enumerate(runs):
        paths.append(tmp_path / f"run{i}.trec")
        write_trec_run(run, paths[-1], tag=f"r{i}")
    out = tmp_path / "fused.trec"
    argv = ["fuse", *map(str, paths), "--method", "combmnz", "--norm", "zmuv", "--out", str(out)]
    assert main(argv) == 0
    assert "fused 3 runs (combmnz, norm zscore)" in capsys.readouterr().out
    theirs = ranx.fuse([ranx.Run.from_file(str(p), kind="trec") for p in paths], norm="zmuv", method="mnz")
    _assert_same(read_trec_run(out), theirs)
    assert main(["fuse", *map(str, paths), "--method", "rrf", "--top-k", "5", "--out", str(out)]) == 0
    fused = read_trec_run(out)
    expected = ranx.fuse([_ranx(r) for r in runs], norm=None, method="rrf").to_dict()
    for q, ranking in fused.items():
        assert [d for d, _ in ranking] == sorted(expected[q], key=lambda d: -expected[q][d])[:5]


def test_documented_differences_from_ranx() -> None:
    # A constant list (here: one document) normalises to 1.0 under minmax; ranx's 1e-9 divisor gives 0.0.
    a = {"q": [("x", 5.0)]}
    b = {"q": [("y", 2.0), ("x", 1.0)]}
    ours = dict(fuse_runs([a, b], "combsum", norm="minmax")["q"])
    theirs = ranx.fuse([_ranx(a), _ranx(b)], norm="min-max", method="sum").to_dict()["q"]
    assert ours == {"x": 1.0, "y": 1.0} and theirs == pytest.approx({"x": 0.0, "y": 1.0})
    # Unequal query sets: ranx refuses them; here each query is fused over the runs that have it.
    with pytest.raises(AssertionError):
        ranx.fuse([_ranx(a), _ranx({"q": b["q"], "other": [("z", 1.0)]})], method="sum")
    fused = fuse_runs([a, {"q": b["q"], "other": [("z", 1.0)]}], "rrf")
    assert fused["other"] == [("z", pytest.approx(1 / 61))]


def test_grid_is_ranx_grid_where_ranx_keeps_every_point() -> None:
    from ranx.fusion_optimization.optimize_weights import get_possible_weights, get_trial_configs

    assert grid_weights(2, 0.1) == [tuple(w) for w in get_trial_configs(get_possible_weights(0.1), 2)]
    ours3, theirs3 = grid_weights(3, 0.1), get_trial_configs(get_possible_weights(0.1), 3)
    assert len(ours3) == 66 and set(theirs3) < set(ours3)  # ranx drops e.g. (0.1, 0.2, 0.7): float sum != 1


def _dev_setup():
    qrels = read_qrels(DL19 / "qrels" / "test.tsv")
    bm25 = read_trec_run(DL19 / "runs" / "bm25.top100.trec")
    rng = np.random.default_rng(4)
    # A second, noisy "model" run: the grade plus noise, over the same candidates.
    noisy = {
        q: sorted(((d, qrels[q].get(d, 0) + rng.normal(0, 1.2)) for d, _ in r), key=lambda x: -x[1])
        for q, r in bm25.items()
    }
    return qrels, [bm25, noisy]


def test_tuned_weights_equal_ranx_optimize_fusion(tmp_path, capsys) -> None:
    qrels, runs = _dev_setup()
    weights, score = tune_weights(runs, qrels, "combsum", metric="nDCG@10", norm="minmax")
    best = ranx.optimize_fusion(
        ranx.Qrels(qrels), [_ranx(r) for r in runs], norm="min-max", method="wsum", metric="ndcg@10",
        show_progress=False,
    )  # fmt: skip
    assert list(weights) == pytest.approx(best["weights"])
    fused = ranx.fuse([_ranx(r) for r in runs], norm="min-max", method="wsum", params=best)
    assert score == pytest.approx(ranx.evaluate(ranx.Qrels(qrels), fused, "ndcg@10"), abs=1e-9)
    assert 0 < weights[0] < 1  # both runs help
    # The command line: tune on the qrels, then fuse every query with those weights.
    paths = [tmp_path / "bm25.trec", tmp_path / "noisy.trec"]
    for p, r in zip(paths, runs):
        write_trec_run(r, p)
    qrels_path = DL19 / "qrels" / "test.tsv"
    out = tmp_path / "fused.trec"
    argv = ["fuse", *map(str, paths), "--method", "combsum", "--tune-on", str(qrels_path), "--out", str(out)]
    assert main(argv) == 0
    assert f"tuned weights {list(weights)}: nDCG@10 {score:.4f}" in capsys.readouterr().out
    assert read_trec_run(out) == fuse_runs(runs, "combsum", weights=weights)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--method", "borda"], "unknown fusion method"),
        (["--norm", "rank"], "unknown norm"),
        (["--weights", "1", "2", "3"], "3 weights for 2 rankings"),
        (["--method", "combsum", "--norm", "max"], "norm 'max' needs scores >= 0"),
        (["--step", "0.3", "--tune-on", "QRELS"], "step must divide 1"),
        (["--weights", "1", "1", "--tune-on", "QRELS"], "exclude each other"),
    ],
)
def test_bad_input_is_refused(tmp_path, capsys, argv, message) -> None:
    runs = _runs(n_queries=2, seed=5)  # normal scores: some negative
    paths = []
    for i, run in enumerate(runs[:2]):
        paths.append(str(tmp_path / f"r{i}.trec"))
        write_trec_run(run, paths[-1])
    qrels = tmp_path / "qrels.txt"
    qrels.write_text("q0 0 d0_1 1\n")
    argv = [str(qrels) if a == "QRELS" else a for a in argv]
    assert main(["fuse", *paths, *argv, "--out", str(tmp_path / "o.trec")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o.trec").exists()
    assert main(["fuse", paths[0], "--out", str(tmp_path / "o.trec")]) == 2
    assert "at least two runs" in capsys.readouterr().err
