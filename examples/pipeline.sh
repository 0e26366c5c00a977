#!/usr/bin/env bash
# The StMt loop, step by step, with the flare CLI -- the way you would run it on FLARE23 data.
#
#   DATA=/data/FLARE23 OUT=runs/stmt MODEL=student TEACHER=teacher COARSE=128 FINE=192 \
#       COARSE_OPT= STUDENT_COARSE_OPT= TEACHER_OPT= STUDENT_OPT= TUMOR_OPT= WARM=0 \
#       DEVICE=cuda \
#       bash examples/pipeline.sh                      # the paper: 500 x 250 SGD steps per run
#   bash examples/pipeline.sh                          # a quick CPU run on synthetic data
#
# DATA uses the FLARE / nnU-Net layout: imagesTr/<case>_0000.nii.gz + labelsTr/<case>.nii.gz
# (partial labels), imagesUn/ (unlabeled scans), and optionally imagesTs/ + labelsTs/ to score.
# Every step writes into OUT and can be re-run: finished outputs are kept (resume).
# The defaults are those of `flare demo --preset cpu` (see flarecli/commands/demo.py).
set -euo pipefail

FLARE=${FLARE:-flare}
DATA=${DATA:-demo/data}
OUT=${OUT:-demo/run}
DEVICE=${DEVICE:-auto}
MODEL=${MODEL:-small}                 # network preset of the student (paper: student)
TEACHER=${TEACHER:-$MODEL}            # network preset of the teacher (paper: a bigger net)
COARSE=${COARSE:-32}                  # coarse input size (paper: 128)
FINE=${FINE:-32,32,48}                # fine input size, z,y,x (paper: 192)
CPU="--optimizer adamw --deep-supervision --no-augment"
# training options per run; set one to empty for flare train's defaults (the paper's schedule)
COARSE_OPT=${COARSE_OPT-"--epochs 20 --iterations 20 --lr 1e-2 --val-fraction 0 --balanced-ce $CPU"}
# the student's coarse model: on the CPU a short fine-tune of the teacher's (needs WARM=1)
STUDENT_COARSE_OPT=${STUDENT_COARSE_OPT-"--epochs 5 --iterations 20 --lr 1e-2 --val-fraction 0 --balanced-ce $CPU"}
TEACHER_OPT=${TEACHER_OPT-"--epochs 30 --iterations 20 --lr 1e-2 --val-fraction 0 --balanced-ce $CPU"}
STUDENT_OPT=${STUDENT_OPT-"--epochs 25 --iterations 20 --lr 1e-2 --val-fraction 0 --balanced-ce $CPU"}
TUMOR_OPT=${TUMOR_OPT-"--epochs 10 --iterations 20 --lr 1e-2 $CPU"}
WARM=${WARM:-1}                       # 1: student from the teacher, tumor from the organs
init() { [ "$WARM" = 1 ] && echo "--init $OUT/$1" || true; }

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
    --size "$COARSE" --device "$DEVICE" $COARSE_OPT
$FLARE train "$OUT/audit.json" --out "$OUT/teacher" --stage fine --target organs \
    --model "$TEACHER" --size "$FINE" --device "$DEVICE" $TEACHER_OPT

# 3. Pseudo-labels of the partially labelled and the unlabeled scans (clean-up, quality scores
#    in OUT/pseudo/scores.csv). --tta averages the mirror views the teacher was trained on;
#    a --no-augment teacher (the CPU defaults) has none, and flare says so.
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
#    (WARM=1 starts the student runs from the teacher's weights -- only with equal presets --
#    and the tumor model from the student's organ model.)
$FLARE train "$OUT/corrected/manifest.json" --out "$OUT/student" --stage coarse \
    --model "$MODEL" --size "$COARSE" $(init teacher/coarse) --device "$DEVICE" \
    $STUDENT_COARSE_OPT
$FLARE train "$OUT/corrected/manifest.json" --out "$OUT/student" --stage fine \
    --target organs --model "$MODEL" --size "$FINE" --l1 1.0 --l2 0.5 $(init teacher/organs) \
    --device "$DEVICE" $STUDENT_OPT
$FLARE train "$OUT/corrected/manifest.json" --out "$OUT/student" --stage fine \
    --target tumor --model "$MODEL" --size "$FINE" $(init student/organs) --device "$DEVICE" \
    $TUMOR_OPT

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
