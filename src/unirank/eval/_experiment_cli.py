"""``unirank experiment CONFIG``: wired into :mod:`unirank.cli` through :mod:`unirank.eval.experiment`."""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["add_subparser", "cmd_experiment"]


def add_subparser(sub: Any) -> argparse.ArgumentParser:
    """Add ``unirank experiment CONFIG [--out DIR] [--resume/--no-resume] [--rel-level N]
    [--skip-queries-without-text]`` to a subparsers object."""
    p = sub.add_parser("experiment", help="run an experiment config; HTML / Markdown report and TREC runs")
    p.add_argument("config", help="experiment config (YAML or JSON)")
    p.add_argument("--out", default=None, help="output folder (default: the config's out, else runs/NAME)")
    p.add_argument(
        "--resume",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="reuse finished units from the cache (default); --no-resume recomputes every unit",
    )
    p.add_argument(
        "--rel-level",
        type=int,
        default=None,
        metavar="N",
        help="binary metrics count grade >= N as relevant, in every dataset (overrides the config; "
        "default: the config's rel_level, else each dataset's own: 2 for TREC DL)",
    )
    p.add_argument(
        "--skip-queries-without-text",
        action="store_true",
        default=None,
        help="leave judged queries that have no text out of every row (default: the config's "
        "skip_queries_without_text, else refuse them)",
    )
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_experiment)
    return p


def cmd_experiment(args: argparse.Namespace) -> int:
    """The ``unirank experiment`` command."""
    from ._experiment_run import run_experiment

    res = run_experiment(
        args.config,
        args.out,
        resume=args.resume,
        show_progress=not args.no_progress,
        rel_level=args.rel_level,
        skip_queries_without_text=args.skip_queries_without_text,
    )
    sys.stdout.write(
        f"{res.summary_text()}\n\n{len(res.computed)} units computed, {len(res.reused)} reused from cache\n"
        f"report: {res.report_html}\nsummary: {res.report_md}\n"
    )
    return 0
