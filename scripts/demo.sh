#!/usr/bin/env bash
# Set up (if needed) and register the bundled sample pair into out/sample/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
regkit register sample_data/moving.nii.gz sample_data/fixed.nii.gz --out out/sample \
  --moving-labels sample_data/moving_labels.nii.gz --qc --force
regkit evaluate --fixed-labels sample_data/fixed_labels.nii.gz \
  --warped-labels out/sample/warped_labels.nii.gz --field out/sample/field.nii.gz
