"""`unirank train ...` with one change patched in: bf16 on the CPU passes ``use_cpu=True`` (see NEEDS.md #1).

    python benchmarks/research/run_train_patched.py examples/train_cross_encoder.yaml --out /tmp/ce-example

Everything else is the shipped trainer; remove this once ``unirank.train.trainer._precision`` does it.
"""

from __future__ import annotations

import sys


def main() -> int:
    import torch

    import unirank.train.trainer as trainer
    from unirank.cli import main as cli_main

    shipped = trainer._precision

    def precision(name: str) -> dict[str, bool]:
        flags = shipped(name)
        if name == "bf16" and not torch.cuda.is_available():
            flags = {**flags, "use_cpu": True}
        return flags

    trainer._precision = precision
    return cli_main(["train", *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
