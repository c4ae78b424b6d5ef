"""Image similarity losses: scalars to MINIMISE, on ``(N, C, X, Y, Z)`` tensors.

Every function here is differentiable, runs on whatever device its inputs are on and has no
Python loop over voxels or channels. ``fixed`` and ``warped`` must have the same shape; ``mask``
(optional) is a non-negative weight per voxel, ``(N, 1 | C, X, Y, Z)`` or broadcastable to the
images, and turns every mean over voxels into a weighted mean.

Why not MONAI's losses (measured by ``benchmarks/bench_losses.py``, 2 threads, 100×120×100)
----------------------------------------------------------------------------------------------
* ``import monai`` alone costs ~3.5 s here, more than the optimiser's whole time budget for a
  2 mm brain; nothing in this module imports MONAI.
* LNCC: MONAI's ``LocalNormalizedCrossCorrelationLoss`` (rectangular kernel) runs one 3-D
  ``conv1d``-per-axis per moment and lets autograd go back through all five moments; the
  separable box sum below (shifted-slice additions with a doubling scheme and a hand-written
  adjoint for the backward pass) is several times faster per forward+backward — see the
  benchmark for the numbers on your machine.
* MI: see :func:`mutual_information`.
"""
from __future__ import annotations

import functools
from typing import Callable, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

Window = Union[int, Sequence[int]]


# ----------------------------------------------------------------------------- helpers
def _check_pair(fixed: Tensor, warped: Tensor) -> None:
    if fixed.dim() != 5 or fixed.shape != warped.shape:
        raise ValueError(
            f"fixed and warped must both be (N, C, X, Y, Z) with the same shape, got "
            f"{tuple(fixed.shape)} and {tuple(warped.shape)}"
        )


def weighted_mean(values: Tensor, mask: Optional[Tensor] = None) -> Tensor:
    """Mean of ``values`` (all elements), weighted by ``mask`` broadcast to ``values``' shape."""
    if mask is None:
        return values.mean()
    weights = mask.to(values.dtype).expand_as(values)
    return (values * weights).sum() / weights.sum().clamp_min(torch.finfo(values.dtype).tiny)


def _window_3d(window: Window, shape: Sequence[int]) -> Tuple[int, int, int]:
    """Window size per spatial axis, at least 1 and at most the axis' size."""
    sizes = (window,) * 3 if isinstance(window, int) else tuple(int(w) for w in window)
    if len(sizes) != 3 or any(w < 1 for w in sizes):
        raise ValueError(f"window must be a positive int or 3 positive ints, got {window!r}")
    return tuple(min(w, s) for w, s in zip(sizes, shape[-3:]))  # type: ignore[return-value]


def _box_sum_axis(x: Tensor, dim: int, k: int) -> Tensor:
    """Sums of ``k`` consecutive elements along ``dim`` (valid part: length n − k + 1).

    Built by doubling (sums of 1, 2, 4, … elements) so a window of k costs about
    log2(k) + popcount(k) − 1 tensor additions instead of k − 1; each is a shifted-view add.
    """
    if k == 1:
        return x
    n_out = x.shape[dim] - k + 1
    result: Optional[Tensor] = None
    offset = 0  # where the next block of the result starts
    block, size = x, 1  # block[i] = sum of x[i : i + size]
    remaining = k
    while True:
        if remaining & 1:
            piece = block.narrow(dim, offset, n_out)
            result = piece if result is None else result + piece
            offset += size
        remaining >>= 1
        if not remaining:
            break
        n_next = block.shape[dim] - size
        block = block.narrow(dim, 0, n_next) + block.narrow(dim, size, n_next)
        size *= 2
    assert result is not None
    return result


def _box_sum_valid(x: Tensor, window: Tuple[int, int, int]) -> Tensor:
    for axis, k in enumerate(window):
        x = _box_sum_axis(x, 2 + axis, k)
    return x


class _BoxSum(torch.autograd.Function):
    """Separable box sum over the last 3 axes, "valid" part only.

    The box sum is linear; its adjoint is the "full" box sum (zero-pad by k − 1 each side, then
    the valid sum), which is what the backward pass applies — cheaper than letting autograd
    scatter the gradient of every shifted view back into a full-size zero tensor.
    """

    @staticmethod
    def forward(ctx, x: Tensor, window: Tuple[int, int, int]) -> Tensor:  # type: ignore[override]
        ctx.window = window
        return _box_sum_valid(x, window)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        kx, ky, kz = ctx.window
        padded = F.pad(grad, (kz - 1, kz - 1, ky - 1, ky - 1, kx - 1, kx - 1))
        return _box_sum_valid(padded, ctx.window), None


