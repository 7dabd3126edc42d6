#!/usr/bin/env bash
# GPU-host check of the input pipeline with many workers (device tool): synthetic CelebA-sized
# JPEGs -> shards at 150 -> 128, then 200 batches of 512 from 16 workers, augmentation on the
# device (host side only) and on the host, with peak memory per process. JSON lines in
# $OUT/pipeline.jsonl. benchmarks/gpu_end_to_end.sh runs this first, for its data too.
#
#   OUT=/tmp/out bash benchmarks/gpu_pipeline_check.sh
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/gpu_pipeline_out}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
WORK="${WORK:-/tmp/jaxcolor_pipe}"
N_IMG="${N_IMG:-2000}" BATCH="${BATCH:-512}" BATCHES="${BATCHES:-200}" WORKERS="${WORKERS:-16}"
CROP="${CROP:-150}" SIZE="${SIZE:-128}"
START=$(date +%s)
run() {  # run LIMIT_S LABEL CMD...
  local limit=$1 label=$2; shift 2
  timeout "$limit" "$@" > "$OUT/$label.out" 2> "$OUT/$label.err"
  echo "rc=$? label=$label elapsed=$(( $(date +%s) - START ))s" | tee -a "$OUT/rc.txt"
  grep '^{' "$OUT/$label.out" >> "$OUT/pipeline.jsonl"
}
nproc > "$OUT/rc.txt"
run 60 make_jpegs "$PY" benchmarks/input_pipeline.py --path "$WORK/jpegs" --make_synthetic "$N_IMG" --make_only
run 60 prepare "$PY" -m jaxcolor.prepare shards --source "folder:$WORK/jpegs" --out "$WORK/shards" \
    --crop "$CROP" --size "$SIZE" --workers "$WORKERS"
PIPE="$PY benchmarks/input_pipeline.py --path $WORK/jpegs --source shards --shards_dir $WORK/shards --settings $CROP:$SIZE --batch $BATCH --batches $BATCHES --warmup_batches 3"
run 60 device $PIPE --augment_on device --workers "$WORKERS" --label device_augment
run 60 host $PIPE --augment_on host --workers "$WORKERS" --label host_augment
run 60 host8 $PIPE --augment_on host --workers 8 --label host_augment
python3 -c "
import json
for l in open('$OUT/pipeline.jsonl'):
    r = json.loads(l)
    if r.get('mode') == 'pipeline':
        print(r['augment_on'], r['worker_count'], round(r['examples_per_s']), round(r['examples_per_s_second_half']),
              'first', round(r['first_batch_s'], 1), 'rss', round(r['max_rss_mb']), r['rss_mb_with_workers'] and round(r['rss_mb_with_workers']))
"
