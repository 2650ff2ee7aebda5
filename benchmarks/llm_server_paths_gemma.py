"""FIRST on one window through every path, on the packaged Gemma 3 270M: local, a server's /completions, its
/chat/completions with the answer prefilled, and a chat server that ignores the prefill (issue 15).

The server is the tests' loopback OpenAI-compatible fake backed by the same local engine (so the only
differences are the paths'). Prints, per path and query, the identifiers' first-token probability mass, how
many identifiers the top-k listed, the order's Kendall tau against the local one, or the error raised;
then ``usage`` and the pre-run estimate of the server ranker. The first row is the server path without
``tokenizer=`` (documents cut to 48 words, not 48 tokens); every other row passes the engine's tokenizer.

    .venv/bin/python benchmarks/llm_server_paths_gemma.py --queries 3 --window 10 --max-doc-tokens 48
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
from scipy.stats import kendalltau

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _fake_openai_server import FakeOpenAIServer
from unirank import Reranker
from unirank.backends.causal_lm import CausalLM
from unirank.eval.datasets import load_dataset
from unirank.methods.llm_listwise import FirstWindow

logger = logging.getLogger("llm_server_paths_gemma")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--queries", type=int, default=3)
    ap.add_argument("--window", type=int, default=10)
    ap.add_argument("--max-doc-tokens", type=int, default=48)
    ap.add_argument("--top-logprobs", type=int, default=20)
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)

    engine = CausalLM.shared("gemma3-270m", max_length=4096)
    ds = load_dataset("trec-dl-2019")
    run = ds.get_run("bm25.top100")
    qids = [q for q in ds.queries if q in run][: args.queries]
    server = FakeOpenAIServer(engine, model_name="gemma", max_logprobs=50).start()
    opts = dict(
        method="first", window_size=args.window, max_doc_tokens=args.max_doc_tokens, prompt="rankzephyr"
    )
    local = FirstWindow(
        engine, prompt="rankzephyr", window_size=args.window, max_doc_tokens=args.max_doc_tokens
    )
    try:
        tok = engine.tokenizer  # tokenizer=: the server path renders and budgets prompts as the local one
        for path, endpoint, prefill, tokenizer in [
            ("completions, no tok.", "completions", True, None),
            ("completions", "completions", True, tok),
            ("chat, prefilled", "chat", True, tok),
            ("chat, prefill ignored", "chat", False, tok),
        ]:
            server.chat_prefill = prefill
            r = Reranker(
                "llm-listwise:gemma",
                base_url=server.base_url,
                endpoint=endpoint,
                top_logprobs=args.top_logprobs,
                max_retries=0,
                tokenizer=tokenizer,
                **opts,
            )
            for qid in qids:
                docs = [ds.corpus[d] for d, _ in run[qid][: args.window]]
                want = local.window_logprobs(ds.queries[qid], docs)
                try:
                    import asyncio

                    lp = asyncio.run(r.window.awindow_logprobs(ds.queries[qid], docs))
                except Exception as exc:
                    print(f"{path:22s} q={qid}: {type(exc).__name__}: {str(exc)[:150]}", flush=True)
                    continue
                ok = np.isfinite(lp)
                tau = kendalltau(np.nan_to_num(lp, neginf=-1e9), want).statistic
                mass = float(np.exp(lp[ok]).sum())
                print(
                    f"{path:22s} q={qid}: mass {mass:.3f} (local {np.exp(want).sum():.3f}), "
                    f"{int(ok.sum())}/{len(docs)} identifiers listed, tau vs local {tau:.2f}",
                    flush=True,
                )
            print(f"{path:22s} usage {r.usage.as_dict()}", flush=True)
        est = Reranker("llm-listwise:gemma", base_url=server.base_url, stride=5, tokenizer=tok, **opts)
        print("estimate, 43 queries x depth 100:", est.estimate(num_queries=43, depth=100), flush=True)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
