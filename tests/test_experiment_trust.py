"""The experiment runner under evaluation input that used to give plausible, wrong numbers (issue 14, items 3
and 6): judged queries without text, the relevance level, empty first stages.

Oracle for the relevance level: ``pytrec_eval`` called directly with an explicit ``relevance_level``.
"""

from __future__ import annotations

import argparse
import html
import json
import math
import random
from pathlib import Path

import pytest

from unirank.errors import EvalInputError
from unirank.eval import evaluate, read_trec_run
from unirank.eval.experiment import ConfigError, add_subparser, load_config, run_experiment

pytest.importorskip("matplotlib")
pytest.importorskip("ir_measures")

WORDS = "rain cloud water storm wind snow river lake ocean sun heat cold ice fog".split()


def _collection(root: Path, blank: tuple[str, ...] = (), absent: tuple[str, ...] = (), seed: int = 3) -> Path:
    """A BEIR folder: 5 queries with graded qrels (0-3), 30 documents, a scored run over every query.
    Queries in ``blank`` have empty text, those in ``absent`` no line in queries.jsonl at all."""
    rng = random.Random(seed)
    (root / "qrels").mkdir(parents=True)
    (root / "runs").mkdir()
    docs = {f"d{i}": " ".join(rng.choices(WORDS, k=8)) for i in range(30)}
    with (root / "corpus.jsonl").open("w") as fh:
        fh.writelines(json.dumps({"_id": d, "title": "", "text": t}) + "\n" for d, t in docs.items())
    qids = [f"q{i}" for i in range(5)]
    with (root / "queries.jsonl").open("w") as fh:
        for q in qids:
            if q not in absent:
                text = "" if q in blank else " ".join(rng.sample(WORDS, 2))
                fh.write(json.dumps({"_id": q, "text": text}) + "\n")
    with (root / "qrels" / "test.tsv").open("w") as fh:
        fh.write("query-id\tcorpus-id\tscore\n")
        for q in qids:
            grades = [1, 2, 3] + [rng.choice([0, 0, 1, 1, 2, 3]) for _ in range(9)]
            for d, g in zip(rng.sample(sorted(docs), 12), grades):
                fh.write(f"{q}\t{d}\t{g}\n")
    with (root / "runs" / "first.trec").open("w") as fh:
        for q in qids:
            for r, d in enumerate(rng.sample(sorted(docs), 20)):
                fh.write(f"{q} Q0 {d} {r + 1} {40 - r + rng.random():.4f} x\n")
    return root


def _cfg(folder: Path, **over):
    cfg = {
        "name": "trust",
        "datasets": [{"name": "coll", "source": str(folder)}],
        "first_stages": ["run:first"],
        "rerankers": ["bm25"],
        "depths": [5, 10],
        "metrics": ["nDCG@10", "RR", "AP", "P@5", "R@10"],
        "significance": {"resamples": 50},
        "analyses": {"lexical_buckets": 2},
    }
    cfg.update(over)
    return cfg


def _units(out: Path) -> list[Path]:
    return sorted((out / "cache").glob("*@*.json.gz")) if (out / "cache").is_dir() else []


# -- item 6: judged queries without text --------------------------------------------------------------------
def test_judged_query_without_text_is_refused_before_any_unit(tmp_path):
    coll = _collection(tmp_path / "c", blank=("q1",), absent=("q3",))
    out = tmp_path / "out"
    with pytest.raises(EvalInputError, match=r"2 judged queries .* have no text: \['q1', 'q3'\]") as info:
        run_experiment(_cfg(coll), out_dir=out)
    assert info.value.qids == ["q1", "q3"]
    assert "skip-queries-without-text" in str(info.value)
    assert _units(out) == []  # refused before any re-ranking


