"""Experiment configs, cached units, resuming, and the results against direct re-ranking / evaluation."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from unirank import Reranker
from unirank.eval import evaluate, load_dataset, rerank_run
from unirank.eval.experiment import ConfigError, load_config, run_experiment
from unirank.eval.significance import paired_t_test, randomization_test

pytest.importorskip("matplotlib")
pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[1]


def _cfg(**over):
    cfg = {
        "datasets": [{"name": "dl19", "source": "trec-dl-2019", "max_queries": 8}],
        "rerankers": ["bm25", {"name": "cascade", "spec": "bm25 >> bm25:bm25+@5"}],
        "depths": [5, 20],
        "metrics": ["nDCG@10", "RR@10", "R@100"],
        "significance": {"resamples": 500},
    }
    cfg.update(over)
    return cfg


@pytest.fixture(scope="module")
def first_result(tmp_path_factory):
    out = tmp_path_factory.mktemp("exp")
    return run_experiment(_cfg(), out_dir=out), out


@pytest.mark.parametrize(
    "patch,match",
    [
        ({"dephts": [10]}, r"config: unknown key 'dephts' \(did you mean 'depths'\?\)"),
        ({"depths": [10, "20"]}, r"config.depths\[1\]: expected an integer >= 1, got '20'"),
        ({"depths": []}, r"config.depths: expected a non-empty list"),
        ({"datasets": [{"name": "x", "sorce": "dl19"}]}, r"datasets\[0\]: unknown key 'sorce'"),
        ({"datasets": [{"name": "x"}]}, r"datasets\[0\]: needs 'source'"),
        ({"datasets": [{"source": "dl19", "max_queries": 0}]}, r"datasets\[0\].max_queries"),
        ({"rerankers": [{"name": "a"}]}, r"rerankers\[0\]: give exactly one of 'spec'"),
        ({"rerankers": ["bm25", "bm25"]}, r"rerankers: names must be unique"),
        ({"rerankers": [{"spec": "bm25", "options": {"f": object()}}]}, r"rerankers\[0\].options"),
        ({"metrics": ["nDCG@10", "bogus@3"]}, r"metrics\[1\]: unknown metric 'bogus@3'"),
        ({"main_metric": "AP"}, r"config.main_metric: 'AP' is not one of"),
        ({"baseline": "nope"}, r"config.baseline: 'nope'"),
        ({"significance": {"tests": ["wilcoxon"]}}, r"significance.tests"),
        ({"significance": {"alpha": 1.5}}, r"significance.alpha"),
        ({"significance": {"corection": "bh"}}, r"did you mean 'correction'"),
        ({"first_stages": ["splade"]}, r"config.first_stages\[0\]: expected 'run:<name or path>' or 'bm25'"),
        ({"first_stages": [{"run": "a", "retrieve": "bm25"}]}, r"first_stages\[0\]: give exactly one"),
        ({"analyses": {"tie_threshold": -1}}, r"analyses.tie_threshold"),
        ({"rerankers": []}, r"config.rerankers: required"),
    ],
)
def test_config_errors_name_the_bad_key(patch, match):
    with pytest.raises(ConfigError, match=match):
        load_config(_cfg(**patch))


def test_config_from_yaml_and_bad_yaml(tmp_path):
    good = tmp_path / "c.yaml"
    good.write_text("datasets: [dl19]\nrerankers: [bm25]\ndepths: 10\n")
    cfg = load_config(good)
    assert cfg.depths == [10] and cfg.datasets[0].source == "dl19" and cfg.main_metric == "nDCG@10"
    (tmp_path / "data").mkdir()
    rel = tmp_path / "rel.yaml"
    rel.write_text(
        "datasets: [{name: t, topics: data/t.tsv, qrels: data/q.txt,\n"
        "            corpus: data/c.jsonl, run: data/r.trec}]\n"
        "rerankers: [bm25]\n"
    )
    (ds,) = load_config(rel).datasets
    assert ds.topics == str(tmp_path / "data" / "t.tsv") and ds.runs == {
        "r": str(tmp_path / "data" / "r.trec")
    }
    bad = tmp_path / "bad.yaml"
    bad.write_text("datasets: [dl19\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_example_config_validates_and_its_specs_resolve():
    from unirank.registry import resolve

    cfg = load_config(ROOT / "examples" / "experiment_dl19.yaml")
    assert [d.name for d in cfg.datasets] == ["trec-dl-2019", "scifact"]
    for rr in cfg.rerankers:
        for stage in rr.spec.split(">>"):
            resolve(stage.strip().rsplit("@", 1)[0])
    for ds in cfg.datasets:
        load_dataset(ds.source)


def test_results_equal_direct_rerank_and_evaluate(first_result):
    res, out = first_result
    (group,) = res.groups
    ds = load_dataset("trec-dl-2019")
    qids = [q for q in ds.queries if q in ds.qrels][:8]
    assert sorted(group.dataset.qrels) == sorted(qids)
    first = {q: ds.get_run("bm25")[q] for q in qids}
    labels = [u.label for u in group.units]
    assert labels == ["bm25", "bm25@5", "bm25@20", "cascade@5", "cascade@20"]
    for rr_spec, name in [("bm25", "bm25"), ("bm25 >> bm25:bm25+@5", "cascade")]:
        for depth in (5, 20):
            unit = next(u for u in group.units if u.label == f"{name}@{depth}")
            direct = rerank_run(Reranker(rr_spec), group.dataset, first, depth=depth, show_progress=False)
            assert unit.run == direct
            ev = evaluate(group.dataset.qrels, direct, ["nDCG@10", "RR@10", "R@100"], rel_level=2)
            assert group.evals[unit.label].aggregate == pytest.approx(ev.aggregate)
            assert set(unit.latency) == set(qids) and all(v > 0 for v in unit.latency.values())
            assert unit.candidates == dict.fromkeys(qids, depth)
            # the cascade scores every candidate with bm25, then the top 5 again with bm25+
            assert unit.scored == dict.fromkeys(qids, depth + 5 if name == "cascade" else depth)
    # significance rows: the experiment's numbers are the significance module's on the per-query values
    base = group.evals["bm25"].per_query["nDCG@10"]
    rows = [r for r in group.analysis["significance"] if r["metric"] == "nDCG@10"]
    assert len(rows) == 3 * 4
    for r in rows:
        sys_pq = group.evals[r["system"]].per_query["nDCG@10"]
        if r["test"] == "t":
            assert r["p_value"] == pytest.approx(paired_t_test(sys_pq, base).p_value)
        if r["test"] == "randomization":
            assert r["p_value"] == pytest.approx(randomization_test(sys_pq, base, 500, 0).p_value)
        assert r["p_adjusted"] >= r["p_value"]
    wtl = {r["system"]: r for r in group.analysis["wtl"]}
    for label, r in wtl.items():
        diffs = [group.evals[label].per_query["nDCG@10"][q] - base[q] for q in qids]
        assert (r["wins"], r["losses"]) == (sum(d > 0 for d in diffs), sum(d < 0 for d in diffs))
    # outputs
    for name in ("report.html", "summary.md", "results.json"):
        assert (out / name).is_file()
    data = json.loads((out / "results.json").read_text())
    assert data["groups"][0]["per_query"]["bm25@5"]["nDCG@10"] == pytest.approx(
        group.evals["bm25@5"].per_query["nDCG@10"]
    )


def test_rerun_reuses_cache_and_only_computes_changes(first_result, tmp_path):
    res, out = first_result
    assert len(res.computed) == 4 and res.reused == []
    again = run_experiment(_cfg(), out_dir=out)
    assert again.computed == [] and len(again.reused) == 4
    assert [u.run for u in again.groups[0].units] == [u.run for u in res.groups[0].units]
    more = run_experiment(_cfg(depths=[5, 20, 30]), out_dir=out)
    assert more.computed == ["dl19/bm25/bm25@30", "dl19/bm25/cascade@30"]
    fresh = run_experiment(_cfg(), out_dir=out, resume=False)
    assert len(fresh.computed) == 4 and fresh.reused == []
    # a corrupt cache file is recomputed, not trusted
    victim = sorted((out / "cache").glob("dl19.bm25.bm25@5.*.json.gz"))[0]
    victim.write_bytes(gzip.compress(b"{not json"))
    healed = run_experiment(_cfg(), out_dir=out)
    assert healed.computed == ["dl19/bm25/bm25@5"]


def _write_toy_collection(root: Path, titles: bool) -> None:
    docs = [
        ("d1", "Rain", "Rain falls when water vapour in clouds condenses into droplets."),
        ("d2", "Cats", "Cats purr when they are content."),
        ("d3", "Snow", "Snow forms when water vapour freezes into ice crystals in cold clouds."),
        ("d4", "Sun", "The sun heats the surface and drives evaporation of water."),
    ]
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "corpus.jsonl", "w") as fh:
        for i, t, x in docs:
            fh.write(json.dumps({"_id": i, "title": t if titles else "", "text": x}) + "\n")
    (root / "topics.tsv").write_text(
        "q1\twhat makes rain fall\nq2\thow does snow form\nq3\twhy do cats purr\n"
    )
    (root / "qrels.txt").write_text("q1 0 d1 1\nq2 0 d3 1\nq3 0 d2 1\n")
    (root / "run.trec").write_text(
        "".join(f"q{q} Q0 d{d} {r + 1} {10 - r} x\n" for q in (1, 2, 3) for r, d in enumerate((4, 3, 2, 1)))
    )


def test_trec_files_dataset_with_given_run_and_bm25_first_stage(tmp_path):
    _write_toy_collection(tmp_path / "toy", titles=True)
    t = tmp_path / "toy"
    cfg = {
        "datasets": [
            {
                "name": "toy",
                "topics": str(t / "topics.tsv"),
                "qrels": str(t / "qrels.txt"),
                "corpus": str(t / "corpus.jsonl"),
                "run": str(t / "run.trec"),
            }
        ],
        "first_stages": ["run:run", {"name": "bm25x", "retrieve": "bm25", "k": 4}],
        "rerankers": ["bm25"],
        "depths": [2, 4],
        "significance": {"resamples": 100},
        "analyses": {"lexical_buckets": 2},
    }
    res = run_experiment(cfg, out_dir=tmp_path / "out")
    assert [g.first_stage for g in res.groups] == ["run", "bm25x"]
    given, retrieved = res.groups
    assert given.units[0].run["q1"][0][0] == "d4"  # the given run, as read
    from unirank.methods.lexical import BM25Retriever

    ref = BM25Retriever(fields="multi").index(given.dataset.corpus).retrieve("what makes rain fall", k=4)
    assert [d for d, _ in retrieved.units[0].run["q1"]] == ref.ids
    assert res.computed == [
        "toy/run/bm25@2",
        "toy/run/bm25@4",
        "toy/bm25x",
        "toy/bm25x/bm25@2",
        "toy/bm25x/bm25@4",
    ]
    lex = given.analysis["lexical"]
    assert sum(b["n"] for b in lex) == 3 and len(lex) == 2
    assert run_experiment(cfg, out_dir=tmp_path / "out").computed == []
    # a changed document invalidates the units whose candidates contain it, and the BM25 first stage
    (t / "corpus.jsonl").write_text((t / "corpus.jsonl").read_text().replace("Cats purr", "Cats meow"))
    changed = run_experiment(cfg, out_dir=tmp_path / "out")
    assert "toy/bm25x" in changed.computed and "toy/run/bm25@4" in changed.computed
    assert "toy/run/bm25@2" not in changed.computed  # top 2 of the given run are d4, d3: unchanged


def test_missing_run_is_a_clear_error(tmp_path):
    cfg = _cfg(first_stages=["run:splade"], rerankers=["bm25"])
    with pytest.raises(ValueError, match="dataset 'dl19', first stage 'splade': dataset 'dl19' has no run"):
        run_experiment(cfg, out_dir=tmp_path)


def test_cli_subcommand_runs_a_yaml_config(tmp_path, capsys):
    import argparse

    from unirank.eval.experiment import add_subparser

    cfg = tmp_path / "exp.yaml"
    cfg.write_text(
        "name: cli\ndatasets: [{name: dl19, source: trec-dl-2019, max_queries: 4}]\n"
        "rerankers: [bm25]\ndepths: [3]\nmetrics: [nDCG@10]\nsignificance: {resamples: 100}\n"
    )
    parser = argparse.ArgumentParser(prog="unirank")
    add_subparser(parser.add_subparsers(dest="command", required=True))
    out = tmp_path / "out"
    for resume, expect in (
        (True, "1 units computed, 0 reused"),
        (True, "0 units computed, 1 reused"),
        (False, "1 units computed, 0 reused"),
    ):
        argv = ["experiment", str(cfg), "--out", str(out), "--no-progress"] + (
            [] if resume else ["--no-resume"]
        )
        args = parser.parse_args(argv)
        assert args.func(args) == 0
        text = capsys.readouterr().out
        assert expect in text and "bm25@3" in text
    assert (out / "report.html").is_file()


def test_each_unit_is_timed_with_cold_embedding_cache(make_tiny_bert, tmp_path):
    from unirank.methods.embedding import EmbeddingRanker

    ranker = Reranker(f"embed:{make_tiny_bert(kind='encoder')}")
    assert isinstance(ranker, EmbeddingRanker)
    cfg = _cfg(
        rerankers=[{"name": "tiny", "ranker": ranker}, {"name": "casc", "spec": "bm25 >> bm25@2"}],
        depths=[3, 6],
        datasets=[{"name": "dl19", "source": "trec-dl-2019", "max_queries": 3}],
    )
    res = run_experiment(cfg, out_dir=tmp_path)
    tiny = [u for u in res.groups[0].units if u.reranker == "tiny"]
    # depth 6 re-encodes the 3 documents depth 3 already encoded: no warm cache flatters its latency
    assert ranker.cache_misses >= sum(sum(u.candidates.values()) for u in tiny) == 3 * 3 + 3 * 6
    direct = rerank_run(
        ranker, res.groups[0].dataset, res.groups[0].units[0].run, depth=6, show_progress=False
    )
    for qid, ranking in direct.items():  # same scores (float noise aside: the batches differ)
        assert dict(tiny[1].run[qid]) == pytest.approx(dict(ranking), rel=1e-5, abs=1e-6)
