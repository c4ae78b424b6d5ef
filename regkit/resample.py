"""``resample``: move an image onto a reference grid through a transform — one ``grid_sample``."""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from regkit import space
from regkit.image import Image
from regkit.transforms.base import SLAB_VOXELS, Transform

MODES = {"linear": "bilinear", "bilinear": "bilinear", "trilinear": "bilinear", "nearest": "nearest"}


def warp(volume: Tensor, volume_affine, points: Tensor, mode: str = "linear", padding_mode: str = "zeros",
         default_value: float = 0.0) -> Tensor:
    """Sample ``volume`` ``(N, C, X, Y, Z)`` (grid ``volume_affine``) at world points.

    Args:
        points: ``(N, X', Y', Z', 3)`` or ``(X', Y', Z', 3)`` world mm (RAS), e.g. a transform
            applied to the reference grid's world coordinates.
        mode: ``"linear"`` (trilinear) or ``"nearest"``.
        padding_mode: ``"zeros"`` (``default_value`` beyond half a voxel outside the grid, as
            ITK's ``defaultPixelValue``) or ``"border"`` (nearest border value everywhere outside).
        default_value: the value of points outside the volume with ``padding_mode="zeros"``
            (ITK/ANTs/elastix default 0; e.g. -1000 HU for CT).
    Returns:
        ``(N, C, X', Y', Z')``. Differentiable with respect to ``volume`` and ``points``.
    """
    if points.dim() == 4:
        points = points.expand(volume.shape[0], *points.shape)
    grid = space.world_to_normalized(points, volume_affine, volume.shape[2:])
    if padding_mode != "zeros":
        return space.sample(volume, grid, mode=MODES[mode], padding_mode=padding_mode)
    # ITK's convention (so results equal SimpleITK's Resample): a point within half a voxel
    # outside the grid takes the border value; further out it gets 0.
    out = space.sample(volume, grid, mode=MODES[mode], padding_mode="border")
    inside = space.inside_mask(grid, volume.shape[2:])[:, None]
    if default_value == 0:
        return out * inside.to(out.dtype)
    return torch.where(inside, out, torch.as_tensor(default_value, dtype=out.dtype, device=out.device))


def resample(image: Image, transform: Optional[Transform], reference: Image, mode: Optional[str] = None,
             padding_mode: str = "zeros", dtype=torch.float32, default_value: float = 0.0) -> Image:
    """Resample ``image`` (moving) on the grid of ``reference`` (fixed) through ``transform``.

    ``transform`` maps reference (fixed) world points to ``image`` (moving) world points;
    ``None`` means identity (physical-space resampling). ``mode`` defaults to ``"nearest"`` for
    label images and ``"linear"`` otherwise. Label images come back with their integer dtype.
    ``default_value``: the value where a point falls outside ``image`` (ITK's
    ``defaultPixelValue``, ANTs' ``--default-value``; e.g. -1000 HU for CT; pass 0, the
    default, for label maps: background).
    ``mode="label"`` (a label image): each label's indicator is interpolated linearly and every
    voxel takes the label of the largest value, ANTs' ``GenericLabel`` (smoother label edges than
    nearest neighbour); outside ``image`` is 0. Not differentiable.
    """
    mode = mode or ("nearest" if image.is_label else "linear")
    if mode == "label":
        return _resample_labels_linear(image, transform, reference, dtype)
    volume = image.data[None].to(dtype)
    values = _label_values(image, mode, dtype)
    fill = 0.0 if values is not None else float(default_value)  # index 0 is "outside" there
    if values is not None:  # resample each voxel's index into ``values`` instead of the value itself
        volume = (torch.searchsorted(values, image.data.contiguous()) + 1)[None].to(dtype)
    needs_grad = torch.is_grad_enabled() and (volume.requires_grad or (
        transform is not None and any(q.requires_grad for q in transform.parameters())))
    if needs_grad:
        x = space.world_grid(reference.affine, reference.shape, device=image.device, dtype=dtype)
        y = x if transform is None else transform(x)
        out = warp(volume, image.affine, y, mode=mode, padding_mode=padding_mode, default_value=fill)[0]
    else:  # a slab of the reference at a time: large grids never hold full-size coordinates
        out = volume.new_empty(image.channels, *reference.shape)
        with torch.no_grad():
            for start, stop, sub in space.slabs(reference.affine, reference.shape, SLAB_VOXELS):
                sub_shape = (stop - start, *reference.shape[1:])
                if transform is None:
                    y = space.world_grid(sub, sub_shape, device=image.device, dtype=dtype)
                else:  # a field on a grid parallel to the reference's takes its separable path
                    y = transform.grid_points(sub, sub_shape, device=image.device, dtype=dtype)
                out[:, start:stop] = warp(volume, image.affine, y, mode=mode, padding_mode=padding_mode, default_value=fill)[0]
    if values is not None:  # index 0 is "outside": background 0
        out = torch.cat([values.new_zeros(1), values])[torch.round(out).long()]
    elif image.is_label:
        out = torch.round(out).to(image.data.dtype) if mode == "nearest" else out
    return Image(out, reference.affine, is_label=image.is_label and mode == "nearest")