def box_sum(x: Tensor, window: Window) -> Tensor:
    """Sum of every ``window`` box of ``x`` ``(N, C, X, Y, Z)`` (voxels), valid part only:
    output ``(N, C, X − kx + 1, Y − ky + 1, Z − kz + 1)``; entry ``[i, j, k]`` is the sum over the
    box whose first corner is voxel ``(i, j, k)``. Differentiable."""
    return _BoxSum.apply(x, _window_3d(window, x.shape))


def _crop_to_window_centres(mask: Tensor, window: Tuple[int, int, int]) -> Tensor:
    """The part of a full-size ``mask`` at the centres of the valid windows."""
    for axis, k in enumerate(window):
        dim = 2 + axis
        if mask.shape[dim] > 1:
            mask = mask.narrow(dim, (k - 1) // 2, mask.shape[dim] - k + 1)
    return mask


def _standardize(x: Tensor) -> Tensor:
    """(x − mean) / std per (N, C), with the statistics treated as constants.

    LNCC does not change under a shift or positive scaling of either image, so this changes
    nothing but float32 round-off (local variances of CT in HU lose digits otherwise) and makes
    ``eps`` independent of the intensity unit.
    """
    with torch.no_grad():
        mean = x.mean(dim=(2, 3, 4), keepdim=True)
        std = x.std(dim=(2, 3, 4), keepdim=True).clamp_min(torch.finfo(x.dtype).eps)
    return (x - mean) / std


# ----------------------------------------------------------------------------- LNCC
def local_ncc_squared(fixed: Tensor, warped: Tensor, window: Window = 5, eps: float = 1e-5) -> Tensor:
    """Squared local normalised cross-correlation at every window position.

    ``cc = cov(f, w)² / (var(f) var(w) + eps)`` over each ``window`` box (voxels), after each
    image is standardised globally (so ``eps`` is in units of the global variance²). Only boxes
    that lie fully inside the image are used ("valid"), so no padding biases the border.

    Returns ``(N, C, X − kx + 1, Y − ky + 1, Z − kz + 1)`` values in [0, 1] (up to ``eps``).
    """
    _check_pair(fixed, warped)
    win = _window_3d(window, fixed.shape)
    f, w = _standardize(fixed), _standardize(warped)
    c = f.shape[1]
    # the five local moments in one box-sum call: [f, w, f², w², f·w] stacked as channels
    sums = box_sum(torch.cat([f, w, f * f, w * w, f * w], dim=1), win)
    means = sums * (1.0 / (win[0] * win[1] * win[2]))
    mf, mw, mff, mww, mfw = means.split(c, dim=1)
    cov = mfw - mf * mw
    var_f = (mff - mf * mf).clamp_min(0.0)
    var_w = (mww - mw * mw).clamp_min(0.0)
    return cov * cov / (var_f * var_w + eps)


def lncc(fixed: Tensor, warped: Tensor, window: Window = 5, mask: Optional[Tensor] = None, eps: float = 1e-5) -> Tensor:
    """Local normalised cross-correlation loss: ``1 − mean(local NCC²)``, in [0, 1], 0 = perfect.

    The SQUARED local NCC (as VoxelMorph, ANTs' CC and MONAI, which returns ``−mean(NCC²)``) is
    1 wherever the images are locally affinely related — also with inverted contrast — and
    ≈ 1 / (window voxels) for independent noise.

    Args:
        fixed, warped: ``(N, C, X, Y, Z)``.
        window: box side in voxels, an int or one per axis (X, Y, Z); clipped to the image size.
        mask: optional voxel weights, full image size; the values at the window centres weight
            the local NCC² (boxes are only the ones fully inside the image).
        eps: added to the product of local variances (images are standardised first, so this is
            relative to the global variance²); flat windows count as NCC² = 0.
    """
    cc = local_ncc_squared(fixed, warped, window, eps)
    if mask is not None:
        mask = _crop_to_window_centres(mask, _window_3d(window, fixed.shape))
    return 1.0 - weighted_mean(cc, mask)


# ----------------------------------------------------------------------------- MSE
def mse(fixed: Tensor, warped: Tensor, mask: Optional[Tensor] = None) -> Tensor:
    """Mean squared intensity difference (intensity units²), weighted by ``mask`` if given."""
    _check_pair(fixed, warped)
    return weighted_mean((fixed - warped).square(), mask)


# ----------------------------------------------------------------------------- by name
SIMILARITIES: dict = {}


def get_similarity(name: str, **kwargs) -> Callable[..., Tensor]:
    """The loss called ``name`` (``lncc``, ``mse``, ``mi``, ``mind``) with ``kwargs`` bound,
    as ``f(fixed, warped, mask=None) -> scalar``. Example: ``get_similarity("lncc", window=7)``."""
    key = name.lower()
    if key not in SIMILARITIES:
        raise ValueError(f"unknown similarity {name!r}; choose one of {', '.join(sorted(SIMILARITIES))}")
    return functools.partial(SIMILARITIES[key], **kwargs)


SIMILARITIES.update({"lncc": lncc, "mse": mse})
