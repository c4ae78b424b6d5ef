"""Models that ship inside the package (``regkit/models/*.safetensors``), found by name.

``regkit register MOVING FIXED --model brain`` reads ``regkit/models/brain.safetensors``; any other
``--model`` value is a checkpoint path. Nothing here is read at ``import regkit``: a model file is
opened only when a command names it. Each shipped file is a weights-only cascade checkpoint
(safetensors, no optimizer state) whose metadata says where it came from; its model card is
``docs/models/<name>.md``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Union

from regkit.errors import InputError

MODELS_DIR = Path(__file__).resolve().parents[1] / "models"
SHIPPED: Dict[str, str] = {
    "brain": "brain MRI of any contrast (skull-stripped), trained from label maps alone; 2 mm network grid",
}


def shipped_path(name: str) -> Path:
    """The file of shipped model ``name`` (an :class:`InputError` when this install lacks it)."""
    path = MODELS_DIR / f"{name}.safetensors"
    if not path.is_file():
        raise InputError(f"shipped model {name!r} is missing from this installation (reinstall regkit)", path)
    return path


def resolve_model(spec: Union[str, Path]) -> Path:
    """``--model``'s value as a file: an existing path as it is, else a shipped model's name.

    A value that is neither is one :class:`InputError` line naming the shipped models."""
    path = Path(spec)
    if path.exists() or str(spec) not in SHIPPED:
        if not path.exists() and path.suffix == "" and len(path.parts) == 1:
            raise InputError(f"is neither a checkpoint file nor a shipped model (shipped: {', '.join(sorted(SHIPPED))}; "
                             "see 'regkit models')", path)
        return path
    return shipped_path(str(spec))


def model_metadata(path: Path) -> Dict[str, object]:
    """A checkpoint's JSON metadata, from the safetensors header alone (no tensor is read)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        raw = f.metadata() or {}
    out: Dict[str, object] = {}
    for key, value in raw.items():
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def prediction_fingerprint(model, moving, fixed) -> Dict[str, object]:
    """A model's prediction for one pair, summarised to check a shipped file: the mean length
    (mm) of the displacement ``T(x) - x`` over the fixed grid's voxels and ``T`` at the fixed
    grid's centre and two corners of its middle (world mm, RAS). Stored in the shipped file's
    metadata (``check``) at export; tests recompute it on ``sample_data``."""
    import torch

    from regkit import space
    from regkit.nn.predict import predict

    transform = predict(model, moving, fixed)
    with torch.no_grad():
        points = space.world_grid(fixed.affine, fixed.shape)
        mapped = transform.grid_points(fixed.affine, fixed.shape)
        shape = torch.tensor(fixed.shape, dtype=torch.float64)
        probes = torch.stack([(shape - 1) / 2, (shape - 1) / 4, 3 * (shape - 1) / 4])
        probe_world = space.voxel_to_world(probes, fixed.affine).float()
        probe_mapped = transform(probe_world[:, None, None, :])[:, 0, 0, :]
    return {"mean_displacement_mm": round(float((mapped - points).norm(dim=-1).mean()), 5),
            "probe_points_mm": [[round(float(v), 4) for v in p] for p in probe_mapped]}
