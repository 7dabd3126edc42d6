#!/usr/bin/env bash
# One GPU check for the device tool: train-step throughput of the three models at 128x128 in
# bfloat16 and float32, the input pipeline with 16 workers on a synthetic JPEG folder, and the
# analytic roofline, all as JSON lines in $OUT/gpu_results.jsonl. Meant to finish in about 4-5
# minutes on one H100; each run is capped and no run starts after $BUDGET_S (300 s), so the
# worst case is about 7 minutes.
#
#   OUT=/tmp/out bash benchmarks/gpu_check.sh
#
# Needs (besides the preinstalled jax + CUDA plugin): flax, optax, ml_collections, h5py, grain,
# pillow and their dependencies (see benchmarks/RESULTS.md, "Wheels for the GPU machine").
# Every run is its own process, so an out-of-memory or a missing package fails one line (with an
# "error" record) and the script goes on.
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/gpu_check_out}"
mkdir -p "$OUT"
RESULTS="$OUT/gpu_results.jsonl"
LOG="$OUT/gpu_check.log"
: > "$RESULTS"
PY="${PYTHON:-python3}"
BUDGET_S="${BUDGET_S:-300}"  # no new run starts after this many seconds
START=$(date +%s)
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.90}"

elapsed() { echo $(( $(date +%s) - START )); }

note() {  # a JSON line of our own: {"gpu_check": ..., ...}
  echo "{\"gpu_check\": \"$1\", \"elapsed_s\": $(elapsed)${2:+, $2}}" >> "$RESULTS"
}

run() {  # run LIMIT_S LABEL CMD...: append the command's JSON lines, or an error record
  local limit=$1 label=$2; shift 2
  if [ "$(elapsed)" -ge "$BUDGET_S" ]; then
    echo "[$(elapsed)s] skip $label (budget ${BUDGET_S}s spent)"
    note skipped "\"label\": \"$label\""
    return
  fi
  echo "[$(elapsed)s] $label"
  local tmp; tmp=$(mktemp)
  timeout "$limit" "$@" > "$tmp" 2>> "$LOG"
  local rc=$?
  if grep -q '^{' "$tmp"; then
    grep '^{' "$tmp" | tee -a "$RESULTS" | cut -c1-220
  fi
  if [ $rc -ne 0 ]; then
    echo "    failed rc=$rc (see $LOG)"
    note error "\"label\": \"$label\", \"rc\": $rc"
  fi
  rm -f "$tmp"
}

echo "gpu_check: results in $RESULTS, stderr in $LOG"
note start "\"host\": \"$(hostname)\", \"nvidia_smi\": \"$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1)\""
"$PY" -c 'import jax; print(jax.__version__, jax.devices())' 2>&1 | tee -a "$LOG"

TS="$PY benchmarks/train_step.py --size 128 --steps 20 --warmup 3 --no_cpu_flags"
# Peaks for peak_fraction: H100 SXM dense bf16 989 TFLOP/s; float32 convs run on TF32 tensor
# cores under JAX's default precision (494 TFLOP/s dense).
BF="--dtype bfloat16 --peak_tflops 989"
F32="--dtype float32 --peak_tflops 494"

# Autoencoder: 15 GFLOP per training example as computed. XLA's memory_analysis() of this step
# compiled for CPU: 31.4 GB of temporaries at float32 batch 512 and 58.1 GB at bfloat16 batch
# 1024 (XLA:CPU keeps much of bf16 in f32; a GPU should need about half), so both fit 80 GB.
run 75 "autoencoder bf16 b256"  $TS --model autoencoder $BF --batch 256
run 75 "autoencoder bf16 b1024" $TS --model autoencoder $BF --batch 1024
run 75 "autoencoder f32 b256"   $TS --model autoencoder $F32 --batch 256
run 75 "autoencoder f32 b512"   $TS --model autoencoder $F32 --batch 512
# Input pipeline: 2000 synthetic 178x218 JPEGs, 0 and 16 workers, both crop settings.
SYN=/tmp/jaxcolor_synthetic_jpegs
run 60 "synthetic JPEGs" "$PY" benchmarks/input_pipeline.py --path "$SYN" --make_synthetic 2000 --make_only
run 120 "input pipeline 0,16 workers" "$PY" benchmarks/input_pipeline.py --path "$SYN" --workers 0,16 --batches 20 --warmup_batches 3 --label gpu_machine

# ResNet50 colorizers (random weights; compile dominates): one batch per dtype.
run 100 "resnet50_seed bf16 b256" $TS --model resnet50_seed $BF --batch 256
run 100 "resnet50_seed f32 b256"  $TS --model resnet50_seed $F32 --batch 256
run 120 "resnet50_unet bf16 b256" $TS --model resnet50_unet $BF --batch 256
run 120 "resnet50_unet f32 b256"  $TS --model resnet50_unet $F32 --batch 256

# The analytic bound, for measured / bound.
run 30 "roofline" "$PY" benchmarks/roofline.py --batch 1024
note done
echo "[$(elapsed)s] done: $(grep -c '' "$RESULTS") lines in $RESULTS"
