"""``VelocityField``: a stationary velocity field (SVF); ``exp`` by scaling and squaring."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from regkit import space
from regkit.grid import Grid
from regkit.transforms.base import Transform
from regkit.transforms.field import DisplacementField

#: most scaling-and-squaring steps: the field is divided by 2**steps, and each step is one
#: resampling of the whole field (7 is plenty for smooth fields; 30 already divides by 1e9)
MAX_SQUARING_STEPS = 30


def scaling_and_squaring(velocity: Tensor, affine, steps: int = 6) -> Tensor:
    """``exp(v)`` as a displacement: ``u ← v / 2^s``, then ``s`` times ``u ← u + u∘(id + u)``.

    Args:
        velocity: ``(N, 3, X, Y, Z)`` world mm on grid ``affine``.
        steps: number of squarings (the field is divided by ``2**steps`` first).
    Returns:
        displacement ``(N, 3, X, Y, Z)`` world mm. The work is done in grid_sample units so each
        squaring is one ``grid_sample`` and one add.
    """
    shape = velocity.shape[2:]
    u = space.world_vectors_to_normalized(velocity, affine, shape, channel_dim=1) / (2 ** steps)
    identity = space.normalized_identity(shape, device=velocity.device, dtype=velocity.dtype)
    for _ in range(steps):
        grid = identity + u.movedim(1, -1)
        u = u + space.sample(u, grid, padding_mode="border")
    return space.normalized_vectors_to_world(u, affine, shape, channel_dim=1)


class VelocityField(Transform):
    """Diffeomorphic transform ``exp(v)`` of a stationary velocity field ``v``.

    Args:
        velocity: ``(3, X, Y, Z)`` or ``(N, 3, X, Y, Z)`` world mm (RAS components).
        affine: 4×4 voxel→world of the velocity's grid.
        steps: scaling-and-squaring steps (6–7 is plenty for smooth fields).
        requires_grad: make ``velocity`` an ``nn.Parameter``.

    ``inverse()`` is ``exp(-v)``: the exact inverse of the ideal flow, but not of the discretised
    ``exp(v)`` (round trips of ~0.06 mm mean, 0.5 mm max on a registration's ~4 mm grid);
    :func:`regkit.inverse.invert_velocity` refines it against the forward.
    """

    def __init__(self, velocity: Tensor, affine, steps: int = 6, requires_grad: bool = False):
        super().__init__()
        v = torch.as_tensor(velocity)
        if v.dim() == 4:
            v = v[None]
        if v.dim() != 5 or v.shape[1] != 3:
            raise ValueError(f"velocity must be (3, X, Y, Z) or (N, 3, X, Y, Z), got {tuple(v.shape)}")
        if requires_grad:
            self.velocity = nn.Parameter(v)
        else:
            self.register_buffer("velocity", v)
        self.register_buffer("affine", space.as_affine(affine))
        if not 0 <= steps <= MAX_SQUARING_STEPS:  # 2**steps: a huge value is unbounded work
            raise ValueError(f"steps must be from 0 to {MAX_SQUARING_STEPS}, got {steps!r}")
        self.steps = int(steps)

    @property
    def shape(self) -> Sequence[int]:
        return tuple(self.velocity.shape[2:])

    @property
    def grid(self) -> Grid:
        """The grid the velocity is stored on."""
        return Grid(self.affine, tuple(self.shape))

    @property
    def batch_size(self):
        """N when the field holds N > 1 fields (then points must be ``(N, ..., 3)``), else None."""
        n = int(self.velocity.shape[0])
        return n if n > 1 else None

    def exp(self) -> DisplacementField:
        """The displacement field ``exp(v) - id`` on the velocity's grid."""
        return DisplacementField(scaling_and_squaring(self.velocity, self.affine, self.steps), self.affine)

    def forward(self, points: Tensor) -> Tensor:
        return self.exp()(points)

    def grid_points(self, affine, shape: Sequence[int], device=None, dtype=torch.float32) -> Tensor:
        return self.exp().grid_points(affine, shape, device, dtype)

    def displacement_on(self, affine, shape: Sequence[int], device=None, dtype=torch.float32) -> Tensor:
        """``exp(v) - id`` on a grid: integrated once on the velocity's grid, then sampled there
        (three matrix products when the grids are parallel, see :class:`DisplacementField`)."""
        return self.exp().displacement_on(affine, shape, device, dtype)

    def inverse(self) -> "VelocityField":
        return VelocityField(-self.velocity.detach(), self.affine, self.steps)
