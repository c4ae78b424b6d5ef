"""``Image``: a volume tensor plus its voxel→world affine (RAS, mm)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from regkit import space
from regkit.grid import Grid


@dataclass
class Image:
    """A 3D image in physical space.

    Attributes:
        data: ``(C, X, Y, Z)`` tensor. Intensities are float; label maps keep an integer dtype.
        affine: ``(4, 4)`` float64 tensor, voxel index (i, j, k) → world RAS mm.
        is_label: whether values are discrete labels (nearest-neighbour resampling, int output).
    """

    data: Tensor
    affine: Tensor
    is_label: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.data, Tensor):
            self.data = torch.as_tensor(np.asarray(self.data))
        if self.data.dim() == 3:
            self.data = self.data[None]
        if self.data.dim() != 4:
            raise ValueError(f"Image data must be (C, X, Y, Z), got shape {tuple(self.data.shape)}")
        self.affine = space.as_affine(self.affine)

    @property
    def shape(self) -> Tuple[int, int, int]:
        """Spatial shape (X, Y, Z)."""
        return tuple(int(s) for s in self.data.shape[1:])  # type: ignore[return-value]

    @property
    def grid(self) -> Grid:
        """The image's grid: its affine and spatial shape."""
        return Grid(self.affine, self.shape)

    @property
    def channels(self) -> int:
        return int(self.data.shape[0])

    @property
    def spacing(self) -> Tuple[float, float, float]:
        """Voxel size (mm) along the index axes."""
        return tuple(float(s) for s in space.spacing(self.affine))  # type: ignore[return-value]

    @property
    def device(self) -> torch.device:
        return self.data.device

    def to(self, device=None, dtype=None) -> "Image":
        return Image(self.data.to(device=device, dtype=dtype), self.affine, self.is_label)

    def float(self) -> "Image":
        return Image(self.data.float(), self.affine, False)

    def numpy(self) -> np.ndarray:
        """Data as a numpy array ``(X, Y, Z)`` for one channel, else ``(X, Y, Z, C)``."""
        a = self.data.detach().cpu().numpy()
        return a[0] if a.shape[0] == 1 else np.moveaxis(a, 0, -1)

    def world_grid(self, device=None, dtype=torch.float32) -> Tensor:
        """World coordinates (mm, RAS) of every voxel, ``(X, Y, Z, 3)``."""
        return space.world_grid(self.affine, self.shape, device=device or self.device, dtype=dtype)

    def with_data(self, data: Tensor, is_label: Optional[bool] = None) -> "Image":
        """Same grid, new data."""
        return Image(data, self.affine, self.is_label if is_label is None else is_label)

    def same_grid(self, other: "Image", atol: float = 1e-4) -> bool:
        return self.shape == other.shape and bool(torch.allclose(self.affine, other.affine, atol=atol))

    def center(self) -> Tensor:
        """World coordinates of the grid's centre (mm)."""
        mid = torch.tensor([(s - 1) / 2.0 for s in self.shape], dtype=torch.float64)
        return space.voxel_to_world(mid, self.affine)

    @staticmethod
    def from_numpy(array: np.ndarray, affine: Sequence[Sequence[float]], is_label: bool = False) -> "Image":
        """From ``(X, Y, Z)`` or ``(X, Y, Z, C)``."""
        a = np.asarray(array)
        a = a[None] if a.ndim == 3 else np.moveaxis(a, -1, 0)
        return Image(torch.from_numpy(np.ascontiguousarray(a)), affine, is_label)
