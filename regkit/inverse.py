"""Invert a regkit transform and measure how well the inverse undoes it.

* :class:`AffineTransform` — matrix inverse (exact).
* :class:`VelocityField` — ``exp(-v)`` (exact up to scaling-and-squaring accuracy).
* :class:`DisplacementField` — fixed-point iteration ``w ← -u(x + w)`` on the field's own grid
  (:func:`regkit.transforms.invert_displacement`); not exact, so the residual is reported.
* :class:`Compose` ``(t1, …, tn)`` — ``Compose(tn⁻¹, …, t1⁻¹)``.

The forward transform maps fixed points to moving points; the inverse maps moving → fixed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import numpy as np
import torch

from regkit import space
from regkit.transforms import Compose, DisplacementField, Transform, VelocityField


@dataclass
class Inverse:
    """An inverse and the worst fixed-point residual of its displacement parts (mm, max over
    voxels of ``|w(x) + u(x + w(x))|``; ``None`` when every part was inverted exactly)."""

    transform: Transform
    fixed_point_residual_mm: Optional[float]


def invert(transform: Transform, iterations: int = 50, tolerance_mm: float = 1e-3) -> Inverse:
    """The inverse of ``transform`` (see the module docstring for how each kind is inverted)."""
    chain = list(transform.transforms) if isinstance(transform, Compose) else [transform]
    parts, residuals = [], []
    for t in reversed(chain):
        if isinstance(t, DisplacementField):
            inv = t.inverse(iterations=iterations, tolerance_mm=tolerance_mm)
            residuals.append(float(inv.inverse_residual_mm))
        else:  # exact for affine and velocity; NotImplementedError naming the type otherwise
            inv = t.inverse()
        parts.append(inv)
    result = parts[0] if len(parts) == 1 else Compose(*parts)
    return Inverse(result, max(residuals) if residuals else None)


def field_grid(transform: Transform) -> Optional[Tuple[torch.Tensor, Tuple[int, int, int]]]:
    """``(affine, shape)`` of the first dense field in a chain (its natural grid), or None."""
    chain = list(transform.transforms) if isinstance(transform, Compose) else [transform]
    for t in chain:
        if isinstance(t, (DisplacementField, VelocityField)):
            return space.grid_of(t.affine, t.shape)
    return None


def round_trip_error(forward: Transform, inverse: Transform, affine, shape, mask: Optional[torch.Tensor] = None) -> Dict[str, float]:
    """``|inverse(forward(x)) - x|`` (mm) over the voxel centres ``x`` of a grid (optionally
    only where ``mask`` is non-zero): median, 95th percentile and max."""
    with torch.no_grad():
        x = space.world_grid(affine, shape, dtype=torch.float32)
        err = (inverse(forward(x)) - x).norm(dim=-1)
    if mask is not None:
        err = err[torch.as_tensor(mask).reshape(err.shape) != 0]
    e = err.reshape(-1).double().numpy()
    return {"median": float(np.median(e)), "p95": float(np.percentile(e, 95)), "max": float(e.max())}
