"""``AffineTransform``: 12 parameters (3×3 matrix + translation) about an explicit centre."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from regkit import space
from regkit.transforms.base import Transform


class AffineTransform(Transform):
    """``y = M (x - c) + c + t`` in world mm (RAS), fixed → moving.

    Args:
        matrix: ``(3, 3)`` or batched ``(N, 3, 3)``; identity when omitted.
        translation: ``(3,)`` or ``(N, 3)`` mm; zero when omitted.
        center: ``(3,)`` centre of rotation/scaling in world mm (a constant, not learnt);
            the origin when omitted. Optimising about the image centre decouples rotation
            from translation.
        batch_size: make an identity transform of this batch size.

    ``matrix`` and ``translation`` are ``nn.Parameter`` s (identity-initialised), so an optimiser
    or a network can update them; :meth:`from_homogeneous` wraps a fixed 4×4 matrix.
    """

    def __init__(self, matrix: Optional[Tensor] = None, translation: Optional[Tensor] = None,
                 center: Optional[Tensor] = None, batch_size: Optional[int] = None, requires_grad: bool = True):
        super().__init__()
        lead = () if batch_size is None else (batch_size,)
        if matrix is None:
            matrix = torch.eye(3).expand(*lead, 3, 3).clone()
        if translation is None:
            translation = torch.zeros(*matrix.shape[:-2], 3, dtype=matrix.dtype)
        if center is None:
            center = torch.zeros(3, dtype=matrix.dtype)
        self.matrix = nn.Parameter(torch.as_tensor(matrix).clone(), requires_grad=requires_grad)
        self.translation = nn.Parameter(torch.as_tensor(translation, dtype=self.matrix.dtype).clone(), requires_grad=requires_grad)
        self.register_buffer("center", torch.as_tensor(center, dtype=self.matrix.dtype).clone())

    @property
    def batched(self) -> bool:
        return self.matrix.dim() == 3

    @property
    def batch_size(self) -> Optional[int]:
        return int(self.matrix.shape[0]) if self.batched else None

    def forward(self, points: Tensor) -> Tensor:
        m = self.matrix.to(points.dtype)
        t = self.translation.to(points.dtype)
        c = self.center.to(points.device, points.dtype)
        if not self.batched:
            return (points - c) @ m.T + (c + t)
        n = m.shape[0]
        if n > 1 and points.shape[0] != n:  # a reshape would silently mix batch items
            raise ValueError(f"a batched affine (N={n}) needs points (N, ..., 3), got {tuple(points.shape)}")
        flat = points.reshape(n, -1, 3) - c
        out = flat @ m.transpose(1, 2) + (c + t)[:, None, :]
        return out.reshape(points.shape)

    def grid_points(self, affine, shape, device=None, dtype=torch.float32) -> Tensor:
        """Mapped world points of every voxel of a grid; without a gradient, in one pass over the
        output through the product of this matrix and the grid's (float64)."""
        if self.batched or (torch.is_grad_enabled() and any(p.requires_grad for p in self.parameters())):
            return super().grid_points(affine, shape, device, dtype)
        matrix = self.homogeneous().detach().double().cpu() @ space.as_affine(affine)
        return space.world_grid(matrix, shape, device=device, dtype=dtype)

    def homogeneous(self) -> Tensor:
        """The 4×4 (or ``(N, 4, 4)``) world→world matrix, ``[M | t + c - M c]``."""
        m, t, c = self.matrix, self.translation, self.center.to(self.matrix.dtype)
        offset = t + c - (m @ c[:, None])[..., 0]
        top = torch.cat([m, offset[..., None]], dim=-1)
        bottom = torch.zeros(*m.shape[:-2], 1, 4, dtype=m.dtype, device=m.device)
        bottom[..., 0, 3] = 1.0
        return torch.cat([top, bottom], dim=-2)

    @classmethod
    def from_homogeneous(cls, matrix4: Tensor, center: Optional[Tensor] = None, requires_grad: bool = False) -> "AffineTransform":
        """From a 4×4 world→world matrix; ``center`` only changes the parametrisation."""
        a = torch.as_tensor(matrix4, dtype=torch.float64)
        m = a[..., :3, :3]
        c = torch.zeros(3, dtype=a.dtype) if center is None else torch.as_tensor(center, dtype=a.dtype)
        t = a[..., :3, 3] - c + (m @ c[:, None])[..., 0]
        return cls(m, t, c, requires_grad=requires_grad)

    def inverse(self) -> "AffineTransform":
        inv = torch.linalg.inv(self.homogeneous().detach())
        return AffineTransform.from_homogeneous(inv, center=self.center)

    def extra_repr(self) -> str:
        return f"batched={self.batched}"
