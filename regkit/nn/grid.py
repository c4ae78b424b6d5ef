"""The common training grid and how images are brought onto it.

The network always works on ONE canonical grid: axis-aligned RAS, ``shape`` voxels of
``spacing_mm``, whose centre is the world origin. A pair is put on it by translating its world
coordinates so that a centre ``c`` lands on the origin — each image's intensity centre of mass
(:func:`regkit.nn.predict.predict`, and training alike): a network point ``p`` is the world point ``p + c``. A transform ``T`` predicted in network coordinates is
``x -> T(x - c) + c`` in world coordinates: the same parameters with every field grid (and the
affine's centre) shifted by ``c`` — see :meth:`regkit.nn.cascade.CascadeNet.to_world`.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

from regkit import space
from regkit.image import Image
from regkit.resample import warp
from regkit.transforms import Transform


def canonical_grid_affine(shape: Sequence[int], spacing_mm: float) -> Tensor:
    """4×4 voxel→network-world affine: RAS axes, ``spacing_mm`` voxels, centre at the origin."""
    a = torch.eye(4, dtype=torch.float64)
    s = torch.tensor([float(n) for n in shape], dtype=torch.float64)
    a[:3, :3] *= spacing_mm
    a[:3, 3] = -spacing_mm * (s - 1) / 2
    return a


def shifted(affine: Tensor, offset_mm: Tensor) -> Tensor:
    """``affine`` with its world coordinates translated by ``offset_mm`` (3,)."""
    a = space.as_affine(affine).clone()
    a[:3, 3] += torch.as_tensor(offset_mm, dtype=torch.float64)
    return a


def grid_world_points(grid_affine: Tensor, shape: Sequence[int], offset_mm: Tensor, points_transform=None, device=None) -> Tensor:
    """World mm ``(X, Y, Z, 3)`` that the network grid's voxels sample, the grid placed at
    ``offset_mm`` (world position of the network origin, e.g. the fixed image's centre of mass).

    ``points_transform`` (optional, e.g. augmentation) acts on network points first.
    """
    if isinstance(points_transform, Transform):  # a field first takes the separable fast path
        points = points_transform.grid_points(grid_affine, shape, device=device)
    elif points_transform is not None:
        points = points_transform(space.world_grid(grid_affine, shape, device=device))
    else:
        points = space.world_grid(grid_affine, shape, device=device)
    return points + torch.as_tensor(offset_mm, dtype=points.dtype, device=points.device)


def onto_grid(image: Image, grid_affine: Tensor, shape: Sequence[int], offset_mm: Tensor,
              points_transform=None, mode: Optional[str] = None, device=None, points: Optional[Tensor] = None) -> Tensor:
    """Resample ``image`` (world space) onto the network grid placed at ``offset_mm``.

    Args:
        grid_affine: the canonical grid's voxel→network-world affine.
        offset_mm: world position of the network origin (e.g. the fixed image's centre of mass), (3,).
        points_transform: optional callable on network points ``(X, Y, Z, 3)`` applied before
            sampling (augmentation).
        mode: ``"linear"`` or ``"nearest"`` (default: nearest for label images).
        points: the result of :func:`grid_world_points`, to reuse it for several images.
    Returns:
        ``(C, X, Y, Z)`` float32 (labels keep their values, as float).
    """
    device = device or image.device
    if points is None:
        points = grid_world_points(grid_affine, shape, offset_mm, points_transform, device)
    mode = mode or ("nearest" if image.is_label else "linear")
    volume = image.data[None].to(device=points.device, dtype=torch.float32)
    return warp(volume, image.affine, points, mode=mode)[0]
