#!/usr/bin/env bash
# GPU check of the autoencoder's op formulations (jaxcolor.models.autoencoder.OPS) for the device
# tool: `benchmarks/train_step.py` for ops = phase | dilated | plain at 128x128 in bfloat16, the
# runs compiling concurrently (compile is CPU work: 16 cores) and timing one at a time
# (--measure_lock), each with a 3-step Perfetto trace of its device kernels; then the fastest at a
# larger batch and in float32. JSON lines in $OUT/gpu_ops.jsonl, traces in $OUT/trace_<label>/.
#
#   OUT=/tmp/out bash benchmarks/gpu_ops_check.sh
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/gpu_ops_out}"
mkdir -p "$OUT"
RESULTS="$OUT/gpu_ops.jsonl"
: > "$RESULTS"
PY="${PYTHON:-python3}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# Several processes share the GPU: allocate on demand instead of 75% up front each.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
LOCK="$OUT/.measure.lock"
TS="$PY benchmarks/train_step.py --model autoencoder --size 128 --no_cpu_flags --measure_lock $LOCK"
START=$(date +%s)

wave() {  # wave LIMIT_S "label|args" ...: run all at once, each capped, wait for all
  local limit=$1; shift
  local pids=()
  for spec in "$@"; do
    local label=${spec%%|*} args=${spec#*|}
    ( timeout "$limit" $TS $args --label "$label" --profile_dir "$OUT/trace_$label" \
        > "$OUT/$label.out" 2> "$OUT/$label.err"
      echo "rc=$? label=$label elapsed=$(( $(date +%s) - START ))s" >> "$OUT/rc.txt" ) &
    pids+=($!)
  done
  wait "${pids[@]}"
  for spec in "$@"; do
    local label=${spec%%|*}
    grep '^{' "$OUT/$label.out" >> "$RESULTS" || echo "{\"label\": \"$label\", \"error\": \"no result\"}" >> "$RESULTS"
  done
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/gpu.txt" 2>&1
"$PY" -c 'import jax, flax; print(jax.__version__, flax.__version__, jax.devices())' >> "$OUT/gpu.txt" 2>&1
BF="--dtype bfloat16 --peak_tflops 989 --steps 30 --warmup 3"
wave 200 "phase_bf16_b512|--ops phase $BF --batch 512" \
         "dilated_bf16_b512|--ops dilated $BF --batch 512" \
         "plain_bf16_b512|--ops plain $BF --batch 512"
echo "wave 1 done at $(( $(date +%s) - START ))s" >> "$OUT/rc.txt"
BEST=$("$PY" - "$RESULTS" <<'PYEOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"examples_per_s"' in l]
print(max(rows, key=lambda r: r["examples_per_s"])["ops"] if rows else "phase")
PYEOF
)
echo "best=$BEST" >> "$OUT/rc.txt"
wave 200 "${BEST}_bf16_b1024|--ops $BEST $BF --batch 1024" \
         "${BEST}_f32_b512|--ops $BEST --dtype float32 --peak_tflops 494 --steps 20 --warmup 3 --batch 512"
echo "all done at $(( $(date +%s) - START ))s" >> "$OUT/rc.txt"
cat "$OUT/rc.txt"
cut -c1-400 "$RESULTS"
