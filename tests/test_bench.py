"""``unirank bench``: the same inputs through every path, agreement against torch fp32 and the ST oracle."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
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


# ------------------------------------------------------ unirank bench --device (issue 16's GPU side)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def device_run(tmp_path_factory, minilm_path):
    """One CPU dry run of ``unirank bench --device cpu`` through the CLI: (jsonl rows, printed tables)."""
    import contextlib
    import io

    import torch

    from unirank.cli import main

    out = tmp_path_factory.mktemp("device-bench") / "rows.jsonl"
    argv = "bench --device cpu --sizes tiny --queries 2 --depth 8 --repeats 1 --parity-queries 2".split()
    argv += ["--peer-dtype", "bf16", "--threads", "1", "--tokenizer", str(minilm_path)]
    buf = io.StringIO()
    threads = torch.get_num_threads()  # --threads sets it for the process: give it back to the other tests
    try:
        with contextlib.redirect_stdout(buf):
            assert main([*argv, "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    return [json.loads(line) for line in out.read_text().splitlines()], buf.getvalue()


def test_device_bench_rows_on_cpu(device_run):
    rows, table = device_run
    env, inputs = rows[0], rows[1]
    assert env["event"] == "env" and env["device"] == "cpu" and env["torch_threads"] == 1
    assert inputs["datasets"][0] == "trec-dl-2019" and inputs["queries"] == 2 and inputs["pairs"] == 16
    timed = {(r["event"], r["path"]): r for r in rows if r["event"] in ("ce", "embed")}
    assert set(timed) == {
        ("ce", "st-b32"), ("ce", "st-b256"), ("ce", "floor-float32"), ("ce", "floor-bfloat16"),
        ("ce", "tokenize-only"), ("ce", "unirank-default"),
        ("embed", "st-encode-per-query"), ("embed", "st-encode-all"), ("embed", "unirank-default"),
    }  # fmt: skip
    assert timed[("ce", "st-b32")]["dtype"] == "bfloat16"  # --peer-dtype reached sentence-transformers
    for r in timed.values():
        assert r["s_median"] > 0 and r["pairs_s"] == pytest.approx(16 / r["s_median"])
    ce, emb = timed[("ce", "unirank-default")], timed[("embed", "unirank-default")]
    assert ce["dtype"] == "float32" and ce["x_st_best"] == pytest.approx(
        min(timed[("ce", p)]["s_median"] for p in ("st-b32", "st-b256")) / ce["s_median"]
    )
    assert ce["floor_share"] == pytest.approx(
        min(timed[("ce", p)]["s_median"] for p in ("floor-float32", "floor-bfloat16")) / ce["s_median"]
    )
    assert timed[("ce", "floor-float32")]["padding_overhead"] >= 1
    assert emb["st_best"] in ("st-encode-per-query", "st-encode-all")
    # parity on the same weights: fp32 unirank equals fp32 sentence-transformers; fp16 / bf16 rank alike
    par = {(r["kind"], r["path"]): r for r in rows if r["event"] == "parity"}
    assert par[("ce", "unirank-fp32")]["max_abs_diff"] < 1e-5 and par[("ce", "unirank-fp32")]["tau_min"] == 1
    assert par[("ce", "unirank-default")]["max_abs_diff"] < 1e-5  # the CPU default is fp32
    assert par[("embed", "unirank-fp32")]["max_abs_diff"] < 1e-5
    for dt in ("fp16", "bf16"):
        p = par[("embed", f"unirank-{dt}")]
        assert p["ref"] == "unirank-fp32" and 0 < p["max_abs_diff"] < 0.05 and p["tau_median"] > 0.8
    goals = [r for r in rows if r["event"] == "target"]
    assert [(g["kind"], g["measure"]) for g in goals] == [("embed", "x_st_best")]  # no CE goal for "tiny"
    assert goals[0]["value"] == emb["x_st_best"] and goals[0]["met"] == (emb["x_st_best"] >= 3)
    assert "| tiny | ce | unirank-default | float32 |" in table
    assert "| embed x_st_best >= 3 | tiny | cpu |" in table


def test_kendall_tau_matches_scipy():
    from scipy.stats import kendalltau

    from unirank._bench_gpu import kendall_tau

    rng = np.random.default_rng(0)
    for n in (2, 5, 100):
        a, b = rng.integers(0, 4, n).astype(float), rng.normal(size=n)  # a has ties
        for x, y in ((a, b), (b, a), (b, b + rng.normal(size=n)), (a, a)):
            assert kendall_tau(x, y) == pytest.approx(kendalltau(x, y)[0], abs=1e-12)
    assert np.isnan(kendall_tau([1, 1, 1], [1, 2, 3])) and np.isnan(kendalltau([1, 1, 1], [1, 2, 3])[0])


def test_build_models_random_and_packaged(minilm_path, tmp_path):
    import torch
    import transformers
    from sentence_transformers import SentenceTransformer

    from unirank import Reranker
    from unirank._bench_gpu import SIZES, build_models

    tok_only = tmp_path / "tok"
    tok_only.mkdir()
    for f in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(minilm_path / f, tok_only / f)
    ce, emb, weights = build_models("tiny", tok_only, tmp_path / "a")
    assert weights == "random"
    cfg = transformers.AutoConfig.from_pretrained(ce)
    assert {k: getattr(cfg, k) for k in SIZES["tiny"]} == SIZES["tiny"] and cfg.num_labels == 1
    # the embedding folder reads the same in sentence-transformers and unirank (mean pooling + normalise)
    docs = ["rain falls from clouds", "cats purr", "the river flows"]
    st = SentenceTransformer(str(emb), device="cpu")
    e = torch.nn.functional.normalize(st.encode(["what causes rain", *docs], convert_to_tensor=True), dim=-1)
    ours = Reranker(f"embed:{emb}", device="cpu").rank("what causes rain", docs)
    got = np.array([r.score for r in sorted(ours, key=lambda r: r.index)])
    assert np.allclose(got, (e[1:] @ e[0]).numpy(), atol=1e-5)
    # minilm-l6 with the packaged weights: its encoder as it is, plus a head
    ce, emb, weights = build_models("minilm-l6", minilm_path, tmp_path / "b")
    assert weights == "packaged" and emb == minilm_path
    packaged = transformers.AutoModel.from_pretrained(minilm_path)
    head = transformers.AutoModelForSequenceClassification.from_pretrained(ce)
    w = "encoder.layer.5.output.dense.weight"
    assert torch.equal(head.bert.state_dict()[w], packaged.state_dict()[w])


def test_device_bench_refuses_bad_requests():
    import torch

    from unirank._bench_gpu import resolve_device, run_device_bench
    from unirank.errors import SpecError

    with pytest.raises(SpecError, match="expected some of"):
        run_device_bench("cpu", ["bert-huge"])
    with pytest.raises(SpecError, match="cuda, cpu or auto"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto") == "cpu"
        with pytest.raises(SpecError, match="--device cpu"):
            resolve_device("cuda")


def test_device_bench_records_a_failing_part_and_goes_on(tmp_path, minilm_path, monkeypatch, capsys):
    from unirank import _bench_gpu_paths
    from unirank.cli import main

    def boom(self, size, folder, weights):
        raise RuntimeError("CUDA out of memory (stand-in)")

    def embed_row(self, size, folder, weights):
        self.row(event="embed", size=size, path="unirank-default", s_median=1.0, s_runs=[1.0], x_st_best=2.0)

    monkeypatch.setattr(_bench_gpu_paths.DeviceBench, "cross_encoder", boom)
    monkeypatch.setattr(_bench_gpu_paths.DeviceBench, "embedding", embed_row)
    out = tmp_path / "rows.jsonl"
    argv = "bench --device cpu --sizes tiny --queries 1 --depth 3 --repeats 1".split()
    assert main([*argv, "--tokenizer", str(minilm_path), "--out", str(out)]) == 1
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    err = next(r for r in rows if r["event"] == "error")
    assert err["kind"] == "ce" and "out of memory" in err["error"]
    assert any(r["event"] == "embed" for r in rows) and rows[-1]["event"] == "target"  # the run went on
    assert "| tiny | ce | RuntimeError('CUDA out of memory (stand-in)') |" in capsys.readouterr().out


def _load_script(name):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"gpu_{name}", ROOT / "benchmarks" / "gpu" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_prepare_copies_scripts_data_and_tokenizer_without_weights(tmp_path):
    prepare = _load_script("prepare")
    shared, tok = tmp_path / "shared", tmp_path / "tok"
    (shared / "bench").mkdir(parents=True)
    (shared / "bench" / "gpu_side_by_side.py").write_text("print('side by side')\n")
    for name in prepare.DATASETS:
        for f in (*prepare.DATA_FILES, "qrels/test.tsv", "runs/tasb.top100.trec"):
            (shared / "data" / name / f).parent.mkdir(parents=True, exist_ok=True)
            (shared / "data" / name / f).write_text(f"{name}/{f}")
    (tok / "1_Pooling").mkdir(parents=True)
    for f in ("vocab.txt", "tokenizer.json", "modules.json", "1_Pooling/config.json", "model.safetensors"):
        (tok / f).write_text(f)
    dest = tmp_path / "carry"
    size = prepare.prepare(shared, dest, tok)
    files = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert "tokenizer/model.safetensors" not in files and "tokenizer/1_Pooling/config.json" in files
    assert "data/trec-dl-2020-passage/runs/bm25.top100.trec" in files
    assert not any("qrels" in f or "tasb" in f for f in files)  # only what the run reads
    q19 = "trec-dl-2019-passage/queries.jsonl"
    assert (dest / "data" / q19).read_text() == q19
    assert size == sum((dest / f).stat().st_size for f in files)
    # the carry folder is excluded once, however often prepare runs
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    first = prepare.add_exclude(repo, "/.gpu-carry/")
    assert prepare.add_exclude(repo, "/.gpu-carry/") == first
    assert first.read_text().splitlines().count("/.gpu-carry/") == 1
    (repo / ".gpu-carry").mkdir()
    (repo / ".gpu-carry" / "x").write_text("x")
    status = subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True).stdout
    assert ".gpu-carry" not in status


def test_summarize_reads_both_files_even_when_cut(tmp_path, device_run, capsys):
    rows, _ = device_run
    shared = [
        {"event": "ce", "model": "bert-base", "path": "st-fp32-b32", "pairs_s": 1000.0, "s": 9.7},
        {"event": "ce", "model": "bert-base", "path": "unirank-default", "pairs_s": 1500.0, "x_st_fp32": 1.5},
        {"event": "ce", "model": "bert-base", "path": "floor-forward-only-float16", "pairs_s": 6000.0},
        {"event": "ce", "model": "bert-base", "path": "floor-forward-only-bfloat16", "pairs_s": 7500.0},
    ]
    (tmp_path / "gpu.jsonl").write_text("".join(json.dumps(r) + "\n" for r in shared) + '{"event": "ce", "mo')
    cut = [r for r in rows if r["event"] != "target"]  # a run stopped by its time limit before the goals
    (tmp_path / "unirank-bench.jsonl").write_text("".join(json.dumps(r) + "\n" for r in cut))
    assert _load_script("summarize").main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "(4 rows)" in out and "| bert-base | ce unirank-default | 1500 | 1.50 | - | 20% |" in out
    assert "| embed x_st_best >= 3 | tiny | cpu |" in out  # the goals, recomputed from the rows


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("UNIRANK_GPU_DRYRUN") != "1",
    reason="benchmarks/gpu/run.sh SMALL=1 starts two processes that load torch, transformers and "
    "sentence-transformers (about 40 s of CPU); set UNIRANK_GPU_DRYRUN=1 to run it",
)
def test_run_sh_small_dry_run(tmp_path):
    shared = ROOT.parent / "shared"
    if not (shared / "bench" / "gpu_side_by_side.py").is_file():
        pytest.skip("needs the team's ../shared folder")
    carry, out = tmp_path / "carry", tmp_path / "out"
    subprocess.run([sys.executable, "benchmarks/gpu/prepare.py", "--dest", str(carry)], cwd=ROOT, check=True)
    env = {**os.environ, "SMALL": "1", "OUT": str(out), "CARRY": str(carry), "PYTHON": sys.executable}
    env["OMP_NUM_THREADS"] = "1"
    cmd = ["bash", "benchmarks/gpu/run.sh"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "gpu_side_by_side.py: exit 0" in proc.stdout and "unirank bench: exit 0" in proc.stdout
    shared_rows = [json.loads(x) for x in (out / "gpu.jsonl").read_text().splitlines()]
    assert any(r.get("path") == "unirank-default" and r["max_abs_vs_ref"] < 1e-4 for r in shared_rows)
    ours = [json.loads(x) for x in (out / "unirank-bench.jsonl").read_text().splitlines()]
    assert ours[-1]["event"] == "target"
    assert "| tiny | ce | unirank-default |" in (out / "summary.md").read_text()
