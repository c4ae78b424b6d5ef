"""The QC report of a registration: one PNG (tri-planar views) and a self-contained HTML page.

``write_qc(fixed, moving, transform, out_dir)`` writes into ``out_dir``:

* ``qc.png`` — rows axial / coronal / sagittal through the fixed grid's centre; columns: fixed,
  moving before (resampled on the fixed grid through identity, i.e. in physical space), warped
  after, fixed edges over the warped image, the deformation grid (the transform minus its
  best-fitting affine, so the non-linear part is visible), and log|J| with folds (det J ≤ 0)
  marked. Slices are shown in RAS orientation, neurological view (patient right on the right),
  with the grid's voxel aspect.
* ``qc.html`` — the numbers and the PNG embedded as base64 (one file to mail or archive).
* ``qc.json`` — the same numbers for scripts.

Matplotlib's Agg backend is used (no display needed).
"""
from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from regkit import metrics
from regkit.image import Image
from regkit.io.atomic import atomic_path, check_writable, json_text
from regkit.io.results import QC_NAMES
from regkit.resample import warp
from regkit.transforms import DisplacementField, Transform

PathLike = Union[str, Path]
Labels = Union[Image, Tuple[Image, Image], None]
FILES = QC_NAMES  # qc.png, qc.html, qc.json
LOG_JACOBIAN_RANGE = 0.7  # colour scale of the log|J| panel: ±0.7 ≈ ×0.5 … ×2 volume change
PLANES = ("axial", "coronal", "sagittal")


# ----------------------------------------------------------------------------- numbers
def ncc(a: Tensor, b: Tensor, mask: Optional[Tensor] = None) -> float:
    """Global normalised cross-correlation (Pearson r) of two volumes, within ``mask``."""
    x, y = a.reshape(-1).double(), b.reshape(-1).double()
    if mask is not None:
        m = mask.reshape(-1).bool()
        x, y = x[m], y[m]
    x, y = x - x.mean(), y - y.mean()
    denom = torch.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / denom) if denom > 0 else float("nan")


def affine_residual(points: Tensor, mapped: Tensor, stride: int = 2) -> Tensor:
    """``mapped - A(points)`` for the least-squares affine ``A`` fitted to ``points → mapped``.

    ``points``/``mapped``: ``(X, Y, Z, 3)`` world mm; the fit uses every ``stride``-th voxel.
    Returns the non-affine residual displacement ``(X, Y, Z, 3)`` mm.
    """
    p = points[::stride, ::stride, ::stride].reshape(-1, 3).double()
    q = mapped[::stride, ::stride, ::stride].reshape(-1, 3).double()
    design = torch.cat([p, torch.ones(p.shape[0], 1, dtype=p.dtype)], dim=1)
    coef = torch.linalg.lstsq(design, q).solution  # (4, 3)
    full = torch.cat([points.double(), torch.ones(*points.shape[:-1], 1, dtype=torch.float64)], dim=-1)
    return (mapped.double() - full @ coef).to(mapped.dtype)


def _split_labels(labels: Labels) -> Tuple[Optional[Image], Optional[Image]]:
    if labels is None:
        return None, None
    if isinstance(labels, Image):
        return labels, None
    fixed_labels, moving_labels = labels
    return fixed_labels, moving_labels


