#!/usr/bin/env bash
# Train the shipped brain model (configs/train_brain_synth.yaml) on a lent GPU machine, in one call.
#
# Here, before the call (label maps + wheels of what that bare image lacks, all under runs/):
#   mkdir -p runs/labelmaps && cp ../shared/data/brain_labelmaps/subject{01..14}_labels.nii.gz runs/labelmaps/
#   pip wheel --no-deps . -w runs/wheels && for py in 3.11 3.12; do pip download --only-binary=:all: \
#       --python-version $py --platform manylinux2014_x86_64 -d runs/wheels monai nibabel pydantic typer \
#       pyyaml safetensors tqdm; done          # (numpy/torch come with the image's torch)
#   DEVICE=cpu STEPS=3 BUDGET=120 bash benchmarks/gpu_train_synth.sh /tmp/smoke     # smoke test here
# On the machine (run tool, carry runs/labelmaps runs/wheels runs/device):
#   bash benchmarks/gpu_train_synth.sh $OUT
# $OUT gets pip_list.txt, run/ (best/last.safetensors, log.csv, tensorboard/ when installed) and train.log.
# BUDGET (s) bounds the training: SIGTERM makes `regkit train` save last.safetensors and stop.
set -uo pipefail
OUT=$1; DEVICE=${DEVICE:-cuda}; STEPS=${STEPS:-6000}; BUDGET=${BUDGET:-400}
mkdir -p "$OUT"; T0=$(date +%s); say() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
python -m pip list 2>/dev/null > "$OUT/pip_list.txt"
if ! python -c "import regkit.train.synth" 2>/dev/null; then
    python -m pip install --no-index --find-links runs/wheels regkit > "$OUT/pip_install.txt" 2>&1 \
        || { say "pip install failed"; tail -5 "$OUT/pip_install.txt"; }
fi
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
say "training on $DEVICE: $STEPS steps, at most $BUDGET s"
OMP_NUM_THREADS=8 timeout -s TERM "$BUDGET" regkit train --config configs/train_brain_synth.yaml --data runs/labelmaps \
    --out "$OUT/run" --steps "$STEPS" --device "$DEVICE" --no-progress --force > "$OUT/train.log" 2>&1
say "train exit $?: $(tail -2 "$OUT/train.log" | tr '\n' ' ')"
