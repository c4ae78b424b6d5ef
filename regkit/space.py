"""World, voxel and ``grid_sample`` coordinates — the ONLY place they are converted.

Conventions used everywhere in regkit
-------------------------------------
* **Tensors.** A volume is ``(C, X, Y, Z)`` (one image) or ``(N, C, X, Y, Z)`` (a batch), where
  X, Y, Z are the voxel index axes i, j, k of the file (nibabel's order, *not* reversed as in
  SimpleITK's ``GetArrayFromImage``).
* **Affines.** A grid is a 4×4 voxel→world matrix ``A`` (float64) and a spatial shape
  ``(X, Y, Z)``: ``world = A @ [i, j, k, 1]``. World coordinates are **RAS, millimetres**
  (NIfTI/nibabel). ITK files are LPS; the flip happens only in :mod:`regkit.io.geometry`.
* **Points.** Coordinates are tensors ``(..., 3)`` with the last axis (x, y, z) world mm, or
  (i, j, k) voxel indices.
* **Transforms** map FIXED world points to MOVING world points (the "pull" direction that
  resampling needs, as ITK, ANTs and SimpleITK do).
* **grid_sample.** ``torch.nn.functional.grid_sample`` on ``(N, C, X, Y, Z)`` input reads its
  grid's last axis in reversed order — component 0 indexes the LAST spatial axis (Z/k) — and, with
  ``align_corners=True`` (always used here), −1 and +1 are the centres of the first and last
  voxels: ``n = 2 i / (X - 1) - 1``.
"""
from __future__ import annotations

from typing import Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

ArrayLike = Union[Tensor, np.ndarray, Sequence[Sequence[float]]]
Shape = Tuple[int, int, int]

ALIGN_CORNERS = True


def as_affine(affine: ArrayLike) -> Tensor:
    """A 4×4 float64 CPU tensor from any array-like affine."""
    a = torch.as_tensor(np.asarray(affine.detach().cpu() if isinstance(affine, Tensor) else affine, dtype=np.float64))
    if a.shape != (4, 4):
        raise ValueError(f"an affine must be 4x4, got {tuple(a.shape)}")
    return a


def spacing(affine: ArrayLike) -> Tensor:
    """Voxel size along each index axis (mm): column norms of the 3×3 part."""
    return torch.linalg.norm(as_affine(affine)[:3, :3], dim=0)


def voxel_to_normalized_matrix(shape: Sequence[int]) -> Tensor:
    """4×4 map from voxel indices (i, j, k) to grid_sample coordinates (reversed axes)."""
    m = torch.zeros(4, 4, dtype=torch.float64)
    for axis, size in enumerate(shape[-3:]):
        row = 2 - axis  # grid_sample component order is (k, j, i)
        # an axis of size 1 gets scale 2 and its voxel sits at 0 (grid_sample maps any value to
        # its only voxel): the matrix stays invertible and half a voxel is 1, as on other axes'
        # borders, so inside_mask can use |n| <= 1 there
        m[row, axis] = 2.0 / (size - 1) if size > 1 else 2.0
        m[row, 3] = -1.0 if size > 1 else 0.0
    m[3, 3] = 1.0
    return m


def world_to_normalized_matrix(affine: ArrayLike, shape: Sequence[int]) -> Tensor:
    """4×4 map from world mm (RAS) to the grid_sample coordinates of grid (affine, shape)."""
    return voxel_to_normalized_matrix(shape) @ torch.linalg.inv(as_affine(affine))


def apply_matrix(matrix: Tensor, points: Tensor) -> Tensor:
    """Apply a 4×4 (or batched ``(N, 4, 4)``) homogeneous matrix to points ``(..., 3)``.

    With a batched matrix the points must be ``(N, ..., 3)``.
    """
    m = matrix.to(device=points.device, dtype=points.dtype)
    if m.dim() == 2:
        return points @ m[:3, :3].T + m[:3, 3]
    n = m.shape[0]
    flat = points.reshape(n, -1, 3)
    out = flat @ m[:, :3, :3].transpose(1, 2) + m[:, None, :3, 3]
    return out.reshape(points.shape)


def world_to_normalized(points: Tensor, affine: ArrayLike, shape: Sequence[int]) -> Tensor:
    """World mm points ``(..., 3)`` → grid_sample coordinates of grid (affine, shape)."""
    return apply_matrix(world_to_normalized_matrix(affine, shape), points)


