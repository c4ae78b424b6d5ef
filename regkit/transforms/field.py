"""``DisplacementField``: a dense displacement (mm) on a grid."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from regkit import space
from regkit.transforms.base import Transform


def sample_field(field: Tensor, affine, points: Tensor, padding_mode: str = "border") -> Tensor:
    """Trilinearly sample a vector field ``(N, C, X, Y, Z)`` on grid ``affine`` at world points.

    With N == 1, ``points`` may have any shape ``(..., 3)``; with N > 1 they must be
    ``(N, ..., 3)``. Returns the vectors with components last: ``points.shape[:-1] + (C,)``.
    """
    n = field.shape[0]
    if n > 1 and points.shape[0] != n:
        raise ValueError(f"a batched field (N={n}) needs points (N, ..., 3), got {tuple(points.shape)}")
    grid = space.world_to_normalized(points.reshape(n, -1, 1, 1, 3), affine, field.shape[2:])
    out = space.sample(field, grid, mode="bilinear", padding_mode=padding_mode)  # (N, C, P, 1, 1)
    return out.reshape(n, field.shape[1], -1).movedim(1, -1).reshape(*points.shape[:-1], field.shape[1])


class DisplacementField(Transform):
    """``y = x + u(x)``, with ``u`` sampled trilinearly from a dense field.

    Args:
        displacement: ``(3, X, Y, Z)`` or batched ``(N, 3, X, Y, Z)`` vectors in world mm (RAS
            components — ITK files hold LPS; :mod:`regkit.io.itk` converts).
        affine: 4×4 voxel→world of the field's grid.
        requires_grad: make ``displacement`` an ``nn.Parameter``.

    Outside its grid the field is extended with its border value.
    """

    def __init__(self, displacement: Tensor, affine, requires_grad: bool = False):
        super().__init__()
        d = torch.as_tensor(displacement)
        if d.dim() == 4:
            d = d[None]
        if d.dim() != 5 or d.shape[1] != 3:
            raise ValueError(f"displacement must be (3, X, Y, Z) or (N, 3, X, Y, Z), got {tuple(d.shape)}")
        if requires_grad:
            self.displacement = nn.Parameter(d)
        else:
            self.register_buffer("displacement", d)
        self.register_buffer("affine", space.as_affine(affine), persistent=True)

    @property
    def shape(self) -> Sequence[int]:
        return tuple(self.displacement.shape[2:])

    @property
    def batch_size(self):
        """N when the field holds N > 1 fields (then points must be ``(N, ..., 3)``), else None."""
        n = int(self.displacement.shape[0])
        return n if n > 1 else None

    def forward(self, points: Tensor) -> Tensor:
        return points + sample_field(self.displacement, self.affine, points)

    def field_on_own_grid(self) -> Tensor:
        """The stored displacement, ``(N, 3, X, Y, Z)`` mm."""
        return self.displacement

    def inverse(self, iterations: int = 30, tolerance_mm: float = 1e-3) -> "DisplacementField":
        """Numerical inverse on the same grid by fixed-point iteration ``w ← -u(x + w)``.

        The residual ``max |w(x) + u(x + w(x))|`` (mm) is stored on the result as
        ``inverse_residual_mm``.
        """
        from regkit.transforms.compose import invert_displacement

        w, residual = invert_displacement(self.displacement, self.affine, iterations, tolerance_mm)
        inverse = DisplacementField(w, self.affine)
        inverse.inverse_residual_mm = residual
        return inverse