def _check_skipped_everywhere(res, coll: Path, out: Path, skipped: set[str]) -> None:
    (group,) = res.groups
    assert set(group.skipped_queries) == skipped
    kept = {f"q{i}" for i in range(5)} - skipped
    qrels = {q: v for q, v in group.dataset.qrels.items() if q in kept}
    first = read_trec_run(coll / "runs" / "first.trec")
    for (
        label,
        ev,
    ) in group.evals.items():  # every row is over the same queries: nothing scored 0 in one row only
        for metric, values in ev.per_query.items():
            assert set(values) == kept, (label, metric)
        assert set(ev.skipped_queries) == skipped
    want = evaluate(qrels, {q: first[q] for q in kept}, ["nDCG@10", "AP"], rel_level=1).aggregate
    assert group.evals["first"].aggregate["nDCG@10"] == pytest.approx(want["nDCG@10"], abs=1e-12)
    assert group.evals["first"].aggregate["AP"] == pytest.approx(want["AP"], abs=1e-12)
    for unit in group.units:
        assert set(unit.run) == kept  # no first stage or re-ranker ranked a skipped query
        written = read_trec_run(out / "runs" / "coll" / "first" / f"{unit.label}.trec")
        assert set(written) == kept
    n = len(skipped)
    note = f"{n} judged quer{'y' if n == 1 else 'ies'} without text skipped in every row"
    assert note in res.summary_text()
    assert note in (out / "summary.md").read_text() and note in (out / "report.html").read_text()
    data = json.loads((out / "results.json").read_text())["groups"][0]
    assert set(data["skipped_queries"]) == skipped and data["means_over_queries"] == len(kept)


def test_skip_queries_without_text_drops_them_from_every_row(tmp_path):
    coll = _collection(tmp_path / "c", blank=("q1",), absent=("q3",))
    out = tmp_path / "cfg"
    res = run_experiment(_cfg(coll, skip_queries_without_text=True), out_dir=out)
    _check_skipped_everywhere(res, coll, out, {"q1", "q3"})
    assert "coll: 5 judged queries, 3 with text; means over 3 judged queries" in res.summary_text()
    # the same through the Python argument, which wins over the config
    arg = run_experiment(
        _cfg(coll, skip_queries_without_text=False), tmp_path / "arg", skip_queries_without_text=True
    )
    _check_skipped_everywhere(arg, coll, tmp_path / "arg", {"q1", "q3"})
    with pytest.raises(EvalInputError):
        run_experiment(
            _cfg(coll, skip_queries_without_text=True), tmp_path / "no", skip_queries_without_text=False
        )


def test_cli_flags_skip_and_rel_level(tmp_path, capsys):
    coll = _collection(tmp_path / "c", blank=("q2",))
    cfg = tmp_path / "exp.json"
    cfg.write_text(json.dumps(_cfg(coll)))
    parser = argparse.ArgumentParser(prog="unirank")
    add_subparser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["experiment", str(cfg), "--out", str(tmp_path / "o"), "--no-progress"])
    with pytest.raises(EvalInputError, match=r"\['q2'\]"):
        args.func(args)
    argv = ["experiment", str(cfg), "--out", str(tmp_path / "o"), "--no-progress"]
    args = parser.parse_args([*argv, "--skip-queries-without-text", "--rel-level", "3"])
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert "1 judged query without text skipped in every row" in text
    assert "binary metrics count grade >= 3 (rel_level 3)" in text


def test_all_judged_queries_without_text_is_an_error_even_when_skipping(tmp_path):
    coll = _collection(tmp_path / "c", blank=tuple(f"q{i}" for i in range(5)))
    with pytest.raises(EvalInputError, match="none of its 5 judged queries has text"):
        run_experiment(_cfg(coll, skip_queries_without_text=True), out_dir=tmp_path / "out")