def world_to_voxel(points: Tensor, affine: ArrayLike) -> Tensor:
    """World mm points ``(..., 3)`` → continuous voxel indices (i, j, k)."""
    return apply_matrix(torch.linalg.inv(as_affine(affine)), points)


def voxel_to_world(indices: Tensor, affine: ArrayLike) -> Tensor:
    """Continuous voxel indices ``(..., 3)`` → world mm (RAS)."""
    return apply_matrix(as_affine(affine), indices)


def voxel_grid(shape: Sequence[int], device=None, dtype=torch.float32) -> Tensor:
    """Voxel indices of every voxel, ``(X, Y, Z, 3)``."""
    axes = [torch.arange(s, device=device, dtype=dtype) for s in shape[-3:]]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)


def world_grid(affine: ArrayLike, shape: Sequence[int], device=None, dtype=torch.float32) -> Tensor:
    """World mm coordinates of every voxel centre of grid (affine, shape), ``(X, Y, Z, 3)``.

    Computed in float64 on the CPU's matrix, so large offsets do not cost precision.
    """
    return _grid_of_matrix(as_affine(affine), shape, device, dtype)


#: float64 values summed at once by :func:`_grid_of_matrix` (16 MiB): the whole grid in float64 was
#: twice the output's memory again (0.77 GB for a 1 mm body CT)
GRID_CHUNK_VALUES = 2 ** 21


