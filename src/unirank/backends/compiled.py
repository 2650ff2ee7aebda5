"""Options of the cross-encoder's forward: ``torch.compile`` over length buckets, CUDA graphs, packed rows.

- ``compile="inductor"``: the forward (model + score) goes through ``torch.compile(..., dynamic=True)``.
  Batch widths are padded up to a multiple of :data:`WIDTH_BUCKET` tokens (the extra columns are padding with
  attention mask 0, so a right-padded encoder scores them exactly as before) and a batch of one row gets a
  copy of its row (dynamic shapes specialise sizes 0 and 1), so a run sees few distinct shapes.
- ``compile="cudagraphs"`` (CUDA only): ``mode="reduce-overhead"``; rows are bucketed too
  (:func:`bucket_rows`: 1, 2, 3, 4, 6, 8, 12, 16, 24, ...; the extra rows are copies of the first row whose
  scores are dropped) so the captured graphs are replayed.
- ``unpadded=True`` (with ``attn_implementation="flash_attention_2"``, CUDA): the rows of a batch are packed
  into one row without padding; positions restart at every pair and FlashAttention's variable-length kernel
  gets the cumulative lengths (``cu_seq_lens_q`` / ``cu_seq_lens_k``, read by transformers'
  ``_flash_attention_forward``), and the head reads each pair's first token. It is verified on a probe batch
  against the padded forward when it is built and left off (one warning) if the scores differ.

A compiled forward that fails (no C++ compiler, an unsupported op, ...) scores that batch and every later one
with the eager forward, after ONE warning naming the cause; a batch that fails in eager mode too raises the
eager error (the batch's own fault), and the compiled forward stays on. Scores never go missing.

>>> bucket_width(70, 512), bucket_width(500, 510), bucket_rows(5), bucket_rows(13)
(96, 510, 6, 16)
>>> check_compile("cudagraphs", "cpu")
Traceback (most recent call last):
...
unirank.errors.SpecError: compile='cudagraphs' captures CUDA graphs and needs a CUDA device (device='cpu'); \
use compile='inductor' there, or leave compile unset
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from typing import Any

from ..errors import MissingExtraError, SpecError
from .probe import agrees, probe_batch

__all__ = [
    "ATTN_IMPLEMENTATIONS",
    "COMPILE_MODES",
    "WIDTH_BUCKET",
    "CompiledForward",
    "PackedForward",
    "bucket_rows",
    "bucket_width",
    "build_forward",
    "check_attn_implementation",
    "check_compile",
    "check_options",
    "pack_batch",
    "pad_batch",
]

logger = logging.getLogger(__name__)

COMPILE_MODES = ("inductor", "cudagraphs")
WIDTH_BUCKET = 32
ATTN_IMPLEMENTATIONS = {  # name -> the package it needs (None: built into torch / transformers)
    "eager": None,
    "sdpa": None,
    "flex_attention": None,
    "flash_attention_2": "flash_attn",
    "flash_attention_3": "flash_attn_interface",
}
_PACKED_TYPES = {"bert", "roberta", "xlm-roberta", "electra", "camembert"}
Scorer = Callable[..., Any]  # scorer(**inputs) -> scores tensor (one per row), on the device


def check_compile(mode: str | None, device: str) -> str | None:
    """``mode`` if it is a valid ``compile=`` value for ``device``, else a :class:`SpecError`."""
    if mode is None:
        return None
    if mode not in COMPILE_MODES:
        raise SpecError(f"compile={mode!r} is not one of {COMPILE_MODES} (or unset for the eager forward)")
    if mode == "cudagraphs" and not str(device).startswith("cuda"):
        raise SpecError(
            f"compile='cudagraphs' captures CUDA graphs and needs a CUDA device (device={device!r}); "
            "use compile='inductor' there, or leave compile unset"
        )
    return mode


def check_attn_implementation(name: str | None, device: str) -> str | None:
    """``name`` if transformers can run it here; a :class:`SpecError` for an unknown name or a flash kernel
    off CUDA, a :class:`MissingExtraError` naming the package a flash kernel needs."""
    if name is None:
        return None
    if name not in ATTN_IMPLEMENTATIONS:
        raise SpecError(f"attn_implementation={name!r} is not one of {sorted(ATTN_IMPLEMENTATIONS)}")
    package = ATTN_IMPLEMENTATIONS[name]
    if package is not None:
        if importlib.util.find_spec(package) is None:
            pip = "flash-attn" if package == "flash_attn" else "flash-attn-3 (FlashAttention 3, Hopper GPUs)"
            raise MissingExtraError(
                f"attn_implementation={name!r} needs the {package!r} package, which is not installed: "
                f"pip install {pip} (CUDA only); or use attn_implementation='sdpa'"
            )
        if not str(device).startswith("cuda"):
            raise SpecError(f"attn_implementation={name!r} runs on CUDA only (device={device!r}); use 'sdpa'")
    return name


def bucket_width(width: int, cap: int) -> int:
    """``width`` rounded up to a multiple of :data:`WIDTH_BUCKET`, at most ``cap`` (never below ``width``)."""
    up = -(-width // WIDTH_BUCKET) * WIDTH_BUCKET
    return max(width, min(up, cap))


def bucket_rows(rows: int) -> int:
    """The smallest of 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, ... (``2**k`` and ``3 * 2**k``) that is ``>= rows``
    (at most a third of the rows are padding; a compiled forward takes at least 2)."""
    size = 1
    while True:
        for cand in (size, 3 * size // 2) if size >= 2 else (size,):
            if cand >= rows:
                return cand
        size *= 2


def pad_batch(inputs: dict[str, Any], rows: int, width: int) -> dict[str, Any]:
    """Right-pad every (rows, width) tensor of ``inputs`` with zeros (mask 0: padding) up to ``width``
    columns, then add copies of row 0 up to ``rows`` rows. Tensors that already fit are returned as they are.
    """
    import torch

    out = {}
    for key, t in inputs.items():
        n, w = t.shape
        if width > w:
            t = torch.nn.functional.pad(t, (0, width - w), value=0)
        if rows > n:
            t = torch.cat([t, t[:1].expand(rows - n, -1)], dim=0)
        out[key] = t
    return out


class CompiledForward:
    """A scorer behind ``torch.compile`` (``mode`` = ``"inductor"`` or ``"cudagraphs"``) with bucketed shapes
    and a fallback to the eager scorer; call it with a dict of (rows, width) tensors on the device."""

    def __init__(self, scorer: Scorer, mode: str, device: str, max_width: int) -> None:
        if mode not in COMPILE_MODES:
            raise SpecError(f"compile={mode!r} is not one of {COMPILE_MODES}")
        self.scorer, self.mode, self.device, self.max_width = scorer, mode, str(device), int(max_width)
        self._compiled: Any = None
        self.failure: str | None = None  # the cause, once the compiled forward failed and eager took over
        self.shapes: set[tuple[int, int]] = set()  # distinct padded (rows, width) seen
        self.bucket_all_rows = mode == "cudagraphs"  # else only a one-row batch gets a second row

    def _compile(self) -> Any:
        import torch

        if self.mode == "cudagraphs":
            return torch.compile(self.scorer, mode="reduce-overhead", dynamic=True)
        return torch.compile(self.scorer, dynamic=True)

    def __call__(self, inputs: dict[str, Any]) -> Any:
        if self.failure is not None:
            return self.scorer(**inputs)
        import torch

        n, w = inputs["input_ids"].shape
        rows = max(bucket_rows(n) if self.bucket_all_rows else n, 2)  # dynamic shapes specialise size 1
        width = bucket_width(w, max(w, self.max_width))
        padded = pad_batch(inputs, rows, width)
        self.shapes.add((rows, width))
        try:
            if self._compiled is None:
                self._compiled = self._compile()
            if self.mode == "cudagraphs":  # pragma: no cover - no GPU in CI
                torch.compiler.cudagraph_mark_step_begin()
                return self._compiled(**padded)[:n].clone()  # the graph's output buffer is reused
            return self._compiled(**padded)[:n]
        except torch.OutOfMemoryError:
            raise  # the pipeline halves the batch; compiling is not at fault
        except Exception as exc:
            out = self.scorer(**inputs)  # raises if the batch fails eagerly too: its own fault
            cause = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
            self.failure = cause
            logger.warning(
                "compile=%r failed (%s); this ranker scores with the eager forward from now on",
                self.mode,
                cause,
            )
            return out


def pack_batch(inputs: dict[str, Any], position_offset: int = 0) -> tuple[dict[str, Any], Any, int]:
    """Pack the real tokens of a right-padded batch into one row.

    Returns the packed tensors (``input_ids``, ``token_type_ids`` when given, ``position_ids`` restarting at
    ``position_offset`` for every pair), the cumulative lengths ``cu`` (int32, ``rows + 1``, starting at 0;
    pair ``i`` is ``cu[i]:cu[i + 1]``) and the longest pair's length.
    """
    import torch

    mask = inputs["attention_mask"].bool()
    lengths = mask.sum(1)
    keep = mask.reshape(-1)
    cu = torch.zeros(lengths.numel() + 1, dtype=torch.int32, device=mask.device)
    cu[1:] = lengths.cumsum(0)
    total = int(cu[-1])
    starts = torch.repeat_interleave(cu[:-1].long(), lengths)
    packed = {"input_ids": inputs["input_ids"].reshape(-1)[keep][None]}
    if "token_type_ids" in inputs:
        packed["token_type_ids"] = inputs["token_type_ids"].reshape(-1)[keep][None]
    positions = torch.arange(total, device=mask.device) - starts + position_offset
    packed["position_ids"] = positions[None]
    return packed, cu, int(lengths.max())


def block_mask(cu: Any, dtype: Any) -> Any:
    """The additive (1, 1, T, T) mask that keeps each packed pair to itself (for eager / SDPA attention,
    which have no variable-length kernel: a check of the packing, not a speed-up)."""
    import torch

    total = int(cu[-1])
    seq = torch.repeat_interleave(torch.arange(cu.numel() - 1, device=cu.device), (cu[1:] - cu[:-1]).long())
    same = seq[:, None] == seq[None, :]
    mask = torch.zeros(total, total, dtype=dtype, device=cu.device)
    return mask.masked_fill(~same, torch.finfo(dtype).min)[None, None]


class PackedForward:
    """Score a right-padded batch as one packed row (BERT / RoBERTa / XLM-R / ELECTRA / CamemBERT
    ``*ForSequenceClassification``): FlashAttention's variable-length kernel where ``varlen`` (the model must
    run ``flash_attention_2`` / ``_3``), else an explicit block-diagonal mask (eager / SDPA; for checks)."""

    def __init__(self, model: Any, score: Callable[[Any], Any], varlen: bool = True) -> None:
        from .hf import _OFFSET_POSITION_MODELS

        cfg = model.config
        if cfg.model_type not in _PACKED_TYPES or not type(model).__name__.endswith(
            "ForSequenceClassification"
        ):
            raise SpecError(
                f"unpadded=True supports {sorted(_PACKED_TYPES)} sequence-classification models, "
                f"not {cfg.model_type!r} ({type(model).__name__}); leave unpadded unset"
            )
        from .cls_only import _last_layer

        last = _last_layer(model)
        if last is not None and "forward" in last.__dict__:
            raise SpecError(
                "unpadded=True needs the stock last layer, not the [CLS]-only one (cls_only.enable)"
            )
        self.model, self.score, self.varlen = model, score, varlen
        self.offset = int(cfg.pad_token_id) + 1 if cfg.model_type in _OFFSET_POSITION_MODELS else 0

    def _head(self, first: Any) -> Any:
        """Logits from each pair's first-token state (rows, hidden), as the model's own head computes them."""
        m = self.model
        x = first[:, None]
        if m.config.model_type == "bert":
            pooler = m.bert.pooler
            return m.classifier(m.dropout(pooler(x) if pooler is not None else first))
        return m.classifier(x)  # RoBERTa / ELECTRA heads read features[:, 0]

    def __call__(self, inputs: dict[str, Any]) -> Any:
        packed, cu, longest = pack_batch(inputs, self.offset)
        if self.varlen:
            kw = {"cu_seq_lens_q": cu, "cu_seq_lens_k": cu, "max_length_q": longest, "max_length_k": longest}
        else:
            kw = {"attention_mask": block_mask(cu, next(self.model.parameters()).dtype)}
        hidden = self.model.base_model(**packed, **kw).last_hidden_state
        return self.score(self._head(hidden[0, cu[:-1].long()]))


def _probe_ok(fast: Callable[[dict[str, Any]], Any], eager: Callable[[dict[str, Any]], Any], tokenizer: Any,
              device: str) -> tuple[bool, str]:  # fmt: skip
    import torch

    inputs = dict(probe_batch(tokenizer, device, extra=[("rain", "x")]))
    try:
        with torch.inference_mode():
            ref, got = eager(inputs).float(), fast(inputs).float()
    except Exception as exc:
        return False, f"{type(exc).__name__}: {exc}"
    both_fp32 = ref.dtype == torch.float32 and got.dtype == torch.float32
    ok = agrees(ref, got, torch.float32 if both_fp32 else None, 1e-4)
    return ok, "" if ok else f"probe scores differ by {float((got - ref).abs().max()):.3g}"


def check_options(
    compile: str | None,
    attn_implementation: str | None,
    unpadded: bool,
    device: str,
    backend: str = "torch",
    quantize: str | None = None,
) -> None:
    """Refuse option combinations before any weights load (see :func:`check_compile`,
    :func:`check_attn_implementation`)."""
    check_compile(compile, device)
    check_attn_implementation(attn_implementation, device)
    if compile is not None and unpadded:
        raise SpecError("unpadded=True and compile= are separate options; choose one")
    if (compile is not None or unpadded or attn_implementation) and (backend != "torch" or quantize):
        raise SpecError(
            f"compile= / unpadded= / attn_implementation= set the torch forward; backend={backend!r} "
            f"quantize={quantize!r} runs ONNX: choose one"
        )
    if unpadded and attn_implementation not in ("flash_attention_2", "flash_attention_3"):
        raise SpecError(
            "unpadded=True packs pairs for FlashAttention's variable-length kernel: pass "
            "attn_implementation='flash_attention_2' too (CUDA, pip install flash-attn)"
        )


def build_forward(
    model: Any,
    score: Callable[[Any], Any],
    *,
    compile: str | None,
    unpadded: bool,
    device: str,
    max_width: int,
    tokenizer: Any = None,
    host_pipeline: bool = True,
) -> Callable[[dict[str, Any]], Any] | None:
    """The cross-encoder's forward for these options (``None``: the plain eager forward).

    ``score`` maps logits to scores; the returned callable maps a dict of (rows, width) tensors on the
    device to one score per row. ``unpadded`` needs the model loaded with a flash attention implementation.
    """
    check_compile(compile, device)
    if (compile is not None or unpadded) and not host_pipeline:
        raise SpecError(
            "compile= / unpadded= apply to encoder cross-encoders scored on the host pipeline, not to "
            f"{type(model).__name__} (a decoder, or a tokenizer whose pair encoding is not verified): "
            "leave them unset"
        )

    def scorer(**inputs: Any) -> Any:
        return score(model(**inputs).logits)

    if unpadded:
        impl = str(getattr(model.config, "_attn_implementation", None))
        if impl not in ("flash_attention_2", "flash_attention_3"):
            raise SpecError(
                f"unpadded=True packs pairs for FlashAttention's variable-length kernel; the model runs "
                f"{impl!r} attention: pass attn_implementation='flash_attention_2' "
                "(CUDA, pip install flash-attn)"
            )
        packed = PackedForward(model, score, varlen=True)  # pragma: no cover - needs CUDA + flash-attn
        ok, why = _probe_ok(packed, lambda i: scorer(**i), tokenizer, device)  # pragma: no cover
        if not ok:  # pragma: no cover
            logger.warning("unpadded=True not used (%s): scoring padded batches", why)
            return None
        return packed  # pragma: no cover
    if compile is None:
        return None
    return CompiledForward(scorer, compile, device, max_width)
