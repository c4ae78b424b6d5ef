"""Composition of transforms into one mapping (one sampling grid, one image resampling)."""
from __future__ import annotations

from typing import List, Sequence

import torch
from torch import Tensor

from regkit.transforms.base import Transform
from regkit.transforms.field import DisplacementField


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
