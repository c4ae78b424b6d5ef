#!/usr/bin/env bash
# Create .venv and install regkit with its test extras. CPU torch by default; set
# REGKIT_TORCH to another pip requirement (e.g. "torch" for the CUDA build) to change it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -d .venv ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q "${REGKIT_TORCH:-torch==2.13.0}"
python -m pip install -q -e ".[test]"
