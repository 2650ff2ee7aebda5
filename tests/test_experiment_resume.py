"""Killing an experiment midway (SIGKILL) and re-running it recomputes nothing already finished."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

N_UNITS = 8

SCRIPT = textwrap.dedent(
    f"""
    import sys, time
    from unirank.eval.experiment import run_experiment
    from unirank.methods.lexical import BM25Ranker

    class SlowBM25(BM25Ranker):
        '''BM25 that takes 30 ms per query, so the experiment can be killed between units.'''
        def _score_many(self, queries, docs_lists, show_progress=False):
            time.sleep(0.03 * len(queries))
            return super()._score_many(queries, docs_lists, show_progress)

    config = {{
        "datasets": [{{"name": "dl19", "source": "trec-dl-2019", "max_queries": 10}}],
        "rerankers": [{{"name": "slow", "ranker": SlowBM25(name="slow")}}],
        "depths": list(range(1, {N_UNITS + 1})),
        "metrics": ["nDCG@10"],
        "significance": {{"resamples": 200}},
    }}
    res = run_experiment(config, out_dir=sys.argv[1])
    print("COMPUTED", len(res.computed), "REUSED", len(res.reused), flush=True)
    """
)


def _units(cache: Path) -> dict[str, tuple[int, bytes]]:
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in cache.glob("*.json.gz")}


def test_sigkill_midway_then_resume_recomputes_nothing_finished(tmp_path):
    script = tmp_path / "exp.py"
    script.write_text(SCRIPT)
    out = tmp_path / "out"
    cache = out / "cache"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(out)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if cache.is_dir() and len(list(cache.glob("*.json.gz"))) >= 3:
                break
            time.sleep(0.01)
        assert proc.poll() is None, "the experiment finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    before = _units(cache)
    assert 3 <= len(before) < N_UNITS
    assert not (out / "report.html").exists()

    done = subprocess.run(
        [sys.executable, str(script), str(out)], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    m = re.search(r"COMPUTED (\d+) REUSED (\d+)", done.stdout)
    assert m, done.stdout
    computed, reused = int(m.group(1)), int(m.group(2))
    assert reused == len(before)
    assert computed == N_UNITS - len(before)
    after = _units(cache)
    assert len(after) == N_UNITS
    for name, stamp in before.items():
        assert after[name] == stamp  # finished units untouched: same bytes, same mtime
    assert not list(cache.glob(".*.tmp"))  # no temp file left by the killed writer
    assert (out / "report.html").is_file()
