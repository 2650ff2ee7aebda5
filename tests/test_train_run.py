"""``unirank train`` end to end on tiny fixtures: the loss falls, the dev metric rises, and the saved folder
ranks the same through ``Reranker("ce:OUT")``, its ONNX backend and sentence-transformers' ``CrossEncoder``.

The fixture data is learnable by construction: every relevant document (training positives and judged dev
documents) carries the marker word ``zebra``; non-relevant ones never do. The dev run ranks the relevant
documents last, so the first stage and the untrained model score low; a model that learnt the marker ranks
them first.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("accelerate")
pytest.importorskip("yaml")
pytest.importorskip("ir_measures")

WORDS = (
    "river mountain cloud stone forest window garden bridge candle harbor silver meadow planet violin "
    "lantern orchard desert castle engine pepper marble canyon rocket tunnel walnut falcon"
).split()
MARKER = "zebra"


def _text(rng: random.Random, n: int, marker: bool) -> str:
    words = [rng.choice(WORDS) for _ in range(n)]
    if marker:
        words.insert(rng.randrange(n + 1), MARKER)
    return " ".join(words)


def write_fixture(root: Path, *, n_train: int = 48, n_dev: int = 8, seed: int = 0) -> dict[str, Path]:
    """Training triples (one positive with the marker, three negatives without) and a BEIR dev folder
    whose ``runs/bm25.trec`` puts the two relevant documents of each query at the bottom of ten."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    triples = root / "triples.jsonl"
    with open(triples, "w", encoding="utf-8") as fh:
        for i in range(n_train):
            row = {
                "query": f"train query {i} " + _text(rng, 3, False),
                "positive": _text(rng, 8, True),
                "negatives": [_text(rng, 8, False) for _ in range(3)],
            }
            fh.write(json.dumps(row) + "\n")
    dev = root / "dev"
    (dev / "qrels").mkdir(parents=True)
    (dev / "runs").mkdir()
    corpus, queries, qrels, run = [], [], [], []
    for q in range(n_dev):
        qid = f"q{q}"
        queries.append({"_id": qid, "text": f"dev question {q} " + _text(rng, 3, False)})
        for d in range(10):
            did = f"{qid}d{d}"
            relevant = d >= 8
            corpus.append({"_id": did, "title": "", "text": _text(rng, 8, relevant)})
            if relevant:
                qrels.append(f"{qid}\t{did}\t1")
            run.append(f"{qid} Q0 {did} {d + 1} {10 - d}.0 bm25")
    (dev / "corpus.jsonl").write_text("".join(json.dumps(c) + "\n" for c in corpus), encoding="utf-8")
    (dev / "queries.jsonl").write_text("".join(json.dumps(c) + "\n" for c in queries), encoding="utf-8")
    (dev / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(qrels) + "\n")
    (dev / "runs" / "bm25.trec").write_text("\n".join(run) + "\n")
    return {"triples": triples, "dev": dev}


def tiny_config(model: Path, files: dict[str, Path], **over) -> dict:
    cfg = {
        "model": str(model),
        "max_length": 48,
        "data": {"group_size": 4, "train": [{"triples": str(files["triples"])}]},
        "dev": {"dataset": str(files["dev"]), "run": "bm25", "depth": 10, "metric": "ndcg@10"},
        "loss": "softmax_ce",
        "optimizer": {"name": "adamw", "lr": 5e-3, "weight_decay": 0.01},
        "schedule": {"name": "constant", "warmup_ratio": 0.0},
        "batch_size": 4,
        "max_steps": 24,
        "eval_steps": 12,
        "save_steps": 12,
        "logging_steps": 4,
        "precision": "fp32",
        "seed": 7,
    }
    cfg.update(over)
    return cfg


@pytest.fixture(scope="module")
def trained(make_tiny_bert, tmp_path_factory):
    import torch

    from unirank.train import train
    from unirank.train._eval import DevSet, LiveCrossEncoder
    from unirank.train._model import load_for_training

    root = tmp_path_factory.mktemp("train-run")
    files = write_fixture(root / "data")
    model = make_tiny_bert("seqcls", num_labels=1, seed=3)
    cfg = tiny_config(model, files)
    dev = DevSet({**cfg["dev"], "split": "test", "queries": {}})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model trains fastest on one thread of a busy machine
    try:
        start = load_for_training(str(model), max_length=48, seed=7)
        before = dev.score(LiveCrossEncoder(start.model, start.tokenizer, 48))
        res = train(cfg, root / "out", show_progress=False)
    finally:
        torch.set_num_threads(threads)
    return {"res": res, "before": before, "dev": dev, "files": files, "model": model, "root": root}


def test_training_lowers_the_loss_and_raises_the_dev_metric(trained):
    res = trained["res"]
    losses = [row["loss"] for row in res.history if "loss" in row]
    evals = [row["eval_ndcg@10"] for row in res.history if "eval_ndcg@10" in row]
    assert len(losses) >= 4 and len(evals) == 2
    assert losses[-1] < 0.5 * losses[0], losses
    assert res.best_metric == max(evals)
    assert res.best_metric > trained["before"] + 0.3, (trained["before"], evals)
    assert res.best_metric > trained["dev"].first_stage_score() + 0.3
    assert res.steps == 24 and res.best_step in (12, 24)


def test_output_folder_is_a_standard_model_with_a_summary(trained):
    out = trained["res"].out
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "unirank_train.json",
    ):
        assert (out / name).is_file(), name
    summary = json.loads((out / "unirank_train.json").read_text())
    assert summary["best_step"] == trained["res"].best_step
    assert summary["config"]["loss"] == "softmax_ce" and summary["versions"]["transformers"]
    assert json.loads((out / "config.json").read_text())["architectures"] == ["BertForSequenceClassification"]
    # the saved model is the best checkpoint: re-scored through the public path it gives the best metric
    from unirank import Reranker

    again = trained["dev"].score(Reranker(f"ce:{out}", device="cpu"))
    assert again == pytest.approx(trained["res"].best_metric, abs=1e-9)


def test_saved_model_ranks_the_same_three_ways(trained):
    """``ce:`` (torch), ``ce:`` with the ONNX backend, and sentence-transformers' ``CrossEncoder`` (the
    oracle, with its default sigmoid replaced by the identity so that raw logits are compared)."""
    import numpy as np

    st = pytest.importorskip("sentence_transformers")
    pytest.importorskip("onnxruntime")
    from unirank import Reranker

    out = str(trained["res"].out)
    rng = random.Random(5)
    query = "dev question 99 river stone"
    docs = [_text(rng, 8, i % 3 == 0) for i in range(9)]

    def scores(ranker) -> np.ndarray:
        return np.array([r.score for r in sorted(ranker.rank(query, docs).results, key=lambda r: r.index)])

    torch_scores = scores(Reranker(f"ce:{out}", device="cpu"))
    onnx_scores = scores(Reranker(f"ce:{out}", backend="onnx", device="cpu"))
    import torch

    st_logits = st.CrossEncoder(out, device="cpu", activation_fn=torch.nn.Identity()).predict(
        [(query, d) for d in docs]
    )
    np.testing.assert_allclose(torch_scores, st_logits, atol=1e-5)
    np.testing.assert_allclose(onnx_scores, torch_scores, atol=1e-4)
    order = list(np.argsort(-np.asarray(st_logits)))
    assert list(np.argsort(-torch_scores)) == order == list(np.argsort(-onnx_scores))
