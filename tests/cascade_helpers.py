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


KEYPOINT_MODEL = {**TINY_MODEL, "affine": {"head": "keypoints", "scale": 1, "channels": [4, 8, 8], "keypoints": 8}}


def keypoint_cascade(heatmap_std: float = 0.0, seed: int = 0):
    """A tiny :class:`CascadeNet` with the keypoint head; ``heatmap_std > 0`` gives it peaked,
    trained-like heat maps (random weights of that spread, gain 1) instead of the flat start."""
    import torch

    from regkit.nn.cascade import CascadeNet
    from regkit.nn.config import ModelConfig

    torch.manual_seed(seed)
    model = CascadeNet(ModelConfig.model_validate(KEYPOINT_MODEL))
    if heatmap_std > 0:
        with torch.no_grad():
            model.affine_net.heatmaps.weight.normal_(0, heatmap_std)
            model.affine_net.gain.fill_(1.0)
    return model


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
