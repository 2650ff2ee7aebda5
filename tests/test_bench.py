"""``unirank bench``: the same inputs through every path, agreement against torch fp32 and the ST oracle."""

from __future__ import annotations

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("sentence_transformers")
pytest.importorskip("scipy")


def test_run_bench_rows_agree_with_sentence_transformers(make_tiny_bert):
    from unirank.bench import format_rows, run_bench

    path = make_tiny_bert("seqcls", seed=5)
    paths = ["torch", "onnx", "onnx-int8", "onnx-prune", "st"]
    rows = run_bench(path, n_queries=2, depth=24, repeats=1, paths=paths, threads=1)
    by = {r["path"]: r for r in rows}
    assert set(by) == set(paths)
    for p in ("torch", "onnx", "st"):  # fp32 paths: unirank's engines and the peer give the same scores
        assert by[p]["max_abs_diff"] < 1e-4, p
        assert by[p]["tau_min"] == pytest.approx(1.0) and by[p]["top10_same"] == 1.0, p
    assert by["onnx-int8"]["max_abs_diff"] > 0  # int8 really ran
    # the pruned path scores its survivors with the fp32 engine: their scores are the reference's
    assert by["onnx-prune"]["max_abs_diff"] < 1e-4 and by["onnx-prune"]["gflops"] is None
    assert 10 / 24 <= by["onnx-prune"]["scored_share"] < 1 and by["onnx"]["scored_share"] == 1
    assert by["st"]["speedup_vs_st"] == pytest.approx(1.0)
    assert all(r["pairs_per_s"] > 0 and (r["gflops"] is None or r["gflops"] > 0) for r in rows)
    table = format_rows(rows)
    assert table.count("\n") == len(rows) + 1 and "| onnx-int8 |" in table and "| onnx-prune |" in table


def test_forward_flops_counts_only_the_cls_row_of_the_last_layer(make_tiny_bert):
    from unirank.backends import hf
    from unirank.bench import forward_flops

    path = make_tiny_bert("seqcls", seed=5)
    cfg = hf.read_json(path / "config.json")
    h, i, n = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    queries, texts = ["what causes rain"], [["rain falls from clouds", "cats"]]
    tok = hf.load_tokenizer(path)
    lengths = [len(f["input_ids"]) for f in hf.tokenize(tok, queries * 2, texts[0], 512)]
    per_layer = sum(2 * t * (4 * h * h + 2 * h * i) + 4 * t * t * h for t in lengths)
    assert forward_flops(path, queries, texts, cls_only_last=False) == pytest.approx(n * per_layer)
    # last layer: keys + values of every token, then one query row through attention and the feed-forward
    last = sum(2 * t * 2 * h * h + 2 * (2 * h * h + 2 * h * i) + 4 * t * h for t in lengths)
    assert forward_flops(path, queries, texts) == pytest.approx((n - 1) * per_layer + last)
