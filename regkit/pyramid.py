"""Multi-resolution grids and images — the one home of both engines' pyramids.

* The optimiser's levels (:func:`resized_grid`, :func:`coarsened_image`, :func:`image_on_grid`):
  Gaussian pre-smoothing and one resampling onto a grid of the level's spacing.
* The cascade's levels (:func:`average_pooled`, :func:`pooled_grid_affine`): the network grid's
  tensors average-pooled by an integer factor, inside the network (the trained models depend on it).

An optimiser level is a GRID in world space (voxel→world affine, RAS mm, and a shape), derived from
the fixed image: same orientation and field-of-view centre, isotropic voxels of ``spacing`` mm.
Images are put on a level by Gaussian pre-smoothing (anti-aliasing) followed by ONE trilinear
resampling; the moving image keeps its own grid orientation (only coarsened), so it is sampled
once per optimiser step through the whole fixed→moving chain.

The separable Gaussian is written here (three 1-D convolutions), not imported from MONAI
(benchmarks/README.md, "Why not MONAI's").
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from regkit import space
from regkit.grid import Grid
from regkit.image import Image
from regkit.resample import warp


def grid_of_image(image: Image) -> Grid:
    return image.grid


def resized_grid(affine, shape: Sequence[int], spacing_mm: float | Sequence[float]) -> Grid:
    """A grid covering the same box as (``affine``, ``shape``) with voxels of ``spacing_mm``.

    Keeps the direction cosines and the centre of the field of view; the extent
    ``(size - 1) * spacing`` is kept (rounded up), so the new grid never cuts the old one off.
    """
    a = space.as_affine(affine)
    old = space.spacing(a)
    new = torch.as_tensor(spacing_mm, dtype=torch.float64).expand(3).clone()
    extent = (torch.tensor([float(s) for s in shape[-3:]], dtype=torch.float64) - 1) * old
    size = torch.clamp(torch.ceil(extent / new - 1e-6) + 1, min=2)
    direction = a[:3, :3] / old
    centre = space.voxel_to_world((torch.tensor([float(s) for s in shape[-3:]], dtype=torch.float64) - 1) / 2, a)
    out = torch.eye(4, dtype=torch.float64)
    out[:3, :3] = direction * new
    out[:3, 3] = centre - out[:3, :3] @ ((size - 1) / 2)
    return Grid(out, tuple(int(s) for s in size))  # type: ignore[arg-type]


def cropped_grid(grid: Grid, lower: Sequence[int], upper: Sequence[int]) -> Grid:
    """The sub-grid of voxel indices ``lower <= ijk < upper`` (same spacing and direction)."""
    lo = torch.tensor([float(v) for v in lower], dtype=torch.float64)
    out = grid.affine.clone()
    out[:3, 3] = space.voxel_to_world(lo, grid.affine)
    return Grid(out, tuple(int(u - l) for l, u in zip(lower, upper)))  # type: ignore[arg-type]


def pooled_grid_affine(affine: Tensor, factor: int) -> Tensor:
    """Affine of a grid average-pooled by ``factor``: coarse voxel i covers fine voxels
    ``factor*i .. factor*i + factor - 1``, so its centre is fine index ``factor*i + (factor-1)/2``."""
    scale = torch.eye(4, dtype=torch.float64)
    scale[:3, :3] *= factor
    scale[:3, 3] = (factor - 1) / 2.0
    return space.as_affine(affine) @ scale


def average_pooled(volume: Tensor, factor: int) -> Tensor:
    """``(N, C, X, Y, Z)`` average-pooled by ``factor`` (the cascade's levels; their grid is
    :func:`pooled_grid_affine`)."""
    return F.avg_pool3d(volume, factor)


def gaussian_kernel1d(sigma: float, truncate: float = 3.0, device=None, dtype=torch.float32) -> Tensor:
    """Normalised 1-D Gaussian (sigma in voxels), radius ``ceil(truncate * sigma)``."""
    radius = max(1, int(math.ceil(truncate * sigma)))
    x = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def gaussian_smooth(volume: Tensor, sigma_voxels: Sequence[float], truncate: float = 3.0) -> Tensor:
    """Separable Gaussian smoothing of ``(N, C, X, Y, Z)``; sigma per axis in VOXELS.

    Border handling: replicate padding (no dark rim). Axes with sigma < 0.2 voxel are skipped.
    Each axis is a weighted sum of shifted views of the padded volume (one multiply-add per
    kernel tap): the same numbers as ``conv3d`` with a 1-D kernel, which on a CPU runs a
    single-channel convolution several times slower (benchmarks/README.md, "Pyramid smoothing").
    """
    n, c = volume.shape[:2]
    out = volume.reshape(n * c, 1, *volume.shape[2:])
    for axis, sigma in enumerate(sigma_voxels):
        if sigma < 0.2:
            continue
        k = gaussian_kernel1d(float(sigma), truncate, dtype=torch.float64).tolist()
        r = len(k) // 2
        dim = axis + 2
        size = out.shape[dim]
        pad = [0, 0, 0, 0, 0, 0]
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = r  # F.pad lists the last axis first
        padded = F.pad(out, pad, mode="replicate")  # (index_select along Y or Z: ~50x slower on a CPU)
        acc = padded.narrow(dim, 0, size) * k[0]
        for tap in range(1, len(k)):
            acc.add_(padded.narrow(dim, tap, size), alpha=k[tap])
        out = acc
    return out.reshape(volume.shape)


def antialias_sigma(from_spacing: Sequence[float], to_spacing: Sequence[float]) -> Tensor:
    """Gaussian sigma (in voxels of the SOURCE grid) before resampling to a coarser spacing.

    ``sigma_mm = 0.5 * sqrt(max(to² - from², 0))`` per axis, so a grid is not smoothed when its
    spacing is unchanged (ITK/ANTs use a similar rule of thumb).
    """
    f = torch.as_tensor(from_spacing, dtype=torch.float64)
    t = torch.as_tensor(to_spacing, dtype=torch.float64)
    return 0.5 * torch.sqrt(torch.clamp(t ** 2 - f ** 2, min=0.0)) / f


def image_on_grid(image: Image, grid: Grid, dtype=torch.float32) -> Tensor:
    """Smooth (anti-alias) ``image`` for ``grid``'s spacing and resample it there (identity
    transform, physical space): ``(1, C, X, Y, Z)``. Outside the image: 0 (ITK convention)."""
    vol = image.data[None].to(dtype)
    target = float(grid.spacing.min())
    sigma = antialias_sigma(space.spacing(image.affine), [target] * 3)
    vol = gaussian_smooth(vol, sigma.tolist())
    points = grid.world(device=vol.device, dtype=dtype)
    return warp(vol, image.affine, points, mode="linear", padding_mode="zeros")


def coarsened_image(image: Image, spacing_mm: float, dtype=torch.float32) -> Image:
    """``image`` smoothed and resampled on its OWN orientation with voxels no finer than
    ``spacing_mm`` (axes already coarser are kept). Used as the pre-smoothed moving copy of a
    level: sampling it costs less and matches the level's resolution."""
    old = space.spacing(image.affine)
    new = torch.clamp(torch.full((3,), float(spacing_mm), dtype=torch.float64), min=old)
    if torch.allclose(new, old):
        return image.to(dtype=dtype) if not image.is_label else image
    grid = resized_grid(image.affine, image.shape, new)
    vol = gaussian_smooth(image.data[None].to(dtype), antialias_sigma(old, new).tolist())
    out = warp(vol, image.affine, grid.world(device=vol.device, dtype=dtype), mode="linear", padding_mode="border")
    return Image(out[0], grid.affine)
