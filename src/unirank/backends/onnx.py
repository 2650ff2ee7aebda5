"""ONNX Runtime engine: export a transformers encoder / cross-encoder once, run it with onnxruntime.

:func:`onnx_model_file` exports a ``*ForSequenceClassification`` model (output: ``logits``) or a bare encoder
(output: ``last_hidden_state``) with the TorchScript exporter (dynamic batch and sequence axes), fuses it with
onnxruntime's BERT graph optimiser when the architecture is BERT-like, and optionally applies dynamic int8
quantisation (``onnxruntime.quantization.quantize_dynamic``: int8 weights, uint8 activations, VNNI kernels
on CPUs that have them). Results are cached on disk under ``$UNIRANK_CACHE`` (default ``~/.cache/unirank``),
keyed by the model folder, the content hashes of its config and weight files, the options and the library
versions; files are written to a temporary folder and renamed into place, so concurrent processes never see a
half-written model.

:class:`OnnxForward` runs the session on the same un-padded feature lists (``input_ids`` /
``attention_mask`` / ``token_type_ids``) that :func:`unirank.backends.hf.collate` pads for torch.

Requires ``onnx`` and ``onnxruntime`` (``pip install 'unirank[onnx]'``); export also needs torch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..cpus import available_cores
from ..errors import require
from .fpmode import flush_denormals

__all__ = [
    "DEFAULT_TOKEN_BUDGET",
    "OnnxForward",
    "available_cores",
    "cache_root",
    "make_session",
    "onnx_forward_for",
    "onnx_model_file",
    "pad_numpy",
]

logger = logging.getLogger(__name__)

KINDS = ("seqcls", "encoder")
# tokens per batch (batch size * longest item) for onnxruntime on CPU: small batches keep the activations in
# cache. MiniLM-L6 int8, 2 threads, DL19 pairs (99 tokens on average), one run: 512-token batches 302 pairs/s,
# 1024 262, 2048 247, 4096 196 (docs/benchmarks-speed.md)
DEFAULT_TOKEN_BUDGET = 512
QUANTIZE = (None, "int8")
_BERT_LIKE = {"bert", "roberta", "xlm-roberta", "electra", "distilbert", "camembert", "mpnet"}
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".json", ".txt", ".model")


def cache_root() -> Path:
    """Where exported models live: ``$UNIRANK_CACHE`` or ``~/.cache/unirank``."""
    return Path(os.environ.get("UNIRANK_CACHE") or Path.home() / ".cache" / "unirank").expanduser()


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _cache_key(model_dir: Path, options: Mapping[str, Any]) -> str:
    import onnx
    import onnxruntime
    import torch
    import transformers

    files = sorted(p for p in model_dir.iterdir() if p.is_file() and p.name.endswith(_WEIGHT_SUFFIXES))
    here = Path(__file__).parent
    payload = {
        "model": str(model_dir.resolve()),
        "files": {p.name: _file_digest(p) for p in files},
        "options": dict(options),
        "versions": [torch.__version__, transformers.__version__, onnxruntime.__version__, onnx.__version__],
        "writers": [_file_digest(here / "onnx.py"), _file_digest(here / "onnx_bert.py")],  # our export code
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def _input_names(tokenizer: Any) -> list[str]:
    names = list(getattr(tokenizer, "model_input_names", None) or ["input_ids", "attention_mask"])
    return [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in names]


def _export(model: Any, kind: str, names: list[str], out: Path, opset: int) -> None:
    torch = require("torch", "onnx")

    class _Wrapper(torch.nn.Module):  # named positional inputs -> the one output we need
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *args: Any) -> Any:
            res = self.inner(**dict(zip(names, args)))
            return res.logits if kind == "seqcls" else res.last_hidden_state

    # eval() on the wrapper matters: export restores the wrapper's training flag (recursively) afterwards
    wrapper = _Wrapper(model).eval()
    ids = torch.tensor([[101, 2054, 5320, 4542, 102, 4542, 2003, 2300, 102, 0]] * 2, dtype=torch.long)
    vocab = int(getattr(model.config, "vocab_size", 0) or 0)
    if vocab > 1:  # any sample ids work for tracing, but they must exist in a small vocabulary
        ids = torch.where(ids == 0, ids, 1 + ids % (vocab - 1))
    sample = {"input_ids": ids, "attention_mask": (ids != 0).long(), "token_type_ids": torch.zeros_like(ids)}
    sample["attention_mask"][1, 6:] = 0
    output = "logits" if kind == "seqcls" else "last_hidden_state"
    axes: dict[str, dict[int, str]] = {n: {0: "batch", 1: "sequence"} for n in names}
    axes[output] = {0: "batch"} if kind == "seqcls" else {0: "batch", 1: "sequence"}
    import warnings

    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper,
            tuple(sample[n] for n in names),
            str(out),
            input_names=names,
            output_names=[output],
            dynamic_axes=axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )


def _optimize(src: Path, dst: Path, config: Any) -> bool:
    """Fuse BERT-like graphs (SkipLayerNorm, BiasGelu, Attention) with onnxruntime's optimiser."""
    if getattr(config, "model_type", None) not in _BERT_LIKE:
        return False
    try:
        from onnxruntime.transformers.optimizer import optimize_model

        opt = optimize_model(
            str(src),
            model_type="bert",
            num_heads=int(getattr(config, "num_attention_heads", 0) or 0),
            hidden_size=int(getattr(config, "hidden_size", 0) or 0),
            opt_level=1,
        )
        opt.save_model_to_file(str(dst))
        return True
    except Exception as exc:  # the plain export is still correct, only slower
        logger.warning(
            "onnxruntime graph fusion failed (%s: %s); using the plain export", type(exc).__name__, exc
        )
        return False


