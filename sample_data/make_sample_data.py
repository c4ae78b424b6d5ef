"""Make regkit's sample pair from the MNI ICBM152 2009a template that the nilearn wheel ships.

    pip install nilearn && python sample_data/make_sample_data.py sample_data/

Writes ``moving.nii.gz``, ``fixed.nii.gz`` and their ``*_labels.nii.gz`` (6 labels: left/right ×
{CSF-ish, grey matter, white matter}) plus ``truth.json`` (the known moving-from-fixed mapping's
parameters). Both images are the template seen through different known mappings:

* fixed  = template on a 2.5 mm RAS grid (axis-aligned) with mild contrast changes;
* moving = template through a random affine (±7°, ±6 % scale, ±6 mm) and a smooth
  diffeomorphic warp (~5 mm), sampled on an anisotropic (2.2 × 3.0 × 2.6 mm), permuted,
  flipped and slightly oblique grid (LPS-like storage) with its own gamma, bias and noise.

Deterministic for a given ``--seed``. Needs numpy, scipy, nibabel, nilearn.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage


def load_template():
    import nilearn

    d = Path(nilearn.__file__).parent / "datasets" / "data"
    t1 = nib.load(d / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")
    gm = np.asarray(nib.load(d / "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz").dataobj, np.float32) / 255.0
    wm = np.asarray(nib.load(d / "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz").dataobj, np.float32) / 255.0
    img = np.asarray(t1.dataobj, np.float32)
    aff = t1.affine.astype(np.float64)
    tissue = np.zeros(img.shape, np.int16)
    brain = ndimage.binary_fill_holes(ndimage.gaussian_filter(gm + wm, 1.0) > 0.3)
    tissue[brain] = 1  # CSF / other inside the brain envelope
    tissue[(gm >= 0.5) & (gm >= wm)] = 2
    tissue[(wm >= 0.5) & (wm > gm)] = 3
    x = aff[0, 0] * np.arange(img.shape[0]) + aff[0, 3]
    right = (x > 0)[:, None, None]
    labels = np.where(tissue > 0, tissue + 3 * right, 0).astype(np.int16)
    return img, labels, aff


def rotation(angles_deg):
    a = np.deg2rad(angles_deg)
    cx, cy, cz = np.cos(a)
    sx, sy, sz = np.sin(a)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def smooth_velocity(rng, shape, sigma_vox, amp_mm):
    v = np.stack([ndimage.gaussian_filter(rng.standard_normal(shape), sigma_vox) for _ in range(3)])
    return v * (amp_mm / np.sqrt((v ** 2).sum(0)).max())


def integrate(v, spacing, steps=6):
    """exp(v) by scaling and squaring on an axis-aligned grid with the given spacing (mm)."""
    u = v / 2 ** steps
    ijk = np.indices(v.shape[1:]).astype(np.float64)
    for _ in range(steps):
        coords = ijk + u / spacing
        u = u + np.stack([ndimage.map_coordinates(c, coords, order=1, mode="nearest") for c in u])
    return u


def sample(volume, vol_affine, world, order):
    """Sample ``volume`` at world points (3, ...) (RAS mm)."""
    inv = np.linalg.inv(vol_affine)
    ijk = np.einsum("ij,j...->i...", inv[:3, :3], world) + inv[:3, 3].reshape(3, *([1] * (world.ndim - 1)))
    return ndimage.map_coordinates(volume, ijk, order=order, mode="constant", cval=0)


def grid_world(affine, shape):
    ijk = np.indices(shape).astype(np.float64)
    return np.einsum("ij,j...->i...", affine[:3, :3], ijk) + affine[:3, 3].reshape(3, 1, 1, 1)


def contrast(rng, im, shape_affine):
    im = np.clip(im, 0, None) / max(float(im.max()), 1e-6)
    im = im ** rng.uniform(0.85, 1.2)
    bias = ndimage.gaussian_filter(rng.standard_normal(im.shape), 12.0)
    im = im * np.exp(0.12 * bias / max(np.abs(bias).max(), 1e-6))
    im = np.clip(im + rng.normal(0, 0.012, im.shape), 0, None)
    return (im * 1000).astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    img, labels, t_aff = load_template()

    # head bounding box in world space (mm)
    ijk = np.argwhere(img > 0.05 * img.max())
    lo = t_aff[:3, :3] @ ijk.min(0) + t_aff[:3, 3]
    hi = t_aff[:3, :3] @ ijk.max(0) + t_aff[:3, 3]
    lo, hi = np.minimum(lo, hi) - 4, np.maximum(lo, hi) + 4
    center = (lo + hi) / 2

    # fixed: 2.5 mm RAS, axis-aligned
    f_sp = 2.5
    f_shape = tuple(int(np.ceil((hi[i] - lo[i]) / f_sp)) + 1 for i in range(3))
    f_aff = np.diag([f_sp, f_sp, f_sp, 1.0])
    f_aff[:3, 3] = lo
    fx = sample(img, t_aff, grid_world(f_aff, f_shape), order=1)
    fxl = sample(labels, t_aff, grid_world(f_aff, f_shape), order=0)

    # moving subject: template point = A(x + u(x)) for a moving-space point x
    rot = rotation(rng.uniform(-7, 7, 3))
    scale = np.diag(rng.uniform(0.94, 1.06, 3))
    m = rot @ scale
    t = rng.uniform(-6, 6, 3)
    A = np.eye(4)
    A[:3, :3] = m
    A[:3, 3] = center - m @ center + t
    w_sp = 4.0
    w_shape = tuple(int(np.ceil((hi[i] - lo[i]) / w_sp)) + 1 for i in range(3))
    w_aff = np.diag([w_sp, w_sp, w_sp, 1.0])
    w_aff[:3, 3] = lo
    u = integrate(smooth_velocity(rng, w_shape, sigma_vox=3.0, amp_mm=5.0), np.full((3, 1, 1, 1), w_sp))

    # moving grid: spacing (2.2, 3.0, 2.6), axes permuted (k->y, i->z, j->x) and flipped, 6° oblique
    sp = np.array([2.2, 3.0, 2.6])
    perm = np.zeros((3, 3))
    perm[1, 0], perm[2, 1], perm[0, 2] = -1, 1, -1
    direction = rotation([6.0, -4.0, 3.0]) @ perm
    m_lin = direction * sp[None, :]
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    proj = corners @ direction  # coordinate of each corner along each voxel axis (mm)
    extent = proj.max(0) - proj.min(0) + 12
    m_shape = tuple(int(np.ceil(extent[k] / sp[k])) + 1 for k in range(3))
    mid = (np.array(m_shape) - 1) / 2
    m_aff = np.eye(4)
    m_aff[:3, :3] = m_lin
    m_aff[:3, 3] = center + rng.uniform(-5, 5, 3) - m_lin @ mid
    xm = grid_world(m_aff, m_shape)
    disp = np.stack([sample(c, w_aff, xm, order=1) for c in u])
    z = np.einsum("ij,j...->i...", A[:3, :3], xm + disp) + A[:3, 3].reshape(3, 1, 1, 1)
    mv = sample(img, t_aff, z, order=1)
    mvl = sample(labels, t_aff, z, order=0)

    a.out.mkdir(parents=True, exist_ok=True)
    for name, arr, aff in [("fixed", contrast(rng, fx, f_aff), f_aff), ("fixed_labels", fxl.astype(np.int16), f_aff),
                           ("moving", contrast(rng, mv, m_aff), m_aff), ("moving_labels", mvl.astype(np.int16), m_aff)]:
        nii = nib.Nifti1Image(arr, aff)
        nii.set_sform(aff, 1)
        nii.set_qform(aff, 1)
        nib.save(nii, a.out / f"{name}.nii.gz")
        print(name, arr.shape, arr.dtype)
    truth = {"seed": a.seed, "moving_to_template_affine_ras": A.tolist(), "warp_amplitude_mm": 5.0,
             "note": "template point = A(x + u(x)) for a moving-space world point x; fixed = template grid at 2.5 mm"}
    (a.out / "truth.json").write_text(json.dumps(truth, indent=1))


if __name__ == "__main__":
    main()
