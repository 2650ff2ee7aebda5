"""Top-k pruning on TREC DL 2019 x BM25 top-100 with an early-exit MiniLM-L6 cross-encoder.

One forward per pair with ``output_hidden_states`` gives the score of every early-exit depth at once (the
same pooler + head on the layer-L CLS state, i.e. exactly what ``early_exit(ce, L)`` computes); the pruning
rule of ``TopKPruner`` (``_survivors``) is then applied offline for every (L, keep) and compared with the
full model's top-10. A real ``TopKPruner`` run on a few queries checks that it returns the same top-10 and
times it against full scoring in the same process.

    python benchmarks/pruning_dl19.py --queries 43 --timed 5            # early-exit cheap stage
    python benchmarks/pruning_dl19.py --cheap int8 --queries 20           # int8 ONNX cheap stage
    python benchmarks/pruning_dl19.py --cheap int8 --eval-on dl20 --queries 54 --model DIR  # choose on DL20
    python benchmarks/pruning_dl19.py --cheap exit-head --model DIR      # fitted exit heads (DL20 -> DL19)

With ``--cheap exit-head`` a linear head per early layer is fitted (``fit_exit_heads``: ridge regression of
the full score on the layer's CLS + mean state) on TREC DL 2020 BM25 top-100 (``--data``, disjoint
queries), then evaluated on DL 2019. ``--model`` picks the cross-encoder (default: MiniLM-L6 + random head;
``benchmarks/train_dl20_cross_encoder.py`` makes a trained one).

With ``--cheap int8`` the cheap stage is the same cross-encoder through the ONNX int8 engine and the full
stage the ONNX fp32 engine (equal to torch within 1e-5); a cheap pair's cost is the measured int8 / fp32
wall-time ratio of this run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def build_minilm_ce(out: Path) -> Path:
    """MiniLM-L6 + the seeded random head, the same model as ``unirank bench`` and the test fixture."""
    from unirank.bench import build_minilm_cross_encoder

    return build_minilm_cross_encoder(out)


def dl19(n_queries: int, depth: int = 100):
    from unirank.eval.datasets import load_dataset

    ds = load_dataset("trec-dl-2019")
    run = ds.get_run("bm25")
    qids = sorted(run)[:n_queries]
    return qids, [ds.queries[q] for q in qids], [[ds.corpus[d] for d, _ in run[q][:depth]] for q in qids]


def all_depth_scores(ce, queries, docs_lists) -> list[np.ndarray]:
    """scores[q] has shape (num_layers, n_docs): row L-1 = early exit after L layers."""
    import torch

    from unirank.backends import hf

    m = ce.model
    qs = [q for q, d in zip(queries, docs_lists) for _ in d]
    ts = [x.text for d in docs_lists for x in d]
    feats = hf.tokenize(ce.tokenizer, qs, ts, ce.max_length)

    def fwd(batch):
        inputs = hf.collate(batch, ce.tokenizer, "cpu")
        hs = m.bert(**inputs, output_hidden_states=True).hidden_states[1:]
        return torch.stack([m.classifier(m.bert.pooler(h))[:, 0] for h in hs], 1).numpy()

    flat = hf.run_model(feats, fwd, max_tokens=4096, batch_size=64)
    out, start = [], 0
    for d in docs_lists:
        out.append(flat[start : start + len(d)].T)
        start += len(d)
    return out


def pruning_table(
    full: list[np.ndarray], cheap: list[np.ndarray], cost: float, k: int = 10, margins=(0.0,), error_zs=()
) -> None:
    """Offline: the survivors of TopKPruner's rules (``keep`` + ``margin``; ``keep`` + ``error_z`` second
    round, through the pruner's own functions) and how often they hold the exact top-k set."""
    from unirank.strategies.pruning import _second_round, _survivors

    settings = [(keep, m, None) for keep in (10, 12, 14, 16, 18, 20, 25, 30, 40, 50) for m in margins]
    settings += [(keep, 0.0, z) for keep in (10, 11, 12) for z in error_zs]
    print(
        "| keep | margin | error_z | survivors | compute vs full | same top-10 set | same top-10 order "
        "| recall@10 |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for keep, margin, z in settings:
        same = same_order = 0
        rec, spent, total, alive_n = [], 0.0, 0, []
        for f, c in zip(full, cheap):
            truth = np.argsort(-f, kind="stable")[:k]
            alive = _survivors(c, keep, margin)
            if z is not None:
                first = np.full(len(f), -np.inf)
                first[alive] = f[alive]
                alive = np.union1d(alive, _second_round(c, first, alive, k, z))
            alive_n.append(len(alive))
            spent += len(f) * cost + len(alive)
            total += len(f)
            sub = np.full(len(f), -np.inf)
            sub[alive] = f[alive]
            got = np.argsort(-sub, kind="stable")[:k]
            same += set(got.tolist()) == set(truth.tolist())
            same_order += list(got) == list(truth)
            rec.append(len(set(truth.tolist()) & set(got.tolist())) / k)
        print(
            f"| {keep} | {margin:g} | {'-' if z is None else f'{z:g}'} | {np.mean(alive_n):.1f} "
            f"| {total / spent:.2f}x | {same}/{len(full)} "
            f"({same / len(full):.0%}) | {same_order}/{len(full)} | {np.mean(rec):.3f} |",
            flush=True,
        )


def int8_cheap_stage(args) -> int:
    from scipy.stats import kendalltau

    from unirank import Reranker

    path = Path(args.model) if args.model else build_minilm_ce(Path(tempfile.mkdtemp()) / "ce")
    fp = Reranker(f"ce:{path}", device="cpu", backend="onnx", onnx_threads=2)
    q8 = Reranker(f"ce:{path}", device="cpu", backend="onnx", quantize="int8", onnx_threads=2)
    if args.eval_on == "dl20":  # to choose keep / margin on other queries than the DL19 evaluation
        qids, queries, docs_lists = dl20(Path(args.data) / "trec-dl-2020-passage")
        qids, queries, docs_lists = qids[: args.queries], queries[: args.queries], docs_lists[: args.queries]
    else:
        qids, queries, docs_lists = dl19(args.queries)
    t_fp, t_q8, full, cheap = 0.0, 0.0, [], []
    for q, d in zip(queries, docs_lists):  # interleaved per query, so both see the same machine load
        t = time.perf_counter()
        full.append(np.array(fp.score(q, d)))
        t_fp += time.perf_counter() - t
        t = time.perf_counter()
        cheap.append(np.array(q8.score(q, d)))
        t_q8 += time.perf_counter() - t
    cost = t_q8 / t_fp
    taus = [kendalltau(a, b)[0] for a, b in zip(full, cheap)]
    print(
        f"{len(qids)} queries x 100: onnx fp32 {t_fp:.1f}s, onnx int8 {t_q8:.1f}s -> cheap cost {cost:.2f}; "
        f"int8 vs fp32 Kendall tau min {min(taus):.3f} median {np.median(taus):.3f}"
    )
    pruning_table(full, cheap, cost, margins=args.margins, error_zs=args.error_z)
    if args.dump:  # the scores, for trying other pruning rules offline
        np.savez(args.dump, full=np.stack(full), cheap=np.stack(cheap), cost=cost)
    if args.timed:  # the real pruner, wall time against full fp32 scoring
        from unirank.strategies.pruning import TopKPruner

        pr = TopKPruner(
            fp, [(q8, args.keep)], k=10, costs=[cost], error_z=args.timed_z, margin=args.timed_margin
        )
        print(
            f"\nTopKPruner(onnx fp32, [(onnx int8, {args.keep})], error_z={args.timed_z}, "
            f"margin={args.timed_margin})"
        )
        timed_pruner(fp, pr, queries[: args.timed], docs_lists[: args.timed], args.repeats, 10)
    return 0


def timed_pruner(ce, pr, tq, td, repeats: int, k: int) -> None:
    """The real pruner vs full scoring on the same queries, same process, interleaved repeats."""
    t_full, t_pr = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        ref = ce.rank_many(tq, td, top_k=k)
        t_full.append(time.perf_counter() - t)
        pr.reset_stats()
        t = time.perf_counter()
        got = pr.rank_many(tq, td, top_k=k)
        t_pr.append(time.perf_counter() - t)
    agree = sum(set(a.indices) == set(b.indices) for a, b in zip(ref, got))
    print(
        f"{len(tq)} queries: full {statistics.median(t_full):.2f}s, pruned {statistics.median(t_pr):.2f}s "
        f"(median of {repeats}), wall-time ratio {statistics.median(t_full) / statistics.median(t_pr):.2f}x, "
        f"counted compute saving {pr.compute_saving:.2f}x, same top-10 set {agree}/{len(tq)}"
    )


def dl20(root: Path, depth: int = 100):
    from _dl20 import load_dl20

    queries, corpus, run, _ = load_dl20(root)
    qids = sorted(run)
    docs = [[corpus[d] for d, _ in sorted(run[q], key=lambda x: -x[1])[:depth]] for q in qids]
    return qids, [queries[q] for q in qids], docs


def exit_head_stage(args) -> int:
    import torch

    from unirank import Reranker
    from unirank.backends import hf
    from unirank.methods.cross_encoder_exit import _exit_features, early_exit, fit_exit_heads
    from unirank.strategies.pruning import TopKPruner, _survivors

    torch.set_num_threads(2)
    path = Path(args.model) if args.model else build_minilm_ce(Path(tempfile.mkdtemp()) / "ce")
    ce = Reranker(f"ce:{path}", device="cpu")
    n_layers = ce.model.config.num_hidden_layers
    layers = list(range(1, n_layers))
    t = time.perf_counter()
    _, fq, fd = dl20(Path(args.data) / "trec-dl-2020-passage")
    heads = fit_exit_heads(ce, layers, fq, fd)
    print(f"fitted heads for layers {layers} on {len(fq)} DL20 queries in {time.perf_counter() - t:.0f}s")
    for h in heads.values():
        print(f"  layer {h.num_layers}: R2 {h.r2:.3f} on the fit pairs, residual sd {h.residual_std:.3f}")
    _, queries, docs_lists = dl19(args.queries)
    qs = [q for q, d in zip(queries, docs_lists) for _ in d]
    feats = hf.tokenize(ce.tokenizer, qs, [x.text for d in docs_lists for x in d], ce.max_length)

    def fwd(batch):
        inputs = hf.collate(batch, ce.tokenizer, "cpu")
        out = ce.model(**inputs, output_hidden_states=True)
        cols = [
            _exit_features(out.hidden_states[x], inputs["attention_mask"]).numpy() @ heads[x].weight
            + heads[x].bias
            for x in layers
        ]
        return np.stack([*cols, ce._logits_to_scores(out.logits)], 1)

    with torch.inference_mode():
        flat = hf.run_model(feats, fwd, max_tokens=4096, batch_size=64)
    scores, start = [], 0
    for d in docs_lists:
        scores.append(flat[start : start + len(d)].T)
        start += len(d)
    k = 10
    print("| exit layer L | keep | margin (x sd) | compute vs full | same top-10 set | mean recall@10 |")
    print("|---|---|---|---|---|---|")
    best = None
    for L in layers:
        sd = heads[L].residual_std
        for keep in (10, 15, 20, 25, 30, 40):
            for z in (0.0, 0.5, 1.0):
                same, rec, cost = 0, [], 0.0
                for s in scores:
                    full = s[-1]
                    truth = set(np.argsort(-full, kind="stable")[:k].tolist())
                    alive = _survivors(s[L - 1], keep, z * sd)
                    cost += len(full) * L / n_layers + len(alive)
                    sub = np.full(len(full), -np.inf)
                    sub[alive] = full[alive]
                    got = set(np.argsort(-sub, kind="stable")[:k].tolist())
                    same += got == truth
                    rec.append(len(truth & got) / k)
                saving = sum(len(s[-1]) for s in scores) / cost
                if saving >= 2 and (best is None or same > best[0]):
                    best = (same, L, keep, z)
                print(
                    f"| {L} | {keep} | {z} | {saving:.2f}x less | {same}/{len(scores)} "
                    f"({same / len(scores):.0%}) | {np.mean(rec):.3f} |",
                    flush=True,
                )
    if best is None:
        return 0
    _, L, keep, z = best
    pr = TopKPruner(ce, [(early_exit(ce, L, heads[L]), keep)], k=k, margin=z * heads[L].residual_std)
    print(f"\nbest setting with >= 2x less compute: L={L}, keep={keep}, margin={z} sd")
    timed_pruner(ce, pr, queries[: args.timed], docs_lists[: args.timed], args.repeats, k)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--queries", type=int, default=43)
    ap.add_argument("--timed", type=int, default=5, help="queries for the real TopKPruner timing")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cheap", choices=["early-exit", "int8", "exit-head"], default="early-exit")
    ap.add_argument("--model", default=None, help="cross-encoder folder (default: MiniLM-L6 + random head)")
    ap.add_argument("--margins", type=float, nargs="+", default=[0.0], help="int8 mode: score margins to try")
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--error-z", type=float, nargs="*", default=[], help="int8 mode: error_z values to try")
    ap.add_argument("--keep", type=int, default=10, help="int8 mode: keep of the timed pruner")
    ap.add_argument("--timed-z", type=float, default=None, help="int8 mode: error_z of the timed pruner")
    ap.add_argument("--timed-margin", type=float, default=0.0, help="int8 mode: margin of the timed pruner")
    ap.add_argument("--dump", default=None, help="int8 mode: save fp32 / int8 scores and cost (.npz)")
    ap.add_argument(
        "--eval-on",
        choices=["dl19", "dl20"],
        default="dl19",
        help="int8 mode: DL20 queries for choosing settings",
    )
    args = ap.parse_args(argv)
    if args.cheap == "int8":
        return int8_cheap_stage(args)
    if args.cheap == "exit-head":
        return exit_head_stage(args)
    import torch

    from unirank import Reranker
    from unirank.methods.cross_encoder_exit import early_exit
    from unirank.strategies.pruning import TopKPruner, _survivors

    torch.set_num_threads(2)
    tmp = Path(tempfile.mkdtemp())
    ce = Reranker(f"ce:{build_minilm_ce(tmp / 'ce')}", device="cpu")
    qids, queries, docs_lists = dl19(args.queries)
    t = time.perf_counter()
    with torch.inference_mode():
        scores = all_depth_scores(ce, queries, docs_lists)
    print(f"scored {len(qids)} queries x 100 at every depth in {time.perf_counter() - t:.0f}s", flush=True)
    k, n_layers = 10, scores[0].shape[0]
    print("| exit layer L | keep | compute vs full | same top-10 set | same top-10 order | mean recall@10 |")
    print("|---|---|---|---|---|---|")
    for L in range(1, n_layers):
        for keep in (10, 15, 20, 25, 30, 40, 50):
            same = same_order = 0
            rec = []
            cost = 0.0
            for s in scores:
                full = s[-1]
                truth = set(np.argsort(-full, kind="stable")[:k].tolist())
                alive = _survivors(s[L - 1], keep, 0.0)
                cost += len(full) * L / n_layers + len(alive)
                sub = np.full(len(full), -np.inf)
                sub[alive] = full[alive]
                got = np.argsort(-sub, kind="stable")[:k]
                same += set(got.tolist()) == truth
                same_order += list(got) == list(np.argsort(-full, kind="stable")[:k])
                rec.append(len(truth & set(got.tolist())) / k)
            saving = sum(len(s[-1]) for s in scores) / cost
            print(
                f"| {L} | {keep} | {saving:.2f}x less | {same}/{len(scores)} ({same / len(scores):.0%}) "
                f"| {same_order}/{len(scores)} | {np.mean(rec):.3f} |",
                flush=True,
            )
    # real pruner vs full scoring, same process, interleaved repeats
    L, keep = 1, 30
    pr = TopKPruner(ce, [(early_exit(ce, L), keep)], k=k)
    print(f"\nTopKPruner(L={L}, keep={keep})")
    timed_pruner(ce, pr, queries[: args.timed], docs_lists[: args.timed], args.repeats, k)
    return 0


if __name__ == "__main__":
    sys.exit(main())