# a cross-encoder's pooler / classification head runs once per pair, not per token: int8 would save
# nothing there, and its rounding goes straight into the score (random-head MiniLM-L6, 20 DL19 queries:
# median per-query Kendall tau against fp32 0.907 -> 0.915 with the head kept fp32, same speed)
_FP32_HEAD = ("pooler", "classifier")


def _quantize_int8(src: Path, dst: Path, per_channel: bool, keep_fp32: tuple[str, ...]) -> None:
    """Dynamic int8 for the MatMul / Gemm nodes that multiply by a weight (activation x activation
    products such as attention scores stay fp32), except nodes whose name contains a ``keep_fp32`` part
    and the pooler / classifier head."""
    keep_fp32 = (*keep_fp32, *_FP32_HEAD)
    onnx = require("onnx", "onnx")
    q = require("onnxruntime.quantization", "onnx", "onnxruntime")
    graph = onnx.load(str(src), load_external_data=False).graph
    weights = {i.name for i in graph.initializer}
    nodes = [
        n.name
        for n in graph.node
        if (
            (n.op_type in ("MatMul", "Gemm") and any(i in weights for i in n.input[:2]))
            or n.op_type == "Attention"  # fused attention -> QAttention (int8 QKV projection)
        )
        and not any(k in n.name for k in keep_fp32)
    ]
    q.quantize_dynamic(
        str(src),
        str(dst),
        weight_type=q.QuantType.QInt8,
        per_channel=per_channel,
        nodes_to_quantize=nodes,
        op_types_to_quantize=["MatMul", "Gemm", "Attention"],
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )


