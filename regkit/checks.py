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


#: most distinct values a label map may hold: each one is a Dice/HD95 computation (evaluate) or
#: a one-hot channel (train), so a random-valued "label map" of 1 MB would mean hours of work
MAX_LABEL_VALUES = 5000


def check_label_count(labels: Image, path: Optional[PathLike] = None, what: str = "label map",
                      max_labels: int = MAX_LABEL_VALUES) -> int:
    """The number of distinct non-zero values of ``labels``; an InputError when there are more than
    ``max_labels`` (an intensity image passed as labels, or a damaged file)."""
    count = int(torch.unique(labels.data).numel()) - int(bool((labels.data == 0).any()))
    if count > max_labels:
        raise InputError(f"{what} holds {count} distinct label values; at most {max_labels} are accepted "
                         "(is it an intensity image?)", path)
    return count

