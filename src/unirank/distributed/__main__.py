"""``python -m unirank.distributed ...``: the ``rerank-run`` command on its own."""

from __future__ import annotations

import argparse
import logging
import sys

from .cli import add_subparser


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m unirank.distributed")
    sub = parser.add_subparsers(dest="command", required=True)
    add_subparser(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        sys.stderr.write("interrupted; committed shards are kept, rerun with --resume\n")
        return 130
    except (ValueError, TypeError, FileNotFoundError, FileExistsError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
