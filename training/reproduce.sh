#!/usr/bin/env bash
# Reproduce the bundled models from scratch on CPU (resumable: cached samples and
# checkpoints are reused; rerun after an interruption). Needs `make install-train`.
# The bundled models learnt from phantoms of generator 2.0.0 and earlier; this checkout's generator is
# 2.2.0 (2.1.0: organs moved against the spine, a lower costal margin; 2.2.0: density confounders and
# the QCT reading as a measurement, same anatomy as 2.1.0), so this script now trains on 2.2.0
# phantoms: to rebuild the bundled weights as they are, run it from commit ad89c24 (generator 2.0.0).
#   training/reproduce.sh [segmentation|classification|all]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
WORKERS=${WORKERS:-2}
SEG_TRAIN=${SEG_TRAIN:-548}          # training phantoms of the coarse stage (chest-coarse preset)
SEG_SPINE=${SEG_SPINE:-200}          # spine-cropped phantoms added to both stages
SEG_FINE_CHEST=${SEG_FINE_CHEST:-300} # full-size chest phantoms of the fine stage
SEG_COARSE_IT=${SEG_COARSE_IT:-1000}
SEG_FINE_IT=${SEG_FINE_IT:-500}
SEG_EVAL=${SEG_EVAL:-400}            # test phantoms (chest preset) in the evaluation
what=${1:-all}

