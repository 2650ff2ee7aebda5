"""Treat denormal floats as zero on the calling thread, for the duration of a block.

Softmax over attention scores produces many tiny probabilities; below ~1e-38 they become *denormal* floats,
which x86 CPUs multiply through a slow microcode path. onnxruntime's MiniLM-L6 forward on DL19 pairs spent
~45 % of its attention time on them (profiled, docs/benchmarks-speed.md); with the flush-to-zero (FTZ) and
denormals-are-zero (DAZ) modes on, the int8 forward ran 1.37x faster and scores changed by < 1e-6.

The modes are per thread. onnxruntime's own switch (``session.set_denormal_as_zero``) sets them for good
on the thread that builds the first session of the process (the caller's main thread) and not at all on
other threads that call ``run``; :func:`flush_denormals` instead sets them on the current thread and
restores the previous floating-point environment on exit, so nothing outside the block changes.

Supported: Linux with glibc on x86-64 (MXCSR bits FTZ and DAZ) and on aarch64 (FPCR.FZ). Elsewhere the
context manager does nothing.

>>> import numpy as np
>>> tiny = np.float32(1e-39)  # a denormal
>>> with flush_denormals():
...     inside = float(np.float32(tiny) * np.float32(1.0))
>>> inside == 0.0 or not supported()  # flushed inside the block
True
>>> float(tiny * np.float32(1.0)) > 0.0  # restored on exit
True
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import platform
import sys
from collections.abc import Iterator

__all__ = ["flush_denormals", "supported"]

_FTZ_DAZ_X86 = 0x8040  # MXCSR bit 15 (flush to zero) | bit 6 (denormals are zero)
_FZ_ARM = 1 << 24  # FPCR.FZ


@functools.lru_cache(maxsize=1)
def _layout() -> tuple[ctypes.CDLL, int, int, int] | None:
    """(libm, fenv_t size, offset of the control word, bits to set) for this platform, or None."""
    if not sys.platform.startswith("linux"):
        return None
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64"):
        size, offset, bits = 32, 28, _FTZ_DAZ_X86  # glibc fenv_t: x87 state (28 bytes), then __mxcsr
    elif machine in ("aarch64", "arm64"):
        size, offset, bits = 8, 0, _FZ_ARM  # glibc fenv_t: __fpcr, __fpsr
    else:
        return None
    name = ctypes.util.find_library("m")
    if name is None or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libm = ctypes.CDLL(name)
        libm.fegetenv.argtypes = libm.fesetenv.argtypes = [ctypes.c_void_p]
        libm.fegetenv.restype = libm.fesetenv.restype = ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libm, size, offset, bits


def supported() -> bool:
    """Whether :func:`flush_denormals` changes anything on this platform."""
    return _layout() is not None


@contextlib.contextmanager
def flush_denormals() -> Iterator[None]:
    """Within the block, the calling thread flushes denormal results and inputs to zero; the previous
    floating-point environment is restored on exit (also when the block raises)."""
    layout = _layout()
    if layout is None:
        yield
        return
    libm, size, offset, bits = layout
    saved = ctypes.create_string_buffer(size)
    if libm.fegetenv(saved) != 0:
        yield
        return
    fast = ctypes.create_string_buffer(saved.raw, size)
    word = ctypes.c_uint32.from_buffer(fast, offset)
    word.value |= bits
    libm.fesetenv(fast)
    try:
        yield
    finally:
        libm.fesetenv(saved)
