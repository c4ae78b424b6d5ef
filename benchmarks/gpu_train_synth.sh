#!/usr/bin/env bash
# Train the shipped brain model (configs/train_brain_synth.yaml) on a lent GPU machine, in one call.
#
# Here, before the call (label maps + wheels of what the bare torch image may lack, under runs/):
#   mkdir -p runs/labelmaps && cp ../shared/data/brain_labelmaps/subject{01..14}_labels.nii.gz runs/labelmaps/
#   pip wheel --no-deps . -w runs/wheels
#   pip download --no-deps -d runs/wheels/pure monai nibabel typer click rich shellingham tqdm annotated-types \
#       annotated-doc typing-inspection typing-extensions markdown-it-py mdurl pygments packaging pydantic safetensors
#   for py in 3.10 3.11 3.12; do pip download --only-binary=:all: --no-deps --python-version $py \
#       --platform manylinux2014_x86_64 -d runs/wheels/py$py pydantic_core pyyaml; done   # + numpy for the likeliest
#   DEVICE=cpu BUDGET=60 CALIBRATE=3 bash benchmarks/gpu_train_synth.sh /tmp/smoke            # smoke test here
# On the machine (carry runs/labelmaps runs/wheels):  bash benchmarks/gpu_train_synth.sh $OUT
#
# It installs only what does not import (no index, --no-deps), times CALIBRATE steps, then trains
# as many steps as fit in BUDGET seconds (so the cosine schedule ends inside it), with a timeout
# as a guard (SIGTERM: last.safetensors is saved). $OUT gets env.txt, calib/, run/ (best/last
# .safetensors, log.csv, config.yaml) and train.log.
set -uo pipefail
OUT=$1; DEVICE=${DEVICE:-cuda}; BUDGET=${BUDGET:-320}; CALIBRATE=${CALIBRATE:-40}; MAXSTEPS=${MAXSTEPS:-12000}
mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd); REPO=$(pwd); T0=$(date +%s); say() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
PY=$(python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
{ echo "python $PY"; python3 -m pip list 2>/dev/null; nvidia-smi -L 2>/dev/null; } > "$OUT/env.txt"
say "python $PY"
if ! (cd / && python3 -c "import regkit.train.synth, monai, nibabel, typer, yaml, safetensors, pydantic, tqdm" 2>/dev/null); then
    wheels=(runs/wheels/regkit-*.whl)
    for w in runs/wheels/pure/*.whl runs/wheels/py$PY/*.whl; do
        name=$(basename "$w" | cut -d- -f1 | tr _ -)
        python3 -c "import importlib.metadata as m; m.version('$name')" 2>/dev/null || wheels+=("$w")
    done
    python3 -m pip install --no-index --no-deps "${wheels[@]}" > "$OUT/pip_install.txt" 2>&1 || say "pip install failed: $(tail -2 "$OUT/pip_install.txt")"
fi
(cd / && python3 -c "import torch, regkit.train.synth; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" 2>&1 | tail -2)
# from $OUT: the checkout's regkit/ (no cli/ inside) must not shadow the installed package
train() { (cd "$OUT" && OMP_NUM_THREADS=8 python3 -m regkit.cli.main train --config "$REPO/configs/train_brain_synth.yaml" --data "$REPO/runs/labelmaps" \
          --device "$DEVICE" --no-progress --force "$@"); }
train --out "$OUT/calib" --steps "$CALIBRATE" > "$OUT/calib.log" 2>&1
LEFT=$(( BUDGET - ($(date +%s) - T0) ))
STEPS=$(python3 - "$OUT/calib/log.csv" "$LEFT" "$MAXSTEPS" <<'PY'
import csv, sys
rows = [r for r in csv.DictReader(open(sys.argv[1])) if r["seconds"]]
late = [float(r["seconds"]) for r in rows[len(rows) // 2:]] or [1.0]
per = sum(late) / len(late) * 1.12 + 0.4 / 100 * 4   # + validations (4 pairs every 100 steps), a margin
print(max(10, min(int(sys.argv[3]), int((float(sys.argv[2]) - 25) / per))))
PY
) || STEPS=1000
say "calibration: $(tail -1 "$OUT/calib.log"); training $STEPS steps in at most $LEFT s"
timeout -s TERM "$LEFT" bash -c "$(declare -f train); OUT='$OUT'; REPO='$REPO'; DEVICE=$DEVICE; train --out '$OUT/run' --steps $STEPS" > "$OUT/train.log" 2>&1
say "train exit $?: $(tail -2 "$OUT/train.log" | tr '\n' ' ')"
rm -f "$OUT/calib/"*.safetensors
