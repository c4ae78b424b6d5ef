"""The :class:`Transform` interface shared by every transform."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from regkit import space


SLAB_VOXELS = 1 << 22  # voxels mapped at once when no gradient is needed (4 M: ~50 MB per copy)


class Transform(nn.Module):
    """A spatial transform mapping FIXED world points (mm, RAS) to MOVING world points.

    Subclasses implement :meth:`forward` on points ``(..., 3)``; a batched transform (batch
    size N > 1) takes points ``(N, ..., 3)``. Everything is differentiable with respect to the
    transform's parameters.
    """

    def forward(self, points: Tensor) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def inverse(self) -> "Transform":
        raise NotImplementedError(f"{type(self).__name__} has no closed-form inverse")

    @property
    def batch_size(self) -> Optional[int]:
        """N for a batched transform (which takes points ``(N, ..., 3)``), else None."""
        return None

    def _grid(self, affine, shape: Sequence[int], device, dtype) -> Tensor:
        x = space.world_grid(affine, shape, device=device, dtype=dtype)
        n = self.batch_size
        return x if n is None else x.expand(n, *x.shape)

    def grid_points(self, affine, shape: Sequence[int], device=None, dtype=torch.float32) -> Tensor:
        """Mapped world coordinates of every voxel of grid (affine, shape): ``(X, Y, Z, 3)``
        (``(N, X, Y, Z, 3)`` for a batched transform)."""
        return self(self._grid(affine, shape, device, dtype))

    def displacement_on(self, affine, shape: Sequence[int], device=None, dtype=torch.float32) -> Tensor:
        """Dense displacement ``T(x) - x`` (mm, world RAS) on a grid, ``(3, X, Y, Z)``
        (``(N, 3, X, Y, Z)`` for a batched transform)."""
        if torch.is_grad_enabled() and any(q.requires_grad for q in self.parameters()):
            x = self._grid(affine, shape, device, dtype)
            return (self(x) - x).movedim(-1, -4)
        # no gradient needed: map the grid a slab at a time, so a CT-sized grid does not hold
        # several full-size coordinate copies at once
        out = None
        with torch.no_grad():
            for start, stop, sub in space.slabs(affine, shape, SLAB_VOXELS):
                sub_shape = (stop - start, *tuple(shape)[-2:])
                x = self._grid(sub, sub_shape, device, dtype)
                d = (self.grid_points(sub, sub_shape, device, dtype) - x).movedim(-1, -4)  # a field's fast path
                if out is None:
                    out = d.new_empty(*d.shape[:-3], int(shape[-3]), *d.shape[-2:])
                out[..., start:stop, :, :] = d
        return out