# ----------------------------------------------------------------------------- display
def _to_ras(array: np.ndarray, affine: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Permute/flip voxel axes so they run R, A, S (no resampling). Returns (array, ras_affine)."""
    import nibabel.orientations as nio

    ornt = nio.io_orientation(affine)
    out = nio.apply_orientation(array, ornt)
    new_affine = affine @ nio.inv_ornt_aff(ornt, array.shape[:3])
    return out, new_affine


def _slice(volume: np.ndarray, plane: str, index: Tuple[int, int, int]) -> np.ndarray:
    """A 2D slice of a RAS-ordered volume, transposed for ``imshow(origin='lower')``."""
    i, j, k = index
    if plane == "axial":
        s = volume[:, :, k]
    elif plane == "coronal":
        s = volume[:, j, :]
    else:
        s = volume[i, :, :]
    return np.swapaxes(s, 0, 1)


def _plane_axes(plane: str) -> Tuple[int, int]:
    """RAS axes shown horizontally and vertically."""
    return {"axial": (0, 1), "coronal": (0, 2), "sagittal": (1, 2)}[plane]


def _window(a: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(a, [1, 99.5])
    return np.clip((a - lo) / (hi - lo if hi > lo else 1.0), 0, 1)


def _edge_levels(a: np.ndarray) -> List[float]:
    """Two iso-intensity levels of a windowed image (in [0, 1]) that trace its main edges:
    the tissue boundary and an inner contrast boundary, from the foreground's percentiles."""
    foreground = a[a > 0.05]
    if foreground.size == 0:
        return []
    return sorted({float(np.percentile(foreground, 25)), float(np.percentile(foreground, 70))})


def label_outlines(labels: np.ndarray) -> np.ndarray:
    """Line segments ``(n, 2, 2)`` along every pixel edge between two different values of a 2D
    label slice, in the pixel coordinates of ``imshow(origin="lower")`` (pixel centres at whole
    numbers, x = column). One vectorised pass: the work grows with the pixels, not with the number
    of labels (a contour per label value took 39 CPU s for a 64³ map of random values)."""
    rows, cols = np.nonzero(labels[:, 1:] != labels[:, :-1])  # between (row, col) and (row, col + 1)
    x = cols + 0.5
    between_columns = np.stack([np.stack([x, rows - 0.5], -1), np.stack([x, rows + 0.5], -1)], 1)
    rows, cols = np.nonzero(labels[1:, :] != labels[:-1, :])  # between (row, col) and (row + 1, col)
    y = rows + 0.5
    between_rows = np.stack([np.stack([cols - 0.5, y], -1), np.stack([cols + 0.5, y], -1)], 1)
    return np.concatenate([between_columns, between_rows]).astype(np.float64)


def make_figure(fixed: Image, before: Image, warped: Image, residual: Tensor, det: Tensor,
                fixed_labels: Optional[Image] = None, title: str = "regkit QC", subtitle: str = ""):
    """The QC figure (a matplotlib ``Figure``) from volumes already on the fixed grid.

    Args:
        residual: non-affine displacement ``(X, Y, Z, 3)`` world mm on the fixed grid.
        det: Jacobian determinant ``(X, Y, Z)`` on the fixed grid.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.collections import LineCollection
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure
    from scipy import ndimage

    affine = fixed.affine.numpy()
    vol = {}
    for name, img in (("fixed", fixed), ("before", before), ("warped", warped)):
        vol[name], ras_affine = _to_ras(_window(img.numpy().astype(np.float32)), affine)
    logj, _ = _to_ras(np.log(np.clip(det.numpy(), *metrics.LOG_JACOBIAN_CLIP)), affine)
    folds, _ = _to_ras((det.numpy() <= 0), affine)
    labels = _to_ras(fixed_labels.numpy(), affine)[0] if fixed_labels is not None else None
    # residual in voxel units of the displayed (RAS-ordered) grid
    lin_inv = np.linalg.inv(ras_affine[:3, :3])
    res_vox, _ = _to_ras(residual.double().numpy() @ lin_inv.T, affine)
    spacing = np.linalg.norm(ras_affine[:3, :3], axis=0)
    shape = vol["fixed"].shape
    centre = tuple(s // 2 for s in shape)

    columns = ["fixed", "moving before", "warped after", "fixed edges on warped", "deformation grid (affine removed)", "log|J| (folds black)"]
    fig = Figure(figsize=(2.6 * len(columns), 2.7 * len(PLANES) + 0.5), dpi=100)
    axes = fig.subplots(len(PLANES), len(columns), squeeze=False)
    heading = f"{title} — RAS, neurological view (patient right on the right)"
    fig.suptitle(heading + (f"\n{subtitle}" if subtitle else ""), fontsize=11)
    fold_cmap = ListedColormap(["black"])
    jac_image = None
    for r, plane in enumerate(PLANES):
        h_axis, v_axis = _plane_axes(plane)
        aspect = spacing[v_axis] / spacing[h_axis]
        show = lambda ax, a, **kw: ax.imshow(a, origin="lower", aspect=aspect, interpolation="nearest", **kw)
        slices = {k: _slice(v, plane, centre) for k, v in vol.items()}
        for c, key in enumerate(("fixed", "before", "warped")):
            show(axes[r, c], slices[key], cmap="gray", vmin=0, vmax=1)
        if labels is not None:
            outlines = label_outlines(_slice(labels, plane, centre))
            for c in (0, 2):
                axes[r, c].add_collection(LineCollection(outlines, colors="yellow", linewidths=0.3), autolim=False)
        # edge overlay: iso-intensity lines of the fixed image in red on the warped image
        show(axes[r, 3], slices["warped"], cmap="gray", vmin=0, vmax=1)
        levels = _edge_levels(vol["fixed"])
        if levels:
            smooth = ndimage.gaussian_filter(slices["fixed"], 0.7)  # fewer single-voxel islands
            axes[r, 3].contour(smooth, levels=levels, colors="red", linewidths=0.5, origin="lower")
        # deformation grid: lines of the displayed grid moved by the in-plane residual
        show(axes[r, 4], slices["warped"], cmap="gray", vmin=0, vmax=1.0, alpha=0.35)
        d = _slice(res_vox, plane, centre)  # (V, H, 3)
        hh, vv = np.meshgrid(np.arange(d.shape[1]), np.arange(d.shape[0]))
        gx, gy = hh + d[..., h_axis], vv + d[..., v_axis]
        step = max(2, min(d.shape[:2]) // 16)
        for row in range(0, d.shape[0], step):
            axes[r, 4].plot(gx[row, :], gy[row, :], color="tab:blue", linewidth=0.6)
        for col in range(0, d.shape[1], step):
            axes[r, 4].plot(gx[:, col], gy[:, col], color="tab:blue", linewidth=0.6)
        axes[r, 4].set_xlim(-0.5, d.shape[1] - 0.5)
        axes[r, 4].set_ylim(-0.5, d.shape[0] - 0.5)
        jac_image = show(axes[r, 5], _slice(logj, plane, centre), cmap="RdBu_r", vmin=-LOG_JACOBIAN_RANGE, vmax=LOG_JACOBIAN_RANGE)
        f = _slice(folds, plane, centre)
        show(axes[r, 5], np.ma.masked_where(~f, f.astype(float)), cmap=fold_cmap, vmin=0, vmax=1)
        axes[r, 0].set_ylabel(plane, fontsize=10)
        for c in range(len(columns)):
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
            if r == 0:
                axes[r, c].set_title(columns[c], fontsize=9)
    cbar = fig.colorbar(jac_image, ax=axes[:, 5].tolist(), fraction=0.05, pad=0.02)
    cbar.set_label("log|J|  (red: expansion, blue: shrinkage)", fontsize=8)
    return fig


# ----------------------------------------------------------------------------- report
def _device_of(transform: Transform) -> torch.device:
    """Where the transform's tensors live (the QC samples there, then works on the CPU)."""
    for t in list(transform.parameters()) + list(transform.buffers()):
        return t.device
    return torch.device("cpu")


def qc_numbers(fixed: Image, moving: Image, transform: Transform, labels: Labels = None,
               default_value: float = 0.0) -> Tuple[Dict, Dict[str, object]]:
    """The report's numbers and the volumes its figure needs (all on the fixed grid); the
    figure's moving volumes hold ``default_value`` where the moving image does not reach (as
    warped.nii.gz does with ``--default-value``; the numbers only use where it does)."""
    fixed_labels, moving_labels = _split_labels(labels)
    device = _device_of(transform)
    with torch.no_grad():
        x = fixed.world_grid(device=device, dtype=torch.float32)
        if isinstance(transform, DisplacementField):  # e.g. a result's dense field: read at the voxels, not re-sampled
            y = transform.grid_points(fixed.affine, fixed.shape, device=device, dtype=torch.float32)
        else:
            y = transform(x)  # evaluated once; every image below is sampled at these points

        def at(image: Image, points: Tensor, fill: float = 0.0) -> Tensor:
            mode = "nearest" if image.is_label else "linear"
            return warp(image.data[None].float().to(points.device), image.affine, points, mode=mode, default_value=fill)[0, 0].cpu()

        ones = moving.with_data(torch.ones_like(moving.data[:1]), is_label=False)
        before, warped = at(moving, x, default_value), at(moving, y, default_value)
        inside_before, inside = at(ones, x) > 0.5, at(ones, y) > 0.5  # where the moving image has data
        if moving_labels is not None:
            labels_before, labels_after = at(moving_labels, x).round().int(), at(moving_labels, y).round().int()
        x, y = x.cpu(), y.cpu()
    u = (y - x).movedim(-1, 0)
    det = metrics.jacobian_determinant(u, fixed.affine)
    mask = None if fixed_labels is None else (fixed_labels.data[0] > 0)
    if mask is not None and not bool(mask.any()):  # an empty label map: report the whole grid, do not fail
        mask = None
    stats = metrics.jacobian_stats(det, mask)
    residual = affine_residual(x, y)
    magnitude = u.norm(dim=0)
    numbers: Dict[str, object] = {
        "ncc_before": ncc(fixed.data[0], before, inside_before),
        "ncc_after": ncc(fixed.data[0], warped, inside),
        "moving_overlap_percent": 100.0 * float(inside.float().mean()),
        "jacobian": stats.as_dict(),
        "jacobian_region": "labels > 0" if mask is not None else "whole fixed grid",
        "displacement_mm": {"mean": float(magnitude.mean()), "max": float(magnitude.max())},
        "nonaffine_displacement_mm": {"mean": float(residual.norm(dim=-1).mean()), "max": float(residual.norm(dim=-1).max())},
    }
    if fixed_labels is not None and moving_labels is not None:
        dice_before = metrics.dice(fixed_labels, fixed_labels.with_data(labels_before[None]))
        dice_after = metrics.dice(fixed_labels, fixed_labels.with_data(labels_after[None]))
        numbers["dice_before"] = {str(k): v for k, v in dice_before.items()}
        numbers["dice_after"] = {str(k): v for k, v in dice_after.items()}
        numbers["mean_dice_before"] = metrics.summarize(dice_before)
        numbers["mean_dice_after"] = metrics.summarize(dice_after)
    before, warped = fixed.with_data(before[None], is_label=False), fixed.with_data(warped[None], is_label=False)
    volumes = {"before": before, "warped": warped, "residual": residual, "det": det}
    return numbers, volumes


def summary_line(numbers: Dict) -> str:
    """One line of the key numbers (for the figure and the terminal)."""
    j = numbers["jacobian"]
    parts = [f"NCC {numbers['ncc_before']:.3f} → {numbers['ncc_after']:.3f}"]
    if "mean_dice_after" in numbers:
        parts.append(f"mean Dice {numbers['mean_dice_before']:.3f} → {numbers['mean_dice_after']:.3f}")
    parts.append(f"folding {j['folding_percent']:.3f} %")
    parts.append(f"std log|J| {j['std_log_jacobian']:.3f}")
    parts.append(f"non-affine displacement mean {numbers['nonaffine_displacement_mm']['mean']:.2f} mm")
    return " · ".join(parts)


def _html_rows(d: Dict, prefix: str = "") -> List[str]:
    out = []
    for k, v in d.items():
        if isinstance(v, dict):
            out.extend(_html_rows(v, f"{prefix}{k}."))
        else:
            text = f"{v:.4g}" if isinstance(v, float) else str(v)
            out.append(f"<tr><td>{html.escape(prefix + str(k))}</td><td>{html.escape(text)}</td></tr>")
    return out


def _html_page(numbers: Dict, png: bytes, title: str) -> str:
    flat = {k: v for k, v in numbers.items() if k not in ("dice_before", "dice_after")}
    dice = ""
    if "dice_after" in numbers:
        rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{numbers['dice_before'][k]:.4f}</td><td>{v:.4f}</td></tr>"
                       for k, v in numbers["dice_after"].items())
        dice = "<h2>Dice per label</h2><table><tr><th>label</th><th>before</th><th>after</th></tr>" + rows + "</table>"
    image = base64.b64encode(png).decode("ascii")
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;margin-bottom:1em}"
        "td,th{border:1px solid #ccc;padding:2px 8px}img{max-width:100%}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        f"<p>{html.escape(summary_line(numbers))}</p>"
        f"<img alt='QC views' src='data:image/png;base64,{image}'>"
        "<p>Rows: axial, coronal, sagittal slices through the fixed grid's centre (RAS, neurological "
        "view). Columns: fixed; moving before registration (physical space); moving after; fixed edges "
        "(red) on the warped image; the deformation without its best-fitting affine; log|J| (red "
        "expansion, blue shrinkage, black folding: det J &le; 0).</p>"
        "<h2>Numbers</h2><table>" + "".join(_html_rows(flat)) + "</table>" + dice +
        "<p>NCC: Pearson correlation on the fixed grid where the moving image has data. Jacobian: "
        "of the whole transform, in physical space (mm). Dice per label value.</p>"
        "</body></html>\n"
    )


