#!/usr/bin/env bash
# Reproduce the bundled models from scratch on CPU (resumable: cached samples and
# checkpoints are reused; rerun after an interruption). Needs `make install-train`.
#   training/reproduce.sh [segmentation|classification|all]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
WORKERS=${WORKERS:-2}
SEG_TRAIN=${SEG_TRAIN:-300}          # training phantoms for the bundled segmentation model
SEG_COARSE_IT=${SEG_COARSE_IT:-3000}
SEG_FINE_IT=${SEG_FINE_IT:-1500}
SEG_EVAL=${SEG_EVAL:-400}            # test phantoms (chest preset) in the evaluation
what=${1:-all}

if [[ $what == segmentation || $what == all ]]; then
  # each stage learns from the phantoms that look like its input (training/segmentation/config.py)
  for split_count in "train $SEG_TRAIN" "tune 20"; do
    set -- $split_count
    $PY -m training.segmentation.prepare --split "$1" --count "$2" --preset chest-coarse --stages coarse --workers "$WORKERS"
    $PY -m training.segmentation.prepare --split "$1" --count "$2" --preset training --stages fine --workers "$WORKERS"
  done
  $PY -m training.segmentation.train --stage coarse --train-count "$SEG_TRAIN" --iterations "$SEG_COARSE_IT"
  $PY -m training.segmentation.train --stage fine --train-count "$SEG_TRAIN" --iterations "$SEG_FINE_IT"
  $PY -m training.segmentation.export
  $PY -m training.segmentation.evaluate --count "$SEG_EVAL"
fi
if [[ $what == classification || $what == all ]]; then
  for split in train tune test; do
    $PY -m training.classification.prepare --split $split --workers "$WORKERS"
  done
  $PY -m training.classification.train --model l1l2
  $PY -m training.classification.train --model l1
  $PY -m training.classification.export --model l1l2
  $PY -m training.classification.export --model l1
  $PY -m training.classification.evaluate
fi
