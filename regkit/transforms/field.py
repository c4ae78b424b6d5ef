"""``DisplacementField``: a dense displacement (mm) on a grid."""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from regkit import space
from regkit.grid import Grid
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


def linear_weights(positions: Tensor, size: int) -> Tensor:
    """``(P, size)`` matrix of 1-D linear interpolation at continuous voxel ``positions`` (P,)
    of an axis of ``size`` voxels, positions clamped to the axis (``grid_sample``'s border)."""
    x = positions.clamp(0, size - 1)
    low = x.floor().clamp(max=max(size - 2, 0)).long()
    frac = (x - low).unsqueeze(1)
    weights = positions.new_zeros(positions.shape[0], size)
    weights.scatter_(1, low[:, None], 1 - frac)
    if size > 1:
        weights.scatter_add_(1, (low + 1)[:, None], frac)
    return weights


def separable_weights(field_affine, field_shape: Sequence[int], affine, shape: Sequence[int],
                      dtype=torch.float32, device=None) -> Optional[List[Tensor]]:
    """Trilinear sampling (border extension) of a field on grid ``(field_affine, field_shape)`` at
    every voxel centre of grid ``(affine, shape)``, as one ``(shape[a], field_shape[a])`` matrix
    per axis a (or, where every target voxel of that axis sits on a field voxel, their indices, a
    ``long`` tensor) — or None when that grid's axes are not parallel to the field's. Apply them
    with :func:`apply_separable`."""
    to_field = torch.linalg.inv(space.as_affine(field_affine)) @ space.as_affine(affine)
    linear = to_field[:3, :3]
    if (linear - torch.diag(torch.diagonal(linear))).abs().max() > 1e-9 * linear.abs().max():
        return None
    weights = []
    for axis in range(3):
        positions = torch.arange(int(shape[axis]), dtype=torch.float64) * linear[axis, axis] + to_field[axis, 3]
        size = int(field_shape[axis])
        index = torch.round(positions)
        if bool(((positions - index).abs() < 1e-6).all()) and bool(((index >= 0) & (index <= size - 1)).all()):
            weights.append(index.long().to(device))  # every target voxel on a field voxel: a selection
        else:
            weights.append(linear_weights(positions, size).to(device=device, dtype=dtype))
    return weights


def apply_separable(field: Tensor, weights: Sequence[Tensor]) -> Tensor:
    """``field`` ``(N, C, X, Y, Z)`` sampled with the per-axis matrices of :func:`separable_weights`:
    ``(N, C, *target shape)``. Three matrix products (multi-threaded, and differentiable through
    both arguments) instead of a ``grid_sample`` through every target point; an axis whose target
    voxels all sit on field voxels (the same grid, a slab of it) is a plain selection."""
    out = field
    for w in weights:
        if w.dtype == torch.long:
            out = out.index_select(2, w).movedim(2, -1)
        else:
            out = torch.tensordot(out, w, dims=([2], [1]))  # contracted axis dropped, new one last
    return out


def sample_field_on_grid(field: Tensor, field_affine, affine, shape: Sequence[int]) -> Optional[Tensor]:
    """``field`` ``(N, C, X, Y, Z)`` (grid ``field_affine``) sampled trilinearly at every voxel of
    grid ``(affine, shape)``, ``(N, C, *shape)`` — or None when that grid's axes are not parallel
    to the field's (then only :func:`sample_field` can do it).

    Same values as :func:`sample_field` at the grid's voxel centres (border extension), but done
    as three small matrix products, one per axis (:func:`apply_separable`), instead of a
    ``grid_sample`` through every point: on 2 CPU cores a 40×48×40 field onto 80×96×80 takes ~5 ms
    instead of ~60 ms forward and ~90 ms backward (the cascade's training step and its
    augmentation do this every step).
    """
    weights = separable_weights(field_affine, field.shape[2:], affine, shape, dtype=field.dtype, device=field.device)
    return None if weights is None else apply_separable(field, weights)


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
    def grid(self) -> Grid:
        """The grid the displacement is stored on."""
        return Grid(self.affine, tuple(self.shape))

    @property
    def batch_size(self):
        """N when the field holds N > 1 fields (then points must be ``(N, ..., 3)``), else None."""
        n = int(self.displacement.shape[0])
        return n if n > 1 else None

    def forward(self, points: Tensor) -> Tensor:
        return points + sample_field(self.displacement, self.affine, points)

    def grid_points(self, affine, shape: Sequence[int], device=None, dtype=torch.float32) -> Tensor:
        d = sample_field_on_grid(self.displacement, self.affine, affine, shape)
        if d is None:
            return super().grid_points(affine, shape, device, dtype)
        d = d.to(device=device, dtype=dtype).movedim(1, -1)
        return self._grid(affine, shape, device, dtype) + (d if self.batch_size else d[0])

    def displacement_on(self, affine, shape: Sequence[int], device=None, dtype=torch.float32) -> Tensor:
        d = sample_field_on_grid(self.displacement, self.affine, affine, shape)
        if d is None:
            return super().displacement_on(affine, shape, device, dtype)
        d = d.to(device=device, dtype=dtype)
        return d if self.batch_size else d[0]

    def field_on_own_grid(self) -> Tensor:
        """The stored displacement, ``(N, 3, X, Y, Z)`` mm."""
        return self.displacement

    def inverse(self, iterations: int = 30, tolerance_mm: float = 1e-3) -> "DisplacementField":
        """Numerical inverse on the same grid by fixed-point iteration ``w ← -u(x + w)``.

        The residual ``max |w(x) + u(x + w(x))|`` (mm) is stored on the result as
        ``inverse_residual_mm``.
        """
        w, residual = invert_displacement(self.displacement, self.affine, iterations, tolerance_mm)
        inverse = DisplacementField(w, self.affine)
        inverse.inverse_residual_mm = residual
        return inverse


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