def report_grid(image: Image, max_voxels: int) -> Tuple[Image, int]:
    """``image`` on every ``stride``-th voxel (same origin and axes) so it has at most
    ``max_voxels``; stride 1 returns it unchanged."""
    n = int(np.prod(image.shape))
    stride = 1
    while n / stride ** 3 > max_voxels:
        stride += 1
    if stride == 1:
        return image, 1
    scale = torch.diag(torch.tensor([stride, stride, stride, 1.0], dtype=torch.float64))
    return Image(image.data[:, ::stride, ::stride, ::stride].contiguous(), image.affine @ scale, image.is_label), stride


def write_qc(fixed: Image, moving: Image, transform: Transform, out_dir: PathLike, labels: Labels = None,
             force: bool = False, title: str = "regkit QC", max_voxels: int = 2 ** 24,
             default_value: float = 0.0) -> Dict[str, object]:
    """Write ``qc.png``, ``qc.html`` and ``qc.json`` for a registration into ``out_dir``.

    Args:
        fixed, moving: the images (any grids; the report lives on the fixed grid).
        transform: fixed → moving world points (RAS mm), affine included.
        labels: optional label map on the fixed grid — the fixed labels, or moving labels
            already warped onto it — (drawn as contours; restricts the Jacobian numbers to
            labels > 0), or a pair ``(fixed_labels, moving_labels)`` (moving labels on their own
            grid) to add Dice before/after per label.
        force: overwrite existing report files.
        max_voxels: a larger fixed grid is reported on every 2nd (3rd, …) voxel so memory stays
            ~1.5 GB; ``report_grid_stride`` in the numbers says which (1 = every voxel).
        default_value: drawn where the moving image does not reach (e.g. -1000 for CT).
    Returns:
        The numbers (as in ``qc.json``) plus ``"files"``: the paths written.
    """
    out = Path(out_dir)
    paths = [out / name for name in FILES]
    for p in paths:
        check_writable(p, force)
    fixed = fixed.float() if fixed.is_label else fixed
    moving = moving.float() if moving.is_label else moving
    fixed, stride = report_grid(fixed, max_voxels)
    fixed_labels, moving_labels = _split_labels(labels)
    if fixed_labels is not None:
        fixed_labels = report_grid(fixed_labels, max_voxels)[0]
    labels = fixed_labels if moving_labels is None else (fixed_labels, moving_labels)
    numbers, volumes = qc_numbers(fixed, moving, transform, labels, default_value)
    numbers["report_grid_stride"] = stride
    fig = make_figure(fixed, volumes["before"], volumes["warped"], volumes["residual"], volumes["det"],
                      fixed_labels, title=title, subtitle=summary_line(numbers))
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    png = buffer.getvalue()
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(paths[0], force) as tmp:
        tmp.write_bytes(png)
    with atomic_path(paths[1], force) as tmp:
        tmp.write_text(_html_page(numbers, png, title), encoding="utf-8")
    with atomic_path(paths[2], force) as tmp:
        tmp.write_text(json_text(numbers), encoding="utf-8")
    return {**numbers, "files": [str(p) for p in paths]}
