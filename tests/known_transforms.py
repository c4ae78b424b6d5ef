"""A known smooth transform on the sample pair's fixed grid, for export / inverse / QC tests.

``known_transform(fixed)`` = ``Compose(VelocityField(v), AffineTransform)``: a smooth stationary
velocity (amplitude ``amplitude_mm``, wavelength 60 mm, on a 2× coarser copy of the fixed grid)
followed by a 6° rotation + anisotropic scaling + shear + translation about the grid centre —
the shape of a regkit registration (deformable first, affine last).
"""
from __future__ import annotations

import math

import torch

from regkit import space
from regkit.image import Image
from regkit.transforms import AffineTransform, Compose, VelocityField

WAVELENGTH_MM = 60.0


def coarse_grid(image: Image, factor: int = 2):
    """``(affine, shape)`` of a grid with ``factor``× the spacing that covers ``image``."""
    affine = image.affine @ torch.diag(torch.tensor([factor, factor, factor, 1.0], dtype=torch.float64))
    shape = tuple(-(-(s - 1) // factor) + 1 for s in image.shape)
    return affine, shape


def smooth_velocity(image: Image, amplitude_mm: float = 3.0) -> VelocityField:
    affine, shape = coarse_grid(image)
    r = space.world_grid(affine, shape, dtype=torch.float64) - image.center()
    k = 2 * math.pi / WAVELENGTH_MM
    v = torch.stack([
        torch.sin(k * r[..., 0]) * torch.cos(k * r[..., 2]),
        torch.sin(k * r[..., 1]) * torch.cos(k * r[..., 0]),
        torch.sin(k * r[..., 2]) * torch.cos(k * r[..., 1]),
    ], dim=0) * amplitude_mm
    return VelocityField(v.float(), affine, steps=6)


def known_affine(image: Image) -> AffineTransform:
    a = math.radians(6.0)
    rotation = torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    matrix = rotation @ torch.diag(torch.tensor([1.05, 0.97, 1.02], dtype=torch.float64))
    matrix[0, 2] += 0.03
    return AffineTransform(matrix, torch.tensor([4.0, -3.0, 2.5], dtype=torch.float64), image.center(), requires_grad=False)


def known_transform(fixed: Image, amplitude_mm: float = 3.0) -> Compose:
    """Fixed → moving: the smooth SVF, then the affine."""
    return Compose(smooth_velocity(fixed, amplitude_mm), known_affine(fixed))