def onnx_model_file(
    model_dir: str | os.PathLike[str],
    kind: str,
    *,
    model: Any = None,
    tokenizer: Any = None,
    quantize: str | None = None,
    optimize: bool = True,
    per_channel: bool = True,
    keep_fp32: tuple[str, ...] = (),
    split_cls: bool = True,
    opset: int = 17,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """The path of the cached ONNX file for ``model_dir`` (exported on first use).

    ``kind`` is ``"seqcls"`` (a cross-encoder; output ``logits``) or ``"encoder"`` (output
    ``last_hidden_state``). ``model`` / ``tokenizer`` may be passed when already loaded (fp32, CPU);
    otherwise they are loaded from ``model_dir`` (safetensors only). ``quantize="int8"`` applies dynamic int8
    quantisation of the MatMul / Gemm weights and fused attention (``per_channel`` scales by default);
    nodes whose name contains one of ``keep_fp32`` stay fp32 (e.g. ``"ffn_out"``, the second feed-forward
    matmul of each layer in the fused BERT graph, the most sensitive to int8; ``"output/dense"`` in a
    generic export). ``split_cls`` (int8, fused BERT graph only): the [CLS] row goes through the attention
    output and feed-forward matmuls as its own tensor, quantised with its own activation scale, so that its
    outlier values do not set the int8 grid of every other token (median per-query Kendall tau against
    fp32 on DL19 BM25 top-100: 0.917 -> 0.958 for a trained MiniLM-L6, 0.862 -> 0.917 with a random head;
    docs/benchmarks-speed.md).
    Plain BERT models are written directly as a fused graph (:mod:`unirank.backends.onnx_bert`; a
    cross-encoder's last layer is computed for the [CLS] row only); other architectures are exported with
    torch and fused by onnxruntime's optimiser where it can.
    """
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}; expected one of {KINDS}")
    if quantize not in QUANTIZE:
        raise ValueError(f"quantize={quantize!r}; expected one of {QUANTIZE}")
    require("onnxruntime", "onnx")
    require("onnx", "onnx")
    src = Path(model_dir).resolve()
    options: dict[str, Any] = {"kind": kind, "quantize": quantize, "optimize": optimize, "opset": opset}
    if quantize:
        options["per_channel"] = per_channel
        options["keep_fp32"] = sorted(keep_fp32)
        options["split_cls"] = bool(split_cls)
    options["graph"] = 3  # bump when the written graph changes, so stale cached exports are not reused
    root = Path(cache_dir).expanduser() if cache_dir is not None else cache_root()
    final = root / "onnx" / _cache_key(src, options)
    target = final / "model.onnx"
    if target.is_file():
        return target
    from . import hf, onnx_bert

    if tokenizer is None:
        tokenizer = hf.load_tokenizer(src)
    if model is None:
        torch, _ = hf.torch_modules()
        auto = "AutoModelForSequenceClassification" if kind == "seqcls" else "AutoModel"
        model = hf.load_model(src, auto, device="cpu", dtype=torch.float32)
    root.joinpath("onnx").mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root / "onnx"))
    try:
        logger.info("exporting %s to ONNX (%s)", src, options)
        current = tmp / "raw.onnx"
        if optimize and onnx_bert.supports(model, kind, _input_names(tokenizer)):  # the fused graph
            split = quantize == "int8" and split_cls
            onnx_bert.build_bert_graph(
                model, kind, _input_names(tokenizer), current, max(opset, 20), split_cls=split
            )
        else:
            _export(model, kind, _input_names(tokenizer), current, opset)
            if optimize and _optimize(current, tmp / "opt.onnx", model.config):
                current = tmp / "opt.onnx"
        if quantize == "int8":
            _quantize_int8(current, tmp / "int8.onnx", per_channel, tuple(keep_fp32))
            current = tmp / "int8.onnx"
        current.rename(tmp / "model.onnx")
        for p in tmp.iterdir():
            if p.name != "model.onnx":
                p.unlink()
        (tmp / "options.json").write_text(json.dumps({"source": str(src), **options}, indent=1))
        try:
            os.rename(tmp, final)
        except OSError:  # another process finished first: use theirs
            if not target.is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def make_session(path: str | os.PathLike[str], threads: int | None = None) -> Any:
    """An onnxruntime CPU session with ``threads`` intra-op threads (default: onnxruntime's choice).

    Its pool threads treat denormal floats as zero; the thread that calls ``run`` does its share of the
    work in its own mode, so call ``run`` inside :func:`unirank.backends.fpmode.flush_denormals` (as
    :class:`OnnxForward` does) for results that do not depend on how the work was split."""
    ort = require("onnxruntime", "onnx")
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.inter_op_num_threads = 1
    if threads is not None:
        if threads < 1:
            raise ValueError("threads must be >= 1")
        so.intra_op_num_threads = threads
    # intra-op pool threads flush denormals (see unirank.backends.fpmode); onnxruntime also sets the mode for
    # good on the thread that builds the process's first session: the guard restores that thread's mode
    so.add_session_config_entry("session.set_denormal_as_zero", "1")
    # onnxruntime's SkipLayerNormalization CPU kernel measured ~3x slower than Add + LayerNormalization
    # (MiniLM-L6, 2 threads): keep the unfused pair
    with flush_denormals():
        return ort.InferenceSession(
            str(path), so, providers=["CPUExecutionProvider"], disabled_optimizers=["SkipLayerNormFusion"]
        )


