"""Where int8 loses ranking agreement: simulated ("fake") int8 schemes in torch, per-query Kendall tau
against the fp32 model over DL19 BM25 top-100.

Every ``nn.Linear`` of the encoder gets its weight and / or its input rounded to an 8-bit grid, in the
same length-sorted 512-token batches the ONNX engine uses, so that each scheme isolates one error source:

- weights: ``fp32``, ``int8`` (symmetric, one scale per output channel, as onnxruntime's per-channel
  dynamic quantisation) or ``gptq`` (the same int8 grid, rounded column by column to cancel the output
  error on ``--calib`` other DL19 queries);
- activations: ``fp32``; ``tensor`` (asymmetric uint8, one scale per batch tensor: onnxruntime's
  ``DynamicQuantizeLinear``); ``nocls`` (the same, but the [CLS] row is left out of the scale and kept
  fp32); ``clsown`` (the [CLS] rows int8 with a scale of their own: what ``split_cls`` does in the ONNX
  graph); ``token`` (asymmetric uint8, one scale per token row); ``ort`` (what the int8 ONNX graph does:
  ``tensor`` for the query / key / value projections, which ``QAttention`` quantises jointly, ``clsown``
  for the others);
- ``@alpha``: SmoothQuant-style smoothing (per input channel ``max|x|^alpha / max|w|^(1-alpha)``, the
  activation maxima measured on the evaluated batches, so an optimistic bound);
- ``#regex``: the linears whose module name matches get two-pass activations (the scheme's 8-bit
  rounding, then its rounding error quantised again per tensor and added: ~16-bit inputs at twice the
  int8 matmul work), e.g. ``int8/ort#layer\\.[0-2]\\.`` or ``int8/ort#self|intermediate``.

    python benchmarks/int8_fake_quant.py --model DIR --queries 10 \\
        --schemes int8/fp32,int8/tensor,int8/nocls,fp32/nocls,int8/token,fp32/token,int8/nocls@0.5
"""

from __future__ import annotations

import argparse
import re
import sys

import numpy as np


def quantize_activation(x, mode: str):
    import torch

    def asym(v, lo, hi):
        s = ((hi - lo) / 255).clamp(min=1e-8)
        zp = torch.round(-lo / s)
        return (torch.clamp(torch.round(v / s) + zp, 0, 255) - zp) * s

    if mode == "fp32":
        return x
    if mode == "tensor":
        return asym(x, x.min().clamp(max=0), x.max().clamp(min=0))
    if mode == "token":
        return asym(x, x.amin(-1, keepdim=True).clamp(max=0), x.amax(-1, keepdim=True).clamp(min=0))
    if mode.startswith("res+"):  # two passes: the base mode, then its rounding error quantised again
        first = quantize_activation(x, mode[4:])
        return first + quantize_activation(x - first, "tensor")
    if mode in ("nocls", "clsown"):
        rest, cls = x[:, 1:], x[:, :1]
        q = asym(rest, rest.min().clamp(max=0), rest.max().clamp(min=0))
        if mode == "clsown":  # the [CLS] rows int8 too, with a scale of their own
            cls = asym(cls, cls.min().clamp(max=0), cls.max().clamp(min=0))
        return torch.cat([cls, q], 1)
    raise ValueError(f"activation mode {mode!r}")


def quantize_weight(w):
    import torch

    s = w.abs().amax(1, keepdim=True).clamp(min=1e-8) / 127
    return torch.round(w / s) * s


