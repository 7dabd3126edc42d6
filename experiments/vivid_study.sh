#!/usr/bin/env bash
# The "Vivid colors" study of experiments/RESULTS.md: the skip autoencoder (width 0.5, batch 32,
# 64x64 CelebA from ../shared) trained for the same STEPS on the same data with the reference
# loss, L1 and the class-rebalanced classification loss, each scored on the whole test split,
# plus the figure. Usage: experiments/vivid_study.sh [OUT_DIR=/tmp/vivid] [STEPS=400]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-/tmp/vivid}
STEPS=${2:-400}
PY=${PY:-python}
COMMON=(--config.model.width=0.5 --config.batch_size=32 --config.num_steps="$STEPS"
        --config.eval_every=100 --config.checkpoint_every=100 --config.patience=0
        --config.data.eval_examples=256)
mkdir -p "$OUT"
stamp() { date +%s; }
for loss in reference l1 classification; do
  if [ "$loss" = classification ]; then
    cfg=experiments/celeba10k_classification.py; extra=()
    t0=$(stamp)
    # the prior is counted once into the run's data directory (train would do it if missing)
    [ -f "$OUT/$loss/data/ab_prior.npz" ] || $PY -m jaxcolor.prepare ab-prior --config "$cfg" \
      --workdir "$OUT/$loss"
    echo "$loss prior_s $(( $(stamp) - t0 ))" >> "$OUT/times.txt"
  else
    cfg=experiments/celeba10k.py; extra=(--config.loss.name="$loss")
  fi
  t0=$(stamp)
  $PY -m jaxcolor.train --config "$cfg" --workdir "$OUT/$loss" "${COMMON[@]}" "${extra[@]}"
  echo "$loss train_s $(( $(stamp) - t0 ))" >> "$OUT/times.txt"
done
PRIOR="$OUT/classification/data/ab_prior.npz"
for loss in reference l1 classification; do
  $PY -m jaxcolor.evaluate --workdir "$OUT/$loss" --split test --step "$STEPS" \
    --config.data.eval_examples=0 --ab_prior "$PRIOR" | tee "$OUT/eval_$loss.txt"
done
for t in 0 1; do  # the classification run decoded at the mode and at the mean
  $PY -m jaxcolor.evaluate --workdir "$OUT/classification" --split test --step "$STEPS" \
    --config.data.eval_examples=0 --ab_prior "$PRIOR" --temperature "$t" | tee "$OUT/eval_classification_T$t.txt"
done
$PY experiments/vivid_grid.py experiments/vivid_grid.png --scale 1 \
  "reference=$OUT/reference@$STEPS" "L1=$OUT/l1@$STEPS" \
  "classif. T 0.38=$OUT/classification@$STEPS" "classif. T 0=$OUT/classification@$STEPS:0"
