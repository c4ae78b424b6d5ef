"""Inference: a trained cascade's prediction for one pair, as a regkit transform in world mm."""
from __future__ import annotations

from pathlib import Path
from typing import Tuple, Union

import torch

from regkit.image import Image
from regkit.intensity import center_of_mass, normalize_intensity
from regkit.nn.grid import grid_world_points, onto_grid
from regkit.transforms import Compose

PathLike = Union[str, Path]


def prepare_pair(model, moving: Image, fixed: Image, device="cpu") -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Normalise both images and resample them (physical space) onto the model's grid: the
    network box is centred on the fixed image's intensity centre of mass for the fixed image, and
    on the moving image's for the moving one (the optimiser's ``center_of_mass`` start, so the
    network only predicts what is left). Training places its boxes the same way
    (:class:`regkit.train.data.PairDataset`).

    (A box at the centre of the fixed FIELD OF VIEW put the anatomy off the box for a padded fixed
    image or a distant moving one: benchmarks/README.md, "Measurements behind design choices".)

    Returns ``(moving (1,C,X,Y,Z), fixed (1,C,X,Y,Z), fixed centre (3,), moving centre (3,))``,
    centres in world mm: network point ``p`` is fixed world ``p + fixed centre`` and moving world
    ``p + moving centre``."""
    cfg = model.config
    normalised = []
    for image in (moving, fixed):
        if image.channels != cfg.in_channels:
            raise ValueError(f"the model takes {cfg.in_channels}-channel images, got {image.channels}")
        normalised.append(normalize_intensity(image.float(), cfg.intensity))
    moving_centre, centre = (center_of_mass(n.data[None], n.affine) for n in normalised)
    points = grid_world_points(model.grid_affine, cfg.grid_shape, centre, device=device)  # the fixed box
    shift = (moving_centre - centre).to(points.device, points.dtype)
    tensors = [onto_grid(n, model.grid_affine, cfg.grid_shape, c, device=device, points=q)[None]
               for n, c, q in ((normalised[0], moving_centre, points + shift), (normalised[1], centre, points))]
    return tensors[0], tensors[1], centre, moving_centre


@torch.no_grad()
def predict(checkpoint_path: Union[PathLike, torch.nn.Module], moving: Image, fixed: Image, device="cpu") -> Compose:
    """The cascade's fixed→moving transform (world mm, RAS) for ``moving`` and ``fixed``.

    Args:
        checkpoint_path: a checkpoint written by ``regkit train`` (or an already loaded
            :class:`~regkit.nn.cascade.CascadeNet`, to skip re-reading it for a cohort).
        moving, fixed: images on any grids; they are resampled onto the model's training-size
            grid placed on each image's intensity centre of mass, so neither image's grid,
            field of view nor position matters.
        device: where the network runs (``"cpu"``, ``"cuda"``).
    Returns:
        ``Compose(field_K, ..., field_1, affine)`` on the CPU, usable with
        :func:`regkit.resample.resample` against the fixed image and exportable like any
        other transform; it is defined everywhere (fields extend with their border value).
    """
    from regkit.nn.checkpoint import load_model

    model = checkpoint_path if isinstance(checkpoint_path, torch.nn.Module) else load_model(checkpoint_path, device)
    model = model.to(device).eval()
    mov, fix, centre, moving_centre = prepare_pair(model, moving, fixed, device)
    outputs = model(mov, fix, full_resolution=False)
    return model.to_world(outputs, offset_mm=centre, moving_offset_mm=moving_centre)
