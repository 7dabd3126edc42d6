#!/usr/bin/env bash
# GPU check for the device tool: the autoencoder's train step alone (with a trace of its kernels),
# the input pipeline's examples/s from ArrayRecord shards with the augmentation on the host or on
# the device, and a whole `python -m jaxcolor.train` run fed by that pipeline: does the loop reach
# the step's speed? (At commit e77dc45 the step part also compared a fused BatchNorm + LeakyReLU
# formulation, since removed: benchmarks/RESULTS.md.) One job at a time (concurrent cuDNN
# autotuning disturbs timings, benchmarks/RESULTS.md); every job capped, none started after
# BUDGET_S seconds. Results: $OUT/e2e.tgz (JSON lines, logs, trace summaries).
#
#   OUT=/tmp/out BUDGET_S=420 bash benchmarks/gpu_end_to_end.sh
#   SMOKE=1 OUT=/tmp/out bash benchmarks/gpu_end_to_end.sh   # tiny settings, to test on a CPU
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/gpu_e2e_out}"
BUDGET_S="${BUDGET_S:-420}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
START=$(date +%s)
WORK="${WORK:-/tmp/jaxcolor_e2e}"
SHARDS="$WORK/shards"  # written by gpu_pipeline_check.sh
if [ "${SMOKE:-0}" = 1 ]; then  # the same steps at toy sizes: for checking the script itself
  N_IMG=200 BATCH=16 STEPS=4 TRAIN_STEPS=6 PBATCHES=6 WORKERS=2 SIZE=32 CROP=40
else
  N_IMG=4000 BATCH=512 STEPS=30 TRAIN_STEPS=400 PBATCHES=200 WORKERS=16 SIZE=128 CROP=150
fi

job() {  # job LIMIT_S LABEL CMD...: run one capped job unless the budget is spent
  local limit=$1 label=$2; shift 2
  local elapsed=$(( $(date +%s) - START ))
  if [ "$elapsed" -gt "$BUDGET_S" ]; then
    echo "skipped label=$label at ${elapsed}s (budget ${BUDGET_S}s)" >> "$OUT/rc.txt"; return
  fi
  timeout "$limit" "$@" > "$OUT/$label.out" 2> "$OUT/$label.err"
  echo "rc=$? label=$label elapsed=$(( $(date +%s) - START ))s" >> "$OUT/rc.txt"
  grep '^{' "$OUT/$label.out" >> "$OUT/e2e.jsonl"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/gpu.txt" 2>&1
nproc >> "$OUT/gpu.txt"
"$PY" -c 'import jax, flax, grain; print(jax.__version__, flax.__version__, grain.__version__, jax.devices())' >> "$OUT/gpu.txt" 2>&1

# 1. Data (synthetic CelebA-sized JPEGs -> shards) and the input pipeline alone, host side:
# augmentation on the host or on the device (benchmarks/gpu_pipeline_check.sh).
job 300 pipeline env WORK="$WORK" OUT="$OUT/pipeline" PYTHON="$PY" N_IMG="$N_IMG" BATCH="$BATCH" \
    BATCHES="$PBATCHES" WORKERS="$WORKERS" CROP="$CROP" SIZE="$SIZE" \
    bash benchmarks/gpu_pipeline_check.sh
cp "$OUT/pipeline/pipeline.jsonl" "$OUT/pipeline.jsonl" 2>/dev/null

# 2. The train step alone, bfloat16, with a trace of its kernels.
TS="$PY benchmarks/train_step.py --model autoencoder --size $SIZE --no_cpu_flags --dtype bfloat16 --peak_tflops 989 --batch $BATCH --warmup 3"
job 150 step $TS --steps "$STEPS" --label bf16 --profile_dir "$OUT/trace_step"
"$PY" benchmarks/trace_summary.py "$OUT/trace_step" --top 40 > "$OUT/summary_step.json" 2>&1

# 3. Training fed by the pipeline (device augmentation), logging examples/s every 50 steps.
job 240 train "$PY" -m jaxcolor.train --config jaxcolor/configs/reference.py --workdir "$WORK/run" \
    --config.data.source=shards --config.data.path="$SHARDS" --config.data.crop="$CROP" \
    --config.data.image_size="$SIZE" --config.data.augment_on=device \
    --config.data.worker_count="$WORKERS" --config.data.eval_examples="$BATCH" \
    --config.batch_size="$BATCH" --config.dtype=bfloat16 \
    --config.num_steps="$TRAIN_STEPS" --config.log_every=50 --config.eval_every=100000 \
    --config.checkpoint_every=100000 --config.patience=0 --config.prefetch=4
cp "$WORK/run/metrics.jsonl" "$OUT/train_metrics.jsonl" 2>/dev/null

# 4. If time is left: the step at twice the batch, and in float32.
job 150 step_b2x $TS --steps "$STEPS" --batch $((2 * BATCH)) --label bf16_b2x
job 120 step_f32 ${TS/bfloat16 --peak_tflops 989/float32 --peak_tflops 494} --steps "$STEPS" --label f32

echo "all done at $(( $(date +%s) - START ))s" >> "$OUT/rc.txt"
cat "$OUT/gpu.txt" "$OUT/rc.txt"
cut -c1-600 "$OUT/e2e.jsonl"
tail -c 1500 "$OUT/train.err"
# The device tool brings back only a few files: one archive of everything small.
tar czf "$OUT/e2e.tgz" -C "$OUT" $(cd "$OUT" && ls *.jsonl *.txt *.err summary_*.json 2>/dev/null)
