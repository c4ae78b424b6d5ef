"""Checks on loaded images that a command runs before starting work.

Each raises an :class:`~regkit.errors.InputError` that names the file, so the CLI prints one
line with exit code 2. (File-level problems — unreadable, 4D, NaN, bad header — are caught by
:func:`regkit.io.images.load_image` already.)
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import torch

from regkit.errors import InputError
from regkit.image import Image

PathLike = Union[str, Path]


def check_has_contrast(image: Image, path: PathLike, what: str = "image") -> None:
    """Refuse an image whose voxels all hold the same value: registration has nothing to align
    (every similarity is flat), so it would return the initialisation and call it a result."""
    data = image.data
    if data.numel() == 0:
        raise InputError(f"{what} has no voxels", path)
    lo, hi = torch.aminmax(data.reshape(-1))
    if bool(lo == hi):
        raise InputError(f"{what} is constant (every voxel is {float(lo):g}); there is nothing to align", path)


def check_mask_not_empty(mask: Image, path: Optional[PathLike] = None, what: str = "mask") -> None:
    """Refuse a mask without a single non-zero voxel: the similarity would compare nothing, the
    loss would stay flat and the start would be returned as a result."""
    if not bool((mask.data != 0).any()):
        raise InputError(f"{what} is empty (no non-zero voxel); nothing would be compared", path)
