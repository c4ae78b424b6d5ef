"""Dice against refinement budget: the optimiser's deformable pyramid with a given schedule,
started from a trained cascade's prediction (what ``regkit register --model --refine`` does) and
from the optimiser's own affine stage (what ``regkit register`` does), on synth.py pairs.

A schedule is ``spacing_mm[/control_mm]:iterations`` per level, coarse to fine (control spacing
defaults to twice the level's); the default preset is ``4:30,2:10``. Dice is regkit's mean over
the labels (moving labels warped by nearest neighbour onto the fixed grid); seconds are the
registration call's median (the cascade's prediction excluded: it is computed once per pair).

    python benchmarks/refine_schedules.py runs/g10/best.safetensors runs/data/dev2mm \\
        --schedules "4:30,2:10;4:20,2:5" [--starts cascade,optimiser] [--pairs 8]
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path


def parse_schedule(text: str) -> list:
    levels = []
    for part in text.split(","):
        spacing, iterations = part.split(":")
        level, _, control = spacing.partition("/")
        levels.append({"spacing_mm": float(level), "control_spacing_mm": float(control) if control else 2 * float(level),
                       "iterations": int(iterations)})
    return levels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument("data", type=Path)
    ap.add_argument("--schedules", default="4:30,2:10", help="';'-separated schedules")
    ap.add_argument("--starts", default="cascade,optimiser", help="cascade, optimiser or both")
    ap.add_argument("--pairs", type=int, default=None, help="only the first N pairs")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lr-mm", type=float, default=None, help="Adam step of the deformable levels (preset: 0.5)")
    ap.add_argument("--warmup", type=int, default=None, help="deformable.warmup_iterations (preset: 3)")
    ap.add_argument("--metric", default=None, help="similarity (preset: lncc), e.g. mi for T2/T1 pairs")
    a = ap.parse_args()

    import torch

    from regkit.io.images import load_image, load_label
    from regkit.metrics import dice, summarize
    from regkit.nn.checkpoint import load_model
    from regkit.nn.predict import predict
    from regkit.workflows.predict_and_refine import refine_config
    from regkit.optimize import register
    from regkit.optimize.config import load_config
    from regkit.resample import resample

    torch.set_num_threads(a.threads)
    net = load_model(a.checkpoint, "cpu")
    starts = a.starts.split(",")
    configs = {}
    for text in a.schedules.split(";"):
        cfg = load_config("default").model_dump()
        cfg["deformable"]["levels"] = parse_schedule(text)
        if a.lr_mm is not None:
            cfg["deformable"]["lr_mm"] = a.lr_mm
        if a.warmup is not None:
            cfg["deformable"]["warmup_iterations"] = a.warmup
        if a.metric is not None:
            cfg["metric"] = a.metric
        configs[text] = cfg
    names = sorted(p.name[: -len("_moving.nii.gz")] for p in a.data.glob("pair*_moving.nii.gz"))[: a.pairs]
    scores = {(s, t): [] for s in starts for t in configs}
    seconds = {(s, t): [] for s in starts for t in configs}
    for name in names:
        moving, fixed = load_image(a.data / f"{name}_moving.nii.gz"), load_image(a.data / f"{name}_fixed.nii.gz")
        moving_labels, fixed_labels = (load_label(a.data / f"{name}_{k}_labels.nii.gz") for k in ("moving", "fixed"))
        prediction = predict(net, moving, fixed) if "cascade" in starts else None
        for start in starts:
            for text, cfg in configs.items():
                t0 = time.perf_counter()
                if start == "cascade":
                    steps = sum(level["iterations"] for level in cfg["deformable"]["levels"])
                    result = register(moving, fixed, config=refine_config(cfg, steps), initial_transform=prediction)
                else:
                    result = register(moving, fixed, config=cfg)
                seconds[(start, text)].append(time.perf_counter() - t0)
                scores[(start, text)].append(summarize(dice(fixed_labels, resample(moving_labels, result.transform, fixed))))
        print(f"{name} done", flush=True)
    print("| schedule | start | Dice (mean) | registration call s (median) |\n|---|---|---|---|")
    for text in configs:
        for start in starts:
            d, s = scores[(start, text)], seconds[(start, text)]
            print(f"| {text} | {start} | {statistics.fmean(d):.4f} | {statistics.median(s):.2f} |")


if __name__ == "__main__":
    main()
