"""Registration with a trained cascade: its prediction, optionally refined by N optimiser
iterations (``regkit.optimize.register`` with ``initial_transform``), returned as the optimiser's
:class:`~regkit.optimize.RegistrationResult` so every output (files, QC, evaluation) is the same.

This joins the two engines (``regkit.nn`` predicts, ``regkit.optimize`` refines), so it lives
above both; neither engine imports the other."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import List, Optional, Union

import torch

from regkit.image import Image

PathLike = Union[str, Path]
log = logging.getLogger(__name__)


def refine_config(config=None, steps: int = 0, metric: Optional[str] = None):
    """The optimiser's config (preset name, YAML path, dict or config; ``default`` when None) as
    a refinement of a given start: its deformable levels, coarse to fine, with their iterations
    scaled to add up to exactly ``steps`` (``default`` at 40 is its own 30 + 10, at 20 it is
    15 + 5; a level whose share rounds to none is left out, so ``--refine 1`` runs one 4 mm
    iteration); ``steps == 0`` turns the deformable stage off (the prediction is the result).

    All levels, not just the finest: a cascade's remaining error is mostly coarse, and a 4 mm
    iteration costs about an eighth of a 2 mm one."""
    from regkit.optimize.config import load_config

    cfg = load_config(config, metric=metric)
    levels = cfg.deformable.levels
    if steps <= 0:
        deformable = cfg.deformable.model_copy(update={"enabled": False, "levels": levels[-1:]})
        return cfg.model_copy(update={"deformable": deformable})
    counts = split_iterations(steps, [level.iterations for level in levels])
    scaled = [level.model_copy(update={"iterations": n}) for level, n in zip(levels, counts) if n > 0]
    deformable = cfg.deformable.model_copy(update={"enabled": True, "levels": scaled})
    return cfg.model_copy(update={"deformable": deformable})


def split_iterations(steps: int, weights: List[int]) -> List[int]:
    """``steps`` split in proportion to ``weights`` by largest remainders: whole numbers that add
    up to exactly ``steps`` (ties go to the earlier, coarser level)."""
    total = sum(weights)
    if total <= 0:  # no iterations configured: spread evenly
        weights, total = [1] * len(weights), len(weights)
    quotas = [steps * w / total for w in weights]
    counts = [int(q) for q in quotas]
    by_remainder = sorted(range(len(weights)), key=lambda i: (-(quotas[i] - counts[i]), i))
    for i in by_remainder[: steps - sum(counts)]:
        counts[i] += 1
    return counts


def load(model: Union[PathLike, torch.nn.Module], device: Optional[str] = None) -> torch.nn.Module:
    from regkit.nn.checkpoint import load_model

    return model if isinstance(model, torch.nn.Module) else load_model(model, device or "cpu")


def register_with_model(moving: Image, fixed: Image, model: Union[PathLike, torch.nn.Module], refine: int = 0,
                        config=None, metric: Optional[str] = None, device: Optional[str] = None,
                        default_value: float = 0.0, model_name: Optional[str] = None):
    """Predict fixed→moving with a cascade (a checkpoint path or a loaded model), then run
    ``refine`` instance-optimisation iterations from that start.

    Returns a :class:`regkit.optimize.RegistrationResult`; ``log`` gains ``predict_seconds``
    (network and resampling onto its grid) and ``refine``; ``affine`` is the network's affine.
    ``default_value``: the warped image's value where the moving image does not reach;
    ``model_name``: how the log names an already loaded model (default: its path, or "in-memory").
    """
    from regkit.nn.predict import predict
    from regkit.optimize import RegistrationResult, register
    from regkit.resample import resample

    dev = device or "cpu"
    net = load(model, dev)
    start = time.perf_counter()
    initial = predict(net, moving, fixed, dev)
    predicted = time.perf_counter() - start
    affine = initial.transforms[-1] if net.config.affine.enabled else None
    if refine > 0:
        result = register(moving, fixed, config=refine_config(config, refine, metric), device=dev, initial_transform=initial,
                          default_value=default_value)
    else:  # the prediction is the result: skip the optimiser's own preprocessing
        with torch.no_grad():
            log = {"device": str(dev), "threads": torch.get_num_threads(), "seed": None,
                   "fixed_shape": list(fixed.shape), "moving_shape": list(moving.shape), "working_box": "none (prediction only)",
                   "config": {"refine": 0}, "levels": []}
            if default_value != 0:
                log["default_value"] = default_value
            result = RegistrationResult(initial, resample(moving, initial, fixed, default_value=default_value), fixed, log, affine)
    name = model_name or (str(model) if not isinstance(model, torch.nn.Module) else "in-memory")
    result.log.update({"model": name,
                       "predict_seconds": round(predicted, 3), "refine": int(refine),
                       "total_seconds": round(time.perf_counter() - start, 3)})
    result.log.setdefault("register_seconds", result.log["total_seconds"])
    return result


def model_start(model: Union[PathLike, torch.nn.Module], refine: int = 0, config=None,
                metric: Optional[str] = None, device: Optional[str] = None):
    """``(start, optimiser config)`` for ``regkit register --model [--refine N]``: ``start(moving,
    fixed)`` is the cascade's prediction for the images the command has already read (the model is
    loaded now, once), and the config runs ``refine`` iterations from it (none at 0)."""
    from regkit.nn.predict import predict

    dev = device or "cpu"
    net = load(model, dev)
    return (lambda moving, fixed: predict(net, moving, fixed, dev)), refine_config(config, refine, metric)
