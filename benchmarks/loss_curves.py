"""The optimiser's loss per iteration, from the ``log.json`` files of earlier runs: where a
trained cascade's start stands on the optimiser's own objective, and how fast each start converges.

Reads every ``log.json`` under the given folders (``cohort_timing.py --work`` or
``run_benchmark.py --work`` folders); the variant is the name of the folder holding the pair
folders (``optimiser``, ``cascade+refine40``). For each deformable level it prints the median over
the pairs of the loss (similarity + regularisation, as optimised) at a few iterations, and how
many iterations the optimiser needed to get below the cascade's start on the same pair.

    python benchmarks/loss_curves.py /tmp/s11/cohort3 /tmp/s11/cohort4
"""
from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

ITERATIONS = (0, 1, 3, 5, 10, 20, -1)


def curves(folders) -> dict:
    """``{variant: {(round folder, pair folder): [loss list per deformable level]}}``."""
    found: dict = defaultdict(dict)
    for folder in folders:
        for log in sorted(Path(folder).rglob("log.json")):
            levels = [lv["loss"] for lv in json.loads(log.read_text())["levels"] if lv["stage"] == "deformable"]
            pair, variant = log.parent, log.parent.parent
            found[variant.name][(str(variant.parent), pair.name)] = levels
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", type=Path, nargs="+")
    a = ap.parse_args()
    found = curves(a.folders)
    if not found:
        raise SystemExit("no log.json under the given folders")
    n_levels = min(len(v) for runs in found.values() for v in runs.values())
    print("| variant | level | runs | " + " | ".join("final" if i == -1 else f"it {i}" for i in ITERATIONS) + " |")
    print("|---" * (3 + len(ITERATIONS)) + "|")
    for variant, runs in sorted(found.items()):
        for level in range(n_levels):
            cells = []
            for i in ITERATIONS:
                values = [v[level][i] for v in runs.values() if len(v[level]) > (i if i >= 0 else 0)]
                cells.append(f"{statistics.median(values):.4f}" if values else "–")
            print(f"| {variant} | {level} | {len(runs)} | " + " | ".join(cells) + " |")
    if "optimiser" in found:
        for variant, runs in sorted(found.items()):
            if variant == "optimiser":
                continue
            needed = []
            for key, levels in runs.items():
                opt = found["optimiser"].get(key)
                if opt is None:
                    continue
                start = levels[0][0]
                needed.append(next((i for i, loss in enumerate(opt[0]) if loss < start), len(opt[0])))
            if needed:
                print(f"\n{variant}: the optimiser's first deformable level gets below this start's loss after "
                      f"{statistics.median(needed):g} iterations (median of {len(needed)} pairs; "
                      f"range {min(needed)}–{max(needed)})")


if __name__ == "__main__":
    main()
