"""A switch that parks one worker mid-shard so a test can SIGKILL it (the distributed engines' crash tests).

:class:`KillSwitchCache` is a :class:`~unirank.cache.ScoreCache` that never hits (so scores are the model's
own) and, once armed, parks the scoring calls of the job whose numbers it was given (counted across
processes through a file): such a call writes its process id to ``pid`` and sleeps until killed (at most
``hold_s``). Every other call, in a restarted worker too, goes straight through. :func:`kill_when_parked`
is the test side: it waits for the ``pid`` file and sends SIGKILL, as many times as asked.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

from unirank.cache import ScoreCache


class KillSwitchCache(ScoreCache):
    """Pass-through score cache with a kill switch in ``folder`` (see the module docstring)."""

    def __init__(self, folder: str | os.PathLike[str], hold_s: float = 60.0) -> None:
        super().__init__(max_items=1)
        self.folder, self.hold_s = str(folder), float(hold_s)

    def __reduce__(self):  # a fresh, lock-free copy in each worker
        return (type(self), (self.folder, self.hold_s))

    def __repr__(self) -> str:  # stable: the job fingerprint reprs its options
        return f"KillSwitchCache({Path(self.folder).name!r})"

    def arm(self, *at: int) -> None:
        """Park these scoring calls (1-based, counted from now on)."""
        (Path(self.folder) / "armed").write_text(",".join(map(str, at)))

    def get_many(self, keys):
        folder = Path(self.folder)
        armed = folder / "armed"
        if armed.is_file():
            with open(folder / "calls", "a") as fh:
                fh.write(".")
            if (folder / "calls").stat().st_size in {int(n) for n in armed.read_text().split(",")}:
                (folder / "pid.tmp").write_text(str(os.getpid()))
                os.replace(folder / "pid.tmp", folder / "pid")
                deadline = time.monotonic() + self.hold_s
                while time.monotonic() < deadline:  # parked: the test kills this process now
                    time.sleep(0.05)
        return [None] * len(keys)

    def put_many(self, items) -> None:
        return None


def kill_when_parked(folder: str | os.PathLike[str], times: int = 1, timeout_s: float = 120.0) -> list[int]:
    """Start a thread that SIGKILLs the process parked by the switch in ``folder``, ``times`` times; the
    returned list gets each killed pid."""
    killed: list[int] = []

    def watch() -> None:
        pid_file = Path(folder) / "pid"
        deadline = time.monotonic() + timeout_s
        while len(killed) < times and time.monotonic() < deadline:
            if pid_file.is_file():
                pid = int(pid_file.read_text())
                pid_file.unlink()
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            time.sleep(0.05)

    threading.Thread(target=watch, daemon=True, name="kill-when-parked").start()
    return killed
