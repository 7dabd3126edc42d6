#!/usr/bin/env bash
# JAX (with cpu_flags) and PyTorch eager / torch.compile alternated ROUNDS times at 128x128,
# batch 64, float32, so that a shared machine's changing load hits all of them alike.
# JSON lines to benchmarks/results/cpu_b64_interleaved.jsonl (see final_cpu_table.sh for setup).
set -u
cd "$(dirname "$0")/.."
JAX_PY="${JAX_PY:-/work/main/.venv/bin/python}"
TORCH_PY="${TORCH_PY:-/work/torchvenv/bin/python}"
OUT="${OUT_FILE:-benchmarks/results/cpu_b64_interleaved.jsonl}"
ARGS="--size 128 --batch 64 --dtype float32 --steps ${STEPS:-3} --warmup 1"
: > "$OUT"
for round in $(seq "${ROUNDS:-2}"); do
  PYTHONPATH="$PWD" "$JAX_PY" benchmarks/train_step.py $ARGS --label "round $round: jax after, cpu_flags()" 2>/dev/null | tee -a "$OUT"
  PYTHONPATH="$PWD" "$TORCH_PY" benchmarks/train_step.py --framework torch $ARGS --label "round $round: torch eager, channels_last" 2>/dev/null | tee -a "$OUT"
  PYTHONPATH="$PWD" "$TORCH_PY" benchmarks/train_step.py --framework torch --torch_compile $ARGS --label "round $round: torch.compile, channels_last" 2>/dev/null | tee -a "$OUT"
done
