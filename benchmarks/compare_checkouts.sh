#!/usr/bin/env bash
# Whole `regkit register` processes of two checkouts of regkit, alternating pair by pair (the
# order swapped every pair), on the same venv: wall seconds, registration seconds and final loss.
# Usage: benchmarks/compare_checkouts.sh OLD_DIR NEW_DIR DATA:PAIR [DATA:PAIR ...]
#   OLD_DIR/NEW_DIR: checkouts (e.g. `git clone . /tmp/base && git -C /tmp/base checkout f5ac88d`);
#   DATA:PAIR: a folder of pairNN_{moving,fixed,moving_labels}.nii.gz and a pair name.
# REGKIT_ARGS: extra arguments for both; file paths in it absolute (the processes run in /tmp).
# Outputs go to ${WORK:-/tmp/compare_checkouts}/{old,new}/PAIR.
set -euo pipefail
old=$1; new=$2; shift 2
work=${WORK:-/tmp/compare_checkouts}
run() {  # label checkout data pair
  local out="$work/$1/$(basename "$3")_$4" t0 t1
  t0=$(date +%s.%N)
  (cd /tmp && PYTHONPATH="$2" python -m regkit.cli.main register "$3/$4_moving.nii.gz" "$3/$4_fixed.nii.gz" \
      --out "$out" --moving-labels "$3/$4_moving_labels.nii.gz" --no-progress --force ${REGKIT_ARGS:-} > /dev/null)
  t1=$(date +%s.%N)
  python3 -c "import json; d = json.load(open('$out/log.json')); \
print('%s %s %s wall %.2f reg %.2f loss %.6f' % ('$1', '$(basename "$3")', '$4', $t1 - $t0, d['register_seconds'], d['final_loss']))"
}
i=0
for spec in "$@"; do
  data=${spec%%:*}; pair=${spec#*:}
  if (( i % 2 == 0 )); then run old "$old" "$data" "$pair"; run new "$new" "$data" "$pair"
  else run new "$new" "$data" "$pair"; run old "$old" "$data" "$pair"; fi
  i=$((i + 1))
done
