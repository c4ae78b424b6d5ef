#!/usr/bin/env bash
# The CPU training recipe (configs/train_brain2mm.yaml) run unchanged on a GPU, then the trained
# cascade, cascade + --refine 40 and the optimiser timed in-process on the same device.
#
#   bash benchmarks/gpu_recipe.sh ../shared/bench /tmp/gpu_recipe            # DEVICE=cuda
#   DEVICE=cpu STEPS=20 bash benchmarks/gpu_recipe.sh ../shared/bench /tmp/smoke   # smoke test
#   CONFIG=configs/train_brain2mm_wide3.yaml bash benchmarks/gpu_recipe.sh ../shared/bench /tmp/wide3
#
# BENCH holds synth.py and evaluate.py; WORK receives data/, recipe.yaml, run/ and eval_*/.
# Training data: synth.py seeds 21-28, 3 pairs each (48 subjects at 2 mm, made in parallel, so
# not the CPU recipe's seed-11 images); validation seed 12 (4 pairs); dev2mm seed 101 (8 pairs).
# Only the data paths of the recipe change (and optim.steps when STEPS is set); CONFIG picks
# another recipe (default configs/train_brain2mm.yaml).
# Regkit's Dice is printed here; score the written fields with BENCH/evaluate.py for the
# benchmark's own figures (benchmarks/eval_cascade.py --evaluate).
set -euo pipefail
BENCH=$(cd "$1" && pwd); WORK=$2; DEVICE=${DEVICE:-cuda}; STEPS=${STEPS:-}; THREADS=${THREADS:-8}
CONFIG=${CONFIG:-configs/train_brain2mm.yaml}
REPO=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$WORK" && WORK=$(cd "$WORK" && pwd) && cd "$REPO"
T0=$(date +%s); say() { echo "[$(( $(date +%s) - T0 )) s] $*"; }

synth() { OMP_NUM_THREADS=1 python "$BENCH/synth.py" "$WORK/data/$1" --pairs "$2" --seed "$3" --res 2 --grid-shuffle > "$WORK/data/$1.log" 2>&1; }
if [ ! -d "$WORK/data/train" ]; then
    mkdir -p "$WORK/data"
    for s in 21 22 23 24 25 26 27 28; do synth "s$s" 3 "$s" & done
    synth val2mm 4 12 & synth dev2mm 8 101 &
    wait
    mkdir -p "$WORK/data/train.tmp"
    for s in 21 22 23 24 25 26 27 28; do
        for f in "$WORK/data/s$s"/pair*.nii.gz; do ln -s "$f" "$WORK/data/train.tmp/s${s}_$(basename "$f")"; done
    done
    mv "$WORK/data/train.tmp" "$WORK/data/train"
    (echo moving,fixed,moving_labels,fixed_labels
     for p in pair00 pair01 pair02 pair03; do echo "${p}_moving.nii.gz,${p}_fixed.nii.gz,${p}_moving_labels.nii.gz,${p}_fixed_labels.nii.gz"; done
    ) > "$WORK/data/val2mm/pairs.csv"
fi
say "data: $(ls "$WORK/data/train" | wc -l) training files"

python - "$WORK" "$STEPS" "$CONFIG" <<'PY'
import sys, yaml
work, steps, recipe = sys.argv[1], sys.argv[2], sys.argv[3]
config = yaml.safe_load(open(recipe))
config["data"] = {"subjects": f"{work}/data/train", "val_manifest": f"{work}/data/val2mm/pairs.csv"}
if steps:
    config["optim"]["steps"] = int(steps)
yaml.safe_dump(config, open(f"{work}/recipe.yaml", "w"))
PY
say "training $CONFIG on $DEVICE"
OMP_NUM_THREADS=$THREADS regkit train --config "$WORK/recipe.yaml" --out "$WORK/run" --device "$DEVICE" --no-progress --force
say "trained: $(awk -F, 'NR > 1 && $11 != "" {n++} END {print n}' "$WORK/run/log.csv") validations"

for what in "alone best 0" "refine40 best 40" "optimiser - 0"; do
    set -- $what
    checkpoint=$([ "$2" = best ] && echo "$WORK/run/best.safetensors" || echo optimiser)
    python benchmarks/eval_cascade.py "$checkpoint" "$WORK/data/dev2mm" --out "$WORK/eval_$1" --refine "$3" \
        --device "$DEVICE" --threads "$THREADS" | grep SUMMARY | sed "s/^SUMMARY/$1/"
done
say done
