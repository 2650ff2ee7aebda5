#!/usr/bin/env bash
# The GPU side of issue 16 in one command, on the device machine, from the repository root:
#   1. env.txt: versions, GPU, and which of unirank's cross-encoder imports this Python has;
#   2. ../shared/bench/gpu_side_by_side.py (carried in .gpu-carry/ by benchmarks/gpu/prepare.py) -> gpu.jsonl;
#   3. unirank bench --device cuda --compile none -> unirank-bench.jsonl (rows as measured) and
#      unirank-bench.md (tables);
#   4. in the time left, the minilm-l6 cross-encoder's unirank-inductor / unirank-cudagraphs rows (compile=;
#      compile_s: the first pass, compile included, kept out of the timed rounds; parity vs unirank-default)
#      -> unirank-compile.jsonl / .md;
#   5. summary.md: all of it, as tables (also printed).
# Every step writes as it goes, and each runs under its own time limit, so a cut still leaves figures in $OUT.
#
# Knobs (environment): BUDGET_S (540: whole run), SHARED_S (240: step 2's share), SHARED_SIZES, SIZES, QUERIES
# (empty: all 97 DL19+DL20 queries), REPEATS (3), DEVICE (cuda), PYTHON (python3), CARRY (.gpu-carry),
# COMPILE (inductor,cudagraphs; none skips step 4), COMPILE_SIZES (minilm-l6).
# SMALL=1: a CPU dry run with tiny models (the shared script's own SMALL=1, and --sizes tiny for unirank).
set -u
cd "$(dirname "$0")/../.."
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
CARRY=${CARRY:-.gpu-carry}
PY=${PYTHON:-python3}  # the device image's python3 holds torch, transformers, sentence-transformers
BUDGET_S=${BUDGET_S:-540}
SHARED_S=${SHARED_S:-240}
SHARED_SIZES=${SHARED_SIZES:-minilm-l6-h384,bert-base,bert-large}
if [ "${SMALL:-0}" = 1 ]; then
  SIZES=${SIZES:-tiny}; QUERIES=${QUERIES:-2}; DEPTH=${DEPTH:-10}; REPEATS=${REPEATS:-1}; DEVICE=${DEVICE:-cpu}
  PARITY=${PARITY:-1}; COMPILE=${COMPILE:-inductor}; COMPILE_SIZES=${COMPILE_SIZES:-tiny}
fi
SIZES=${SIZES:-minilm-l6,bert-base,bert-large}
QUERIES=${QUERIES:-}
DEPTH=${DEPTH:-100}
REPEATS=${REPEATS:-3}
DEVICE=${DEVICE:-cuda}
PARITY=${PARITY:-8}
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
start=$SECONDS
[ -f "$CARRY/gpu_side_by_side.py" ] || { echo "no $CARRY/: run python benchmarks/gpu/prepare.py here first"; exit 2; }

"$PY" - > "$OUT/env.txt" 2>&1 <<'EOF'
import importlib, os, platform, sys
print("python", platform.python_version(), "cpus", os.cpu_count())
for m in ("torch", "transformers", "sentence_transformers", "numpy", "tokenizers", "safetensors",
          "huggingface_hub", "tqdm", "scipy"):
    try:
        print(m, getattr(importlib.import_module(m), "__version__", "?"))
    except Exception as e:
        print(m, "MISSING", repr(e)[:200])
import torch
print("cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-")
import unirank.methods.cross_encoder, unirank.methods.embedding, unirank.eval.datasets
print("unirank CE/embedding imports: ok; datasets", unirank.eval.datasets.available_datasets())
EOF
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm \
  --format=csv >> "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

if [ "$SHARED_S" -gt 0 ]; then
  timeout -k 10 "$SHARED_S" "$PY" "$CARRY/gpu_side_by_side.py" --data "$CARRY/data" --tokenizer "$CARRY/tokenizer" \
    --sizes "$SHARED_SIZES" > "$OUT/gpu_side_by_side.log" 2>&1
  echo "gpu_side_by_side.py: exit $? after $((SECONDS - start)) s (124: cut at SHARED_S=$SHARED_S)"
else
  echo "gpu_side_by_side.py: skipped (SHARED_S=0)"
fi

left=$((BUDGET_S - (SECONDS - start)))
[ "$left" -gt 30 ] || left=30
timeout -k 10 "$left" "$PY" -m unirank.cli -v bench --device "$DEVICE" --sizes "$SIZES" ${QUERIES:+--queries "$QUERIES"} \
  --depth "$DEPTH" --repeats "$REPEATS" --parity-queries "$PARITY" --tokenizer "$CARRY/tokenizer" --compile none \
  --out "$OUT/unirank-bench.jsonl" > "$OUT/unirank-bench.md" 2> "$OUT/unirank-bench.log"
echo "unirank bench: exit $? after $((SECONDS - start)) s (124: cut at BUDGET_S=$BUDGET_S)"

# 4. compile= rows last (each compile costs tens of seconds): COMPILE_SIZES (minilm-l6) x COMPILE (modes)
left=$((BUDGET_S - (SECONDS - start)))
if [ "$left" -gt 60 ] && [ "${COMPILE:-inductor,cudagraphs}" != none ]; then
  timeout -k 10 "$left" "$PY" -m unirank.cli -v bench --device "$DEVICE" --sizes "${COMPILE_SIZES:-minilm-l6}" \
    ${QUERIES:+--queries "$QUERIES"} --depth "$DEPTH" --repeats "$REPEATS" --parity-queries 1 \
    --tokenizer "$CARRY/tokenizer" --compile "${COMPILE:-inductor,cudagraphs}" \
    --out "$OUT/unirank-compile.jsonl" > "$OUT/unirank-compile.md" 2> "$OUT/unirank-compile.log"
  echo "unirank bench --compile: exit $? after $((SECONDS - start)) s (124: cut at BUDGET_S=$BUDGET_S)"
else
  echo "unirank bench --compile: skipped ($left s left, COMPILE=${COMPILE:-inductor,cudagraphs})"
fi

"$PY" benchmarks/gpu/summarize.py "$OUT" | tee "$OUT/summary.md"
tail -n 5 "$OUT/gpu_side_by_side.log" "$OUT/unirank-bench.log" | grep -i -B2 "error\|traceback" || true