def gptq_weight(w, h, damp: float = 0.01):
    """int8 weights (the same per-output-channel scales as :func:`quantize_weight`) rounded column by column
    so as to cancel the output error on the calibration inputs (GPTQ: ``h`` = sum of x x^T)."""
    import torch

    w = w.double().clone()
    s = w.abs().amax(1, keepdim=True).clamp(min=1e-8) / 127
    h = h.double() + damp * h.diagonal().mean() * torch.eye(h.shape[0], dtype=torch.float64)
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    q = torch.zeros_like(w)
    for i in range(w.shape[1]):
        q[:, i] = torch.clamp(torch.round(w[:, i : i + 1] / s), -127, 127)[:, 0] * s[:, 0]
        err = (w[:, i] - q[:, i]) / hinv[i, i]
        w[:, i + 1 :] -= err[:, None] * hinv[i, i + 1 :][None, :]
    return q.float()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, help="cross-encoder folder")
    ap.add_argument("--queries", type=int, default=10)
    ap.add_argument("--schemes", default="int8/fp32,int8/tensor,int8/nocls,fp32/nocls,int8/token,fp32/token")
    ap.add_argument(
        "--calib", type=int, default=10, help="gptq: calibration queries (after the evaluated ones)"
    )
    args = ap.parse_args(argv)
    import torch
    from scipy.stats import kendalltau
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from unirank.eval.datasets import load_dataset

    torch.set_num_threads(2)
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForSequenceClassification.from_pretrained(args.model).eval()
    ds = load_dataset("trec-dl-2019")
    run = ds.get_run("bm25")
    qids = sorted(run)[: args.queries]
    linears = [
        (n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and ".encoder." in n
    ]
    fp32_weight = {n: m.weight.data.clone() for n, m in linears}
    act_max = {n: torch.zeros(m.in_features) for n, m in linears}

    def score_all(qs=qids) -> list[np.ndarray]:
        out = []
        for q in qs:
            docs = [ds.corpus[d].text for d, _ in run[q][:100]]
            lengths = [len(tok(ds.queries[q], d, truncation=True, max_length=512)["input_ids"]) for d in docs]
            order, scores, i = np.argsort(lengths, kind="stable"), np.zeros(len(docs)), 0
            while i < len(order):  # 512-token batches of length-sorted pairs, as the ONNX engine
                j = i + 1
                while j < len(order) and (j - i + 1) * lengths[order[j]] <= 512:
                    j += 1
                idx = order[i:j]
                b = tok(
                    [ds.queries[q]] * len(idx),
                    [docs[k] for k in idx],
                    truncation=True,
                    max_length=512,
                    padding=True,
                    return_tensors="pt",
                )
                with torch.no_grad():
                    scores[idx] = model(**b).logits[:, 0].numpy()
                i = j
            out.append(scores)
        return out

    hooks = [
        m.register_forward_pre_hook(
            lambda mod, inp, n=n: act_max.__setitem__(
                n, torch.maximum(act_max[n], inp[0][:, 1:].abs().reshape(-1, inp[0].shape[-1]).amax(0))
            )
        )
        for n, m in linears
    ]
    ref = score_all()
    for h in hooks:
        h.remove()
    gptq: dict[str, torch.Tensor] = {}
    if any(x.startswith("gptq/") for x in args.schemes.split(",")):  # calibrate on other DL19 queries
        gram = {n: torch.zeros(m.in_features, m.in_features, dtype=torch.float64) for n, m in linears}

        def add_gram(mod, inp, n):  # returns None: the input passes unchanged
            x = inp[0].reshape(-1, inp[0].shape[-1]).double()
            gram[n].add_(x.T @ x)

        hooks = [m.register_forward_pre_hook(lambda mod, inp, n=n: add_gram(mod, inp, n)) for n, m in linears]
        score_all(sorted(run)[args.queries : args.queries + args.calib])
        for h in hooks:
            h.remove()
        gptq = {n: gptq_weight(fp32_weight[n], gram[n]) for n, _ in linears}
    print(f"{len(qids)} queries x 100, {args.model}")
    print("| weights / activations | tau median | tau min | max abs diff |")
    print("|---|---|---|---|")
    for scheme in [s for s in args.schemes.split(",") if s]:
        weights, _, rest = scheme.partition("/")
        rest, _, res_pattern = rest.partition("#")
        act, _, alpha = rest.partition("@")
        for n, m in linears:
            w = fp32_weight[n]
            smooth = torch.ones(w.shape[1])
            if alpha:
                a = float(alpha)
                smooth = act_max[n].clamp(min=1e-5) ** a / w.abs().amax(0).clamp(min=1e-5) ** (1 - a)
            wq = w * smooth[None, :]
            m.weight.data = quantize_weight(wq) if weights == "int8" else gptq[n] if weights == "gptq" else wq

            mode = act
            if act == "ort":  # the ONNX graph: QKV quantised jointly (QAttention), the rest split_cls
                mode = "tensor" if n.split(".")[-1] in ("query", "key", "value") else "clsown"
            if res_pattern and re.search(res_pattern, n):
                mode = "res+" + mode

            def forward(x, m=m, smooth=smooth, w_fp32=w, act=mode):
                y = torch.nn.functional.linear(quantize_activation(x / smooth, act), m.weight, m.bias)
                if act == "nocls":  # the [CLS] row runs fp32 (weights included), as in the ONNX graph
                    y[:, :1] = torch.nn.functional.linear(x[:, :1], w_fp32, m.bias)
                return y

            m.forward = forward
        got = score_all()
        for n, m in linears:
            m.weight.data = fp32_weight[n]
            del m.forward
        taus = [kendalltau(a, b)[0] for a, b in zip(ref, got)]
        diff = max(float(np.abs(a - b).max()) for a, b in zip(ref, got))
        print(f"| {scheme} | {np.median(taus):.4f} | {np.min(taus):.4f} | {diff:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
