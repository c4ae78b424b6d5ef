"""Checkpoints: ONE safetensors file — tensors (weights, optimizer state, RNG state) plus JSON
metadata (format, model config, training config, versions, step). Reading never unpickles
anything: a file that is not safetensors (e.g. a ``torch.save`` pickle) is refused before a
single byte of it is interpreted as code.

Tensor names: ``model/<state_dict key>``, ``optim/<param index>/<state key>``, ``rng/<name>``.
Metadata keys (all JSON strings): ``format`` (= :data:`FORMAT`), ``format_version``,
``model_config``, ``train_config`` (optional), ``versions``, ``step``, and free ``extra``.
"""
from __future__ import annotations

import json
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Union

import torch
from pydantic import ValidationError
from torch import Tensor

from regkit.errors import InputError, describe_validation_error
from regkit.nn.config import ModelConfig

FORMAT = "regkit-cascade-checkpoint"
FORMAT_VERSION = "1"
PathLike = Union[str, Path]


@dataclass
class Checkpoint:
    """What a checkpoint file holds: tensors by name and decoded JSON metadata."""

    tensors: Dict[str, Tensor]
    metadata: Dict[str, object] = field(default_factory=dict)

    def group(self, prefix: str) -> Dict[str, Tensor]:
        """Tensors under ``prefix/`` with the prefix removed."""
        p = prefix + "/"
        return {k[len(p):]: v for k, v in self.tensors.items() if k.startswith(p)}

    @property
    def model_config(self) -> ModelConfig:
        return ModelConfig.model_validate(self.metadata["model_config"])

    @property
    def step(self) -> int:
        return int(self.metadata.get("step", 0))


def versions() -> Dict[str, str]:
    import regkit

    out = {"regkit": regkit.__version__, "torch": torch.__version__, "python": platform.python_version()}
    try:  # the installed version without importing MONAI (seconds)
        from importlib.metadata import version

        out["monai"] = version("monai")
    except Exception:  # pragma: no cover - monai is a dependency
        pass
    return out


def write_checkpoint(path: PathLike, tensors: Dict[str, Tensor], metadata: Dict[str, object], force: bool = True) -> Path:
    """Write tensors + metadata (each value JSON-encoded) atomically (a crash never leaves a
    half-written checkpoint)."""
    from regkit.io.safetensors_files import write_safetensors

    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "versions": versions()}
    meta.update(metadata)
    return write_safetensors(path, tensors, {k: json.dumps(v) for k, v in meta.items()}, force)


def read_checkpoint(path: PathLike) -> Checkpoint:
    """Read a checkpoint written by :func:`write_checkpoint` (safetensors only, no pickle).

    Raises :class:`InputError` for a missing file, a file that is not safetensors (a pickle is
    refused unread) or a safetensors file that is not a regkit cascade checkpoint.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    p = Path(path)
    if p.is_dir():
        raise InputError("is a folder; give the checkpoint file in it (e.g. best.safetensors)", p)
    if not p.is_file():
        raise InputError("no such checkpoint file", p)
    try:
        with safe_open(str(p), framework="pt") as f:
            raw = f.metadata() or {}
        tensors = load_file(str(p))
    except (SafetensorError, OSError, ValueError) as e:
        from regkit.io.safetensors_files import truncation_problem

        problem = truncation_problem(p)
        if problem is not None:
            raise InputError(problem, p) from e
        raise InputError("is not a regkit checkpoint (not a safetensors file; pickled checkpoints are refused, never unpickled)", p) from e
    if p.name.endswith(".regkit.safetensors") or raw.get("format") == "regkit-transform":  # regkit's transform format
        raise InputError("is a regkit transform file, not a trained cascade checkpoint (regkit train writes "
                         "best.safetensors / last.safetensors)", p)
    from regkit.io import validate

    metadata = {k: validate.parse_json(v, p, f"checkpoint metadata '{k}'") for k, v in raw.items()}
    if metadata.get("format") != FORMAT:
        raise InputError(f"is a safetensors file but not a regkit cascade checkpoint (format={metadata.get('format')!r})", p)
    version = metadata.get("format_version")
    if not str(version).isdigit() or int(version) > int(FORMAT_VERSION):
        raise InputError(f"checkpoint format version {version!r} is not supported (this regkit reads up to {FORMAT_VERSION}); "
                         "upgrade regkit or retrain", p)
    if "model_config" not in metadata:
        raise InputError("checkpoint has no model_config", p)
    if "step" in metadata:
        metadata["step"] = validate.integer(metadata["step"], "checkpoint step", p, 0, 2**53)
    return Checkpoint(tensors, metadata)


def model_tensors(model: torch.nn.Module) -> Dict[str, Tensor]:
    return {f"model/{k}": v for k, v in model.state_dict().items()}


# Parameters introduced after checkpoints were already written, with the value that reproduces
# the older models exactly (keypoint head before its heat-map gain: an implicit gain of 1).
LEGACY_DEFAULTS: Dict[str, float] = {"affine_net.gain": 1.0}


def load_model_state(model: torch.nn.Module, checkpoint: Checkpoint, path: PathLike) -> None:
    """Load ``model/`` weights strictly; a different architecture is an :class:`InputError`."""
    state = checkpoint.group("model")
    own = model.state_dict()
    for key, value in LEGACY_DEFAULTS.items():  # parameters added since: their old implicit value
        if key in own and key not in state:
            state[key] = torch.full_like(own[key], value)
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        detail = (f"missing {missing[:2]}" if missing else f"unexpected {unexpected[:2]}" if unexpected
                  else f"shape of {wrong[0]} {tuple(state[wrong[0]].shape)} != {tuple(own[wrong[0]].shape)}")
        raise InputError(f"checkpoint does not fit this model ({detail}); it was made with another model config", path)
    bad = next((k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())), None)
    if bad is not None:  # a run that diverged: its predictions would be NaN, reported later as something else
        raise InputError(f"checkpoint has NaN/Inf weights ({bad}); the training that wrote it diverged", path)
    model.load_state_dict(state)


def load_model(path: PathLike, device: Optional[Union[str, torch.device]] = None):
    """Rebuild the :class:`~regkit.nn.cascade.CascadeNet` stored in a checkpoint, weights loaded,
    in eval mode."""
    from regkit.nn.cascade import CascadeNet

    ckpt = read_checkpoint(path)
    try:
        config = ckpt.model_config
    except ValidationError as e:
        where, what = describe_validation_error(e)
        raise InputError(f"checkpoint's model_config is invalid at {where}: {what}", path) from e
    except Exception as e:
        raise InputError(f"checkpoint's model_config is invalid: {str(e).splitlines()[0]}", path) from e
    from regkit.resources import check_memory, minimum_prediction_bytes

    check_memory(minimum_prediction_bytes(config.grid_shape, config.in_channels),
                 f"predicting on its network grid {list(config.grid_shape)} ({config.grid_spacing_mm:g} mm)",
                 hint="this checkpoint cannot predict on this machine", path=path)
    model = CascadeNet(config)
    load_model_state(model, ckpt, path)
    return model.to(device or "cpu").eval()
