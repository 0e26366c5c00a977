#!/usr/bin/env bash
# The StMt loop, step by step, with the flare CLI -- the way you would run it on FLARE23 data.
#
#   DATA=/data/FLARE23 OUT=runs/stmt PRESET=paper DEVICE=cuda WARM=0 STUDENT_COARSE_OPT= \
#       bash examples/pipeline.sh                      # the paper: 500 x 250 SGD steps per run
#   bash examples/pipeline.sh                          # the CPU preset on synthetic data
#
# Every training run takes its settings from the recipe's stage (flare recipes show stmt
# --preset cpu prints them all); *_OPT add options to one run (--set KEY=VALUE, --epochs,
# --model, ...). This is what `flare demo` runs through the Python API, one step at a time.
#
# DATA uses the FLARE / nnU-Net layout: imagesTr/<case>_0000.nii.gz + labelsTr/<case>.nii.gz
# (partial labels), imagesUn/ (unlabeled scans), and optionally imagesTs/ + labelsTs/ to score.
# Re-running redoes every step (--overwrite): a retrained teacher makes new pseudo-labels.
set -euo pipefail

FLARE=${FLARE:-flare}
DATA=${DATA:-demo/data}
OUT=${OUT:-demo/run}
DEVICE=${DEVICE:-auto}
RECIPE=${RECIPE:-stmt}
PRESET=${PRESET:-cpu}
TTA=${TTA:---tta}                     # mirror TTA: each model's own views (none without
                                      # augmentation, as in the CPU preset)
COARSE_OPT=${COARSE_OPT-}             # extra options per training run
TEACHER_OPT=${TEACHER_OPT-}
# the CPU preset's student coarse model is a short fine-tune of the teacher's
STUDENT_COARSE_OPT=${STUDENT_COARSE_OPT---epochs 5}
STUDENT_OPT=${STUDENT_OPT-}
TUMOR_OPT=${TUMOR_OPT-}
WARM=${WARM:-1}                       # 1: the student from the teacher (the tumor model
init() { [ "$WARM" = 1 ] && echo "--init $OUT/$1" || true; }   # starts from scratch)
train() { $FLARE train --recipe "$RECIPE" --preset "$PRESET" --device "$DEVICE" --overwrite "$@"; }

# flare's exit code 4 means "finished, but some cases had problems" (printed one per line);
# the loop goes on with the good cases.
ok4() { "$@" || { rc=$?; [ "$rc" -eq 4 ] || exit "$rc"; }; }

# 0. No data yet? Make a synthetic FLARE-like dataset (few fully labelled cases, many partial,
#    some unlabeled, a fully labelled test split).
if [ ! -d "$DATA/imagesTr" ]; then
    $FLARE synth "$DATA" --train 40 --unlabeled 10 --test 6
fi
mkdir -p "$OUT"

# 1. Audit: what each case annotates (13 organs / 5 organs / tumor only / ...), and problems.
#    -> OUT/audit.json, the manifest the teacher trains from.
ok4 $FLARE audit "$DATA" --json "$OUT/audit.json" --csv "$OUT/audit.csv"

# 2. Teacher: coarse abdomen model + organ model on the fully labelled (FL) cases only.
#    -> OUT/teacher/coarse/, OUT/teacher/teacher/ (bundles: model.json + weights)
train "$OUT/audit.json" --out "$OUT/teacher" --stage coarse --data FL $COARSE_OPT
train "$OUT/audit.json" --out "$OUT/teacher" --stage teacher $TEACHER_OPT

# 3. Pseudo-labels of the partially labelled and the unlabeled scans (clean-up, quality scores
#    in OUT/pseudo/scores.csv).
ok4 $FLARE pseudolabel "$DATA/imagesTr" "$OUT/pseudo" --model "$OUT/teacher" $TTA --overwrite \
    --device "$DEVICE"
if [ -d "$DATA/imagesUn" ]; then
    ok4 $FLARE pseudolabel "$DATA/imagesUn" "$OUT/pseudo" --model "$OUT/teacher" $TTA --overwrite \
        --device "$DEVICE"
fi

# 4. Correct the pseudo-labels with the partial annotations (the annotation always wins).
#    -> OUT/corrected/*.nii.gz + OUT/corrected/manifest.json (each case FL, CPL or PL)
ok4 $FLARE correct "$OUT/pseudo" "$DATA/labelsTr" "$OUT/corrected" --overwrite

# 5. Student: coarse model and organ model on FL/CPL/PL (L = L_fl + 1.0 L_cpl + 0.5 L_pl), and
#    the mean-teacher tumor model on the tumor-annotated cases.
train "$OUT/corrected/manifest.json" --out "$OUT/student" --stage coarse --data all \
    $(init teacher/coarse) $STUDENT_COARSE_OPT
train "$OUT/corrected/manifest.json" --out "$OUT/student" --stage organs \
    $(init teacher/teacher) $STUDENT_OPT
train "$OUT/corrected/manifest.json" --out "$OUT/student" --stage tumor $TUMOR_OPT

# 6. Segment the test scans (coarse -> fine ROI -> tumor on organs -> largest components) and
#    score them exactly as FLARE does.
if [ -d "$DATA/imagesTs" ]; then
    ok4 $FLARE infer "$DATA/imagesTs" "$OUT/predictions" --model "$OUT/student" \
        --device "$DEVICE" --profile "$OUT/profile.json" --overwrite
    if [ -d "$DATA/labelsTs" ]; then
        ok4 $FLARE evaluate "$OUT/predictions" "$DATA/labelsTs" --csv "$OUT/scores.csv" \
            --json "$OUT/scores.json"
    fi
fi
