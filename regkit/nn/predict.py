"""Inference: a trained cascade's prediction for one pair, as a regkit transform in world mm."""
from __future__ import annotations

from pathlib import Path
from typing import Tuple, Union

import torch

from regkit.image import Image
from regkit.nn.grid import grid_world_points, normalize_intensity, onto_grid
from regkit.transforms import Compose

PathLike = Union[str, Path]


def prepare_pair(model, moving: Image, fixed: Image, device="cpu") -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Normalise both images and resample them (physical space) onto the model's grid centred on
    the fixed image. Returns ``(moving (1,C,X,Y,Z), fixed (1,C,X,Y,Z), centre (3,) world mm)``."""
    cfg = model.config
    centre = fixed.center()
    points = grid_world_points(model.grid_affine, cfg.grid_shape, centre, device=device)  # shared by both images
    tensors = []
    for image in (moving, fixed):
        if image.channels != cfg.in_channels:
            raise ValueError(f"the model takes {cfg.in_channels}-channel images, got {image.channels}")
        normalised = normalize_intensity(image.float(), cfg.intensity)
        tensors.append(onto_grid(normalised, model.grid_affine, cfg.grid_shape, centre, device=device, points=points)[None])
    return tensors[0], tensors[1], centre


@torch.no_grad()
def predict(checkpoint_path: Union[PathLike, torch.nn.Module], moving: Image, fixed: Image, device="cpu") -> Compose:
    """The cascade's fixed→moving transform (world mm, RAS) for ``moving`` and ``fixed``.

    Args:
        checkpoint_path: a checkpoint written by ``regkit train`` (or an already loaded
            :class:`~regkit.nn.cascade.CascadeNet`, to skip re-reading it for a cohort).
        moving, fixed: images on any grids; they are resampled onto the model's training-size
            grid placed over the fixed image, so the fixed image's own grid does not matter.
        device: where the network runs (``"cpu"``, ``"cuda"``).
    Returns:
        ``Compose(field_K, ..., field_1, affine)`` on the CPU, usable with
        :func:`regkit.resample.resample` against the fixed image and exportable like any
        other transform; it is defined everywhere (fields extend with their border value).
    """
    from regkit.nn.checkpoint import load_model

    model = checkpoint_path if isinstance(checkpoint_path, torch.nn.Module) else load_model(checkpoint_path, device)
    model = model.to(device).eval()
    mov, fix, centre = prepare_pair(model, moving, fixed, device)
    outputs = model(mov, fix, full_resolution=False)
    return model.to_world(outputs, offset_mm=centre)
