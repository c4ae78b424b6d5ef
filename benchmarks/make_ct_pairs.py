"""CT registration pairs with known labels, made from the one real CT in ``../shared/data/ct``.

    python benchmarks/make_ct_pairs.py ../shared/data/ct/totalseg_example_ct.nii.gz /tmp/bench/ct \\
        --pairs 6 --seed 21            # measuring set; tune on other seeds (e.g. --seed 7)

Each "subject" is the CT (and its 61-label TotalSegmentator segmentation) seen through

    phi_s(y) = D_s(A_s y),   D_s(z) = z + u_s(z)

with ``A_s`` a random affine about the body's centre (rotation up to 5 deg about each axis, scale
0.92-1.08 per axis (body habitus), translation up to 15 mm) and ``u_s`` an integrated smooth
stationary velocity field (Gaussian-smoothed noise, sigma 25-40 mm, peak 8-14 mm: organ shape and
breathing), sampled on the subject's OWN scanner grid: anisotropic spacing 2.4-3.6 mm, axis flips
(LPS- or RAS-stored), a z field of view cut to 75-95 % of the body (the usual CT case). Intensities
stay in HU with a per-subject soft-tissue offset (+-20 HU), blur (sigma 0-1.5 mm) and noise
(sigma 5-30 HU); outside the scan is -1000 HU (air). A pair is (moving subject, fixed subject);
the truth is the warped labels. Both members derive from one person, so this measures recovery of
plausible deformations on real CT anatomy and contrast, not inter-patient variation.

Writes ``pairNN_{moving,fixed}[_labels].nii.gz`` (the layout ``run_benchmark.py`` reads) and
``pairs.json``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from make_ct_pair import save  # benchmarks/ is on sys.path when this runs as a script

AIR_HU = -1000.0


def smooth_velocity(rng: np.random.Generator, shape: tuple, spacing_mm: float, sigma_mm: float, peak_mm: float) -> np.ndarray:
    """Random smooth vector field (3, *shape), mm, on an isotropic grid; max norm = peak_mm."""
    field = rng.standard_normal((3, *shape)).astype(np.float32)
    field = np.stack([ndimage.gaussian_filter(c, sigma_mm / spacing_mm, mode="constant") for c in field])
    return field * (peak_mm / max(float(np.sqrt((field ** 2).sum(0)).max()), 1e-8))


def exponentiate(velocity: np.ndarray, spacing_mm: float, steps: int = 7) -> np.ndarray:
    """Scaling and squaring of a stationary velocity field (mm, axis-aligned isotropic grid)."""
    u = velocity / 2 ** steps
    ijk = np.indices(velocity.shape[1:]).astype(np.float32)
    for _ in range(steps):
        coords = ijk + u / spacing_mm
        u = u + np.stack([ndimage.map_coordinates(c, coords, order=1, mode="nearest") for c in u])
    return u


def random_affine(rng: np.random.Generator, centre: np.ndarray) -> np.ndarray:
    """4x4 world affine: rotation <= 5 deg per axis, scale 0.92-1.08, translation <= 15 mm."""
    ax, ay, az = np.deg2rad(rng.uniform(-5, 5, 3))
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    m = rz @ ry @ rx @ np.diag(rng.uniform(0.92, 1.08, 3))
    out = np.eye(4)
    out[:3, :3] = m
    out[:3, 3] = centre - m @ centre + rng.uniform(-15, 15, 3)
    return out


def subject_grid(rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, tuple]:
    """A scanner grid over the world box [lo, hi] (mm): own spacing, flips, a cut z extent."""
    spacing = np.array([rng.uniform(2.4, 3.6)] * 2 + [rng.uniform(2.4, 3.6)]).round(2)
    flips = np.array([rng.choice([-1.0, 1.0]), rng.choice([-1.0, 1.0]), 1.0])
    keep = rng.uniform(0.75, 0.95)
    z_len = (hi[2] - lo[2]) * keep
    z0 = lo[2] + rng.uniform(0, (hi[2] - lo[2]) - z_len)
    lo, hi = lo.copy(), hi.copy()
    lo[2], hi[2] = z0, z0 + z_len
    aff = np.eye(4)
    aff[:3, :3] = np.diag(flips * spacing)
    aff[:3, 3] = np.where(flips > 0, lo, hi)
    shape = tuple(int(np.ceil((hi[k] - lo[k]) / spacing[k])) + 1 for k in range(3))
    return aff, shape


def make_subject(rng: np.random.Generator, ct: np.ndarray, labels: np.ndarray, t_aff: np.ndarray) -> dict:
    t_inv = np.linalg.inv(t_aff)
    body = ct > -500
    centre = t_aff[:3, :3] @ np.array(ndimage.center_of_mass(body)) + t_aff[:3, 3]
    affine = random_affine(rng, centre)
    # velocity on a 6 mm copy of the template's box
    corners = np.array([[i, j, k] for i in (0, ct.shape[0] - 1) for j in (0, ct.shape[1] - 1) for k in (0, ct.shape[2] - 1)], float)
    world = corners @ t_aff[:3, :3].T + t_aff[:3, 3]
    lo, hi = world.min(0), world.max(0)
    vs = 6.0
    v_shape = tuple(int(np.ceil((hi - lo)[k] / vs)) + 1 for k in range(3))
    u = exponentiate(smooth_velocity(rng, v_shape, vs, rng.uniform(25, 40), rng.uniform(8, 14)), vs)

    s_aff, s_shape = subject_grid(rng, lo, hi)
    y = np.indices(s_shape, dtype=np.float32).reshape(3, -1)
    y = s_aff[:3, :3] @ y + s_aff[:3, 3:4]                       # subject world (mm)
    z = affine[:3, :3] @ y + affine[:3, 3:4]                      # A_s y
    zi = (z - lo[:, None]) / vs
    x = z + np.stack([ndimage.map_coordinates(c, zi, order=1, mode="nearest") for c in u])
    idx = t_inv[:3, :3] @ x + t_inv[:3, 3:4]                      # template voxel index

    blur = rng.uniform(0, 1.5) / 3.0
    source = ndimage.gaussian_filter(ct.astype(np.float32), blur) if blur > 0.05 else ct.astype(np.float32)
    image = ndimage.map_coordinates(source, idx, order=1, mode="constant", cval=AIR_HU).reshape(s_shape)
    soft = (image > -200) & (image < 300)
    image[soft] += rng.uniform(-20, 20)
    image += rng.normal(0, rng.uniform(5, 30), image.shape).astype(np.float32)
    lab = ndimage.map_coordinates(labels, idx, order=0, mode="constant", cval=0).reshape(s_shape)
    return {"image": np.clip(image, -1024, 3071).round().astype(np.int16), "labels": lab.astype(np.uint8),
            "affine": s_aff, "shape": list(s_shape)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ct", type=Path, help="the CT (HU); its labels are CT_labels.nii.gz beside it unless --labels")
    ap.add_argument("out", type=Path)
    ap.add_argument("--labels", type=Path, default=None)
    ap.add_argument("--pairs", type=int, default=6)
    ap.add_argument("--seed", type=int, default=21)
    a = ap.parse_args()
    labels_path = a.labels or a.ct.with_name(a.ct.name.replace(".nii.gz", "_labels.nii.gz"))
    ct_nii = nib.load(str(a.ct))
    ct = np.asarray(ct_nii.dataobj, dtype=np.float32)
    labels = np.asarray(nib.load(str(labels_path)).dataobj).astype(np.float32)
    rng = np.random.default_rng(a.seed)
    a.out.mkdir(parents=True, exist_ok=True)
    records = []
    for p in range(a.pairs):
        name = f"pair{p:02d}"
        members = {}
        for role in ("moving", "fixed"):
            s = make_subject(rng, ct, labels, ct_nii.affine)
            save(s["image"], s["affine"], a.out / f"{name}_{role}.nii.gz")
            save(s["labels"], s["affine"], a.out / f"{name}_{role}_labels.nii.gz")
            members[f"{role}_shape"] = s["shape"]
        records.append({"pair": name, **members})
        print(name, members, flush=True)
    (a.out / "pairs.json").write_text(json.dumps({"seed": a.seed, "source": str(a.ct), "pairs": records}, indent=1))


if __name__ == "__main__":
    main()
