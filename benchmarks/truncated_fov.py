"""Accuracy near the edge of a truncated moving field of view (the usual CT case), against a
known rigid motion.

The moving image is the shared CT rotated 6° about z and shifted (8, -5, 30) mm (SimpleITK,
air -1000 HU outside), on a grid cut to 90 of the CT's 112 slices, so part of the fixed image has
no moving counterpart. ``regkit register`` runs once per variant; its ``field.nii.gz`` (ITK/ANTs
convention, LPS mm) is compared with the known mapping at every fixed body voxel (HU > -500)
whose true moving position lies inside the moving grid, binned by the distance of that position
to the moving grid's nearest boundary.

    python benchmarks/truncated_fov.py ../shared/data/ct/totalseg_example_ct.nii.gz --work /tmp/trunc \\
        --variant "fast=--config fast" --variant "ct=--config ct"
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np

BANDS_MM = [(0, 6), (6, 15), (15, 30), (30, np.inf)]
ROTATION_DEG, SHIFT_MM, MOVING_SLICES = 6.0, (8.0, -5.0, 30.0), 90


def rigid(ct):
    import SimpleITK as sitk

    t = sitk.Euler3DTransform()
    t.SetCenter(ct.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in ct.GetSize()]))
    t.SetRotation(0.0, 0.0, np.deg2rad(ROTATION_DEG))
    t.SetTranslation(SHIFT_MM)
    return t


def make_pair(ct_path: Path, work: Path):
    """fixed.nii.gz = the CT; moving.nii.gz = the CT moved rigidly onto a cut grid. Returns the
    fixed image and the ITK transform that maps fixed points (LPS) to moving points."""
    import SimpleITK as sitk

    ct = sitk.ReadImage(str(ct_path))
    sitk.WriteImage(ct, str(work / "fixed.nii.gz"))
    forward = rigid(ct)  # resampling uses output (moving-grid) -> input (fixed) points
    size = list(ct.GetSize())
    size[2] = MOVING_SLICES
    ref = sitk.Image(size, sitk.sitkInt16)
    ref.SetSpacing(ct.GetSpacing())
    ref.SetDirection(ct.GetDirection())
    ref.SetOrigin(ct.GetOrigin())
    sitk.WriteImage(sitk.Resample(ct, ref, forward, sitk.sitkLinear, -1000, sitk.sitkInt16), str(work / "moving.nii.gz"))
    return ct, forward.GetInverse(), ref


def band_errors(field_path: Path, fixed_path: Path, to_moving, moving) -> list:
    import nibabel as nib

    field = nib.load(str(field_path))
    u = np.asarray(field.dataobj, dtype=np.float64).reshape(field.shape[:3] + (3,))  # LPS mm
    ijk = np.indices(field.shape[:3]).reshape(3, -1).T
    lps = nib.affines.apply_affine(field.affine, ijk) * np.array([-1.0, -1.0, 1.0])
    found = lps + u.reshape(-1, 3)
    m = np.array(to_moving.GetMatrix()).reshape(3, 3)
    c, t = np.array(to_moving.GetCenter()), np.array(to_moving.GetTranslation())
    true = (lps - c) @ m.T + c + t
    error = np.linalg.norm(found - true, axis=1)
    origin, direction = np.array(moving.GetOrigin()), np.array(moving.GetDirection()).reshape(3, 3)
    spacing, size = np.array(moving.GetSpacing()), np.array(moving.GetSize())
    index = ((true - origin) @ direction) / spacing
    inside = np.all((index >= 0) & (index <= size - 1), axis=1)
    distance = (np.minimum(index, size - 1 - index) * spacing).min(axis=1)
    body = np.asarray(nib.load(str(fixed_path)).dataobj).reshape(-1) > -500
    rows = []
    for lo, hi in BANDS_MM:
        sel = inside & body & (distance >= lo) & (distance < hi)
        rows.append((lo, hi, int(sel.sum()), float(error[sel].mean()), float(np.percentile(error[sel], 95)), float(error[sel].max())))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("ct", type=Path, help="a CT (e.g. ../shared/data/ct/totalseg_example_ct.nii.gz)")
    ap.add_argument("--work", type=Path, required=True, help="scratch folder (replaced)")
    ap.add_argument("--variant", action="append", default=[], help="NAME=regkit register options (repeatable)")
    a = ap.parse_args()
    variants = dict(v.split("=", 1) for v in (a.variant or ["default="]))
    if a.work.exists():
        shutil.rmtree(a.work)
    a.work.mkdir(parents=True)
    _, to_moving, moving = make_pair(a.ct, a.work)
    print("| variant | distance to the moving edge | voxels | error mean / p95 / max (mm) | seconds |")
    print("|---|---|---|---|---|")
    for name, options in variants.items():
        out = a.work / name
        t0 = time.perf_counter()
        subprocess.run(["regkit", "register", str(a.work / "moving.nii.gz"), str(a.work / "fixed.nii.gz"), "--out", str(out),
                        "--no-progress", *options.split()], check=True, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        for lo, hi, n, mean, p95, worst in band_errors(out / "field.nii.gz", a.work / "fixed.nii.gz", to_moving, moving):
            band = f"{lo}–{hi} mm" if np.isfinite(hi) else f"> {lo} mm"
            print(f"| {name} | {band} | {n} | {mean:.2f} / {p95:.2f} / {worst:.2f} | {seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()
