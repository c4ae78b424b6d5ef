"""Tune the optimiser on anatomy pairs IN-PROCESS: Dice, folding and per-level seconds per setting.

For choosing settings on the TRAINING split only (``anatomy.py ... --split train``); the
benchmark's figures come from ``run_benchmark.py`` (whole processes beside ANTs). Each variant is
a preset plus dotted overrides; the variants run pair by pair, alternating, on one thread count.

usage:
  python benchmarks/tune_anatomy.py /tmp/bench/anattune --threads 2 \\
      --variant "base=default" \\
      --variant "fine=default deformable.levels.1.control_spacing_mm=3 deformable.regularization_weight=0.1"
Prints one line per pair and variant and a summary per variant (mean Dice over the fixed map's
labels, as evaluate.py; folding % inside the dilated fixed labels; register seconds).
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch
import yaml
from scipy import ndimage


def parse_variant(text: str):
    label, _, rest = text.partition("=")
    words = rest.split()
    preset, overrides = (words[0] if words else "default"), words[1:]
    return label, preset, overrides


def build_config(preset: str, overrides):
    from regkit.optimize.config import load_config

    data = load_config(preset).model_dump()
    for item in overrides:
        key, _, value = item.partition("=")
        node = data
        parts = key.split(".")
        for p in parts[:-1]:
            node = node[int(p)] if isinstance(node, list) else node[p]
        last = parts[-1]
        parsed = yaml.safe_load(value)
        if isinstance(node, list) and int(last) == len(node):  # one past the end: a new level
            node.append(parsed)
        elif isinstance(node, list):
            node[int(last)] = parsed
        else:
            node[last] = parsed
    return data


def score(data_dir: Path, pair: str, result, moving_labels):
    """(mean Dice over the fixed map's labels, % of voxels with det J <= 0 in the dilated fixed
    labels without the grid's outer layer) — the numbers evaluate.py gives, from regkit.metrics."""
    import regkit
    from regkit import metrics

    fixed_labels = regkit.load_label(str(data_dir / f"{pair}_fixed_labels.nii.gz"))
    dice = metrics.summarize(metrics.dice(fixed_labels, result.apply(moving_labels)))
    mask = ndimage.binary_dilation(fixed_labels.numpy() > 0, iterations=3)
    mask[[0, -1]] = False
    mask[:, [0, -1]] = False
    mask[:, :, [0, -1]] = False
    det = metrics.jacobian_determinant(result.field.displacement[0], result.field.affine)
    return float(dice), metrics.jacobian_stats(det, torch.from_numpy(mask)).folding_percent


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data", type=Path)
    ap.add_argument("--variant", action="append", required=True, metavar="LABEL=PRESET [key=value ...]")
    ap.add_argument("--pairs", default="")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--metric", default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=None, help="append JSON lines here")
    a = ap.parse_args()

    import regkit
    from regkit.optimize.register import register

    torch.set_num_threads(a.threads)
    pairs = a.pairs.split(",") if a.pairs else sorted(p.name[:-14] for p in a.data.glob("pair*_moving.nii.gz"))
    variants = [parse_variant(v) for v in a.variant]
    results = {v[0]: [] for v in variants}
    for i, pair in enumerate(pairs):
        moving = regkit.load(str(a.data / f"{pair}_moving.nii.gz"))
        fixed = regkit.load(str(a.data / f"{pair}_fixed.nii.gz"))
        mlab = regkit.load_label(str(a.data / f"{pair}_moving_labels.nii.gz"))
        order = variants if i % 2 == 0 else variants[::-1]
        for label, preset, overrides in order:
            cfg = build_config(preset, overrides)
            cfg["threads"] = a.threads
            t0 = time.perf_counter()
            res = register(moving, fixed, config=copy.deepcopy(cfg), metric=a.metric, device=a.device)
            reg_s = res.log["register_seconds"]
            dice, fold = score(a.data, pair, res, mlab)
            levels = " ".join(f"{lv['stage'][0]}{lv['spacing_mm']:g}:{lv['iterations']}it/{lv['seconds']:.1f}s"
                              for lv in res.log["levels"])
            rec = {"pair": pair, "variant": label, "dice": round(dice, 4), "fold_pct": round(fold, 4),
                   "reg_s": reg_s, "total_s": round(time.perf_counter() - t0, 2), "levels": levels}
            results[label].append(rec)
            print(json.dumps(rec), flush=True)
            if a.out:
                with open(a.out, "a") as fh:
                    fh.write(json.dumps(rec) + "\n")
    print("SUMMARY")
    base = None
    for label, recs in results.items():
        dice = statistics.mean(r["dice"] for r in recs)
        base = dice if base is None else base
        print(f"{label:>12}: dice {dice:.4f} ({dice - base:+.4f})  fold {max(r['fold_pct'] for r in recs):.4f}% max  "
              f"reg {statistics.median(r['reg_s'] for r in recs):.1f}s median")


if __name__ == "__main__":
    main()
