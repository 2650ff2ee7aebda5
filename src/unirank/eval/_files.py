"""File plumbing shared by the eval readers and writers: gzip-aware text reading and atomic writes."""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Union

__all__ = ["PathArg", "atomic_write"]

#: A filesystem path, or an ``importlib.resources`` Traversable (anything with ``.open`` and ``.name``).
PathArg = Union[str, "os.PathLike[str]", Any]


def _as_path(path: PathArg) -> Any:
    if isinstance(path, (str, os.PathLike)):
        return Path(path)
    if hasattr(path, "open") and hasattr(path, "name"):
        return path  # importlib.resources Traversable
    raise TypeError(f"expected a path, got {type(path).__name__}")


@contextlib.contextmanager
def _open_text(path: PathArg) -> Iterator[IO[str]]:
    p = _as_path(path)
    with p.open("rb") as raw:
        stream = gzip.GzipFile(fileobj=raw, mode="rb") if p.name.endswith(".gz") else raw
        with io.TextIOWrapper(stream, encoding="utf-8", newline=None) as text:
            yield text


def _lines(path: PathArg) -> Iterator[tuple[str, int, str]]:
    """(location label, 1-based line number, stripped line) for every non-blank line."""
    with _open_text(path) as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.strip()
            if line:
                yield str(path), lineno, line


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[IO[str]]:
    """Open ``path`` for text writing, atomically: temp file in the same folder, fsync, ``os.replace``.

    A ``.gz`` destination is gzip-compressed (deterministically: no name, mtime 0). If the body raises, the
    temp file is removed and the destination is left as it was.

    >>> import os, tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "out.txt")
    >>> with atomic_write(p) as fh:
    ...     _ = fh.write("hello\\n")
    >>> open(p).read()
    'hello\\n'
    """
    dest = Path(path)
    folder = dest.parent if str(dest.parent) else Path(".")
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=folder)
    raw = os.fdopen(fd, "wb")
    fh: io.TextIOWrapper | None = None
    try:
        gz = dest.name.endswith(".gz")
        sink: IO[bytes] = gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) if gz else raw
        fh = io.TextIOWrapper(sink, encoding="utf-8", newline="\n")
        yield fh
        fh.flush()
        inner = fh.detach()
        fh = None
        if gz:
            inner.close()  # writes the gzip trailer; ``raw`` stays open
        raw.flush()
        os.fsync(raw.fileno())
        raw.close()
        mode = dest.stat().st_mode & 0o777 if dest.exists() else 0o644
        os.chmod(tmp, mode)
        os.replace(tmp, dest)
    except BaseException:
        for closable in (fh, raw):
            with contextlib.suppress(Exception):
                if closable is not None:
                    closable.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename durable; not possible on every platform
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _check_token(value: str, what: str) -> str:
    value = str(value)
    if not value or any(c.isspace() for c in value):
        raise ValueError(
            f"{what} {value!r} is empty or contains whitespace; it cannot be written to a TREC file"
        )
    return value
