"""Regularisers on displacement / velocity fields: scalars to MINIMISE.

Fields are ``(N, 3, X, Y, Z)`` vectors in world mm on a voxel grid; derivatives are taken with
finite differences along the voxel axes and divided by the voxel ``spacing`` (3,) mm, so values
are physical (mm/mm, 1/mm) and do not change with the grid resolution. :func:`diffusion` and
:func:`bending_energy` are squared Frobenius norms of the first / second derivatives, which a
rotation of the grid leaves unchanged, so the spacing is all they need even on oblique or flipped
grids. The Jacobian determinant needs the direction too and takes the grid's affine.
"""
from __future__ import annotations

from typing import Sequence, Union

import torch
from torch import Tensor

from regkit import space

Spacing = Union[Sequence[float], Tensor]


def _check_field(field: Tensor) -> None:
    if field.dim() != 5 or field.shape[1] != 3:
        raise ValueError(f"a field must be (N, 3, X, Y, Z), got {tuple(field.shape)}")


def _spacing_list(spacing: Spacing) -> list:
    values = [float(s) for s in (spacing.tolist() if isinstance(spacing, Tensor) else spacing)]
    if len(values) != 3 or any(s <= 0 for s in values):
        raise ValueError(f"spacing must be 3 positive voxel sizes (mm), got {spacing!r}")
    return values


def _forward_difference(field: Tensor, dim: int, step_mm: float) -> Tensor:
    n = field.shape[dim] - 1
    return (field.narrow(dim, 1, n) - field.narrow(dim, 0, n)) / step_mm


def _central_difference(field: Tensor, dim: int, step_mm: float) -> Tensor:
    """(u[i+1] − u[i−1]) / 2h on the interior (length n − 2 along ``dim``)."""
    n = field.shape[dim] - 2
    return (field.narrow(dim, 2, n) - field.narrow(dim, 0, n)) / (2.0 * step_mm)


def _second_difference(field: Tensor, dim: int, step_mm: float) -> Tensor:
    """(u[i+1] − 2u[i] + u[i−1]) / h² on the interior (length n − 2 along ``dim``)."""
    n = field.shape[dim] - 2
    return (field.narrow(dim, 2, n) - 2.0 * field.narrow(dim, 1, n) + field.narrow(dim, 0, n)) / step_mm**2


def _interior(t: Tensor, skip: Sequence[int]) -> Tensor:
    """Drop the first and last voxel along the spatial dims not in ``skip`` (already cropped)."""
    for dim in (2, 3, 4):
        if dim not in skip:
            t = t.narrow(dim, 1, t.shape[dim] - 2)
    return t


def diffusion(field: Tensor, spacing: Spacing) -> Tensor:
    """Mean over voxels of ``‖∂u/∂x‖²_F = Σ_c Σ_d (∂u_c/∂x_d)²`` (dimensionless).

    Forward differences along each voxel axis d divided by ``spacing[d]`` mm; each term is
    averaged over the voxels where its difference exists. For ``u(x) = A x`` the value is
    ``‖A‖²_F`` exactly (e.g. ``a²`` for ``u_0 = a·x_0``).

    Args:
        field: ``(N, 3, X, Y, Z)`` mm.
        spacing: voxel size (3,) mm along X, Y, Z.
    """
    _check_field(field)
    h = _spacing_list(spacing)
    total = field.new_zeros(())
    for axis in range(3):
        if field.shape[2 + axis] > 1:
            total = total + _forward_difference(field, 2 + axis, h[axis]).square().sum(dim=1).mean()
    return total


def bending_energy(field: Tensor, spacing: Spacing) -> Tensor:
    """Mean over interior voxels of ``Σ_c ‖Hessian(u_c)‖²_F`` (1/mm²):
    ``u_xx² + u_yy² + u_zz² + 2 (u_xy² + u_xz² + u_yz²)`` summed over the 3 components.

    Central second differences (exact for quadratics): ``u_0 = a·x_0²`` gives ``4a²``,
    ``u_0 = b·x_0·x_1`` gives ``2b²``, any affine field gives 0. Needs ≥ 3 voxels per axis.

    Args:
        field: ``(N, 3, X, Y, Z)`` mm.
        spacing: voxel size (3,) mm along X, Y, Z.
    """
    _check_field(field)
    if any(s < 3 for s in field.shape[2:]):
        raise ValueError(f"bending energy needs at least 3 voxels per axis, got {tuple(field.shape[2:])}")
    h = _spacing_list(spacing)
    dims = (2, 3, 4)
    pure = sum(_interior(_second_difference(field, d, h[d - 2]), (d,)).square() for d in dims)
    first = [_central_difference(field, d, h[d - 2]) for d in dims]
    mixed = 0.0
    for a, b in ((0, 1), (0, 2), (1, 2)):
        d_ab = _central_difference(first[a], dims[b], h[b])  # ∂/∂x_b of ∂u/∂x_a
        mixed = mixed + _interior(d_ab, (dims[a], dims[b])).square()
    return (pure + 2.0 * mixed).sum(dim=1).mean()


