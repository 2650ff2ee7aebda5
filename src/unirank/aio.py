"""Running a coroutine from synchronous code (the lowest layer: every engine, method and strategy uses it)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

__all__ = ["run_sync"]


def run_sync(coro: Any) -> Any:
    """Run a coroutine to completion from sync code, also when called inside a running event loop (then in a
    worker thread with its own loop, so a notebook or an async server can call the sync API).

    >>> async def two():
    ...     return 2
    >>> run_sync(two())
    2
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()