# -- item 3: the relevance level ----------------------------------------------------------------------------
def _oracle(qrels, run, level: int) -> dict[str, float]:
    pytrec_eval = pytest.importorskip("pytrec_eval")
    names = {"recip_rank": "RR", "map": "AP", "P_5": "P@5", "recall_10": "R@10", "ndcg_cut_10": "nDCG@10"}
    scored = {q: dict(r) for q, r in run.items()}
    per = pytrec_eval.RelevanceEvaluator(qrels, set(names), relevance_level=level).evaluate(scored)
    return {
        ours: math.fsum(per.get(q, {}).get(m, 0.0) for q in qrels) / len(qrels) for m, ours in names.items()
    }


@pytest.mark.parametrize(
    "where,level",
    [("unirank.json", 2), ("config", 3), ("dataset", 2), ("argument", 3), ("default", 1)],
)
def test_rel_level_reaches_every_measure_and_the_header(tmp_path, where, level):
    coll = _collection(tmp_path / "c")
    cfg = _cfg(coll)
    kwargs = {}
    if where == "unirank.json":
        (coll / "unirank.json").write_text(json.dumps({"rel_level": level}))
    elif where == "config":
        (coll / "unirank.json").write_text(json.dumps({"rel_level": 2}))  # the config's key wins
        cfg["rel_level"] = level
    elif where == "dataset":
        cfg["rel_level"] = 3  # a dataset's own key wins over the config's
        cfg["datasets"][0]["rel_level"] = level
    elif where == "argument":  # --rel-level wins over everything
        cfg["datasets"][0]["rel_level"] = 2
        kwargs["rel_level"] = level
    out = tmp_path / "out"
    res = run_experiment(cfg, out_dir=out, **kwargs)
    (group,) = res.groups
    assert group.rel_level == level
    qrels = group.dataset.qrels
    for unit in group.units:
        got = group.evals[unit.label].aggregate
        want = _oracle(qrels, unit.run, level)
        for name, value in want.items():
            assert got[name] == pytest.approx(value, abs=1e-9), (unit.label, name)
    if level > 1:  # the levels really differ on this collection
        first = group.units[0].run
        assert _oracle(qrels, first, level)["AP"] != pytest.approx(_oracle(qrels, first, 1)["AP"])
    header = f"binary metrics count grade >= {level} (rel_level {level})"
    assert header in res.summary_text()
    assert header in (out / "summary.md").read_text()
    assert html.escape(header) in (out / "report.html").read_text()
    assert json.loads((out / "results.json").read_text())["groups"][0]["rel_level"] == level


@pytest.mark.parametrize(
    "patch,match",
    [
        ({"rel_level": 0}, r"config.rel_level: expected an integer >= 1, got 0"),
        ({"rel_level": "2"}, r"config.rel_level"),
        ({"skip_queries_without_text": "yes"}, r"config.skip_queries_without_text: expected true or false"),
        ({"skip_queries_without_txt": True}, r"did you mean 'skip_queries_without_text'"),
    ],
)
def test_config_keys_are_validated(tmp_path, patch, match):
    with pytest.raises(ConfigError, match=match):
        load_config(_cfg(tmp_path, **patch))


# -- empty units ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "lines,match",
    [
        ("", r"dataset 'coll', first stage 'first': the run has no queries"),
        (
            "x1 Q0 d1 1 3.0 r\nx2 Q0 d2 1 2.0 r\n",
            r"dataset 'coll', first stage 'first': none of the run's 2 ",
        ),
    ],
)
def test_empty_first_stage_is_a_typed_error_naming_it(tmp_path, lines, match):
    coll = _collection(tmp_path / "c")
    (coll / "runs" / "first.trec").write_text(lines)
    out = tmp_path / "out"
    with pytest.raises(EvalInputError, match=match):
        run_experiment(_cfg(coll), out_dir=out)
    assert _units(out) == []  # nothing re-ranked over an empty first stage


def test_dataset_without_judged_queries_is_a_typed_error(tmp_path):
    coll = _collection(tmp_path / "c")
    (coll / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n")
    with pytest.raises(EvalInputError, match=r"dataset 'coll': no judged query"):
        run_experiment(_cfg(coll), out_dir=tmp_path / "out")
