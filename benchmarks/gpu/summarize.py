"""Tables from what ``benchmarks/gpu/run.sh`` left in a folder (complete or cut short by a time limit).

- ``gpu.jsonl`` (``gpu_side_by_side.py``): per model and path, pairs/s, x ST (fp32 and best), the share of
  the faster forward-only floor, TFLOP/s and the parity columns it records;
- ``unirank-bench.jsonl`` (``unirank bench --device``): the tables of ``unirank bench``, with the goals.

    python benchmarks/gpu/summarize.py OUT_FOLDER
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def read_jsonl(path: Path) -> list[dict]:
    rows = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut by the time limit
                break
    return rows


def _f(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def shared_table(rows: list[dict]) -> str:
    """``gpu_side_by_side.py`` rows; ``floor share`` = a path's pairs/s over the faster floor's."""
    floors: dict[str, float] = {}
    for r in rows:
        if r.get("event") == "ce" and str(r.get("path", "")).startswith("floor"):
            floors[r["model"]] = max(floors.get(r["model"], 0.0), r["pairs_s"])
    lines = [
        "| model | path | pairs/s | x ST fp32 | x ST best | floor share | TFLOP/s | max abs vs ref "
        "| tau min |",
        "|---" * 9 + "|",
    ]
    for r in rows:
        if r.get("event") in ("ce", "embed"):
            rate = r.get("pairs_s", r.get("docs_s"))
            share = rate / floors[r["model"]] if r["model"] in floors and r.get("event") == "ce" else None
            diff = r.get("max_abs_vs_ref", r.get("max_abs_vs_st"))
            lines.append(
                f"| {r['model']} | {r['event']} {r['path']} | {_f(rate, '.0f')} "
                f"| {_f(r.get('x_st_fp32'), '.2f')} | {_f(r.get('x_st_best', r.get('x_st')), '.2f')} "
                f"| {_f(share, '.0%')} | {_f(r.get('tflops'), '.1f')} | {_f(diff, '.1e')} "
                f"| {_f(r.get('tau_min'), '.4f')} |"
            )
        elif r.get("event") in ("env", "inputs", "tokenize", "mem", "error"):
            lines.append(f"| {r.get('model', '-')} | {r['event']}: {json.dumps(r)[:150]} | | | | | | | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    folder = Path((argv or sys.argv[1:])[0])
    shared = read_jsonl(folder / "gpu.jsonl")
    print(f"## gpu_side_by_side.py ({len(shared)} rows)\n")
    print(shared_table(shared) if shared else "(no rows)")
    ours = read_jsonl(folder / "unirank-bench.jsonl")
    print(f"\n## unirank bench --device ({len(ours)} rows)\n")
    if ours:
        from unirank._bench_gpu import format_device_rows, target_rows

        env = [r for r in ours if r.get("event") in ("env", "inputs", "mem")]
        print("\n".join(json.dumps(r) for r in env) + "\n")
        has_targets = any(r.get("event") == "target" for r in ours)
        print(format_device_rows(ours if has_targets else ours + target_rows(ours)))
    else:
        print("(no rows)")
    compiled = read_jsonl(folder / "unirank-compile.jsonl")
    if compiled:
        from unirank._bench_gpu import format_device_rows

        print(f"\n## unirank bench --device --compile ({len(compiled)} rows)\n")
        print(format_device_rows(compiled))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
