"""``Grid``: a sampling grid in world space — the 4×4 voxel→world affine (float64, RAS mm) and the
spatial shape ``(X, Y, Z)`` — as one value.

Images (:attr:`regkit.image.Image.grid`), dense fields (``DisplacementField.grid``,
``VelocityField.grid``) and registration results (``RegistrationResult.grid``, the fixed grid)
carry one. It is a named tuple, so it is also the ``(affine, shape)`` pair that functions taking a
grid accept: ``affine, shape = grid``.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence, Tuple

import torch
from torch import Tensor

from regkit import space


class Grid(NamedTuple):
    """A sampling grid in world space: 4×4 voxel→world ``affine`` (float64, RAS mm) and ``shape`` (X, Y, Z)."""

    affine: Tensor
    shape: Tuple[int, int, int]

    @staticmethod
    def of(affine: space.ArrayLike, shape: Sequence[int]) -> "Grid":
        """The grid of ``affine`` (any array, made a float64 tensor) and the last three entries of ``shape``."""
        return Grid(space.as_affine(affine), tuple(int(s) for s in shape[-3:]))  # type: ignore[arg-type]

    @property
    def spacing(self) -> Tensor:
        """Voxel size (mm) along each index axis."""
        return space.spacing(self.affine)

    def world(self, device=None, dtype=torch.float32) -> Tensor:
        """World coordinates (mm, RAS) of every voxel centre, ``(X, Y, Z, 3)``."""
        return space.world_grid(self.affine, self.shape, device=device, dtype=dtype)

    @property
    def voxels(self) -> int:
        return int(self.shape[0] * self.shape[1] * self.shape[2])

    def same_as(self, other: "Grid", atol: float = 1e-4) -> bool:
        """Same shape and (within ``atol``) the same affine."""
        return tuple(self.shape) == tuple(other.shape) and bool(torch.allclose(
            self.affine.double().cpu(), other.affine.double().cpu(), atol=atol))
