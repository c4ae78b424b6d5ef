"""Evaluate a trained cascade (optionally with --refine N optimiser steps) on synth.py pairs.

For every ``pairNN`` in DATA: predict fixed→moving (timed: network + resampling onto its grid,
model loaded once), warp the moving labels onto the fixed grid (nearest), write the whole
transform as an ITK displacement field on the fixed grid, and score with the benchmark's own
``evaluate.py`` (Dice, HD95, folding %, SDlogJ) when ``--evaluate`` points at it.

    python benchmarks/eval_cascade.py runs/brain2mm/best.safetensors runs/data/dev2mm \
        --out runs/eval_dev2mm --evaluate ../shared/bench/evaluate.py [--refine 20]

CHECKPOINT ``optimiser`` times the optimiser's ``default`` preset the same way, in-process (no
model; the first pair is registered once as a warm-up, as for a model) — the like-for-like
figure where whole ``regkit register`` processes cannot run (e.g. a GPU machine without
SimpleITK, which writes the ITK affine files).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", help="a cascade checkpoint, a shipped model's name (brain), or 'optimiser' for the optimiser alone")
    ap.add_argument("data", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--evaluate", type=Path, help="path of ../shared/bench/evaluate.py")
    ap.add_argument("--refine", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--pairs", type=int, default=None, help="only the first N pairs")
    a = ap.parse_args()
    if a.checkpoint == "optimiser" and a.refine:
        ap.error("--refine refines a cascade's prediction; the optimiser alone takes none")

    import torch

    from regkit.io.images import load_image, load_label, save_image
    from regkit.io.transform_files import write_transform
    from regkit.metrics import dice, summarize
    from regkit.nn.checkpoint import load_model
    from regkit.workflows.predict_and_refine import register_with_model
    from regkit.optimize.register import register

    torch.set_num_threads(a.threads)
    if a.checkpoint == "optimiser":
        def run(moving, fixed, refine=0, device=None):
            result = register(moving, fixed, device=device)
            result.log["predict_seconds"] = 0.0
            return result
    else:
        from regkit.nn.shipped import resolve_model

        model = load_model(resolve_model(a.checkpoint), a.device)  # a path, or a shipped model's name (brain)

        def run(moving, fixed, refine=0, device=None):
            return register_with_model(moving, fixed, model, refine=refine, device=device)
    a.out.mkdir(parents=True, exist_ok=True)
    rows = []
    names = sorted(p.name[: -len("_moving.nii.gz")] for p in a.data.glob("pair*_moving.nii.gz"))[: a.pairs]
    run(load_image(a.data / f"{names[0]}_moving.nii.gz"), load_image(a.data / f"{names[0]}_fixed.nii.gz"), device=a.device)  # warm-up
    for name in names:
        moving, fixed = load_image(a.data / f"{name}_moving.nii.gz"), load_image(a.data / f"{name}_fixed.nii.gz")
        result = run(moving, fixed, refine=a.refine, device=a.device)
        warped = result.apply(load_label(a.data / f"{name}_moving_labels.nii.gz"))
        fixed_labels = load_label(a.data / f"{name}_fixed_labels.nii.gz")
        row = {"pair": name, "seconds": result.log["total_seconds"] - result.log.get("load_seconds", 0.0),
               "predict_seconds": result.log["predict_seconds"], "dice_regkit": summarize(dice(fixed_labels, warped))}
        warped_path, field_path = a.out / f"{name}_warped_labels.nii.gz", a.out / f"{name}_field.nii.gz"
        save_image(warped, warped_path, force=True)
        write_transform(result.transform, field_path, reference=fixed, force=True)
        if a.evaluate:
            out = subprocess.run([sys.executable, str(a.evaluate), "--fixed-labels", str(a.data / f"{name}_fixed_labels.nii.gz"),
                                  "--warped-labels", str(warped_path), "--field", str(field_path)], capture_output=True, text=True)
            if out.returncode != 0:
                sys.exit(f"evaluate.py failed on {name}: {out.stderr.strip()[-600:]}")
            row.update({k: v for k, v in json.loads(out.stdout.strip().splitlines()[-1]).items() if not isinstance(v, dict)})
        rows.append(row)
        print(json.dumps(row), flush=True)
    keys = [k for k in rows[0] if isinstance(rows[0][k], (int, float))]
    summary = {k: statistics.mean(r[k] for r in rows) for k in keys}
    summary["seconds_median"] = statistics.median(r["seconds"] for r in rows)
    summary.update(pairs=len(rows), refine=a.refine, checkpoint=str(a.checkpoint))
    (a.out / "summary.json").write_text(json.dumps(summary, indent=1))
    print("SUMMARY", json.dumps(summary))


if __name__ == "__main__":
    main()
