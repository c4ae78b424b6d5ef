"""The data of one pyramid level: fixed image on an isotropic working grid, pre-smoothed moving copy.

The working grid of every level is derived from the fixed image (its orientation, cropped to the
fixed foreground plus a margin, voxels of the level's spacing). The moving image is never
resampled onto it: the level keeps a smoothed copy of the moving image on the moving image's own
(coarsened) grid, and each optimiser step samples it ONCE at the mapped points of the whole
fixed→moving chain.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torch import Tensor

from regkit import space
from regkit.image import Image
from regkit.intensity import robust_normalize
from regkit.grid import Grid
from regkit.pyramid import coarsened_image, cropped_grid, grid_of_image, image_on_grid, resized_grid


EDGE_MARGIN_VOXELS = 3.0
"""Moving-copy voxels at the edge of the moving image left out of the similarity (without a
moving mask): 2 for the half-width of the LNCC window (5 voxels) and 1 for the interpolation
with the padding. Measured on a truncated CT: 0 voxels left the field 4.7 mm off near the edge,
3 voxels 0.55 mm (the error far from the edge: 0.57 mm)."""


@dataclass
class Level:
    """Tensors of one level (all ``(1, C, X, Y, Z)``; world coordinates in mm, RAS).

    Attributes:
        grid: the working grid (fixed orientation, isotropic ``spacing_mm``).
        fixed: fixed image on ``grid``.
        moving: pre-smoothed moving image on its own coarsened grid ``moving_affine``.
        world: world coordinates of ``grid``'s voxels, ``(1, X, Y, Z, 3)``.
        mask: similarity weight on ``grid`` (fixed mask), or None.
        moving_mask: moving mask on the moving copy's grid, or None.
    """

    grid: Grid
    fixed: Tensor
    moving: Tensor
    moving_affine: Tensor
    world: Tensor
    mask: Optional[Tensor] = None
    moving_mask: Optional[Tensor] = None

    @property
    def spacing_mm(self) -> float:
        return float(self.grid.spacing.min())

    def world_to_moving_normalized(self) -> Tensor:
        """4×4 map from world mm to the grid_sample coordinates of the moving copy."""
        return space.world_to_normalized_matrix(self.moving_affine, self.moving.shape[2:])

    def sample_moving(self, grid: Tensor) -> Tuple[Tensor, Optional[Tensor]]:
        """The moving copy sampled at grid_sample coordinates ``(1, X, Y, Z, 3)`` of the moving
        copy, plus the similarity weight: the fixed mask × the warped moving mask; without a
        moving mask, 0 where a point falls outside the moving image or within
        :data:`EDGE_MARGIN_VOXELS` of its edge.

        Beyond the moving image's field of view there is no image, only padding: a moving image
        that stops inside the fixed one (a truncated CT) was matched to that artificial edge, and
        the field near it was off by 4.7 mm on average (0.55 mm with this weight; a rigidly moved
        real CT cropped to 90 of 112 slices). When every point is well inside (the usual brain
        pair) the weight is the fixed mask alone, exactly as without the test; when none is, too
        (nothing else to compare)."""
        warped = space.sample(self.moving, grid, padding_mode="zeros")
        if self.moving_mask is None:
            excess = grid.detach().abs().sub_(self._inside_limit(grid))  # > 0 beyond the limit
            if float(excess.max()) <= 0.0:  # one contiguous reduction: the usual all-inside case stops here
                return warped, self.mask
            inside = excess[..., 0] <= 0.0
            inside.logical_and_(excess[..., 1] <= 0.0).logical_and_(excess[..., 2] <= 0.0)
            if not bool(inside.any()):
                return warped, self.mask
            m = inside[:, None].to(warped.dtype)
            return warped, m if self.mask is None else m * self.mask
        m = space.sample(self.moving_mask, grid, padding_mode="zeros")
        return warped, m if self.mask is None else m * self.mask

    def _inside_limit(self, grid: Tensor) -> Tensor:
        """Per grid_sample axis (x, y, z), the largest |coordinate| kept by :meth:`sample_moving`
        (computed once per level: it is on the optimiser's hot path)."""
        limit = getattr(self, "_limit", None)
        if limit is None or limit.device != grid.device or limit.dtype != grid.dtype:
            sizes = torch.tensor([float(n) for n in self.moving.shape[2:]][::-1], device=grid.device, dtype=grid.dtype)
            span = torch.clamp(sizes - 1.0, min=1.0)
            margin = torch.minimum(torch.full_like(span, EDGE_MARGIN_VOXELS), span / 4)  # small images keep half
            limit = 1.0 - 2.0 * margin / span
            self._limit = limit
        return limit


LEVEL_MARGIN_VOXELS = 4.0
"""A level's working grid reaches at most this many of its own voxels beyond the fixed foreground
box (and never more than the config's ``crop_margin_mm``): enough for the LNCC window (2 voxels)
and the interpolation, while a 1 mm level does not pay for 12 mm of background on every side
(26 % fewer voxels on a brain; benchmarks/README.md, "Real anatomy")."""


def level_margin_mm(crop_margin_mm: Optional[float], spacing_mm: float) -> Optional[float]:
    """The crop margin (mm) of a level of ``spacing_mm``: ``crop_margin_mm``, capped at
    :data:`LEVEL_MARGIN_VOXELS` voxels of the level (None: no crop)."""
    if crop_margin_mm is None:
        return None
    return min(float(crop_margin_mm), LEVEL_MARGIN_VOXELS * float(spacing_mm))


def foreground_extent(fixed: Image, threshold: float = 0.1) -> Optional[Tensor]:
    """Fixed voxel indices (float64, ``(8, 3)``) of the corners of the box of voxels brighter
    than ``threshold`` (after :func:`robust_normalize`, on a 4 mm smoothed copy); None when
    nothing is bright."""
    coarse = coarsened_image(fixed, 4.0)
    fg = robust_normalize(coarse.data)[0] > threshold
    if not fg.any():
        return None
    idx = fg.nonzero().to(torch.float64)
    # corners of the foreground box (coarse voxel indices) → world → fixed voxel indices
    lo, hi = idx.min(0).values, idx.max(0).values
    corners = torch.stack(torch.meshgrid(*[torch.stack([lo[d], hi[d]]) for d in range(3)], indexing="ij"), -1).reshape(-1, 3)
    return space.world_to_voxel(space.voxel_to_world(corners, coarse.affine), fixed.affine)


def box_around(fixed: Image, extent: Optional[Tensor], margin_mm: Optional[float]) -> Grid:
    """The fixed grid cropped to ``extent`` (from :func:`foreground_extent`) plus ``margin_mm``;
    the whole grid when ``margin_mm`` or ``extent`` is None."""
    full = grid_of_image(fixed)
    if margin_mm is None or extent is None:
        return full
    pad = torch.tensor(margin_mm, dtype=torch.float64) / space.spacing(fixed.affine) + 2.0  # +2 coarse blur
    shape = torch.tensor(fixed.shape, dtype=torch.float64)
    lower = torch.clamp(torch.floor(extent.min(0).values - pad), min=0).long().tolist()
    upper = torch.minimum(torch.ceil(extent.max(0).values + pad) + 1, shape).long().tolist()
    return cropped_grid(full, lower, upper)


def foreground_box(fixed: Image, margin_mm: Optional[float], threshold: float = 0.1) -> Grid:
    """The fixed grid cropped to the box of voxels brighter than ``threshold`` (after
    :func:`robust_normalize`, on a 4 mm smoothed copy) plus ``margin_mm``; the whole grid when
    ``margin_mm`` is None or nothing is bright."""
    if margin_mm is None:
        return grid_of_image(fixed)
    return box_around(fixed, foreground_extent(fixed, threshold), margin_mm)


def make_level(fixed: Image, moving: Image, box: Grid, spacing_mm: float, device=None,
               fixed_mask: Optional[Image] = None, moving_mask: Optional[Image] = None) -> Level:
    """Build a level: working grid of ``spacing_mm`` covering ``box`` (never finer than the
    fixed image's voxels), fixed resampled there, moving smoothed on its own grid."""
    spacing = max(float(spacing_mm), float(space.spacing(fixed.affine).min()))
    grid = resized_grid(box.affine, box.shape, spacing)
    if torch.allclose(box.spacing, torch.full((3,), spacing, dtype=torch.float64), rtol=1e-4):
        grid = box  # level at the fixed resolution: no resampling of the fixed image
    fixed_t = image_on_grid(fixed, grid).to(device)
    moving_c = coarsened_image(moving, spacing)
    mask = mmask = None
    if fixed_mask is not None:
        mask = (image_on_grid(fixed_mask.float(), grid) > 0.5).float().to(device)
    if moving_mask is not None:
        if moving_mask.same_grid(moving):  # coarsened the same way, so on moving_c's grid
            mc = coarsened_image(moving_mask.float(), spacing).data[None]
        else:  # any other grid: resampled in world space onto moving_c's grid (as the fixed mask)
            mc = image_on_grid(moving_mask.float(), grid_of_image(moving_c))
        mmask = (mc > 0.5).float().to(device)
    world = grid.world(device=device)[None]
    return Level(grid, fixed_t, moving_c.data[None].to(device), moving_c.affine, world, mask, mmask)
