"""Registration with a trained cascade: its prediction, optionally refined by N optimiser
iterations (``regkit.optimize.register`` with ``initial_transform``), returned as the optimiser's
:class:`~regkit.optimize.RegistrationResult` so every output (files, QC, evaluation) is the same.
Also a cohort runner over a pairs manifest that splits the pairs between torchrun ranks."""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Dict, List, Optional, Union

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


def rank_share(items: List, rank: Optional[int] = None, world_size: Optional[int] = None) -> List:
    """This process's share of ``items`` under torchrun (every ``world_size``-th from ``rank``)."""
    rank = int(os.environ.get("RANK", "0")) if rank is None else rank
    world_size = int(os.environ.get("WORLD_SIZE", "1")) if world_size is None else world_size
    return items[rank::world_size]


def model_start(model: Union[PathLike, torch.nn.Module], refine: int = 0, config=None,
                metric: Optional[str] = None, device: Optional[str] = None):
    """``(start, optimiser config)`` for ``regkit register --model [--refine N]``: ``start(moving,
    fixed)`` is the cascade's prediction for the images the command has already read (the model is
    loaded now, once), and the config runs ``refine`` iterations from it (none at 0)."""
    from regkit.nn.predict import predict

    dev = device or "cpu"
    net = load(model, dev)
    return (lambda moving, fixed: predict(net, moving, fixed, dev)), refine_config(config, refine, metric)


def register_cohort(manifest: PathLike, out_dir: PathLike, model: Optional[PathLike] = None, refine: int = 0, config=None,
                    metric: Optional[str] = None, device: Optional[str] = None, force: bool = False,
                    default_value: float = 0.0) -> List[Dict[str, object]]:
    """Register every pair of a manifest (CSV/JSON as for training): with a cascade (``model``,
    plus ``refine`` optimiser iterations) or, without one, by the optimiser alone (``config``).

    Pair ``n`` (1-based, manifest order) goes to ``out_dir/pairNNN/`` with the files of
    ``regkit register --out``. Under torchrun each rank takes every WORLD_SIZE-th pair (checking
    its own outputs before any work) and writes ``out_dir/cohort_rank<R>.csv``
    (``pair,moving,fixed,seconds,status,error``).
    ``default_value``: the warped images' value where the moving image does not reach.

    A pair that cannot be registered (unreadable image, no overlap, divergence...) is logged,
    written to the CSV as ``failed`` with its one-line reason, and the other pairs go on; when
    any failed, the error raised after the CSV is written says how many and names the first.
    """
    from regkit.errors import RegkitError
    from regkit.io.atomic import write_text
    from regkit.io.images import load_label, stored_integer_dtype
    from regkit.optimize.outputs import check_outputs, write_result
    from regkit.train.data import read_manifest

    mine = rank_share(list(enumerate(read_manifest(Path(manifest)), start=1)))
    out = Path(out_dir)
    for n, pair in mine:
        check_outputs(out / f"pair{n:03d}", pair.moving_labels is not None, force)
    net = load(model, device) if model is not None else None
    rows: List[Dict[str, object]] = []
    failures: List[RegkitError] = []
    t_cohort = time.perf_counter()
    for count, (n, pair) in enumerate(mine, start=1):
        row: Dict[str, object] = {"pair": n, "moving": str(pair.moving), "fixed": str(pair.fixed), "seconds": "",
                                  "status": "ok", "error": ""}
        try:
            labels = load_label(pair.moving_labels) if pair.moving_labels is not None else None
            result = _register_pair(pair, net, refine, config, metric, device, default_value, model)
            write_result(result, out / f"pair{n:03d}", labels, force=force,
                         labels_dtype=stored_integer_dtype(pair.moving_labels) if labels is not None else None)
            row["seconds"] = result.log["total_seconds"]
            log.info("pair %d (%d of %d): registered in %.1f s -> %s%s", n, count, len(mine), result.log["total_seconds"],
                     out / f"pair{n:03d}", _eta(t_cohort, count, len(mine)))
        except RegkitError as e:  # this pair is lost, the others are not
            named = type(e)(f"pair {n}: {e}" if e.path is not None else f"pair {n} ({pair.moving} -> {pair.fixed}): {e}")
            failures.append(named)
            row.update(status="failed", error=str(named))
            log.warning("pair %d (%d of %d) FAILED: %s%s", n, count, len(mine), named, _eta(t_cohort, count, len(mine)))
        rows.append(row)
    table = f"cohort_rank{int(os.environ.get('RANK', '0'))}.csv"
    if rows:
        write_text(out / table, _csv_text(rows), force=True)
    if failures:
        first = failures[0]
        raise type(first)(f"{len(failures)} of {len(rows)} pairs failed (the others are in {out}; see {table}); first: {first}")
    return rows


def _eta(start: float, done: int, total: int) -> str:
    """``"; 3 left, about 2 min 10 s"`` from the mean time per pair so far (empty at the end)."""
    left = total - done
    if left <= 0 or done <= 0:
        return ""
    seconds = (time.perf_counter() - start) / done * left
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"; {left} left, about {f'{minutes} min ' if minutes else ''}{rest} s"


def _register_pair(pair, net, refine: int, config, metric, device, default_value: float, model):
    """One manifest pair: read, check and register (by the cascade when ``net`` is given)."""
    from regkit.checks import check_has_contrast
    from regkit.io.images import load_image
    from regkit.optimize import register

    moving, fixed = load_image(pair.moving), load_image(pair.fixed)
    check_has_contrast(moving, pair.moving)
    check_has_contrast(fixed, pair.fixed)
    if net is not None:
        return register_with_model(moving, fixed, net, refine, config, metric, device, default_value, str(model))
    return register(moving, fixed, config=config, device=device, metric=metric, default_value=default_value)


def _csv_text(rows: List[Dict[str, object]]) -> str:
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
