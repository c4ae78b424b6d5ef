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

from dataclasses import dataclass
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


def dice(fixed_labels: Image, warped_labels: Image, labels: Optional[Sequence[int]] = None) -> Dict[int, float]:
    """Dice overlap ``2|F∩W| / (|F| + |W|)`` per label value.

    Args:
        fixed_labels, warped_labels: integer label maps on the same grid.
        labels: label values to score; default every non-zero value present in ``fixed_labels``.
    Returns:
        ``{label: dice}``; a label absent from both maps gives NaN, absent from one gives 0.
    Plain numpy (benchmarks/README.md, "Why not MONAI's").
    """
    _check_same_grid(fixed_labels, warped_labels, "fixed and warped labels")
    f, w = fixed_labels.numpy().ravel(), warped_labels.numpy().ravel()
    values = _label_values(fixed_labels, labels)
    in_f, in_w, in_both = (_value_counts(a, values) for a in (f, w, f[f == w]))
    return {v: 2.0 * int(n) / int(a + b) if a + b else float("nan") for v, a, b, n in zip(values, in_f, in_w, in_both)}


def _value_counts(array: np.ndarray, values: Sequence[int]) -> np.ndarray:
    """How often each of ``values`` occurs in ``array``, in one sorted pass (not one pass a
    value: a map of many labels cost labels × voxels)."""
    order = np.asarray(values, dtype=np.int64)
    if order.size == 0:
        return np.zeros(0, np.int64)
    sorted_values = np.unique(order)
    at = np.minimum(np.searchsorted(sorted_values, array), sorted_values.size - 1)
    hit = sorted_values[at] == array
    counts = np.bincount(at[hit], minlength=sorted_values.size)
    return counts[np.searchsorted(sorted_values, order)]


def hd95(fixed_labels: Image, warped_labels: Image, labels: Optional[Sequence[int]] = None) -> Dict[int, float]:
    """95th-percentile symmetric Hausdorff distance (mm) between label surfaces, per label.

    The larger of the two directed 95th percentiles of surface-to-surface distances (MONAI's
    definition). Surface voxels are a mask minus its erosion; distances come from scipy's
    Euclidean distance transform scaled by the voxel spacing (column norms of the affine: exact
    for orthogonal grids whatever their orientation). A label missing from either map gives NaN.
    scipy, not MONAI (benchmarks/README.md, "Why not MONAI's").
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
def jacobian_determinant(displacement: Tensor, affine, voxels_per_chunk: int = 2 ** 21) -> Tensor:
    """det of the Jacobian of ``x → x + u(x)`` with respect to WORLD coordinates, for reporting.

    The float64, no-gradient form of :func:`regkit.losses.regularization.jacobian_determinant`
    (``J = I + (∂u/∂ijk) · A⁻¹``, central differences along the voxel axes, ``A`` the grid's
    voxel→world 3×3), so flipped, permuted, anisotropic and oblique grids all give the physical
    answer. (SimpleITK's ``DisplacementFieldJacobianDeterminant`` uses the spacing but ignores
    the direction matrix, so it is wrong for rotated or flipped grids.)

    Args:
        displacement: ``(3, X, Y, Z)`` or ``(N, 3, X, Y, Z)`` world mm (RAS components).
        affine: 4×4 voxel→world of the field's grid.
        voxels_per_chunk: work on slabs along X of about this many voxels (the float64 maths
            needs ~200 bytes per voxel); slabs overlap by one voxel so the result is identical.
    Returns:
        ``(X, Y, Z)`` or ``(N, X, Y, Z)`` in the field's dtype.
    """
    from regkit.losses.regularization import jacobian_determinant as physical_jacobian

    u = displacement if displacement.dim() == 5 else displacement[None]
    size_x = u.shape[2]
    step = max(1, voxels_per_chunk // max(1, u.shape[3] * u.shape[4]))
    slabs = []
    with torch.no_grad():
        for start in range(0, size_x, step):
            stop = min(start + step, size_x)
            lo, hi = max(start - 1, 0), min(stop + 1, size_x)
            det = physical_jacobian(u[:, :, lo:hi].detach().to(torch.float64), affine)
            slabs.append(det[:, start - lo:stop - lo])
    det = torch.cat(slabs, dim=1).to(displacement.dtype)
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
    3D Slicer markups (``.fcsv``, ``.mrk.json``) are read in the coordinate system they declare
    (``lps`` is not used for them).
    """
    from regkit.io.geometry import LPS_FLIP
    from regkit.io.validate import MAX_ABS_VALUE, csv_rows

    p = Path(path)
    if not p.is_file():
        raise InputError("no such landmark file", p)
    name = p.name.lower()
    if name.endswith((".fcsv", ".mrk.json")):  # 3D Slicer markups: their own coordinate system
        rows, cols, slicer_lps = _slicer_markups(p)
        lps = slicer_lps
    else:
        rows = csv_rows(p, "landmark file")  # UTF-8; Excel's "CSV UTF-8" byte-order mark dropped
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
    bad = np.flatnonzero(~np.isfinite(pts).all(axis=1))
    if bad.size:
        raise InputError(f"landmark {bad[0] + 1} has a NaN/Inf coordinate", p)
    far = np.flatnonzero((np.abs(pts) > MAX_ABS_VALUE).any(axis=1))
    if far.size:
        raise InputError(f"landmark {far[0] + 1} has a coordinate beyond {MAX_ABS_VALUE:g} mm", p)
    if lps:
        pts = pts * LPS_FLIP
    return torch.from_numpy(pts.reshape(-1, 3))


