#!/usr/bin/env bash
# Create .venv and install regkit with its test extras. CPU torch by default; set
# REGKIT_TORCH to another pip requirement (e.g. "torch" for the CUDA build) to change it.
# pip's own output goes to .venv/setup.log (shown if a step fails).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -d .venv ] || "$PY" -m venv .venv
. .venv/bin/activate
log=.venv/setup.log
step() {
  if ! "$@" >>"$log" 2>&1; then
    echo "setup failed: $* (see $log)" >&2
    tail -20 "$log" >&2
    exit 1
  fi
}
: >"$log"
echo "setting up .venv (log: $log)" >&2
step python -m pip install --upgrade pip
step python -m pip install "${REGKIT_TORCH:-torch==2.13.0}"
step python -m pip install -e ".[test]"