def _label_values(image: Image, mode: str, dtype) -> Optional[Tensor]:
    """The sorted distinct values of an integer label image whose values ``dtype`` cannot hold
    exactly (float32: beyond ±2^24, e.g. Allen-atlas ids ~6e8), else None (resample as is).

    Nearest-neighbour resampling through an index into these values keeps every id exact."""
    data = image.data
    if not image.is_label or mode != "nearest" or data.is_floating_point() or data.numel() == 0:
        return None
    # integers are exact up to 2^(mantissa bits + 1); eps = 2^-(mantissa bits): float32 -> 2^24
    exact = 2 ** (round(-math.log2(torch.finfo(dtype).eps)) + 1) if dtype.is_floating_point else None
    if exact is None or int(data.abs().max()) <= exact:
        return None
    return torch.unique(data)


#: floats held at once by the per-label interpolation (one-hot moving chunk + its samples): 256 MiB
LABEL_BUDGET = 1 << 26


def _resample_labels_linear(image: Image, transform: Optional[Transform], reference: Image, dtype) -> Image:
    """ANTs' ``GenericLabel``: the label whose linearly interpolated indicator is largest (ties:
    the smaller label, as ANTs). Labels go through ``grid_sample`` as channels, as many at a time
    as :data:`LABEL_BUDGET` allows, so memory is bounded whatever the number of labels; the
    transform is evaluated once per slab of the reference."""
    if not image.is_label or image.data.is_floating_point():
        raise ValueError("per-label interpolation needs an integer label image (load_label)")
    data = image.data[0]
    values = torch.unique(data)  # sorted: a smaller label wins a tie, as in ANTs
    n_moving = data.numel()
    out = torch.zeros(reference.shape, dtype=data.dtype, device=data.device)
    with torch.no_grad():
        for start, stop, sub in space.slabs(reference.affine, reference.shape, SLAB_VOXELS):
            shape = (stop - start, *reference.shape[1:])
            x = space.world_grid(sub, shape, device=image.device, dtype=dtype)
            y = x if transform is None else transform(x)
            n_out = int(torch.tensor(shape).prod())
            chunk = max(1, LABEL_BUDGET // (n_moving + n_out))
            best = torch.zeros(shape, dtype=dtype, device=data.device)
            label = torch.zeros(shape, dtype=data.dtype, device=data.device)
            for i in range(0, values.numel(), chunk):
                vals = values[i:i + chunk]
                onehot = (data[None] == vals.view(-1, 1, 1, 1)).to(dtype)[None]
                weight, index = warp(onehot, image.affine, y, mode="linear")[0].max(0)
                better = weight > best  # strictly: an earlier (smaller) label keeps a tie
                best = torch.where(better, weight, best)
                label = torch.where(better, vals[index], label)
            out[start:stop] = label  # nothing sampled (outside): 0
    return Image(out[None], reference.affine, is_label=True)

