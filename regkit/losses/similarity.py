"""Image similarity losses: scalars to MINIMISE, on ``(N, C, X, Y, Z)`` tensors.

Every function here is differentiable, runs on whatever device its inputs are on and has no
Python loop over voxels or channels. ``fixed`` and ``warped`` must have the same shape; ``mask``
(optional) is a non-negative weight per voxel, ``(N, 1 | C, X, Y, Z)`` or broadcastable to the
images, and turns every mean over voxels into a weighted mean.

LNCC's box sums are shifted-view additions with a doubling scheme (log2(k) adds per axis), its
backward pass is written by hand and the fixed image's moments are reused between calls
(:func:`local_ncc_squared`); only windows inside the image count (no zero padding). MI bins the
fixed image (as ITK's Mattes MI) and scatter-adds the warped image's 4 B-spline taps. Nothing here
imports MONAI (its losses against these: benchmarks/README.md, "Why not MONAI's").
"""
from __future__ import annotations

import inspect
import weakref
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

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


def _at_least_float32(x: Tensor) -> Tensor:
    """float16 / bfloat16 images (e.g. under autocast) as float32: local variances and histogram
    sums lose too many digits in half precision. Gradients flow back through the cast."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


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


def _box_sum_adjoint(grad: Tensor, window: Tuple[int, int, int]) -> Tensor:
    """Adjoint of :func:`_box_sum_valid`: the "full" box sum (zero-pad by k − 1 each side, then
    the valid sum), i.e. each voxel gets the sum of ``grad`` over the windows that contain it."""
    kx, ky, kz = window
    return _box_sum_valid(F.pad(grad, (kz - 1, kz - 1, ky - 1, ky - 1, kx - 1, kx - 1)), window)


class _BoxSum(torch.autograd.Function):
    """Separable box sum over the last 3 axes, "valid" part only.

    The box sum is linear; the backward pass applies its adjoint directly, which is cheaper than
    letting autograd scatter the gradient of every shifted view into a full-size zero tensor.
    """

    @staticmethod
    def forward(ctx, x: Tensor, window: Tuple[int, int, int]) -> Tensor:  # type: ignore[override]
        ctx.window = window
        return _box_sum_valid(x, window)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        return _box_sum_adjoint(grad, ctx.window), None


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
def _box_means(products: Sequence[Tuple[Tensor, Optional[Tensor]]], window: Tuple[int, int, int]) -> List[Tensor]:
    """Local means over ``window`` of ``a · b`` (or ``a`` when b is None) for each ``(a, b)``:
    one valid box sum over all of them stacked as channels."""
    first = products[0][0]
    c = first.shape[1]
    stacked = first.new_empty(first.shape[0], len(products) * c, *first.shape[2:])
    for slot, (a, b) in zip(stacked.split(c, dim=1), products):
        if b is None:
            slot.copy_(a)
        else:
            torch.mul(a, b, out=slot)
    return list(_box_sum_valid(stacked, window).mul_(1.0 / (window[0] * window[1] * window[2])).split(c, dim=1))


def _mean_and_variance(f: Tensor, window: Tuple[int, int, int]) -> Tuple[Tensor, Tensor]:
    mean, mean_sq = _box_means([(f, None), (f, f)], window)
    return mean, (mean_sq - mean * mean).clamp_min_(0.0)


class _LocalNCCSquared(torch.autograd.Function):
    """Local NCC² map with a hand-written backward pass (see :func:`local_ncc_squared`).

    Forward: the local means of ``[f, w, f², w², f·w]`` in one box sum (only ``[w, w², f·w]``
    when the fixed image's local mean and variance are given). Backward: the chain rule through
    the means gives, per window, the derivatives with respect to ``mean(w)``, ``mean(w²)`` and
    ``mean(f·w)``; one adjoint box sum of those 3 maps (5 with a gradient for ``fixed`` too)
    spreads them back to the voxels. Autograd would instead push gradients through all 5 moments
    and ~20 intermediate maps (measured: ~35% more CPU for forward + backward).
    """

    @staticmethod
    def forward(ctx, f: Tensor, w: Tensor, window: Tuple[int, int, int], eps: float,  # type: ignore[override]
                mean_f: Optional[Tensor] = None, var_f: Optional[Tensor] = None) -> Tensor:
        if mean_f is None or var_f is None:
            mean_f, mean_w, mean_ff, mean_ww, mean_fw = _box_means([(f, None), (w, None), (f, f), (w, w), (f, w)], window)
            var_f = torch.addcmul(mean_ff, mean_f, mean_f, value=-1.0).clamp_min_(0.0)
        else:
            mean_w, mean_ww, mean_fw = _box_means([(w, None), (w, w), (f, w)], window)
        # fused multiply-adds: each line makes one map (this runs every optimiser iteration)
        cov = torch.addcmul(mean_fw, mean_f, mean_w, value=-1.0)
        var_w = torch.addcmul(mean_ww, mean_w, mean_w, value=-1.0).clamp_min_(0.0)
        denom = torch.addcmul(cov.new_full((), eps), var_f, var_w)
        cc = cov.square().div_(denom)
        ctx.window = window
        ctx.save_for_backward(f, w, mean_f, mean_w, var_f, var_w, cov, denom, cc)
        return cc

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        f, w, mean_f, mean_w, var_f, var_w, cov, denom, cc = ctx.saved_tensors
        need_f, need_w = ctx.needs_input_grad[:2]
        window = ctx.window
        inv_n = 1.0 / (window[0] * window[1] * window[2])  # d mean / d voxel, folded in here
        r = grad / denom
        d_fw = (r * cov).mul_(2.0 * inv_n)  # ∂L/∂mean(f·w) / n
        maps = [d_fw]
        if need_w:
            d_ww = (r * cc).mul_(var_f).mul_(-inv_n)  # ∂L/∂mean(w²) / n
            maps += [d_ww, torch.addcmul(mean_f * d_fw, mean_w, d_ww, value=2.0).neg_()]  # ..., ∂L/∂mean(w) / n
        if need_f:
            d_ff = (r * cc).mul_(var_w).mul_(-inv_n)
            maps += [d_ff, torch.addcmul(mean_w * d_fw, mean_f, d_ff, value=2.0).neg_()]
        spread = _box_sum_adjoint(torch.cat(maps, dim=1), window)
        parts = spread.split(f.shape[1], dim=1)
        grad_f = grad_w = None
        if need_w:
            grad_w = torch.addcmul(parts[2], f, parts[0]).addcmul_(w, parts[1], value=2.0)
        if need_f:
            k = 3 if need_w else 1
            grad_f = torch.addcmul(parts[k + 1], w, parts[0]).addcmul_(f, parts[k], value=2.0)
        return grad_f, grad_w, None, None, None, None


# per loss name: (weak reference to the fixed tensor, its version counter, settings, value)
_last_fixed: dict = {}


def _remembered_for_fixed(name: str, fixed: Tensor, settings: tuple, compute: Callable[[], Any]) -> Any:
    """``compute()``, reused while the SAME fixed tensor object, unchanged (same version counter),
    comes back with the same ``settings`` — as in an optimiser's iterations. One entry per
    ``name``, so at most one fixed image's results are held. Only for a fixed image that needs
    no gradient."""
    entry = _last_fixed.get(name)
    if entry is not None and entry[0]() is fixed and entry[1] == fixed._version and entry[2] == settings:
        return entry[3]
    with torch.no_grad():
        value = compute()
    _last_fixed[name] = (weakref.ref(fixed), fixed._version, settings, value)
    return value


def _fixed_statistics(fixed: Tensor, window: Tuple[int, int, int]) -> Tuple[Tensor, Tensor, Tensor]:
    """The standardised fixed image and its local mean and variance (saves 2 of the 5 local
    moments on every call after the first with this fixed tensor)."""

    def compute() -> Tuple[Tensor, Tensor, Tensor]:
        f = _standardize(fixed)
        return (f, *_mean_and_variance(f, window))

    return _remembered_for_fixed("lncc", fixed, window, compute)


def local_ncc_squared(fixed: Tensor, warped: Tensor, window: Window = 5, eps: float = 1e-5) -> Tensor:
    """Squared local normalised cross-correlation at every window position.

    ``cc = cov(f, w)² / (var(f) var(w) + eps)`` over each ``window`` box (voxels), after each
    image is standardised globally (so ``eps`` is in units of the global variance²). Only boxes
    that lie fully inside the image are used ("valid"), so no padding biases the border.
    Differentiable in both images (hand-written backward, see :class:`_LocalNCCSquared`). When
    ``fixed`` needs no gradient, its local statistics are computed once per fixed tensor and
    reused on the next calls (see :func:`_fixed_statistics`).

    Returns ``(N, C, X − kx + 1, Y − ky + 1, Z − kz + 1)`` values in [0, 1] (up to ``eps``).
    """
    _check_pair(fixed, warped)
    win = _window_3d(window, fixed.shape)
    fixed, warped = _at_least_float32(fixed), _at_least_float32(warped)
    if fixed.requires_grad:
        return _LocalNCCSquared.apply(_standardize(fixed), _standardize(warped), win, float(eps))
    f, mean_f, var_f = _fixed_statistics(fixed, win)
    return _LocalNCCSquared.apply(f, _standardize(warped), win, float(eps), mean_f, var_f)


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


# ----------------------------------------------------------------------------- MI
def _as_rows(x: Tensor) -> Tensor:
    """``(N, C, X, Y, Z)`` → ``(N·C, X·Y·Z)``: one histogram per image channel."""
    return x.reshape(x.shape[0] * x.shape[1], -1)


def _unit_range(x: Tensor) -> Tensor:
    """Rows of ``x`` mapped linearly to [0, 1] by their min and max (treated as constants)."""
    with torch.no_grad():
        low = x.amin(dim=1, keepdim=True)
        span = (x.amax(dim=1, keepdim=True) - low).clamp_min(torch.finfo(x.dtype).tiny)
    return (x - low) / span


def _bspline_weights(frac: Tensor, order: int) -> List[Tensor]:
    """Weights of the ``order + 1`` taps (order 1: linear, 3: cubic B-spline) at ``frac`` ∈ [0, 1]."""
    if order == 1:
        return [1.0 - frac, frac]
    rest = 1.0 - frac
    frac2 = frac * frac
    return [
        rest * rest * rest * (1.0 / 6.0),
        (frac2 * (3.0 * frac - 6.0) + 4.0) * (1.0 / 6.0),
        (frac * (frac * (3.0 - 3.0 * frac) + 3.0) + 1.0) * (1.0 / 6.0),
        frac2 * frac * (1.0 / 6.0),
    ]


def _bspline_derivatives(frac: Tensor, order: int) -> List[Tensor]:
    """d weight / d frac of the taps of :func:`_bspline_weights`."""
    if order == 1:
        return [torch.full_like(frac, -1.0), torch.ones_like(frac)]
    rest = 1.0 - frac
    frac2 = frac * frac
    return [-0.5 * rest * rest, frac * (1.5 * frac - 2.0), frac * (1.0 - 1.5 * frac) + 0.5, 0.5 * frac2]


class _ParzenJointHistogram(torch.autograd.Function):
    """Un-normalised joint histogram ``(rows, bins²)``: each voxel adds ``weight ×`` the B-spline
    window of its ``position`` (continuous warped-bin coordinate) to the row of its fixed bin.

    Hand-written backward: ``∂/∂position = weight · Σ_taps grad[bin of tap] · window'(frac)`` —
    4 gathers and 4 small polynomials, instead of autograd's way back through the stacked
    weights, the masking and the scatter.
    """

    @staticmethod
    def forward(ctx, position: Tensor, fixed_bin: Tensor, weight: Optional[Tensor], bins: int, order: int) -> Tensor:  # type: ignore[override]
        half = (order - 1) // 2
        # the last position has frac = 1 on the previous cell, so no tap falls past the last bin
        cell = position.floor().clamp_(max=bins - 2 - half)
        frac = position - cell
        # flat index of (fixed bin, first warped bin); tap t adds at index + t, done by scattering
        # into the histogram viewed from column t on (no index + t tensors)
        index = fixed_bin * bins + (cell.long() - half)
        hist = position.new_zeros(position.shape[0], bins * bins)
        for tap, w in enumerate(_bspline_weights(frac, order)):  # the 2 or 4 taps, not voxels
            hist[:, tap:].scatter_add_(1, index, w if weight is None else w * weight)
        ctx.order = order
        ctx.save_for_backward(index, frac, weight)
        return hist

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        index, frac, weight = ctx.saved_tensors
        grad_position = None
        for tap, dw in enumerate(_bspline_derivatives(frac, ctx.order)):
            term = grad[:, tap:].gather(1, index) * dw
            grad_position = term if grad_position is None else grad_position + term
        if weight is not None:
            grad_position = grad_position * weight
        return grad_position, None, None, None, None


_KERNEL_ORDER = {"bspline": 3, "linear": 1}


def joint_histogram(fixed: Tensor, warped: Tensor, bins: int = 32, mask: Optional[Tensor] = None, kernel: str = "bspline") -> Tensor:
    """Parzen-window joint histogram, ``(N·C, bins, bins)`` normalised to sum 1 per row.

    Rows index the FIXED bin, columns the WARPED bin. As in ITK's Mattes mutual information, the
    fixed image is binned with a zero-order (nearest-bin) window and the warped image with a
    B-spline window (``"bspline"``: cubic, the smooth default; ``"linear"``: triangular), so the
    histogram is differentiable in ``warped`` (``fixed`` gets no gradient). Each image channel
    is mapped to the bins by its own min and max (held constant for the gradient); a cubic
    window keeps one bin of margin at each end so that it never falls off the histogram.
    """
    _check_pair(fixed, warped)
    if kernel not in _KERNEL_ORDER:
        raise ValueError(f"kernel must be one of {sorted(_KERNEL_ORDER)}, got {kernel!r}")
    order = _KERNEL_ORDER[kernel]
    if bins < order + 1:
        raise ValueError(f"{kernel} mutual information needs at least {order + 1} bins, got {bins}")
    fixed, warped = _at_least_float32(fixed), _at_least_float32(warped)
    rows = fixed.shape[0] * fixed.shape[1]
    fixed_bin = (_unit_range(_as_rows(fixed.detach())) * (bins - 1)).round().long()
    margin = (order - 1) // 2
    position = margin + _unit_range(_as_rows(warped)) * (bins - 1 - 2 * margin)
    weight = None if mask is None else _as_rows(mask.detach().to(warped.dtype).expand_as(warped))
    hist = _ParzenJointHistogram.apply(position, fixed_bin, weight, bins, order)
    hist = hist / hist.sum(dim=1, keepdim=True).clamp_min(torch.finfo(hist.dtype).tiny)
    return hist.reshape(rows, bins, bins)


def _entropy(p: Tensor, dims: Tuple[int, ...]) -> Tensor:
    """Shannon entropy (nats) over ``dims``; empty bins contribute 0 (and a finite gradient)."""
    return -(p * p.clamp_min(1e-12).log()).sum(dim=dims)


def mutual_information(
    fixed: Tensor,
    warped: Tensor,
    bins: int = 32,
    mask: Optional[Tensor] = None,
    kernel: str = "bspline",
    normalized: bool = False,
) -> Tensor:
    """Negative mutual information (nats), for images of different contrast (CT↔MRI, T1↔T2).

    ``MI = H(F) + H(W) − H(F, W)`` from :func:`joint_histogram` (``bins`` per image, Parzen
    window ``kernel`` on ``warped``, nearest bin on ``fixed``), averaged over batch items and
    channels. Returns ``−MI`` (≤ 0; MI of an image with itself is its entropy), or with
    ``normalized=True`` ``−(H(F) + H(W)) / H(F, W)`` (Studholme's NMI, in [−2, −1]).
    ``mask`` weights each voxel's histogram contribution. Only ``warped`` gets a gradient.

    Why not MONAI's ``GlobalMutualInformationLoss``: ~100x slower here (module docstring).
    """
    p = joint_histogram(fixed, warped, bins, mask, kernel)
    h_fixed = _entropy(p.sum(dim=2), (1,))
    h_warped = _entropy(p.sum(dim=1), (1,))
    h_joint = _entropy(p, (1, 2))
    if normalized:
        return -((h_fixed + h_warped) / h_joint.clamp_min(1e-12)).mean()
    return -(h_fixed + h_warped - h_joint).mean()


# ----------------------------------------------------------------------------- MIND-SSC
def _neighbour_pairs() -> Tuple[Tuple[Tuple[int, int, int], Tuple[int, int, int]], ...]:
    """The 12 pairs of the 6-neighbourhood at distance √2 (every pair but the 3 opposite ones):
    MIND's self-similarity context (Heinrich et al., MICCAI 2013)."""
    six = [(1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1)]
    return tuple((p, q) for i, p in enumerate(six) for q in six[i + 1:] if any(a + b for a, b in zip(p, q)))


def _pair_directions() -> Tuple[Tuple[Tuple[int, int, int], ...], Tuple[Tuple[int, Tuple[int, int, int]], ...]]:
    """The 6 directions ``e_a ± e_b`` (first non-zero component +1) and, per neighbour pair
    (p, q), the direction ``v`` and start offset ``s`` with ``{p, q} = {s, s + v}``.

    ``(I(x + p) − I(x + q))²`` equals ``S_v(x + s) = (I(x + s) − I(x + s + v))²``: the 12 pairs
    need only 6 squared-difference images, each read at 2 shifts.
    """
    directions = ((1, 1, 0), (1, -1, 0), (1, 0, 1), (1, 0, -1), (0, 1, 1), (0, 1, -1))
    uses = []
    for p, q in _neighbour_pairs():
        v = tuple(b - a for a, b in zip(p, q))
        uses.append((directions.index(v), p) if v in directions else (directions.index(tuple(-c for c in v)), q))
    return directions, tuple(uses)


def mind_ssc(image: Tensor, radius: int = 2, dilation: int = 2) -> Tensor:
    """MIND-SSC descriptor (Heinrich et al. 2013): 12 self-similarity-context channels per voxel.

    For each pair (p, q) of the 6 neighbours at ``dilation`` voxels (12 pairs at distance
    √2·dilation), ``D = box mean over a (2·radius + 1)³ patch of (I(x + p) − I(x + q))²``; then
    ``MIND = exp(−(D − min_pairs D) / V)`` with ``V = mean_pairs (D − min_pairs D)`` (the local
    variance estimate, clipped to [0.001, 1000] × its image mean). The image is extended by
    replicating its border. The descriptor does not change under ``I → a·I + b`` (any sign of
    a), which makes it suited to multi-modal registration. The 12 pairs share 6
    squared-difference images (see :func:`_pair_directions`), so only 6 are box-filtered.

    Args:
        image: ``(N, C, X, Y, Z)``; channels are described separately.
    Returns:
        ``(N, 12·C, X, Y, Z)`` in (0, 1], channel ``12·c + pair`` (pairs as :func:`_neighbour_pairs`).
    """
    if image.dim() != 5:
        raise ValueError(f"image must be (N, C, X, Y, Z), got {tuple(image.shape)}")
    image = _at_least_float32(image)
    n, c, sx, sy, sz = image.shape
    d, k = dilation, 2 * radius + 1
    margin = 2 * d + radius  # enough for every pair's shifted patch
    padded = F.pad(image.reshape(n * c, 1, sx, sy, sz), (margin,) * 6, mode="replicate")[:, 0]
    inner = [size + 2 * (d + radius) for size in (sx, sy, sz)]  # the S_v domain: padded minus d each side

    def window(offset: Sequence[int], start: int, sizes: Sequence[int]) -> Tensor:
        return padded[:, start + offset[0]:start + offset[0] + sizes[0],
                      start + offset[1]:start + offset[1] + sizes[1],
                      start + offset[2]:start + offset[2] + sizes[2]]

    directions, uses = _pair_directions()
    centre = window((0, 0, 0), d, inner)
    squared = torch.stack([(centre - window([d * a for a in v], d, inner)).square() for v in directions], dim=1)
    boxed = box_sum(squared, k) * (1.0 / k**3)  # (N·C, 6, X + 2d, Y + 2d, Z + 2d)
    distance = torch.stack([
        boxed[:, v, d + d * s[0]:d + d * s[0] + sx, d + d * s[1]:d + d * s[1] + sy, d + d * s[2]:d + d * s[2] + sz]
        for v, s in uses
    ], dim=1)
    # exp(−(D − min D) / mean(D − min D)), written so that only 3 full 12-channel maps are made
    # (subtract, divide in place, exp): the mean of D − min D is mean(D) − min D
    smallest = distance.amin(dim=1, keepdim=True)
    variance = distance.mean(dim=1, keepdim=True) - smallest
    scale = variance.mean().detach()
    variance = torch.maximum(torch.minimum(variance, 1000.0 * scale), (0.001 * scale).clamp_min(1e-12))
    return torch.exp((smallest - distance).div_(variance)).reshape(n, c * len(uses), sx, sy, sz)


def mind(fixed: Tensor, warped: Tensor, mask: Optional[Tensor] = None, radius: int = 2, dilation: int = 2) -> Tensor:
    """Mean squared difference of :func:`mind_ssc` descriptors (0 = identical structure).

    ``mask`` weights voxels (``(N, 1 | C, X, Y, Z)``); the 12 descriptor channels of a voxel
    are averaged first. A fixed image that needs no gradient has its descriptor computed once
    and reused while the same unchanged tensor comes back (12 volumes held in memory).
    """
    _check_pair(fixed, warped)
    n, c = fixed.shape[:2]
    if fixed.requires_grad:
        fixed_descriptor = mind_ssc(fixed, radius, dilation)
    else:  # computed once per fixed tensor (see _remembered_for_fixed): a third of the work
        fixed_descriptor = _remembered_for_fixed("mind", fixed, (radius, dilation), lambda: mind_ssc(fixed, radius, dilation))
    warped_descriptor = mind_ssc(warped, radius, dilation)
    if mask is None:  # the mean over channels then voxels is the mean of everything: one fused op
        return F.mse_loss(warped_descriptor, fixed_descriptor)
    diff = F.mse_loss(warped_descriptor, fixed_descriptor, reduction="none")
    per_voxel = diff.reshape(n, c, -1, *fixed.shape[2:]).mean(dim=2)
    return weighted_mean(per_voxel, mask)


# ----------------------------------------------------------------------------- by name
def similarity_function(name: str) -> Callable[..., Tensor]:
    """The loss that :data:`regkit.similarities.METRICS` names ``name`` (any case)."""
    from regkit.similarities import similarity_metric

    return globals()[similarity_metric(name).function]


def similarity_options(name: str) -> Dict[str, inspect.Parameter]:
    """The typed options of similarity ``name``: its loss's parameters after ``fixed``, ``warped``
    and ``mask`` (name → :class:`inspect.Parameter`, with default and annotation)."""
    parameters = inspect.signature(similarity_function(name)).parameters
    return {k: p for k, p in parameters.items() if k not in ("fixed", "warped", "mask")}


def check_similarity_options(name: str, options: Dict[str, Any]) -> None:
    """ValueError for a similarity name or an option it does not take."""
    accepted = similarity_options(name)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"similarity_options {unknown} are not options of {name} ({', '.join(sorted(accepted))})")


def get_similarity(name: str, **options) -> Callable[..., Tensor]:
    """The loss called ``name`` (:data:`regkit.similarities.METRIC_NAMES`: ``lncc``, ``mse``,
    ``mi``, ``mind``) with ``options`` bound, as ``f(fixed, warped, mask=None) -> scalar``.
    Example: ``get_similarity("lncc", window=7)``."""
    function = similarity_function(name)
    check_similarity_options(name, options)

    def loss(fixed: Tensor, warped: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        return function(fixed, warped, mask=mask, **options)

    return loss
