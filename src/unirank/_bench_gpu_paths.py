"""The timed paths of ``unirank bench --device`` (see :mod:`unirank._bench_gpu` for what each one is)."""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import SpecError, require

__all__ = ["DeviceBench"]

Scores = list[np.ndarray]  # one array per query, in candidate order
Fn = Callable[[list[str], list[list[str]]], Any]
_FLOOR_TOKENS = 65536  # padded tokens per batch of the forward-only floor
# sizes that get the compile= rows by default (each compile costs tens of seconds of a lent GPU's time)
COMPILE_SIZES = ("minilm-l6", "tiny")


def kendall_tau(a: Any, b: Any) -> float:
    """Kendall's tau-b of two score lists (ties counted as scipy does; NaN when either list is constant).

    >>> kendall_tau([1, 2, 3], [1, 3, 2])
    0.3333333333333333
    """
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    i, j = np.triu_indices(len(x), 1)
    dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
    denom = float(np.sqrt(np.count_nonzero(dx) * np.count_nonzero(dy)))
    return float(np.sum(dx * dy)) / denom if denom else float("nan")


def _dtype_name(dtype: Any) -> str:
    return str(dtype).replace("torch.", "")


class DeviceBench:
    """One device and one input set; ``emit`` receives every row as soon as it is measured."""

    def __init__(
        self,
        device: str,
        queries: list[str],
        texts: list[list[str]],
        repeats: int,
        parity_queries: int,
        emit: Callable[[dict[str, Any]], None],
        peer_dtype: str | None = None,
        compile_modes: Sequence[str] | None = None,
        compile_sizes: Sequence[str] | None = COMPILE_SIZES,
    ) -> None:
        self.torch = require("torch", "hf")
        self.st = require("sentence_transformers", "bench", "sentence-transformers")
        self.device, self.queries, self.texts, self.repeats = device, queries, texts, repeats
        self.n_pairs = sum(len(t) for t in texts)
        n_par = max(1, min(parity_queries, len(queries)))
        self.qp, self.tp = queries[:n_par], texts[:n_par]
        self.emit = emit
        self.cuda = device.startswith("cuda")
        # peers run in fp16 on CUDA (their fastest setting there), fp32 on CPU, unless peer_dtype says
        names = {"fp32": self.torch.float32, "fp16": self.torch.float16, "bf16": self.torch.bfloat16}
        if peer_dtype is not None and peer_dtype not in names:
            raise SpecError(f"peer dtype {peer_dtype!r}: expected one of {sorted(names)}")
        self.half = names[peer_dtype or ("fp16" if self.cuda else "fp32")]
        f16, bf16 = self.torch.float16, self.torch.bfloat16
        self.floor_dtypes = (
            (f16, bf16) if self.cuda else tuple(dict.fromkeys((self.torch.float32, self.half)))
        )
        # unirank's compile= variants (extra rows): on CUDA by default, on CPU only when asked
        default = ("inductor", "cudagraphs") if self.cuda else ()
        modes = tuple(compile_modes) if compile_modes is not None else default
        self.compile_modes = tuple(m for m in modes if self.cuda or m != "cudagraphs")  # graphs: CUDA only
        self.compile_sizes = None if compile_sizes is None else set(compile_sizes)

    def free(self) -> None:
        gc.collect()
        if self.cuda:
            self.torch.cuda.empty_cache()

    def timed(self, fns: dict[str, Fn]) -> dict[str, tuple[float, list[float], Any]]:
        """``name -> (median, runs, last output)``: every path is warmed up on the first two queries, then
        ``repeats`` rounds in which each makes one full pass, in a rotating order, so that a load change
        on a shared machine hits every path alike."""
        for fn in fns.values():
            fn(self.queries[:2], self.texts[:2])
        names = list(fns)
        runs: dict[str, list[float]] = {n: [] for n in names}
        outs: dict[str, Any] = {}
        for r in range(self.repeats):
            k = r % len(names)
            for n in names[k:] + names[:k]:
                if self.cuda:
                    self.torch.cuda.synchronize()
                t0 = time.perf_counter()
                outs[n] = fns[n](self.queries, self.texts)
                if self.cuda:
                    self.torch.cuda.synchronize()
                runs[n].append(time.perf_counter() - t0)
        return {n: (statistics.median(runs[n]), runs[n], outs[n]) for n in names}

    def row(self, **kw: Any) -> dict[str, Any]:
        if "s_median" in kw:
            kw["pairs_s"] = self.n_pairs / kw["s_median"]
        self.emit(kw)
        return kw

    def parity(self, size: str, kind: str, path: str, ref: str, a: Scores, b: Scores) -> dict[str, Any]:
        taus = [kendall_tau(x, y) for x, y in zip(a, b)]
        diff = max(float(np.max(np.abs(x - y), initial=0.0)) for x, y in zip(a, b))
        return self.row(
            event="parity",
            size=size,
            kind=kind,
            path=path,
            ref=ref,
            queries=len(a),
            max_abs_diff=diff,
            tau_min=float(np.nanmin(taus)),
            tau_median=float(np.nanmedian(taus)),
        )

    def unirank_parity(self, spec: str, **options: Any) -> Scores:
        """unirank's scores of the parity queries (untimed)."""
        from .reranker import Reranker

        return _unirank_scores(Reranker(spec, device=self.device, **options), self.qp, self.tp)

    # ------------------------------------------------------------------ cross-encoder
    def cross_encoder(self, size: str, ce_dir: Path, weights: str) -> None:
        from .reranker import Reranker

        ce = self._st_cross_encoder(ce_dir)
        ref = _st_predict(ce, self.qp, self.tp, 32)  # the fp32 reference, on the same weights
        ce.model.to(self.half)
        u32 = self.unirank_parity(f"ce:{ce_dir}", dtype="fp32")
        self.parity(size, "ce", "unirank-fp32", "st-fp32", u32, ref)
        self.free()
        r = Reranker(f"ce:{ce_dir}", device=self.device)
        fns: dict[str, Fn] = {
            "st-b32": lambda q, t: _st_predict(ce, q, t, 32),
            "st-b256": lambda q, t: _st_predict(ce, q, t, 256),
            "unirank-default": lambda q, t: _unirank_scores(r, q, t),
        }
        compiled = self._compiled_rankers(size, ce_dir)
        for mode, (cr, _) in compiled.items():
            fns[f"unirank-{mode}"] = lambda q, t, cr=cr: _unirank_scores(cr, q, t)
        pads = {}
        for dt in self.floor_dtypes:
            fns[f"floor-{_dtype_name(dt)}"], pads[f"floor-{_dtype_name(dt)}"] = self._floor(ce_dir, dt)
        res = self.timed(fns)
        for name in ("st-b32", "st-b256"):
            med, runs, _ = res[name]
            self.row(event="ce", size=size, weights=weights, path=name, dtype=_dtype_name(self.half),
                     s_median=med, s_runs=runs)  # fmt: skip
        for name, pad in pads.items():
            med, runs, _ = res[name]
            self.row(event="ce", size=size, path=name, dtype=name.removeprefix("floor-"), s_median=med,
                     s_runs=runs, padding_overhead=pad)  # fmt: skip
        tok_s = _tokenize_seconds(ce_dir, self.queries, self.texts)
        self.row(event="ce", size=size, path="tokenize-only", s_median=tok_s, s_runs=[tok_s])
        best_st = min(("st-b32", "st-b256"), key=lambda n: res[n][0])
        best_floor = min(pads, key=lambda n: res[n][0])
        med, runs, scores = res["unirank-default"]
        self.row(
            event="ce",
            size=size,
            weights=weights,
            path="unirank-default",
            dtype=_param_dtype(r),
            s_median=med,
            s_runs=runs,
            x_st_best=res[best_st][0] / med,
            st_best=best_st,
            floor_share=res[best_floor][0] / med,
            floor_dtype=best_floor.removeprefix("floor-"),
        )
        self.parity(size, "ce", "unirank-default", "st-fp32", scores[: len(self.qp)], ref)
        for mode, (cr, compile_s) in compiled.items():
            name = f"unirank-{mode}"
            cmed, cruns, cscores = res[name]
            self.row(event="ce", size=size, weights=weights, path=name, dtype=_param_dtype(cr), s_median=cmed,
                     s_runs=cruns, x_default=med / cmed, compile_s=compile_s, shapes=len(cr._fast.shapes),
                     fallback=cr._fast.failure)  # fmt: skip
            self.parity(size, "ce", name, "unirank-default", cscores[: len(self.qp)], scores[: len(self.qp)])

    def _compiled_rankers(self, size: str, ce_dir: Path) -> dict[str, tuple[Any, float]]:
        """``mode -> (ranker with compile=mode, seconds of its first full pass)``: the compile and the first
        shapes' captures happen in that pass, which is therefore kept out of the timed rounds."""
        from .reranker import Reranker

        if self.compile_sizes is not None and size not in self.compile_sizes:
            return {}
        out = {}
        for mode in self.compile_modes:
            cr = Reranker(f"ce:{ce_dir}", device=self.device, compile=mode)
            if self.cuda:
                self.torch.cuda.synchronize()
            t0 = time.perf_counter()
            _unirank_scores(cr, self.queries, self.texts)
            if self.cuda:
                self.torch.cuda.synchronize()
            out[mode] = (cr, time.perf_counter() - t0)
        return out

    def _st_cross_encoder(self, ce_dir: Path) -> Any:
        ident = self.torch.nn.Identity()
        try:
            return self.st.CrossEncoder(str(ce_dir), device=self.device, max_length=512, activation_fn=ident)
        except TypeError:  # sentence-transformers < 4 calls it default_activation_function
            return self.st.CrossEncoder(
                str(ce_dir), device=self.device, max_length=512, default_activation_function=ident
            )

    def _floor(self, ce_dir: Path, dtype: Any) -> tuple[Fn, float]:
        """Forward passes only, over pre-tokenised length-sorted batches already on the device; and the
        padded / real token ratio of those batches."""
        transformers = require("transformers", "hf")
        tok = transformers.AutoTokenizer.from_pretrained(str(ce_dir))
        qs = [q for q, t in zip(self.queries, self.texts) for _ in t]
        enc = tok(qs, [d for t in self.texts for d in t], truncation=True, max_length=512)
        ids, tts = enc["input_ids"], enc["token_type_ids"]
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        batches: list[list[int]] = [[]]
        for i in order:
            if batches[-1] and (len(batches[-1]) + 1) * len(ids[batches[-1][0]]) > _FLOOR_TOKENS:
                batches.append([])
            batches[-1].append(i)
        tensors = []
        for b in batches:
            arr = np.zeros((3, len(b), len(ids[b[0]])), dtype=np.int64)
            for j, i in enumerate(b):
                n = len(ids[i])
                arr[0, j, :n], arr[1, j, :n], arr[2, j, :n] = ids[i], 1, tts[i]
            tensors.append([self.torch.from_numpy(a).to(self.device) for a in arr])
        model = transformers.AutoModelForSequenceClassification.from_pretrained(str(ce_dir))
        model = model.to(device=self.device, dtype=dtype).eval()

        def forward(q: list[str], t: list[list[str]]) -> None:
            with self.torch.inference_mode():
                for i, m, tt in tensors if q is self.queries else tensors[:2]:  # warm-up: the 2 largest
                    model(input_ids=i, attention_mask=m, token_type_ids=tt)

        return forward, sum(len(b) * len(ids[b[0]]) for b in batches) / sum(len(x) for x in ids)

    # ------------------------------------------------------------------ embedding
    def embedding(self, size: str, emb_dir: Path, weights: str) -> None:
        from .reranker import Reranker

        st = self.st.SentenceTransformer(str(emb_dir), device=self.device)
        ref = _st_embed_per_query(st, self.qp, self.tp)
        st.to(self.half)
        spec = f"embed:{emb_dir}"
        by_dtype = {dt: self.unirank_parity(spec, dtype=dt, cache_size=0) for dt in ("fp32", "fp16", "bf16")}
        self.free()
        self.parity(size, "embed", "unirank-fp32", "st-fp32", by_dtype["fp32"], ref)
        for dt in ("fp16", "bf16"):
            self.parity(size, "embed", f"unirank-{dt}", "unirank-fp32", by_dtype[dt], by_dtype["fp32"])
        r = Reranker(spec, device=self.device, cache_size=0)
        res = self.timed(
            {
                "st-encode-per-query": lambda q, t: _st_embed_per_query(st, q, t),
                "st-encode-all": lambda q, t: _st_embed_all(st, q, t),
                "unirank-default": lambda q, t: _unirank_scores(r, q, t),
            }
        )
        for name in ("st-encode-per-query", "st-encode-all"):
            med, runs, _ = res[name]
            self.row(event="embed", size=size, weights=weights, path=name, dtype=_dtype_name(self.half),
                     s_median=med, s_runs=runs)  # fmt: skip
        best = min(("st-encode-per-query", "st-encode-all"), key=lambda n: res[n][0])
        med, runs, _ = res["unirank-default"]
        self.row(
            event="embed",
            size=size,
            weights=weights,
            path="unirank-default",
            dtype=_param_dtype(r),
            s_median=med,
            s_runs=runs,
            x_st_best=res[best][0] / med,
            st_best=best,
        )


