"""File plumbing shared by the eval readers and writers: gzip-aware text reading and atomic writes.

Reading is strict, so that a damaged file never turns into plausible numbers: every line must be UTF-8 (a
byte-order mark at the start of a line is dropped), and a truncated or corrupt gzip stream is an error. Each
raises :class:`~unirank.errors.EvalInputError` naming the file and, where there is one, the line.
"""

from __future__ import annotations

import codecs
import contextlib
import gzip
import io
import json
import os
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Union

from ..errors import EvalInputError

__all__ = ["METADATA_FILE", "PathArg", "atomic_write", "read_metadata"]

#: A filesystem path, or an ``importlib.resources`` Traversable (anything with ``.open`` and ``.name``).
PathArg = Union[str, "os.PathLike[str]", Any]


def _as_path(path: PathArg) -> Any:
    if isinstance(path, (str, os.PathLike)):
        return Path(path)
    if hasattr(path, "open") and hasattr(path, "name"):
        return path  # importlib.resources Traversable
    raise TypeError(f"expected a path, got {type(path).__name__}")


def _bad(where: str, lineno: int, message: str) -> EvalInputError:
    """The error for a bad line: ``"<file>:<line>: <message>"``, with ``path`` and ``line`` set."""
    return EvalInputError(f"{where}:{lineno}: {message}", path=where, line=lineno)


#: Name of a dataset folder's own metadata file, and the keys it may hold.
METADATA_FILE = "unirank.json"
_METADATA_KEYS = ("rel_level", "description")


def read_metadata(folder: Any) -> dict[str, Any]:
    """A dataset folder's ``unirank.json`` (``{}`` if there is none), validated.

    Keys: ``rel_level`` (int >= 1, the minimum grade binary metrics count as relevant: 2 for TREC DL) and
    ``description`` (free text). Anything else is an error, so that a misspelt key is never ignored.
    """
    path = folder / METADATA_FILE
    if not path.is_file():
        return {}
    where = str(path)
    try:
        meta = json.loads(path.read_bytes().decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EvalInputError(f"{where}: not a valid UTF-8 JSON file ({exc})", path=where) from None
    if not isinstance(meta, dict):
        raise EvalInputError(f'{where}: expected a JSON object such as {{"rel_level": 2}}', path=where)
    unknown = sorted(set(meta) - set(_METADATA_KEYS))
    if unknown:
        raise EvalInputError(f"{where}: unknown keys {unknown}; known: {list(_METADATA_KEYS)}", path=where)
    level = meta.get("rel_level", 1)
    if isinstance(level, bool) or not isinstance(level, int) or level < 1:
        raise EvalInputError(f"{where}: rel_level must be an integer >= 1, got {level!r}", path=where)
    return meta


def _decode(data: bytes, where: str, lineno: int) -> str:
    if data.startswith(codecs.BOM_UTF8):  # the file's own, or one from each file of a concatenation
        data = data[len(codecs.BOM_UTF8) :]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EvalInputError(
            f"{where}:{lineno}: not valid UTF-8 (byte 0x{data[exc.start]:02x} at byte {exc.start + 1} of the "
            "line); the file must be UTF-8: convert it, e.g. with 'iconv -f latin1 -t utf-8'",
            path=where,
            line=lineno,
        ) from None


def _lines(path: PathArg) -> Iterator[tuple[str, int, str]]:
    """(location label, 1-based line number, stripped line) for every non-blank line.

    Lines end at ``\\n`` (``\\r\\n`` too); each is decoded on its own, so a decoding error names its line.
    """
    p = _as_path(path)
    where = str(path)
    lineno = 0
    try:
        with p.open("rb") as raw:
            stream = gzip.GzipFile(fileobj=raw, mode="rb") if p.name.endswith(".gz") else raw
            for lineno, data in enumerate(stream, 1):
                line = _decode(data, where, lineno).strip()
                if line:
                    yield where, lineno, line
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise EvalInputError(
            f"{where}: truncated or corrupt gzip file, unreadable after line {lineno} ({exc})",
            path=where,
            line=lineno + 1,
        ) from None


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
