"""Kill-and-resume equals an uninterrupted run: a training process is SIGKILLed right after checkpoint-4 is
on disk, ``unirank train`` is run again with the same command, and the final weights equal those of a run
that was never interrupted (same seed, dropout on, a dev evaluation every 4 steps) within 1e-6.

Exactness comes from transformers' Trainer: the checkpoint holds the optimiser, scheduler and RNG states
(python, numpy, torch); the data order is a seeded sampler (accelerate's seedable sampler, seed + epoch),
so on resume the first 4 batches are skipped and the RNG state is restored after the skip, before the next
forward; the training groups come from ``OUT/checkpoints/train_groups.jsonl``, not rebuilt.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("accelerate")
yaml = pytest.importorskip("yaml")

from test_train_run import tiny_config, write_fixture  # noqa: E402

# Runs the CLI in a child process; after checkpoint-4 is completely written it marks that and waits to be
# killed (the waiting changes nothing the checkpoint holds).
CHILD = textwrap.dedent(
    """
    import sys, time
    import torch
    torch.set_num_threads(1)
    import transformers
    original = transformers.Trainer._save_checkpoint
    def save_then_wait(self, model, trial):
        original(self, model, trial)
        if self.state.global_step == 4:
            open(sys.argv[1], "w").close()
            time.sleep(600)
    transformers.Trainer._save_checkpoint = save_then_wait
    from unirank.cli import main
    sys.exit(main(sys.argv[2:]))
    """
)


def _weights(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


@pytest.fixture
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models train fastest (and reproducibly) on one thread of a busy machine
    yield
    torch.set_num_threads(before)


def test_kill_and_resume_equals_an_uninterrupted_run(make_tiny_bert, tmp_path, one_thread):
    from unirank.cli import main
    from unirank.train import train

    files = write_fixture(tmp_path / "data", n_train=24)
    model = make_tiny_bert("seqcls", num_labels=1, seed=11)
    cfg = tiny_config(model, files, max_steps=12, save_steps=4, eval_steps=4, save_total_limit=None)
    assert json.loads((model / "config.json").read_text())["hidden_dropout_prob"] > 0  # dropout is on
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump(cfg))

    whole = train(cfg, tmp_path / "whole", show_progress=False)
    assert whole.steps == 12

    out = tmp_path / "killed"
    marker = tmp_path / "checkpoint-4-written"
    command = ["train", str(config), "--out", str(out), "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(marker), *command], env=env)
    try:
        deadline = time.monotonic() + 240
        while not marker.exists():
            assert child.poll() is None, f"the training process ended early (rc {child.returncode})"
            assert time.monotonic() < deadline, "no checkpoint-4 within 240 s"
            time.sleep(0.2)
        child.send_signal(signal.SIGKILL)
        assert child.wait(30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
    ckpts = sorted(p.name for p in (out / "checkpoints").glob("checkpoint-*"))
    assert ckpts == ["checkpoint-4"] and not (out / "model.safetensors").exists()

    assert main(command) == 0  # the same command again: resumes
    summary = json.loads((out / "unirank_train.json").read_text())
    assert summary["resumed_from"] == "checkpoint-4" and summary["steps"] == 12

    for rel in ("checkpoints/checkpoint-12/model.safetensors", "model.safetensors"):
        a, b = _weights(tmp_path / "whole" / rel), _weights(out / rel)
        assert a.keys() == b.keys()
        for key in a:
            assert (a[key] - b[key]).abs().max().item() <= 1e-6, (rel, key)
    evals = lambda h: [(r["step"], r["eval_ndcg@10"]) for r in h if "eval_ndcg@10" in r]  # noqa: E731
    assert evals(summary["history"]) == evals(whole.history)


def test_a_different_config_on_the_same_out_is_refused(make_tiny_bert, tmp_path, one_thread):
    from unirank.errors import SpecError
    from unirank.train import train

    files = write_fixture(tmp_path / "data", n_train=8)
    model = make_tiny_bert("seqcls", num_labels=1, seed=11)
    cfg = tiny_config(model, files, max_steps=2, save_steps=2, eval_steps=2, dev=None)
    train(cfg, tmp_path / "out", show_progress=False)
    with pytest.raises(SpecError, match=r"different config \(changed: optimizer\).*--overwrite"):
        train({**cfg, "optimizer": {"name": "adamw", "lr": 1e-4}}, tmp_path / "out", show_progress=False)
    res = train(
        {**cfg, "optimizer": {"name": "adamw", "lr": 1e-4}},
        tmp_path / "out",
        overwrite=True,
        show_progress=False,
    )
    assert res.steps == 2 and res.resumed_from is None
    with pytest.raises(SpecError, match="not empty"):
        (tmp_path / "other").mkdir()
        (tmp_path / "other" / "notes.txt").write_text("mine")
        train(cfg, tmp_path / "other", show_progress=False)
