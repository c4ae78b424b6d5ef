"""Training augmentation built from regkit's own transforms, so an augmented image is still ONE
sampling of the original file: random spatial transforms act on the network grid's points
before the image is sampled (see :func:`regkit.nn.grid.onto_grid`).

* spatial: ``Compose(elastic, affine)`` — a smooth random displacement (random vectors on a
  coarse control grid, trilinearly interpolated: a ``DisplacementField``) then a random affine
  (rotation by the matrix exponential of a random skew matrix, per-axis scale, translation)
  about the grid centre; both in network mm.
* intensity (images in [0, 1]): gamma, a smooth multiplicative bias field, Gaussian noise.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from regkit.transforms import AffineTransform, Compose, DisplacementField


def _uniform(generator: Optional[torch.Generator], low: float, high: float, *shape: int) -> Tensor:
    return low + (high - low) * torch.rand(*shape, generator=generator, dtype=torch.float64)


def random_affine(rotation_deg: float, scale: float, translation_mm: float, generator=None) -> AffineTransform:
    """A random affine about the network origin (the grid centre), in network mm."""
    w = _uniform(generator, -1, 1, 3) * math.radians(rotation_deg)
    skew = torch.zeros(3, 3, dtype=torch.float64)
    skew[0, 1], skew[0, 2], skew[1, 2] = -w[2], w[1], -w[0]
    skew = skew - skew.T
    rotation = torch.linalg.matrix_exp(skew)
    matrix = rotation @ torch.diag(1.0 + _uniform(generator, -scale, scale, 3))
    translation = _uniform(generator, -translation_mm, translation_mm, 3)
    return AffineTransform(matrix, translation, requires_grad=False)


def random_elastic(grid_affine: Tensor, shape: Sequence[int], std_mm: float, spacing_mm: float, generator=None) -> DisplacementField:
    """Random displacement vectors (std ``std_mm``) on a control grid of ``spacing_mm`` spanning
    the network grid; trilinear interpolation between control points makes it smooth."""
    step = spacing_mm / float(torch.linalg.norm(grid_affine[:3, 0]))
    size = [max(2, int(math.ceil((s - 1) / step)) + 1) for s in shape]
    control = grid_affine.clone()
    control[:3, :3] *= torch.tensor([(s - 1) / (c - 1) for s, c in zip(shape, size)], dtype=torch.float64)
    vectors = torch.randn(1, 3, *size, generator=generator, dtype=torch.float64).float() * std_mm
    return DisplacementField(vectors, control)


def random_spatial(config, grid_affine: Tensor, shape: Sequence[int], generator=None) -> Compose:
    """``Compose(elastic, affine)`` drawn from an :class:`~regkit.train.config.AugmentConfig`."""
    elastic = random_elastic(grid_affine, shape, config.elastic_mm, config.elastic_spacing_mm, generator)
    affine = random_affine(config.rotation_deg, config.scale, config.translation_mm, generator)
    return Compose(elastic, affine)


def random_intensity(volume: Tensor, config, generator=None) -> Tensor:
    """Gamma, smooth multiplicative bias and Gaussian noise on a ``(C, X, Y, Z)`` volume in [0, 1]."""
    low, high = config.gamma
    gamma = float(torch.exp(_uniform(generator, math.log(low), math.log(high), 1)))
    out = volume.clamp(min=0) ** gamma
    if config.bias > 0:
        coarse = _uniform(generator, -config.bias, config.bias, 1, 1, 4, 4, 4).float().to(volume.device)
        bias = F.interpolate(coarse, size=volume.shape[1:], mode="trilinear", align_corners=True)[0]
        out = out * torch.exp(bias)
    if config.noise_std > 0:
        out = out + config.noise_std * torch.randn(volume.shape, generator=generator).to(volume.device)
    return out.clamp(min=0)
