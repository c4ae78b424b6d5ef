"""Composition of transforms into one mapping (one sampling grid, one image resampling)."""
from __future__ import annotations

from typing import Iterable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from regkit import space
from regkit.transforms.base import Transform
from regkit.transforms.field import DisplacementField, sample_field


class Compose(Transform):
    """``Compose(t1, t2, ..., tn)`` maps a fixed point ``x`` to ``tn(...t2(t1(x)))``.

    The first transform acts first on fixed-space points — the order of ANTs'
    ``antsApplyTransforms -t`` list (``-t Warp -t Affine``: the warp, defined on the fixed grid,
    then the affine into moving space). Points travel through every transform; the image is
    sampled once at the end.
    """

    def __init__(self, *transforms: Transform):
        super().__init__()
        flat: List[Transform] = []
        for t in transforms:
            flat.extend(t.transforms if isinstance(t, Compose) else [t])
        self.transforms = torch.nn.ModuleList(flat)

    def forward(self, points: Tensor) -> Tensor:
        for t in self.transforms:
            points = t(points)
        return points

    def grid_points(self, affine, shape: Sequence[int], device=None, dtype=torch.float32) -> Tensor:
        """Mapped world points of every voxel of a grid; the first transform maps the grid
        itself, so a field there takes its separable fast path (see ``DisplacementField``)."""
        if not len(self.transforms):
            return self._grid(affine, shape, device, dtype)
        points = self.transforms[0].grid_points(affine, shape, device, dtype)
        n = self.batch_size
        if n is not None and points.dim() == 4:
            points = points.expand(n, *points.shape)
        for t in list(self.transforms)[1:]:
            points = t(points)
        return points

    def inverse(self) -> "Compose":
        return Compose(*[t.inverse() for t in reversed(list(self.transforms))])

    @property
    def batch_size(self):
        sizes = [t.batch_size for t in self.transforms if t.batch_size is not None]
        return max(sizes) if sizes else None

    def __len__(self) -> int:
        return len(self.transforms)


def to_displacement_field(transform: Transform, affine, shape, device=None, dtype=torch.float32) -> DisplacementField:
    """Collapse any transform (a chain included) into ONE dense displacement on a grid."""
    return DisplacementField(transform.displacement_on(affine, shape, device=device, dtype=dtype), affine)


def invert_displacement(displacement: Tensor, affine, iterations: int = 30, tolerance_mm: float = 1e-3,
                        grid=None, start: Optional[Tensor] = None) -> Tuple[Tensor, float]:
    """Inverse of ``x → x + u(x)`` by fixed-point iteration ``w ← -u(x + w)`` at the voxel
    centres ``x`` of ``grid`` (``(affine, shape)``; default the field's own grid).

    ``start``: first guess for ``w`` on that grid, ``(N, 3, *shape)`` mm (default ``-u(x)``).
    Returns ``(w (N, 3, *shape), residual_mm)``; the residual is the max over voxels of
    ``|w(x) + u(x + w(x))|``.
    """
    u = displacement if displacement.dim() == 5 else displacement[None]
    grid_affine, shape = (affine, u.shape[2:]) if grid is None else grid
    x = space.world_grid(grid_affine, shape, device=u.device, dtype=u.dtype).expand(u.shape[0], *shape, 3)
    if start is not None:
        w = start.to(u).movedim(1, -1)
    elif grid is None:
        w = -u.movedim(1, -1)
    else:
        w = -sample_field(u, affine, x)
    best, best_r = w, None  # per voxel, the iterate with the smallest residual (where the
    with torch.no_grad():   # iteration does not contract, e.g. near folds, it never gets worse)
        for _ in range(iterations):
            r = w + sample_field(u, affine, x + w)
            rn = r.norm(dim=-1, keepdim=True)
            if best_r is None:
                best, best_r = w, rn
            else:
                better = rn < best_r
                best, best_r = torch.where(better, w, best), torch.where(better, rn, best_r)
            if float(best_r.max()) < tolerance_mm:
                break
            w = w - r
    return best.movedim(-1, 1), float(best_r.max()) if best_r is not None else float("inf")
