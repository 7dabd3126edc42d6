#!/usr/bin/env bash
# The JAX vs PyTorch comparison at 128x128, batch 64, float32 on this CPU host, in one go.
# Writes JSON lines to benchmarks/results/cpu_b64_final.jsonl (the "before" run needs the model
# as it was before the speed-ups: BEFORE_TREE=a directory holding that jaxcolor package, e.g.
#   mkdir -p /tmp/jaxcolor_before && git archive 2bcb60b jaxcolor | tar -x -C /tmp/jaxcolor_before
#   cp jaxcolor/perf.py /tmp/jaxcolor_before/jaxcolor/   # only the flag helper the script imports
# and TORCH_PY=a python with torch 2.13 (see RESULTS.md).
set -u
cd "$(dirname "$0")/.."
JAX_PY="${JAX_PY:-/work/main/.venv/bin/python}"
TORCH_PY="${TORCH_PY:-/work/torchvenv/bin/python}"
BEFORE_TREE="${BEFORE_TREE:-/tmp/jaxcolor_before}"
OUT="${OUT_FILE:-benchmarks/results/cpu_b64_final.jsonl}"
ARGS="--size 128 --batch 64 --dtype float32 --steps ${STEPS:-3} --warmup 1"
: > "$OUT"
log() { echo "{\"note\": \"$1\", \"utc\": \"$(date -u +%FT%TZ)\", \"uptime\": \"$(uptime | sed 's/.*load/load/')\"}" | tee -a "$OUT"; }
log start
PYTHONPATH="$BEFORE_TREE" "$JAX_PY" benchmarks/train_step.py $ARGS --no_cpu_flags --label "jax before (2bcb60b), XLA defaults" 2>/dev/null | tee -a "$OUT"
PYTHONPATH="$PWD" "$JAX_PY" benchmarks/train_step.py $ARGS --label "jax after, cpu_flags()" 2>/dev/null | tee -a "$OUT"
PYTHONPATH="$PWD" "$JAX_PY" benchmarks/train_step.py $ARGS --no_cpu_flags --label "jax after, XLA defaults" 2>/dev/null | tee -a "$OUT"
PYTHONPATH="$PWD" "$TORCH_PY" benchmarks/train_step.py --framework torch $ARGS --label "torch eager, channels_last" 2>/dev/null | tee -a "$OUT"
PYTHONPATH="$PWD" "$TORCH_PY" benchmarks/train_step.py --framework torch --torch_compile $ARGS --label "torch.compile, channels_last" 2>/dev/null | tee -a "$OUT"
log end
