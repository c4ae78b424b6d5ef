"""Make a CT-sized pair (512×512×300 int16) for the peak-memory measurement in README.md.

    python benchmarks/make_ct_pair.py ../shared/data/ct/totalseg_example_ct.nii.gz /tmp/ct

Upsamples the CT (trilinear) to 512×512×300 as ``fixed.nii.gz`` and writes the same voxels on a
grid rotated 3° about z and shifted (4, −3, 2) mm as ``moving.nii.gz``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage


def save(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    nii = nib.Nifti1Image(array, affine)
    nii.set_sform(affine, 1)
    nii.set_qform(affine, 1)
    nib.save(nii, str(path))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ct", type=Path)
    ap.add_argument("out", type=Path)
    a = ap.parse_args()
    ct = nib.load(str(a.ct))
    data = np.asarray(ct.dataobj).astype(np.float32)
    zoom = (512 / data.shape[0], 512 / data.shape[1], 300 / data.shape[2])
    big = ndimage.zoom(data, zoom, order=1).astype(np.int16)
    affine = ct.affine.copy()
    affine[:3, :3] = affine[:3, :3] / np.array(zoom)[None, :]
    a.out.mkdir(parents=True, exist_ok=True)
    save(big, affine, a.out / "fixed.nii.gz")
    t = np.deg2rad(3.0)
    rz = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
    moved = affine.copy()
    moved[:3, :3] = rz @ affine[:3, :3]
    moved[:3, 3] = rz @ affine[:3, 3] + np.array([4.0, -3.0, 2.0])
    save(big, moved, a.out / "moving.nii.gz")
    print(big.shape, "spacing", np.round(np.linalg.norm(affine[:3, :3], axis=0), 3))


if __name__ == "__main__":
    main()
