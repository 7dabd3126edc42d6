#!/usr/bin/env bash
# GPU check of the autoencoder's op formulations (jaxcolor.models.autoencoder.OPS) for the device
# tool: `benchmarks/train_step.py` for each of $OPS (default "phase im2col"; the second session
# ran "phase dilated plain") at 128x128 in bfloat16, one run at a time, each with a 3-step
# Perfetto trace of its device kernels (summarised by trace_summary.py); then
# `benchmarks/conv_layers.py` for each; then the fastest at a larger batch and in float32. JSON lines in
# $OUT/gpu_ops.jsonl, traces in $OUT/trace_<label>/. Runs must not overlap on one GPU: a first
# version compiled them concurrently, and the others' cuDNN autotuning disturbed both the timed
# steps and each run's own autotuning (benchmarks/RESULTS.md).
#
#   OUT=/tmp/out [OPS="phase im2col"] bash benchmarks/gpu_ops_check.sh
#   SMOKE=1 OUT=/tmp/out bash benchmarks/gpu_ops_check.sh   # toy sizes, to test the script on a CPU
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/gpu_ops_out}"
mkdir -p "$OUT"
RESULTS="$OUT/gpu_ops.jsonl"
: > "$RESULTS"
PY="${PYTHON:-python3}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ "${SMOKE:-0}" = 1 ]; then SIZE=16 BATCH=4 STEPS=2; else SIZE=128 BATCH=512 STEPS=30; fi
TS="$PY benchmarks/train_step.py --model autoencoder --size $SIZE --no_cpu_flags"
START=$(date +%s)
BUDGET_S="${BUDGET_S:-420}"  # no new run starts after this many seconds

wave() {  # wave LIMIT_S "label|args" ...: run each in turn, capped, none after BUDGET_S
  local limit=$1; shift
  for spec in "$@"; do
    local label=${spec%%|*} args=${spec#*|}
    if [ $(( $(date +%s) - START )) -gt "$BUDGET_S" ]; then
      echo "skipped label=$label (budget ${BUDGET_S}s)" >> "$OUT/rc.txt"; continue
    fi
    timeout "$limit" $TS $args --label "$label" --profile_dir "$OUT/trace_$label" \
        > "$OUT/$label.out" 2> "$OUT/$label.err"
    echo "rc=$? label=$label elapsed=$(( $(date +%s) - START ))s" >> "$OUT/rc.txt"
    "$PY" benchmarks/trace_summary.py "$OUT/trace_$label" --top 40 > "$OUT/summary_$label.json" 2>&1
    grep '^{' "$OUT/$label.out" >> "$RESULTS" || echo "{\"label\": \"$label\", \"error\": \"no result\"}" >> "$RESULTS"
  done
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/gpu.txt" 2>&1
"$PY" -c 'import jax, flax; print(jax.__version__, flax.__version__, jax.devices())' >> "$OUT/gpu.txt" 2>&1
BF="--dtype bfloat16 --peak_tflops 989 --steps $STEPS --warmup 3"
for ops in ${OPS:-phase im2col}; do
  wave 150 "${ops}_bf16_b$BATCH|--ops $ops $BF --batch $BATCH"
done
echo "wave 1 done at $(( $(date +%s) - START ))s" >> "$OUT/rc.txt"
# Which convolutions are far from their roofline: each conv of the model alone (conv_layers.py).
for ops in ${OPS:-phase im2col}; do
  [ $(( $(date +%s) - START )) -gt "$BUDGET_S" ] && break
  timeout 150 "$PY" benchmarks/conv_layers.py --size $SIZE --batch $BATCH --ops $ops \
      --dtype bfloat16 --peak_tflops 989 --hbm_tbps 3.35 --no_cpu_flags --steps 10 \
      >> "$OUT/conv_layers.jsonl" 2> "$OUT/conv_layers_$ops.err"
  echo "rc=$? label=conv_layers_$ops elapsed=$(( $(date +%s) - START ))s" >> "$OUT/rc.txt"
done
BEST=$("$PY" - "$RESULTS" <<'PYEOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"examples_per_s"' in l]
print(max(rows, key=lambda r: r["examples_per_s"])["ops"] if rows else "phase")
PYEOF
)
echo "best=$BEST" >> "$OUT/rc.txt"
wave 200 "${BEST}_bf16_b$((2 * BATCH))|--ops $BEST $BF --batch $((2 * BATCH))" \
         "${BEST}_f32_b$BATCH|--ops $BEST --dtype float32 --peak_tflops 494 --steps $STEPS --warmup 3 --batch $BATCH"
echo "all done at $(( $(date +%s) - START ))s" >> "$OUT/rc.txt"
cat "$OUT/rc.txt"
cut -c1-400 "$RESULTS"
# The device tool brings back only a few files: one archive of the results and summaries.
tar czf "$OUT/gpu_ops.tgz" -C "$OUT" gpu_ops.jsonl rc.txt gpu.txt \
    $(cd "$OUT" && ls conv_layers.jsonl summary_*.json *.err 2>/dev/null)
