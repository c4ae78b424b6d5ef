"""Regularisers on displacement / velocity fields: scalars to MINIMISE.

Fields are ``(N, 3, X, Y, Z)`` vectors in world mm on a voxel grid; derivatives are taken with
finite differences along the voxel axes and divided by the voxel ``spacing`` (3,) mm, so values
are physical (mm/mm, 1/mm) and do not change with the grid resolution. :func:`diffusion` and
:func:`bending_energy` are squared Frobenius norms of the first / second derivatives, which a
rotation of the grid leaves unchanged, so the spacing is all they need even on oblique or flipped
grids. The Jacobian determinant needs the direction too and takes the grid's affine.

(MONAI's ``DiffusionLoss`` / ``BendingEnergyLoss`` work in voxel units, not physical ones on
anisotropic grids: benchmarks/README.md, "Why not MONAI's".)
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


class _ForwardDifferenceVoxels(torch.autograd.Function):
    """``u[i+1] − u[i]`` along ``dim`` (length n − 1), with its adjoint written out: the backward
    of a difference of slices would fill a full-size zero tensor per slice."""

    @staticmethod
    def forward(ctx, u: Tensor, dim: int) -> Tensor:  # type: ignore[override]
        n = u.shape[dim] - 1
        ctx.dim = dim
        return u.narrow(dim, 1, n) - u.narrow(dim, 0, n)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        dim, m = ctx.dim, grad.shape[ctx.dim]  # m = n − 1 differences of n voxels
        shape = list(grad.shape)
        shape[dim] = m + 1
        out = grad.new_empty(shape)
        # voxel j gets +grad[j − 1] (as the "+1" end) and −grad[j] (as the "0" end)
        torch.neg(grad.narrow(dim, 0, 1), out=out.narrow(dim, 0, 1))
        if m > 1:
            torch.sub(grad.narrow(dim, 0, m - 1), grad.narrow(dim, 1, m - 1), out=out.narrow(dim, 1, m - 1))
        out.narrow(dim, m, 1).copy_(grad.narrow(dim, m - 1, 1))
        return out, None


def _forward_difference(field: Tensor, dim: int, step_mm: float) -> Tensor:
    """(u[i+1] − u[i]) / h along ``dim`` (length n − 1), physical units."""
    return _ForwardDifferenceVoxels.apply(field, dim) * (1.0 / step_mm)


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
    """Mean over voxels of ``Σ_c ‖Hessian(u_c)‖²_F`` (1/mm²):
    ``u_xx² + u_yy² + u_zz² + 2 (u_xy² + u_xz² + u_yz²)`` summed over the 3 components.

    Each second derivative is a difference of forward differences, ``Δ_a Δ_b u / (h_a h_b)``
    (``[1, −2, 1]`` for a = b), averaged over the voxels where it exists; exact for quadratics:
    ``u_0 = a·x_0²`` gives ``4a²``, ``u_0 = b·x_0·x_1`` gives ``2b²``, any affine field gives 0.
    Axes too short for a difference (< 3 voxels for u_aa, < 2 for u_ab) contribute nothing,
    so coarse control grids work.

    Args:
        field: ``(N, 3, X, Y, Z)`` mm.
        spacing: voxel size (3,) mm along X, Y, Z.
    """
    _check_field(field)
    h = _spacing_list(spacing)
    size = field.shape[2:]
    first = [_forward_difference(field, 2 + a, h[a]) if size[a] > 1 else None for a in range(3)]
    total = field.new_zeros(())
    for a in range(3):
        for b in range(a, 3):
            if first[a] is None or first[b] is None or (a == b and size[a] < 3):
                continue
            second = _forward_difference(first[a], 2 + b, h[b])
            total = total + (1.0 if a == b else 2.0) * second.square().sum(dim=1).mean()
    return total


# ----------------------------------------------------------------------------- Jacobian
class _CentralDifference(torch.autograd.Function):
    """Derivative along one axis in voxel units as :func:`torch.gradient` (``edge_order=1``):
    ``(u[i+1] − u[i−1]) / 2`` inside, one-sided at the two ends; needs ≥ 2 voxels.

    Written out with its adjoint because the backward of ``torch.gradient`` (and of slicing in
    general) fills a full-size zero tensor per slice, which made it most of the folding
    penalty's time.
    """

    @staticmethod
    def forward(ctx, u: Tensor, dim: int) -> Tensor:  # type: ignore[override]
        n = u.shape[dim]
        out = torch.empty_like(u)
        if n > 2:
            inner = out.narrow(dim, 1, n - 2)
            torch.sub(u.narrow(dim, 2, n - 2), u.narrow(dim, 0, n - 2), out=inner)
            inner.mul_(0.5)
        torch.sub(u.narrow(dim, 1, 1), u.narrow(dim, 0, 1), out=out.narrow(dim, 0, 1))
        torch.sub(u.narrow(dim, n - 1, 1), u.narrow(dim, n - 2, 1), out=out.narrow(dim, n - 1, 1))
        ctx.dim = dim
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        dim = ctx.dim
        n = grad.shape[dim]
        h = grad.clone()  # the weight of each output: 1/2 inside, 1 at the ends
        if n > 2:
            h.narrow(dim, 1, n - 2).mul_(0.5)
        # output i adds +h[i] to u[i+1] (u[n−1] for the last) and −h[i] to u[i−1] (u[0] for the first)
        out = torch.empty_like(grad)
        out.narrow(dim, 1, n - 1).copy_(h.narrow(dim, 0, n - 1))
        out.narrow(dim, 0, 1).copy_(h.narrow(dim, 0, 1)).neg_()
        out.narrow(dim, 0, n - 1).sub_(h.narrow(dim, 1, n - 1))
        out.narrow(dim, n - 1, 1).add_(h.narrow(dim, n - 1, 1))
        return out, None


def _det3(m: Sequence[Sequence[Tensor]]) -> Tensor:
    """Determinant of a 3×3 matrix of equally shaped tensors ``m[row][col]`` (cofactor
    expansion: a few elementwise ops, much faster than ``torch.linalg.det`` on millions of 3×3s)."""
    return (
        m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
        - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
    )


def jacobian_determinant(displacement: Tensor, affine) -> Tensor:
    """det(I + ∂u/∂x) of ``x → x + u(x)`` in PHYSICAL (world) space, differentiable.

    ``∂u/∂x = (∂u/∂ijk) · A⁻¹`` with ``∂u/∂ijk`` central differences along the voxel axes
    (one-sided at the borders, as :func:`torch.gradient`) and ``A`` the 3×3 part of the grid's
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
    inv = torch.linalg.inv(space.as_affine(affine)[:3, :3]).tolist()  # ∂ijk/∂x
    # per_index[e][c] = ∂u_c/∂index_e, (N, X, Y, Z); unbind (not indexing) keeps the backward to
    # one stack per axis instead of a full-size zero fill per component
    per_index = [_CentralDifference.apply(displacement, dim).unbind(1) for dim in (2, 3, 4)]
    # J[c][d] = δ_cd + Σ_e ∂u_c/∂index_e · (A⁻¹)[e][d]; zero entries of A⁻¹ (axis-aligned grids)
    # are skipped. Elementwise terms, not a batched matmul: einsum here was ~10x slower on CPU.
    jac = []
    for c in range(3):
        row = []
        for d in range(3):
            entry = 1.0 if c == d else 0.0
            for e in range(3):
                if inv[e][d] != 0.0:
                    entry = per_index[e][c] * inv[e][d] + entry
            row.append(entry)  # a tensor: every column of an invertible A⁻¹ has a non-zero
        jac.append(row)
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
