"""Small configs and manifests shared by the cascade tests (test_nn, test_train, test_ddp)."""
from __future__ import annotations

from pathlib import Path

TINY_MODEL = {
    "grid_shape": [16, 20, 16],
    "grid_spacing_mm": 10.0,
    "affine": {"scale": 2, "channels": [4, 8]},
    "stages": [
        {"scale": 2, "channels": [4, 8], "head_channels": 4, "field": "svf"},
        {"scale": 1, "channels": [4, 8], "head_channels": 4, "field": "displacement"},
    ],
}


def write_manifest(path: Path, sample_paths: dict, both_directions: bool = True) -> Path:
    s = {k: str(v) for k, v in sample_paths.items()}
    rows = ["moving,fixed,moving_labels,fixed_labels",
            f"{s['moving']},{s['fixed']},{s['moving_labels']},{s['fixed_labels']}"]
    if both_directions:
        rows.append(f"{s['fixed']},{s['moving']},{s['fixed_labels']},{s['moving_labels']}")
    path.write_text("\n".join(rows) + "\n")
    return path


def tiny_config(tmp_path: Path, sample_paths: dict, **overrides) -> dict:
    """A training recipe (as a dict) on the bundled sample pair, a few seconds per run."""
    manifest = write_manifest(tmp_path / "pairs.csv", sample_paths, overrides.pop("both_directions", True))
    config = {
        "model": TINY_MODEL,
        "data": {"manifest": str(manifest)},
        "loss": {"similarity": "lncc", "reg_weight": 0.1},
        "augment": {"enabled": False},
        "optim": {"steps": 4, "lr": 3e-3, "affine_lr_factor": 0.3},
        "val_every": 1000,
        "checkpoint_every": 1000,
        "log_every": 1,
        "seed": 3,
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return config