def _slicer_markups(p: Path):
    """``(rows, xyz columns, lps)`` of a 3D Slicer markups file: ``.fcsv`` (comment lines, then
    ``id,x,y,z,...``; ``# CoordinateSystem = LPS``/``RAS`` or 1/0, RAS when absent as in files
    before Slicer 4.11) or ``.mrk.json`` (``markups[].controlPoints[].position`` in the markup's
    ``coordinateSystem``, LPS by default)."""
    from regkit.io.validate import csv_rows, read_text

    if p.name.lower().endswith(".fcsv"):
        system = "RAS"
        for line in read_text(p, "landmark file").splitlines():
            if line.startswith("#") and "coordinatesystem" in line.lower().replace(" ", ""):
                value = line.split("=", 1)[-1].strip().upper()
                system = {"0": "RAS", "1": "LPS"}.get(value, value)
        if system not in ("RAS", "LPS"):
            raise InputError(f"Slicer markups in coordinate system {system!r}; regkit reads RAS or LPS", p)
        rows = [r for r in csv_rows(p, "landmark file") if r and not r[0].lstrip().startswith("#")]
        if not rows:
            raise InputError("Slicer markups file has no points", p)
        return rows, [1, 2, 3], system == "LPS"
    import json

    try:
        doc = json.loads(read_text(p, "landmark file"))
        markups = doc["markups"]
        systems = {str(m.get("coordinateSystem", "LPS")).upper() for m in markups}
        rows = [[str(v) for v in cp["position"]] for m in markups for cp in m.get("controlPoints", [])]
    except (ValueError, KeyError, TypeError) as e:
        raise InputError(f"is not a Slicer markups JSON file ({type(e).__name__}: {e})", p) from e
    if len(systems) > 1 or not systems <= {"RAS", "LPS"}:
        raise InputError(f"Slicer markups in coordinate system(s) {sorted(systems)}; regkit reads RAS or LPS", p)
    if not rows:
        raise InputError("Slicer markups file has no control points", p)
    return rows, [0, 1, 2], systems == {"LPS"}


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


def evaluate(fixed_labels: Optional[Image] = None, warped_labels: Optional[Image] = None, field=None,
             landmarks: Optional[Dict[str, Tensor]] = None, transform=None) -> Dict[str, object]:
    """Every number ``regkit evaluate`` reports, as a JSON-ready dict.

    Args:
        fixed_labels, warped_labels: label maps on the fixed grid → ``labels`` (Dice, HD95 mm
            per label), ``mean_dice``, ``mean_hd95_mm``.
        field: a transform whose Jacobian is scored → ``jacobian`` (on the field's own grid for
            a :class:`~regkit.transforms.DisplacementField`, else on the fixed-labels grid) and,
            when that grid is the labels' grid, ``jacobian_in_labels`` (fixed labels > 0).
        landmarks: ``{"fixed": (P, 3), "moving": (P, 3)}`` RAS mm → ``tre_mm`` through
            ``transform`` (fixed → moving) and ``initial_distance_mm`` without it.
    """
    from regkit.transforms import DisplacementField

    out: Dict[str, object] = {}
    if fixed_labels is not None and warped_labels is not None:
        d, h = dice(fixed_labels, warped_labels), hd95(fixed_labels, warped_labels)
        out["labels"] = {str(v): {"dice": d[v], "hd95_mm": h[v]} for v in d}
        out["mean_dice"], out["mean_hd95_mm"] = summarize(d), summarize(h)
    if field is not None:
        if isinstance(field, DisplacementField):
            u, grid_affine = field.displacement[0], field.affine
            shape = tuple(field.shape)
        elif fixed_labels is not None:
            with torch.no_grad():
                u = field.displacement_on(fixed_labels.affine, fixed_labels.shape)
            grid_affine, shape = fixed_labels.affine, fixed_labels.shape
        else:
            raise InputError("the Jacobian of a non-field transform needs a grid: give --fixed-labels too")
        det = jacobian_determinant(u, grid_affine)
        out["jacobian"] = jacobian_stats(det).as_dict()
        if (fixed_labels is not None and fixed_labels.shape == shape and bool((fixed_labels.data > 0).any())
                and torch.allclose(fixed_labels.affine, space.as_affine(grid_affine), atol=1e-4)):
            out["jacobian_in_labels"] = jacobian_stats(det, fixed_labels.data[0] > 0).as_dict()
    if landmarks is not None:
        initial = target_registration_error(landmarks["fixed"], landmarks["moving"])
        out["initial_distance_mm"] = _distance_summary(initial)
        if transform is not None:
            out["tre_mm"] = _distance_summary(target_registration_error(landmarks["fixed"], landmarks["moving"], transform))
    return out


def _distance_summary(d: Tensor) -> Dict[str, object]:
    v = d.double().numpy()
    return {"mean": float(v.mean()), "std": float(v.std()), "median": float(np.median(v)), "max": float(v.max()),
            "count": int(v.size), "per_point": [float(x) for x in v]}
