"""Registration quality numbers: label overlap, surface distance, Jacobian statistics, TRE.

Conventions (as everywhere in regkit, see :mod:`regkit.space`):

* Label maps are :class:`~regkit.image.Image` s on the SAME grid (the fixed image's): the fixed
  labels and the moving labels warped onto the fixed grid. Label 0 is background.
* Distances are millimetres in world space (the voxel spacing of the grid's affine).
* A displacement field ``u`` is ``(3, X, Y, Z)`` (or ``(N, 3, X, Y, Z)``) world mm, RAS
  components, on a grid with 4×4 voxel→world ``affine``; the transform is ``x → x + u(x)``.
* Landmarks are world coordinates, one point per row; RAS by default, LPS on request.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from regkit import space
from regkit.errors import InputError
from regkit.image import Image

# |J| is clipped to this range before taking log|J| (folded voxels have |J| <= 0)
LOG_JACOBIAN_CLIP = (1e-9, 1e9)


# ----------------------------------------------------------------------------- labels
def _label_values(fixed_labels: Image, labels: Optional[Sequence[int]]) -> List[int]:
    if labels is not None:
        return [int(v) for v in labels]
    return [int(v) for v in torch.unique(fixed_labels.data) if int(v) != 0]


def _check_same_grid(a: Image, b: Image, what: str) -> None:
    if not a.same_grid(b):
        raise InputError(f"{what} are on different grids ({a.shape} vs {b.shape}); resample the warped labels onto the fixed grid first")


def _one_hot(label_map: Image, values: Sequence[int]) -> Tensor:
    """``(1, L, X, Y, Z)`` float masks, one channel per label value."""
    v = torch.tensor(list(values), dtype=label_map.data.dtype).reshape(-1, 1, 1, 1)
    return (label_map.data[:1] == v).float()[None]


def dice(fixed_labels: Image, warped_labels: Image, labels: Optional[Sequence[int]] = None) -> Dict[int, float]:
    """Dice overlap ``2|F∩W| / (|F| + |W|)`` per label value.

    Args:
        fixed_labels, warped_labels: integer label maps on the same grid.
        labels: label values to score; default every non-zero value present in ``fixed_labels``.
    Returns:
        ``{label: dice}``; a label absent from both maps gives NaN, absent from one gives 0.
    """
    from monai.metrics import compute_dice

    _check_same_grid(fixed_labels, warped_labels, "fixed and warped labels")
    values = _label_values(fixed_labels, labels)
    if not values:
        return {}
    d = compute_dice(_one_hot(warped_labels, values), _one_hot(fixed_labels, values), include_background=True, ignore_empty=True)
    return {v: float(x) for v, x in zip(values, d[0])}


def hd95(fixed_labels: Image, warped_labels: Image, labels: Optional[Sequence[int]] = None) -> Dict[int, float]:
    """95th-percentile symmetric Hausdorff distance (mm) between label surfaces, per label.

    The larger of the two directed 95th percentiles of surface-to-surface distances (MONAI's
    definition). Surface voxels are a mask minus its erosion; distances come from scipy's
    Euclidean distance transform scaled by the voxel spacing (column norms of the affine: exact
    for orthogonal grids whatever their orientation). A label missing from either map gives NaN.

    Written with scipy rather than ``monai.metrics.compute_hausdorff_distance`` because that
    took 5-9 s for the 6 labels of the sample pair against 0.9 s here (2-core CPU, shared).
    """
    from scipy import ndimage

    _check_same_grid(fixed_labels, warped_labels, "fixed and warped labels")
    f_all, w_all = fixed_labels.numpy(), warped_labels.numpy()
    sampling = fixed_labels.spacing
    out: Dict[int, float] = {}
    for v in _label_values(fixed_labels, labels):
        f, w = f_all == v, w_all == v
        if not f.any() or not w.any():
            out[v] = float("nan")
            continue
        # crop to the union's bounding box plus one voxel: same distances, far less work
        box = ndimage.find_objects((f | w).astype(np.int8))[0]
        box = tuple(slice(max(b.start - 1, 0), b.stop + 1) for b in box)
        f, w = f[box], w[box]
        f_surface, w_surface = f & ~ndimage.binary_erosion(f), w & ~ndimage.binary_erosion(w)
        f_to_w = ndimage.distance_transform_edt(~w_surface, sampling=sampling)[f_surface]
        w_to_f = ndimage.distance_transform_edt(~f_surface, sampling=sampling)[w_surface]
        out[v] = float(max(np.percentile(f_to_w, 95), np.percentile(w_to_f, 95)))
    return out


# ----------------------------------------------------------------------------- Jacobian
def jacobian_determinant(displacement: Tensor, affine) -> Tensor:
    """det of the Jacobian of ``x → x + u(x)`` with respect to WORLD coordinates.

    ``J = I + (∂u/∂ijk) · A⁻¹`` where ``∂u/∂ijk`` are central differences along the voxel axes
    (one-sided at the borders) and ``A`` the 3×3 part of the grid's voxel→world affine, so
    flipped, permuted, anisotropic and oblique grids all give the physical answer.
    (SimpleITK's ``DisplacementFieldJacobianDeterminant`` uses the spacing but ignores the
    direction matrix, so it is wrong for rotated or flipped grids.)

    Args:
        displacement: ``(3, X, Y, Z)`` or ``(N, 3, X, Y, Z)`` world mm (RAS components).
        affine: 4×4 voxel→world of the field's grid.
    Returns:
        ``(X, Y, Z)`` or ``(N, X, Y, Z)`` (same dtype as the field; float64 maths inside).
    """
    u = displacement if displacement.dim() == 5 else displacement[None]
    if u.shape[1] != 3 or any(s < 2 for s in u.shape[2:]):
        raise ValueError(f"displacement must be (N, 3, X, Y, Z) with every axis >= 2, got {tuple(u.shape)}")
    u64 = u.detach().to(torch.float64)
    # gradient along voxel axes i, j, k: each (N, 3, X, Y, Z) -> stacked (N, X, Y, Z, 3 comps, 3 axes)
    grads = torch.stack(torch.gradient(u64, dim=(2, 3, 4)), dim=-1).movedim(1, -2)
    inv_lin = torch.linalg.inv(space.as_affine(affine)[:3, :3]).to(u64.device)
    jac = torch.eye(3, dtype=torch.float64, device=u64.device) + grads @ inv_lin
    det = torch.linalg.det(jac).to(displacement.dtype)
    return det if displacement.dim() == 5 else det[0]


@dataclass
class JacobianStats:
    """Summary of a Jacobian determinant map (inside the mask when one was given)."""

    folding_percent: float  # % of voxels with det J <= 0
    folded_voxels: int
    std_log_jacobian: float  # std of log(clip(det J)), see LOG_JACOBIAN_CLIP
    min: float
    max: float
    mean: float
    voxels: int

    def as_dict(self) -> Dict[str, float]:
        return dict(self.__dict__)


def jacobian_stats(det: Tensor, mask: Optional[Tensor] = None) -> JacobianStats:
    """Folding % (det J ≤ 0), std of log|J| (|J| clipped to ``LOG_JACOBIAN_CLIP``), min/max/mean.

    ``mask`` (same shape as ``det``, non-zero = inside) restricts every number to its voxels.
    """
    d = det.detach().to(torch.float64)
    if mask is not None:
        m = torch.as_tensor(mask).reshape(d.shape) != 0
        d = d[m]
    d = d.reshape(-1)
    if d.numel() == 0:
        raise InputError("the Jacobian mask selects no voxel")
    folded = int((d <= 0).sum())
    log_j = torch.log(d.clamp(*LOG_JACOBIAN_CLIP))
    return JacobianStats(folding_percent=100.0 * folded / d.numel(), folded_voxels=folded,
                         std_log_jacobian=float(log_j.std(unbiased=False)), min=float(d.min()), max=float(d.max()),
                         mean=float(d.mean()), voxels=int(d.numel()))


# ----------------------------------------------------------------------------- landmarks
def read_landmarks(path: Union[str, Path], lps: bool = False) -> Tensor:
    """World-coordinate landmarks from a CSV file as RAS mm, ``(P, 3)`` float64.

    Accepted layouts: a header naming ``x``, ``y``, ``z`` columns (any order, other columns
    such as ``label`` or ``t`` ignored — the layout of ANTs' ``antsApplyTransformsToPoints``),
    or no header and the first three columns numeric. With ``lps=True`` the file holds LPS
    coordinates (ITK/ANTs/Slicer-legacy convention) and x, y are negated to get RAS.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError("no such landmark file", p)
    with p.open(newline="") as f:
        rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r) and not r[0].lstrip().startswith("#")]
    if not rows:
        raise InputError("landmark file has no rows", p)
    header = [c.strip().lower() for c in rows[0]]
    if {"x", "y", "z"} <= set(header):
        cols, rows = [header.index(a) for a in ("x", "y", "z")], rows[1:]
    else:
        cols = [0, 1, 2]
    try:
        pts = np.array([[float(r[c]) for c in cols] for r in rows], dtype=np.float64)
    except (ValueError, IndexError) as e:
        raise InputError(f"landmark file needs x,y,z columns of numbers ({e})", p) from e
    if pts.size == 0:
        raise InputError("landmark file has no points", p)
    if lps:
        pts[:, :2] *= -1.0
    return torch.from_numpy(pts.reshape(-1, 3))


def target_registration_error(fixed_points: Tensor, moving_points: Tensor, transform=None) -> Tensor:
    """Per-landmark TRE (mm): ``|T(p_fixed) - p_moving|``; ``|p_fixed - p_moving|`` without T.

    ``transform`` maps fixed world points to moving world points (regkit's direction), so
    corresponding landmarks should land on each other. Points are RAS mm ``(P, 3)``.
    """
    if fixed_points.shape != moving_points.shape:
        raise InputError(f"fixed and moving landmark files differ in point count ({fixed_points.shape[0]} vs {moving_points.shape[0]})")
    mapped = fixed_points
    if transform is not None:
        with torch.no_grad():
            mapped = transform(fixed_points.to(torch.float32)).to(torch.float64)
    return torch.linalg.norm(mapped - moving_points.to(torch.float64), dim=-1)


def summarize(values: Dict[int, float]) -> float:
    """Mean over labels, ignoring NaN (labels missing from a map); NaN if nothing is left."""
    v = np.array(list(values.values()), dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else float("nan")
