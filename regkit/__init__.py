"""regkit: 3D medical image registration in physical space.

An :class:`Image` is data plus its voxel→world affine (RAS mm); a transform maps FIXED world
points to MOVING world points; :func:`resample` applies one with a single ``grid_sample``.

Names are imported lazily so that ``regkit --help`` and input checks do not pay for importing
torch.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Image": "regkit.image",
    "load_image": "regkit.io.images",
    "load_label": "regkit.io.images",
    "save_image": "regkit.io.images",
    "resample": "regkit.resample",
    "warp": "regkit.resample",
    "Transform": "regkit.transforms",
    "AffineTransform": "regkit.transforms",
    "DisplacementField": "regkit.transforms",
    "VelocityField": "regkit.transforms",
    "Compose": "regkit.transforms",
    "register": "regkit.optimize",
    "RegistrationResult": "regkit.optimize",
    "read_transform": "regkit.io.transform_files",
    "write_transform": "regkit.io.transform_files",
}
_ALIASES = {"load": "load_image", "save": "save_image"}

__all__ = sorted(list(_EXPORTS) + list(_ALIASES) + ["__version__"])


def __getattr__(name: str) -> Any:
    target = _ALIASES.get(name, name)
    if target in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[target]), target)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'regkit' has no attribute {name!r}")
