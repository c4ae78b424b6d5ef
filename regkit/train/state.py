"""Training state ↔ checkpoint: the optimizer's state dict flattened into named tensors plus JSON
(no pickle anywhere), RNG state, step, best metric.

``optimizer.state_dict()`` is ``{"state": {index: {key: tensor | number}}, "param_groups": [...]}``:
tensors go to ``optim/<index>/<key>``; numbers and the param groups go to JSON metadata.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Tuple

import torch
from torch import Tensor

from regkit.errors import InputError
from regkit.nn.checkpoint import Checkpoint, load_model_state, model_tensors, read_checkpoint, write_checkpoint


def flatten_optimizer(optimizer: torch.optim.Optimizer) -> Tuple[Dict[str, Tensor], Dict[str, object]]:
    state = optimizer.state_dict()
    tensors: Dict[str, Tensor] = {}
    scalars: Dict[str, Dict[str, object]] = {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if isinstance(value, Tensor):
                tensors[f"optim/{index}/{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"optimizer_param_groups": state["param_groups"], "optimizer_scalars": scalars,
                     "optimizer_class": type(optimizer).__name__}


def unflatten_optimizer(checkpoint: Checkpoint) -> Dict[str, object]:
    state: Dict[int, Dict[str, object]] = {}
    for name, value in checkpoint.group("optim").items():
        index, key = name.split("/", 1)
        state.setdefault(int(index), {})[key] = value
    for index, values in checkpoint.metadata.get("optimizer_scalars", {}).items():  # type: ignore[union-attr]
        state.setdefault(int(index), {}).update(values)
    return {"state": state, "param_groups": checkpoint.metadata["optimizer_param_groups"]}


def save_training_state(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, step: int,
                        model_config, train_config, best_metric: Optional[float], extra: Optional[dict] = None) -> Path:
    optim_tensors, optim_meta = flatten_optimizer(optimizer)
    tensors = {**model_tensors(model), **optim_tensors, "rng/torch": torch.get_rng_state()}
    meta = {"model_config": model_config.model_dump(mode="json"), "train_config": train_config.model_dump(mode="json"),
            "step": step, "best_metric": best_metric, "extra": extra or {}, **optim_meta}
    return write_checkpoint(path, tensors, meta, force=True)


def restore_training_state(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, model_config) -> Checkpoint:
    """Load weights, optimizer state and RNG state from ``path`` into ``model``/``optimizer``.

    A checkpoint whose model config differs from ``model_config`` is an :class:`InputError`."""
    ckpt = read_checkpoint(path)
    if ckpt.metadata["model_config"] != model_config.model_dump(mode="json"):
        theirs, ours = ckpt.metadata["model_config"], model_config.model_dump(mode="json")
        diff = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))  # type: ignore[union-attr]
        raise InputError(f"checkpoint was trained with a different model config (differs in: {', '.join(diff)})", path)
    load_model_state(model, ckpt, path)
    if ckpt.metadata.get("optimizer_class") != type(optimizer).__name__ or "optimizer_param_groups" not in ckpt.metadata:
        raise InputError("checkpoint holds no optimizer state for this optimizer (weights-only or another optimizer)", path)
    try:
        optimizer.load_state_dict(unflatten_optimizer(ckpt))
    except (ValueError, KeyError) as e:
        raise InputError(f"checkpoint's optimizer state does not fit this model: {e}", path) from e
    if "rng/torch" in ckpt.tensors:
        torch.set_rng_state(ckpt.tensors["rng/torch"])
    return ckpt
