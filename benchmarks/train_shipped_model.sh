#!/usr/bin/env bash
# Recipe of the shipped ICH/PHE/IVH model: synthetic training data -> train -> segment + evaluate held-out cases.
#
#   benchmarks/train_shipped_model.sh            # defaults below; re-running continues where it stopped
#   STEPS=20000 DEVICE=cuda benchmarks/train_shipped_model.sh
#   EXTRA= benchmarks/train_shipped_model.sh        # float32 instead of the default bf16 autocast
#
# Seeds: training cases use seeds TRAIN_SEED0 .. TRAIN_SEED0+N_TRAIN-1 (default 100000..100299), the test cases
# TEST_SEED0 .. TEST_SEED0+N_TEST-1 (default 1..50); the script refuses overlapping ranges.  Phantom case names
# are synth_<seed>, so training and test files can never collide.
#
# The shipped model 1.0.0 was trained with exactly these defaults on a 2-core CPU (bf16 autocast): plan
# 1x1x2.5 mm working grid, patch 32x96x96, DynUNet filters 8-16-32-64-128 (1.4 M parameters), batch 2,
# Dice + softmax focal loss, AdamW lr 1e-3 with poly decay, 2500 steps at ~0.65-1.0 s per step (~35 min),
# plus ~20 min to generate and cache the 240 training cases.  The plan is derived from the data (with the
# CPU-speed floor of 1x1x2.5 mm) and written to $OUT/model.work/plan.json.  On a GPU raise STEPS and FILTERS.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python}
OUT=${OUT:-out/shipped_model}   # /out/ is git-ignored: data, cache and checkpoints are large
N_TRAIN=${N_TRAIN:-240}
TRAIN_SEED0=${TRAIN_SEED0:-100000}
N_TEST=${N_TEST:-50}
TEST_SEED0=${TEST_SEED0:-1}
STEPS=${STEPS:-2500}
LOSS=${LOSS:-dicefocal}        # Dice + softmax focal (the reference method used focal; Dice speeds up short runs)
VAL_CASES=${VAL_CASES:-4}
FILTERS=${FILTERS:-8,16,32,64,128}
PATCH=${PATCH:-32,96,96}
DEVICE=${DEVICE:-auto}
WORKERS=${WORKERS:-$(nproc)}   # processes for phantom generation and caching
LOADER_WORKERS=${LOADER_WORKERS:-1}
MODEL_ID=${MODEL_ID:-ichseg-ich-phe-ivh}
VERSION=${VERSION:-1.0.0}
EXTRA=${EXTRA:---bf16}

if (( TRAIN_SEED0 < TEST_SEED0 + N_TEST && TEST_SEED0 < TRAIN_SEED0 + N_TRAIN )); then
  echo "training seeds [$TRAIN_SEED0, $((TRAIN_SEED0 + N_TRAIN))) overlap test seeds [$TEST_SEED0, $((TEST_SEED0 + N_TEST)))" >&2
  exit 2
fi

DATA="$OUT/Dataset501_ICHPhantom"
MODEL="$OUT/model"
WORK="$OUT/model.work"
mkdir -p "$OUT/logs"

# 1. training data: an nnU-Net raw dataset of phantom cases (mixed 5/2.5/1/0.625 mm slices, some gantry tilt)
"$PY" -m ichseg.train.synthetic "$DATA" --seeds "$TRAIN_SEED0:$((TRAIN_SEED0 + N_TRAIN))" \
  --workers "$WORKERS" --progress json > "$OUT/logs/synthetic.jsonl"

# 2. training (checkpoints every 50 steps; a re-run resumes from the last one and ends with identical weights)
RESUME=()
if [[ -f "$WORK/fold_all/checkpoint.pt" ]]; then RESUME=(--resume); fi
# shellcheck disable=SC2086
"$PY" -m ichseg train "$DATA" -o "$MODEL" --work-dir "$WORK" \
  --steps "$STEPS" --loss "$LOSS" --batch-size 2 --seed 0 --device "$DEVICE" \
  --filters "$FILTERS" --patch "$PATCH" --optimizer adamw --lr 1e-3 --class-ratios 1,1.5,1.5,1 --keep best \
  --val-cases "$VAL_CASES" --val-every 1250 --checkpoint-every 50 --log-every 10 \
  --cache-workers "$WORKERS" --workers "$LOADER_WORKERS" \
  --id "$MODEL_ID" --version "$VERSION" --name "ICH / PHE / IVH segmentation (synthetic-trained)" \
  --progress json "${RESUME[@]}" $EXTRA | tee "$OUT/logs/train.jsonl"

# 3. held-out test cases (disjoint seeds), segmentation with the new package, evaluation
"$PY" -m ichseg phantom --seed "$TEST_SEED0" --count "$N_TEST" --out "$OUT/test" > "$OUT/logs/test_cases.jsonl"
"$PY" -m ichseg segment "$OUT/test" -o "$OUT/pred" --model "$MODEL" --device "$DEVICE" --no-overlay --progress json \
  > "$OUT/logs/segment.jsonl"
"$PY" -m ichseg evaluate --pred "$OUT/pred" --ref "$OUT/test" -o "$OUT/eval" | tee "$OUT/logs/evaluate.txt"

echo "model package: $MODEL   plan: $WORK/plan.json   metrics: $OUT/eval/metrics.json"