def pad_numpy(
    features: list[dict[str, list[int]]], pad_id: int = 0, left: bool = False
) -> dict[str, np.ndarray]:
    """Pad un-padded features to the batch's longest item as int64 arrays (as ``hf.collate`` does).

    >>> batch = pad_numpy([{"input_ids": [1, 2, 3]}, {"input_ids": [4]}])
    >>> batch["input_ids"].tolist()
    [[1, 2, 3], [4, 0, 0]]
    """
    width = max(len(f["input_ids"]) for f in features)
    out = {}
    for key in features[0]:
        arr = np.full((len(features), width), pad_id if key == "input_ids" else 0, dtype=np.int64)
        for i, f in enumerate(features):
            row = f[key]
            if left:
                arr[i, width - len(row) :] = row
            else:
                arr[i, : len(row)] = row
        out[key] = arr
    return out


class OnnxForward:
    """Run an exported model on un-padded features or on already collated arrays.

    ``OnnxForward(path, tokenizer)(features)`` returns the model's single output as a float32 array
    (``logits`` for a cross-encoder, ``last_hidden_state`` for an encoder). ``workers`` is how many batches
    callers may run at once on this (thread-safe) session (see :func:`unirank.backends.hf.run_model`).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        tokenizer: Any = None,
        threads: int | None = None,
        workers: int = 1,
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be >= 1")
        self.path = Path(path)
        self.workers = workers
        self.session = make_session(self.path, threads)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.pad_id = int(getattr(tokenizer, "pad_token_id", 0) or 0)
        self.left = getattr(tokenizer, "padding_side", "right") == "left"

    def run(self, inputs: Mapping[str, Any]) -> np.ndarray:
        """Run on collated inputs (numpy arrays or CPU torch tensors), keyed by input name."""
        feed = {}
        for name in self.input_names:
            if name not in inputs:
                raise ValueError(f"the ONNX model needs input {name!r}; got {sorted(inputs)}")
            value = inputs[name]
            value = value.cpu().numpy() if hasattr(value, "cpu") else np.asarray(value)
            feed[name] = value.astype(np.int64, copy=False)
        with flush_denormals():  # the calling thread does the work of a single-threaded session
            out = self.session.run(None, feed)[0]
        return np.asarray(out, dtype=np.float32)

    def __call__(self, features: list[dict[str, list[int]]]) -> np.ndarray:
        return self.run(pad_numpy(features, self.pad_id, self.left))

    def __repr__(self) -> str:
        return f"OnnxForward({str(self.path)!r})"


def onnx_forward_for(
    ranker: Any, kind: str, backend: str, quantize: str | None, dtype: str | None, threads: int | None
) -> OnnxForward:
    """The :class:`OnnxForward` a transformers ranker (with ``path``, ``model``, ``tokenizer``, ``device``)
    uses for ``backend="onnx"``; validates the backend options."""
    if backend != "onnx":
        raise ValueError(f"backend={backend!r}; expected 'torch' or 'onnx' (quantize= needs backend='onnx')")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"onnx_threads must be an integer >= 1, got {threads!r}")
    if quantize not in QUANTIZE:
        raise ValueError(f"quantize={quantize!r}; expected one of {QUANTIZE}")
    if ranker.device != "cpu":
        raise ValueError(f"backend='onnx' runs on the CPU; got device={ranker.device!r} (pass device='cpu')")
    if dtype not in (None, "fp32", "float32"):
        raise ValueError(f"backend='onnx' exports the fp32 weights; dtype={dtype!r} is not supported")
    folder = getattr(ranker, "layout", {}).get("transformer", ranker.path)  # a ST model's Transformer folder
    path = onnx_model_file(folder, kind, model=ranker.model, tokenizer=ranker.tokenizer, quantize=quantize)
    if kind == "encoder":  # pooling runs in torch after the session: one batch at a time
        return OnnxForward(path, ranker.tokenizer, threads=threads or available_cores())
    # a cross-encoder's forward is numpy-only: ``threads`` cores in all, as that many concurrent
    # single-threaded runs of small batches, measured ~5 % faster than one run with ``threads`` intra-op
    # threads on MiniLM-L6 (docs/benchmarks-speed.md)
    return OnnxForward(path, ranker.tokenizer, threads=1, workers=threads or available_cores())
