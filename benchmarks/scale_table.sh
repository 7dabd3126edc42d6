#!/usr/bin/env bash
# Input pipeline throughput per source and worker count beside the reference's tf.data pipeline,
# interleaved in one run on one machine (RESULTS.md, "Input pipeline at scale"). Needs the
# TensorFlow venv of benchmarks/tfdata_pipeline.py (TFPY) and, for the "before" rows, a copy of
# the code before the pipeline changes (BASE, e.g. `git archive af8576d | tar -x -C /tmp/base`).
#   OUT=benchmarks/results/input_scale.jsonl bash benchmarks/scale_table.sh
set -u
cd "$(dirname "$0")/.."
PY=${PY:-/work/main/.venv/bin/python}
TFPY=${TFPY:-/work/tfvenv/bin/python}
BASE=${BASE:-/tmp/data_base}
OUT=${OUT:-benchmarks/results/input_scale.jsonl}
B=${BATCHES:-20}
DATA=${DATA:-$(cd .. && pwd)/shared/data/celeba-10k/img_align_celeba}
COMMON="--batches $B --warmup_batches 3 --workers 0,1,2"
for s in 75:64 150:128; do
  $TFPY benchmarks/tfdata_pipeline.py --settings $s --parallel 1,0 --batches $B --warmup_batches 3 --label tfdata 2>/dev/null | tee -a "$OUT"
  for src in folder shards tfds; do
    PYTHONPATH=. $PY benchmarks/input_pipeline.py --settings $s --source $src $COMMON --label $src 2>/dev/null | tee -a "$OUT"
  done
  if [ -d "$BASE" ]; then
    PYTHONPATH=$BASE $PY $BASE/benchmarks/input_pipeline.py --path "$DATA" --settings $s $COMMON --label folder_before 2>/dev/null | tee -a "$OUT"
  fi
done
for base in . "$BASE"; do
  PYTHONPATH=$base $PY $base/benchmarks/input_pipeline.py --path "$DATA" --stages --stage_examples 300 --label "stages_$base" 2>/dev/null | tee -a "$OUT"
done