if [[ $what == segmentation || $what == all ]]; then
  # Each stage learns from the phantoms that look like its input (training/segmentation/config.py).
  # The order matters: fine-stage samples take their hints from the trained coarse stage.
  P="$PY -m training.segmentation.prepare --workers $WORKERS"
  T="$PY -m training.segmentation.train"
  C=training/checkpoints
  # 1. coarse stage: pre-train on 300 whole chest CTs at 5 mm, then all 548 plus spine crops
  $P --split train --count 300 --preset chest-coarse --stages coarse
  $P --split tune --count 20 --preset chest-coarse --stages coarse
  $T --stage coarse --preset chest-coarse --train-count 300 --iterations 2000 --out $C/segmentation-coarse-pretrain
  $P --split train --count "$SEG_TRAIN" --preset chest-coarse --stages coarse
  $P --split train --count "$SEG_SPINE" --preset spine
  $P --split tune --count 20 --preset spine
  $T --stage coarse --train-count "$SEG_TRAIN" --iterations "$SEG_COARSE_IT" --lr 1e-3 --init $C/segmentation-coarse-pretrain \
     --out $C/segmentation-coarse-548
  #    then scans with rib variants drawn 4x as often (L1 found by counting ribs)
  $T --stage coarse --train-count "$SEG_TRAIN" --iterations 500 --lr 5e-4 --variant-weight 4 --init $C/segmentation-coarse-548 \
     --out $C/segmentation-coarse-variants
  #    then turned, cut and degraded samples (augment.py): real scans have other poses, fields of view, kernels
  $T --stage coarse --train-count "$SEG_TRAIN" --iterations 4500 --lr 5e-4 --variant-weight 4 --augment \
     --init $C/segmentation-coarse-variants --out $C/segmentation-coarse-augment
  #    then 2500 more iterations (model 0.7.0 continued 0.6.0's coarse stage, trained on generator 1.0.0,
  #    on phantoms of generator 1.1.0, whose lower ribs run down beside L1 as on real scans)
  $T --stage coarse --train-count "$SEG_TRAIN" --iterations 2500 --lr 5e-4 --variant-weight 4 --augment \
     --init $C/segmentation-coarse-augment
  #    the rib check: does the vertebra in a coarse-grid box bear ribs (boxes of the same chest-coarse samples),
  #    then on boxes turned, cut at the sides and front as in spine-cropped scans, and degraded
  $PY -m training.segmentation.rib_check --epochs 12 --out $C/rib-check-plain
  $PY -m training.segmentation.rib_check --epochs 12 --augment --init rib-check-plain --out $C/rib-check-augment
  $PY -m training.segmentation.rib_check --epochs 12 --augment --init rib-check-augment --out $C/rib-check-g11  # 0.7.0
  #    then with ribs moved between vertebrae (0.7.1): every other phantom's vertebra shape tells whether it
  #    bears ribs, and the check must read the ribs themselves (rib_check_eval scores both)
  $P --split train --count "$SEG_TRAIN" --preset chest-coarse-ribswap --stages coarse
  $P --split tune --count 20 --preset chest-coarse-ribswap --stages coarse
  $PY -m training.segmentation.rib_check --epochs 12 --augment --rib-swap --init rib-check-g11
  $PY -m training.studies.rib_check_eval --runs rib-check-g11 rib-check
  #    tried, not shipped (docs/models.md; rib_check_eval_costal.md, segmentation_eval*_costal_check.md);
  #    the costal preset and --costal were removed after commit ad89c24 (git show ad89c24:... to rerun):
  #    the same continued on phantoms whose ribs run as on real CT beside the spine; then, as checkpoint run
  #    rib-check, put in the model folder (`export --rib-check-only`), scored with evaluate (chest and spine;
  #    outputs renamed *_costal_check) and the folder restored from git:
  #      $P --split train --count "$SEG_TRAIN" --preset chest-coarse-costal --stages coarse  (and tune, 20)
  #      $PY -m training.segmentation.rib_check --epochs 6 --augment --rib-swap --costal --init rib-check \
  #         --out $C/rib-check-costal
  #      $PY -m training.studies.rib_check_eval --runs rib-check rib-check-costal --out rib_check_eval_costal
  # 2. fine stage: pre-train on 1.5 mm crops (fast to render), then fine-tune on 1 mm boxes of
  #    full-size chest and spine scans with the coarse stage's own hints
  $P --split train --count 300 --preset training --stages fine
  $P --split tune --count 20 --preset training --stages fine
  $T --stage fine --preset training --train-count 300 --iterations 800 --out $C/segmentation-fine-pretrain
  $P --split train --count "$SEG_FINE_CHEST" --preset chest --stages fine
  $P --split tune --count 20 --preset chest --stages fine
  $T --stage fine --train-count "$SEG_FINE_CHEST" --iterations "$SEG_FINE_IT" --lr 1e-3 --init $C/segmentation-fine-pretrain \
     --out $C/segmentation-fine-500
  $T --stage fine --train-count "$SEG_FINE_CHEST" --iterations 1000 --lr 5e-4 --init $C/segmentation-fine-500 \
     --out $C/segmentation-fine-300
  #    then on all 548 chest scans (the learning curve of generator 1.0.0 still rose at 548)
  $P --split train --count "$SEG_TRAIN" --preset chest --stages fine
  $T --stage fine --train-count "$SEG_TRAIN" --iterations 800 --lr 3e-4 --eval-every 100 --init $C/segmentation-fine-300 \
     --out $C/segmentation-fine-548
  #    then with hints moved up to half a vertebra, as a coarse stage that is off on a real scan leaves them
  $T --stage fine --train-count "$SEG_TRAIN" --iterations 600 --lr 3e-4 --eval-every 100 --augment \
     --init $C/segmentation-fine-548 --out $C/segmentation-fine-augment
  #    then on generator-1.1.0 samples whose hints come from the final coarse stage (0.7.0; one cache
  #    folder holds the hints of one coarse stage, prepare.check_hint_source)
  $T --stage fine --train-count "$SEG_TRAIN" --iterations 800 --lr 3e-4 --eval-every 100 --augment \
     --init $C/segmentation-fine-augment
  $PY -m training.segmentation.export
  #    (the runs above made model 0.7.1 on generators 1.0.0 and 1.1.0, which live in git history; rerun with
  #    this checkout they train on 2.0.0 phantoms)
  #    model 0.8.0: the coarse stage continued on generator 2.0.0 phantoms (shoulder girdle, arms, great veins,
  #    table, reconstruction circle with padding) with domain randomisation (tissue values, bias field, bright
  #    blobs; short scans down to the L1-L2 disc), started from the coarse stage above; fine stage and rib check
  #    as above. (A coarse stage trained from scratch on 2.0.0 reached tune DSC 0.44 / 0.36 at 1,500 of 4,000
  #    iterations and was stopped for time: training/checkpoints/segmentation-coarse-g2, resumable.)
  $P --split train --count "$SEG_TRAIN" --preset chest-coarse --stages coarse   # cache folders are per generator version
  $P --split tune --count 20 --preset chest-coarse --stages coarse
  $P --split train --count "$SEG_SPINE" --preset spine --stages coarse
  $P --split tune --count 20 --preset spine --stages coarse
  $T --stage coarse --train-count "$SEG_TRAIN" --iterations 800 --lr 5e-4 --variant-weight 4 --augment --randomise \
     --eval-every 300 --init $C/segmentation-coarse --out $C/segmentation-coarse-g2-ft  # (0.8.0: started as 1,200
  #    iterations and resumed at 300 as 800 for time, which shortens the schedule's tail; the run's log has both)
  $PY -m training.segmentation.export --coarse-only $C/segmentation-coarse-g2-ft
  #    model 0.9.0: the vertebra counter (count.onnx): each body in view, rib-bearing or not, and the discs,
  #    on a 5 x 5 x 2.5 mm grid (chest-count: the chest-coarse cases with 2.5 mm slices). As run (logs in
  #    training/results/training_logs/vertebra-count*): on the coarse stage's 5 mm samples, small cores at each
  #    body's centre (1,550 iterations), then whole bodies (750; discs not resolved at 5 mm); then bodies on the
  #    2.5 mm grid (650), then with the disc class (2,500), each run started from the one before. From scratch,
  #    the last run alone with more iterations is the recipe (not run here).
  $P --split train --count "$SEG_TRAIN" --preset chest-count --stages count
  $P --split tune --count 20 --preset chest-count --stages count
  $P --split train --count "$SEG_SPINE" --preset spine --stages count
  $P --split tune --count 20 --preset spine --stages count
  $T --stage count --augment --randomise --iterations 2500 --lr 2e-3 --variant-weight 4 --out $C/vertebra-count
  $PY -m training.segmentation.export --count-only $C/vertebra-count
  #    tried, not bundled (docs/models.md, "A candidate 0.10.0"): the coarse stage trained from scratch on
  #    generator 2.1.0 (5,000 iterations, then the same run resumed to 13,000) and the counter continued on
  #    2.1.0 (1,500 iterations), scored on the tune and test phantoms and the real cases (*_candidate outputs):
  #      $P --split train --count 300 --preset chest-coarse --stages coarse   (and spine, chest-count: 300 / 200)
  #      for it in 5000 13000; do $T --stage coarse --train-count 300 --iterations $it --lr 2e-3 --variant-weight 4 \
  #         --augment --randomise --eval-every 500 --out $C/segmentation-coarse-g21-scratch-13k; done
  #      $T --stage count --augment --randomise --train-count 300 --iterations 1500 --lr 1e-3 --variant-weight 4 \
  #         --eval-every 500 --init $C/vertebra-count --out $C/vertebra-count-g21
  #      export --out CANDIDATE --coarse-only $C/segmentation-coarse-g21-scratch-13k, then --count-only $C/vertebra-count-g21
  #      (into a copy of the bundled folder), evaluate --model CANDIDATE --out ...
  #    model 0.11.0 (issue #22): the coarse stage from scratch on all chest-coarse phantoms of generator 2.2.0 and
  #    the 200 spine crops, these drawn twice as often (docs/models.md, "What changed in 0.11.0"); its final.pt is
  #    committed; resumable: the same command continues from a last checkpoint (samples: prepared above)
  $T --stage coarse --train-count "$SEG_TRAIN" --iterations 16000 --lr 2e-3 --variant-weight 4 \
     --preset-weight spine=2 --augment --randomise --eval-every 500 --out $C/segmentation-coarse-g22-548
  $PY -m training.segmentation.export --coarse-only $C/segmentation-coarse-g22-548
  #    tried, not bundled: 0.9.0's fine stage continued 600 iterations (lr 3e-4, --augment, --init from the bundled
  #    fine weights) on the fine samples below (docs/models.md, "The fine stage continued on generator 2.2.0")
  #    model 0.12.0 (issue #22): the fine stage from scratch on generator 2.2.0 with domain randomisation and hints
  #    stretched past their vertebra (--randomise), hints from 0.11.0's coarse stage (docs/models.md, "What changed
  #    in 0.12.0"; started as 6,000 iterations and resumed at 1,350 as 4,000 for time, which shortens the schedule's
  #    tail; the run's log has both)
  $P --split train --count "$SEG_TRAIN" --preset chest-box --stages fine --coarse-checkpoint $C/segmentation-coarse-g22-548/final.pt
  $P --split tune --count 20 --preset chest-box --stages fine --coarse-checkpoint $C/segmentation-coarse-g22-548/final.pt
  $P --split train --count "$SEG_SPINE" --preset spine --stages fine --coarse-checkpoint $C/segmentation-coarse-g22-548/final.pt
  $P --split tune --count 20 --preset spine --stages fine --coarse-checkpoint $C/segmentation-coarse-g22-548/final.pt
  $T --stage fine --preset chest-box,spine --train-count "$SEG_TRAIN" --iterations 4000 --lr 2e-3 --eval-every 500 \
     --augment --randomise --threads 1 --out $C/segmentation-fine-g22-stretch
  $PY -m training.segmentation.export --fine-only $C/segmentation-fine-g22-stretch
  #    next (finished, final.pt committed, tune outputs *_counter_g22_8k_candidate; not bundled yet): the counter
  #    from scratch on generator 2.2.0, longer
  #      $P --split train --count "$SEG_TRAIN" --preset chest-count --stages count   (and spine, and tune 20 of each)
  #      $T --stage count --augment --randomise --train-count "$SEG_TRAIN" --iterations 8000 --lr 2e-3 --variant-weight 4 \
  #         --preset-weight spine=2 --eval-every 500 --threads 1 --out $C/vertebra-count-g22-8k
  #      $T --stage count --augment --randomise --train-count "$SEG_TRAIN" --iterations 8000 --lr 2e-3 --variant-weight 4 \
  #         --preset-weight spine=2 --eval-every 500 --threads 1 --out $C/vertebra-count-g22-8k
  $PY -m training.segmentation.evaluate --count "$SEG_EVAL" --workers "$WORKERS"
  $PY -m training.segmentation.evaluate --preset spine --count "$SEG_EVAL" --workers "$WORKERS"  # spine-cropped
  $PY -m training.studies.rib_check_probe  # where the bundled rib check looks (ribs, vertebra or lung taken away)
  $PY -m training.studies.real_hints  # real cases with the levels given: outlining apart from level finding
  $PY -m training.studies.level_diagnosis  # real cases: coarse regions, levels under small changes, rib check along the spine
  $PY -m training.studies.structure_occlusion  # the real chest CT with one group of structures taken away at a time
  $PY -m training.studies.level_confidence --count 100 --workers "$WORKERS"
  # learning curve of the fine stage (scored on 1 mm boxes of 100 test scans): the chest cases rendered on a
  # box around L1-L2 (chest-box), hints from the final coarse stage on each case rendered whole at 5 mm
  $P --split train --count "$SEG_TRAIN" --preset chest-box --stages fine
  $P --split tune --count 20 --preset chest-box --stages fine
  $P --split test --count 100 --preset chest-box --stages fine
  $PY -m training.studies.learning_curve --preset chest-box --sizes 50,100,200,300,"$SEG_TRAIN" --iterations 300
  $PY -m training.studies.learning_curve --preset chest-box --sizes 50,"$SEG_TRAIN" --iterations 1200 \
     --checkpoints $C/learning-curve-1200 --results training/results/segmentation_learning_curve_1200
fi
if [[ $what == classification || $what == all ]]; then
  for split in train tune test; do
    $PY -m training.classification.prepare --split $split --workers "$WORKERS"
  done
  # each bundled classifier averages two networks (training/classification/config.py ENSEMBLE_SEEDS)
  for model in l1l2 l1; do
    for seed in 0 1; do
      $PY -m training.classification.train --model $model --epochs 16 --seed $seed
    done
  done
  $PY -m training.classification.export --model l1l2
  $PY -m training.classification.export --model l1
  $PY -m training.classification.evaluate
  # end to end on the 418 test phantoms: whole chest CT, bundled segmenter, then each model (issue #26)
  $PY -m training.classification.end_to_end prepare --workers "$WORKERS"
  $PY -m training.classification.end_to_end evaluate
  # the bundled versions side by side on the same test phantoms (0.1.0, 0.2.0, 0.3.0, the working tree)
  $PY -m training.studies.compare_versions --rev 31833d2 --rev 843edec --rev fc06b3a --rev WORKTREE
fi