def _split(flat: Any, texts: list[list[str]]) -> Scores:
    flat = np.asarray(flat, dtype=np.float64).reshape(-1)
    ends = np.cumsum([len(t) for t in texts])
    return [flat[e - len(t) : e] for e, t in zip(ends, texts)]


def _st_predict(ce: Any, queries: list[str], texts: list[list[str]], batch_size: int) -> Scores:
    pairs = [(q, d) for q, t in zip(queries, texts) for d in t]
    return _split(ce.predict(pairs, batch_size=batch_size, show_progress_bar=False), texts)


_ENCODE = {
    "batch_size": 128,
    "convert_to_tensor": True,
    "normalize_embeddings": True,
    "show_progress_bar": False,
}


def _st_embed_per_query(st: Any, queries: list[str], texts: list[list[str]]) -> Scores:
    out = []
    for q, t in zip(queries, texts):
        e = st.encode([q, *t], **_ENCODE)
        out.append((e[1:] @ e[0]).float().cpu().numpy().astype(np.float64))
    return out


def _st_embed_all(st: Any, queries: list[str], texts: list[list[str]]) -> Scores:
    eq = st.encode(list(queries), **_ENCODE)
    ed = st.encode([d for t in texts for d in t], **_ENCODE)
    counts = __import__("torch").tensor([len(t) for t in texts], device=eq.device)
    return _split((ed * eq.repeat_interleave(counts, dim=0)).sum(-1).float().cpu().numpy(), texts)


def _unirank_scores(ranker: Any, queries: list[str], texts: list[list[str]]) -> Scores:
    out = []
    for res, t in zip(ranker.rank_many(queries, texts), texts):
        arr = np.full(len(t), np.nan)
        for x in res:
            arr[x.index] = x.score
        out.append(arr)
    return out


def _param_dtype(ranker: Any) -> str | None:
    """The ranker's weight dtype, for the record (None when it does not expose a torch model)."""
    try:
        return _dtype_name(next(ranker.model.parameters()).dtype)
    except (AttributeError, StopIteration, TypeError):
        return None


def _tokenize_seconds(folder: Path, queries: list[str], texts: list[list[str]]) -> float:
    """One batched fast-tokenizer call over every pair: the host work a GPU path has to hide."""
    transformers = require("transformers", "hf")
    tok = transformers.AutoTokenizer.from_pretrained(str(folder))
    qs = [q for q, t in zip(queries, texts) for _ in t]
    t0 = time.perf_counter()
    tok(qs, [d for t in texts for d in t], truncation=True, max_length=512)
    return time.perf_counter() - t0