def _grid_of_matrix(m: Tensor, shape: Sequence[int], device, dtype) -> Tensor:
    """``m`` (4×4) applied to every voxel index of ``shape``, ``(X, Y, Z, 3)``: in float64, as the
    sum of one term per axis broadcast over the grid (one pass over the output instead of an
    index grid and a matrix product), a slab of x at a time, each cast to ``dtype`` into the output."""
    m = m.to(device=device, dtype=torch.float64)
    x, y, z = (torch.arange(int(n), device=device, dtype=torch.float64)[:, None] * m[:3, axis]
               for axis, n in enumerate(shape[-3:]))
    xy = (x[:, None, :] + m[:3, 3]) + y[None, :, :]
    if dtype == torch.float64:
        return xy[:, :, None, :] + z[None, None, :, :]
    out = torch.empty((*xy.shape[:2], z.shape[0], 3), device=device, dtype=dtype)
    step = max(1, GRID_CHUNK_VALUES // max(1, xy.shape[1] * z.shape[0] * 3))
    for start in range(0, xy.shape[0], step):
        torch.add(xy[start:start + step, :, None, :], z[None, None, :, :], out=out[start:start + step])
    return out


def normalized_identity(shape: Sequence[int], device=None, dtype=torch.float32) -> Tensor:
    """grid_sample coordinates of every voxel of a grid, ``(X, Y, Z, 3)``: the identity grid."""
    return apply_matrix(voxel_to_normalized_matrix(shape), voxel_grid(shape, device, dtype))


def world_vectors_to_normalized(vectors: Tensor, affine: ArrayLike, shape: Sequence[int], channel_dim: int = -1) -> Tensor:
    """Displacement vectors in world mm → displacements in grid_sample units of (affine, shape).

    Only the linear part applies (vectors, not points). ``channel_dim`` is the axis holding the
    3 components (−1 for ``(..., 3)``; 0 or 1 for ``(3, X, Y, Z)`` / ``(N, 3, X, Y, Z)`` fields).
    """
    lin = world_to_normalized_matrix(affine, shape)[:3, :3].to(vectors.device, vectors.dtype)
    return _apply_linear(lin, vectors, channel_dim)


def normalized_vectors_to_world(vectors: Tensor, affine: ArrayLike, shape: Sequence[int], channel_dim: int = -1) -> Tensor:
    """Inverse of :func:`world_vectors_to_normalized`."""
    m = world_to_normalized_matrix(affine, shape)[:3, :3]
    lin = torch.linalg.inv(m).to(vectors.device, vectors.dtype)
    return _apply_linear(lin, vectors, channel_dim)


def _apply_linear(lin: Tensor, vectors: Tensor, channel_dim: int) -> Tensor:
    if channel_dim == -1 or channel_dim == vectors.dim() - 1:
        return vectors @ lin.T
    v = vectors.movedim(channel_dim, -1) @ lin.T
    return v.movedim(-1, channel_dim)


def sample(volume: Tensor, grid: Tensor, mode: str = "bilinear", padding_mode: str = "zeros") -> Tensor:
    """``grid_sample`` with regkit's conventions.

    Args:
        volume: ``(N, C, X, Y, Z)``.
        grid: ``(N, X', Y', Z', 3)`` grid_sample coordinates (from :func:`world_to_normalized`).
        mode: ``"bilinear"`` (trilinear in 3D) or ``"nearest"``.
        padding_mode: ``"zeros"``, ``"border"`` or ``"reflection"``.
    Returns:
        ``(N, C, X', Y', Z')``.
    """
    grid = grid.to(volume.dtype)
    chunks = _cpu_chunks(volume, grid)
    if chunks > 1:
        return _sample_in_chunks(volume, grid, chunks, mode, padding_mode)
    return torch.nn.functional.grid_sample(volume, grid, mode=mode, padding_mode=padding_mode, align_corners=ALIGN_CORNERS)


MIN_POINTS_PER_CHUNK = 8192
"""Fewest points per thread for which :func:`sample` splits a CPU ``grid_sample`` (below it the
split costs more than it saves)."""


def _cpu_chunks(volume: Tensor, grid: Tensor) -> int:
    """How many batch items :func:`sample` splits one CPU 3-D ``grid_sample`` into: PyTorch's CPU
    kernel runs each batch item on ONE thread, so a single volume (N = 1) uses one core however many
    torch has. Split into up to ``torch.get_num_threads()`` parts of at least
    :data:`MIN_POINTS_PER_CHUNK` points; 1 (no split) on other devices, for batches, and for an
    input that needs a gradient and is large (its gradient would be held once per part)."""
    if volume.device.type != "cpu" or volume.dim() != 5 or volume.shape[0] != 1 or grid.shape[0] != 1:
        return 1
    if volume.requires_grad and volume.numel() > (1 << 21):
        return 1
    points = grid.numel() // 3
    return max(1, min(torch.get_num_threads(), points // MIN_POINTS_PER_CHUNK))


def _sample_in_chunks(volume: Tensor, grid: Tensor, chunks: int, mode: str, padding_mode: str) -> Tensor:
    """``grid_sample`` of one volume at ``grid``'s points, the points split into ``chunks`` batch
    items of the same (expanded, not copied) volume so that each runs on its own thread. Every point
    is computed as in one call (same values); the gradient flows to both the points and the volume."""
    n = grid.numel() // 3
    per = -(-n // chunks)
    points = grid.reshape(n, 3)
    if per * chunks != n:
        points = torch.cat([points, points.new_zeros(per * chunks - n, 3)])
    out = torch.nn.functional.grid_sample(volume.expand(chunks, *volume.shape[1:]), points.reshape(chunks, per, 1, 1, 3),
                                          mode=mode, padding_mode=padding_mode, align_corners=ALIGN_CORNERS)
    c = volume.shape[1]
    out = out.reshape(chunks, c, per).movedim(1, 0).reshape(c, chunks * per)[:, :n]
    return out.reshape(1, c, *grid.shape[1:-1])


def inside_mask(grid: Tensor, shape: Sequence[int]) -> Tensor:
    """Whether grid_sample coordinates ``(..., 3)`` lie within the voxel extent of a grid of
    ``shape`` (voxel centres ± half a voxel): ``|n| <= 1 + 1/(size - 1)`` on every axis, and
    ``|n| <= 1`` on an axis of size 1 (see :func:`voxel_to_normalized_matrix`)."""
    sizes = torch.tensor([float(s) for s in shape[-3:]][::-1], device=grid.device, dtype=grid.dtype)
    limit = torch.where(sizes > 1.0, 1.0 + 1.0 / torch.clamp(sizes - 1.0, min=1.0), torch.ones_like(sizes))
    return (grid.abs() <= limit).all(dim=-1)


def slabs(affine: ArrayLike, shape: Sequence[int], max_voxels: int):
    """Split grid (affine, shape) along its first axis into sub-grids of at most ``max_voxels``.

    Yields ``(start, stop, sub_affine)``: voxels ``start:stop`` of axis 0, and the voxel→world
    affine of that slab (its index 0 is the grid's index ``start``). Lets large grids be mapped
    and resampled a slab at a time when no gradient is needed.
    """
    a = as_affine(affine)
    x, rest = int(shape[-3]), int(shape[-2]) * int(shape[-1])
    step = max(1, int(max_voxels) // max(1, rest))
    for start in range(0, x, step):
        sub = a.clone()
        sub[:3, 3] = a[:3, 3] + a[:3, 0] * start
        yield start, min(x, start + step), sub
