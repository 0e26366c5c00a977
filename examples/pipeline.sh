#!/usr/bin/env bash
# The StMt loop, step by step, with the flare CLI -- the way you would run it on FLARE23 data.
#
#   DATA=/data/FLARE23 OUT=runs/stmt MODEL=student TEACHER=teacher COARSE=128 FINE=192 \
#       EPOCHS=500 ITERS=250 OPT= WARM=0 DEVICE=cuda bash examples/pipeline.sh   # the paper
#   bash examples/pipeline.sh                          # a quick CPU run on synthetic data
#
# DATA uses the FLARE / nnU-Net layout: imagesTr/<case>_0000.nii.gz + labelsTr/<case>.nii.gz
# (partial labels), imagesUn/ (unlabeled scans), and optionally imagesTs/ + labelsTs/ to score.
# Every step writes into OUT and can be re-run: finished outputs are kept (resume).
set -euo pipefail

FLARE=${FLARE:-flare}
DATA=${DATA:-demo/data}
OUT=${OUT:-demo/run}
DEVICE=${DEVICE:-auto}
MODEL=${MODEL:-small}                 # network preset of the student (paper: student)
TEACHER=${TEACHER:-$MODEL}            # network preset of the teacher (paper: a bigger net)
COARSE=${COARSE:-32}                  # coarse input size (paper: 128)
FINE=${FINE:-48}                      # fine input size (paper: 192)
EPOCHS=${EPOCHS:-10}                  # paper: 500
ITERS=${ITERS:-20}                    # steps per epoch (paper: 250)
OPT=${OPT---optimizer adamw --lr 1e-2 --deep-supervision}  # empty: SGD 0.01 (the paper)
WARM=${WARM:-1}                       # 1: start the student from the teacher (same preset)
TRAIN="--device $DEVICE --epochs $EPOCHS --iterations $ITERS $OPT"
init() { [ "$WARM" = 1 ] && echo "--init $OUT/teacher/$1" || true; }

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
#    -> OUT/teacher/coarse/, OUT/teacher/organs/ (bundles: model.json + weights)
$FLARE train "$OUT/audit.json" --out "$OUT/teacher" --stage coarse --model "$TEACHER" \
    --size "$COARSE" $TRAIN
$FLARE train "$OUT/audit.json" --out "$OUT/teacher" --stage fine --target organs \
    --model "$TEACHER" --size "$FINE" $TRAIN

# 3. Pseudo-labels of the partially labelled and the unlabeled scans (mirror TTA, clean-up,
#    quality scores in OUT/pseudo/scores.csv).
ok4 $FLARE pseudolabel "$DATA/imagesTr" "$OUT/pseudo" --model "$OUT/teacher" --tta \
    --device "$DEVICE"
if [ -d "$DATA/imagesUn" ]; then
    ok4 $FLARE pseudolabel "$DATA/imagesUn" "$OUT/pseudo" --model "$OUT/teacher" --tta \
        --device "$DEVICE"
fi

# 4. Correct the pseudo-labels with the partial annotations (the annotation always wins).
#    -> OUT/corrected/*.nii.gz + OUT/corrected/manifest.json (each case FL, CPL or PL)
ok4 $FLARE correct "$OUT/pseudo" "$DATA/labelsTr" "$OUT/corrected"

# 5. Student: coarse model and organ model on FL/CPL/PL (L = L_fl + 1.0 L_cpl + 0.5 L_pl), and
#    the mean-teacher tumor model on the tumor-annotated cases.
#    (WARM=1 starts the student runs from the teacher's weights: only with equal presets.)
$FLARE train "$OUT/corrected/manifest.json" --out "$OUT/student" --stage coarse \
    --model "$MODEL" --size "$COARSE" $(init coarse) $TRAIN
$FLARE train "$OUT/corrected/manifest.json" --out "$OUT/student" --stage fine \
    --target organs --model "$MODEL" --size "$FINE" --l1 1.0 --l2 0.5 $(init organs) $TRAIN
$FLARE train "$OUT/corrected/manifest.json" --out "$OUT/student" --stage fine \
    --target tumor --model "$MODEL" --size "$FINE" $TRAIN

# 6. Segment the test scans (coarse -> fine ROI -> tumor on organs -> largest components) and
#    score them exactly as FLARE does.
if [ -d "$DATA/imagesTs" ]; then
    ok4 $FLARE infer "$DATA/imagesTs" "$OUT/predictions" --model "$OUT/student" \
        --device "$DEVICE" --profile "$OUT/profile.json"
    if [ -d "$DATA/labelsTs" ]; then
        ok4 $FLARE evaluate "$OUT/predictions" "$DATA/labelsTs" --csv "$OUT/scores.csv" \
            --json "$OUT/scores.json"
    fi
fi