# ----------------------------------------------------------------------------- Jacobian
def _det3(m: Tensor) -> Tensor:
    """Determinant of 3×3 matrices held in dims 1, 2 of ``m`` ``(N, 3, 3, ...)`` (cofactor
    expansion: a few elementwise ops, much faster than ``torch.linalg.det`` on millions of 3×3s)."""
    m = m.unbind(1)
    m = [row.unbind(1) for row in m]
    return (
        m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
        - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
    )


def jacobian_determinant(displacement: Tensor, affine) -> Tensor:
    """det(I + ∂u/∂x) of ``x → x + u(x)`` in PHYSICAL (world) space, differentiable.

    ``∂u/∂x = (∂u/∂ijk) · A⁻¹`` with ``∂u/∂ijk`` central differences along the voxel axes
    (one-sided at the borders, :func:`torch.gradient`) and ``A`` the 3×3 part of the grid's
    voxel→world affine — so flipped, permuted, anisotropic and oblique grids all give the
    physical answer (for ``u(x) = (M − I) x + t``: det(M) everywhere). Works in the field's
    dtype (float32 while optimising); :func:`regkit.metrics.jacobian_determinant` is the
    float64, no-gradient version for reporting.

    Args:
        displacement: ``(N, 3, X, Y, Z)`` world mm (RAS components), every axis ≥ 2 voxels.
        affine: 4×4 voxel→world of the field's grid (array-like or tensor).
    Returns:
        ``(N, X, Y, Z)``.
    """
    _check_field(displacement)
    if any(s < 2 for s in displacement.shape[2:]):
        raise ValueError(f"the Jacobian needs at least 2 voxels per axis, got {tuple(displacement.shape[2:])}")
    inv = torch.linalg.inv(space.as_affine(affine)[:3, :3])  # ∂ijk/∂x
    inv = inv.to(device=displacement.device, dtype=displacement.dtype)
    per_index = torch.stack(torch.gradient(displacement, dim=(2, 3, 4)), dim=2)  # (N, 3 c, 3 e, X, Y, Z)
    # J[c, d] = δ_cd + Σ_e ∂u_c/∂index_e · (A⁻¹)[e, d]
    jac = torch.einsum("nce...,ed->ncd...", per_index, inv)
    jac = jac + torch.eye(3, dtype=jac.dtype, device=jac.device).reshape(1, 3, 3, 1, 1, 1)
    return _det3(jac)


def folding_penalty(displacement: Tensor, affine, eps: float = 0.01) -> Tensor:
    """Mean over voxels of ``relu(eps − det J)``: 0 where the map keeps orientation with
    det J ≥ ``eps``, growing linearly as a voxel folds (det J ≤ 0). See
    :func:`jacobian_determinant` for the arguments."""
    return torch.relu(eps - jacobian_determinant(displacement, affine)).mean()


# ----------------------------------------------------------------------------- affine
def affine_l2(matrix: Tensor, translation: Tensor, translation_scale_mm: float = 1.0) -> Tensor:
    """Squared distance of an affine ``y = M (x − c) + c + t`` from the identity:
    ``‖M − I‖²_F + ‖t / translation_scale_mm‖²``, averaged over a batch.

    Args:
        matrix: ``(3, 3)`` or ``(N, 3, 3)`` (dimensionless).
        translation: ``(3,)`` or ``(N, 3)`` mm.
        translation_scale_mm: a translation of this many mm costs as much as a unit change of
            one matrix entry.
    """
    eye = torch.eye(3, dtype=matrix.dtype, device=matrix.device)
    m = (matrix - eye).square().sum(dim=(-2, -1))
    t = (translation / translation_scale_mm).square().sum(dim=-1)
    return (m + t).mean()


# ----------------------------------------------------------------------------- by name
REGULARIZERS: dict = {}


def get_regularizer(name: str):
    """The regulariser called ``name``: ``diffusion`` / ``bending`` (``f(field, spacing)``),
    ``folding`` (``f(displacement, affine)``) or ``affine_l2`` (``f(matrix, translation)``).

    Example: ``get_regularizer("bending")(field, (2.0, 2.0, 2.0))``.
    """
    key = name.lower()
    if key not in REGULARIZERS:
        raise ValueError(f"unknown regularizer {name!r}; choose one of {', '.join(sorted(REGULARIZERS))}")
    return REGULARIZERS[key]


REGULARIZERS.update({
    "diffusion": diffusion, "bending": bending_energy, "bending_energy": bending_energy,
    "folding": folding_penalty, "affine_l2": affine_l2,
})
