"""One pair registered from files into a result folder: what ``regkit register MOVING FIXED --out
DIR`` does between parsing its options and printing its summary.

Inputs are noted as inputs (never outputs, even with ``force``) and the outputs checked before
any image is read; images, labels and masks are read and checked; the memory the finest level
needs is checked before the optimiser starts; a start (a trained cascade's prediction) is computed
from the images read here; errors name the pair's files; every output is written together
(:func:`regkit.workflows.result_folder.write_registration`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from regkit.image import Image
from regkit.io.manifests import PairPaths


@dataclass(frozen=True)
class PairFiles(PairPaths):
    """The files of one registration: a manifest's pair (:class:`~regkit.io.manifests.PairPaths`;
    ``fixed_labels`` unused here) plus optional masks and the file a given start was read from
    (an input, never an output)."""

    fixed_mask: Optional[Path] = None
    moving_mask: Optional[Path] = None
    initial_transform: Optional[Path] = None


@dataclass
class PairRun:
    """What :func:`register_files` did: the registration, the paths written and the seconds the
    writing took."""

    result: Any
    written: List[Path]
    write_seconds: float


def register_files(files: PairFiles, out: Path, config, device: str = "auto", seed: Optional[int] = None,
                   initial_transform=None, start: Optional[Callable[[Image, Image], Any]] = None, qc: bool = False,
                   progress: bool = True, force: bool = False, default_value: float = 0.0,
                   log_extra: Optional[Callable[[], Dict[str, Any]]] = None) -> PairRun:
    """Register ``files.moving`` onto ``files.fixed`` and write the result into ``out``.

    Args:
        config: a :class:`~regkit.optimize.RegistrationConfig` (already validated).
        initial_transform: a fixed→moving start (:func:`regkit.optimize.register`'s).
        start: ``start(moving, fixed)`` computes the start from the images read here (a trained
            cascade's prediction); its seconds are logged as ``predict_seconds`` and added to the total.
        log_extra: called after registering; its items join ``log.json`` (e.g. provenance).
    Returns:
        a :class:`PairRun`.
    """
    from regkit.checks import check_has_contrast, check_mask_not_empty
    from regkit.devices import resolve_device
    from regkit.errors import InputError, RegistrationError
    from regkit.io.atomic import note_input
    from regkit.io.images import load_image, load_label, stored_integer_dtype
    from regkit.io.results import check_outputs
    from regkit.optimize import register
    from regkit.workflows.result_folder import write_registration

    f = files
    note_input(f.moving, f.fixed, f.moving_labels, f.fixed_mask, f.moving_mask, f.initial_transform)  # never an output, even with force
    check_outputs(out, f.moving_labels is not None, force, qc=qc)
    moving_img, fixed_img = load_image(f.moving), load_image(f.fixed)
    check_has_contrast(moving_img, f.moving)
    check_has_contrast(fixed_img, f.fixed)
    labels = load_label(f.moving_labels) if f.moving_labels is not None else None
    fmask = load_label(f.fixed_mask) if f.fixed_mask is not None else None
    mmask = load_label(f.moving_mask) if f.moving_mask is not None else None
    for mask, path in ((fmask, f.fixed_mask), (mmask, f.moving_mask)):
        if mask is not None:
            check_mask_not_empty(mask, path)
    check_registration_memory(fixed_img, moving_img, config, f.fixed)
    predict_seconds = None
    if start is not None:
        t_predict = time.perf_counter()
        initial_transform = start(moving_img, fixed_img)
        predict_seconds = time.perf_counter() - t_predict
    try:
        result = register(moving_img, fixed_img, config=config, device=resolve_device(device), seed=seed,
                          initial_transform=initial_transform, fixed_mask=fmask, moving_mask=mmask, progress=progress,
                          default_value=default_value)
    except RegistrationError as e:  # name the pair: the library does not know the file names
        raise RegistrationError(f"{f.moving} -> {f.fixed}: {e}") from e
    except InputError as e:  # e.g. "moving image is too small to register"
        if e.path is not None:
            raise
        raise InputError(f"{f.moving} -> {f.fixed}: {e}") from e
    if predict_seconds is not None:  # the optimiser's seconds do not include it; the total does, as in a cohort
        result.log["predict_seconds"] = round(predict_seconds, 3)
        result.log["total_seconds"] = round(result.log["total_seconds"] + predict_seconds, 3)
    if log_extra is not None:
        result.log.update(log_extra())
    t_write = time.perf_counter()
    written = write_registration(result, out, moving_img, labels, qc=qc, force=force, default_value=default_value,
                                 labels_dtype=stored_integer_dtype(f.moving_labels) if f.moving_labels is not None else None)
    return PairRun(result, written, time.perf_counter() - t_write)


def check_registration_memory(fixed_img: Image, moving_img: Image, cfg, path: Path) -> None:
    """Refuse early (:class:`~regkit.errors.ResourceError`, exit 3) when the finest level would not
    fit in memory (:func:`regkit.resources.estimate_registration` on the images' grids)."""
    from regkit import resources

    spacing = min(fixed_img.spacing)
    scale = lambda s: [max(2, int(n * spacing / max(s, spacing)) + 1) for n in fixed_img.shape]  # noqa: E731
    levels = [scale(l.spacing_mm) for l in cfg.deformable.levels] or [scale(l.spacing_mm) for l in cfg.affine.levels]
    controls = [scale(l.control_spacing_mm) for l in cfg.deformable.levels]
    est = resources.estimate_registration(fixed_img.shape, moving_img.shape, levels, controls, metric=cfg.metric,
                                          mi_bins=cfg.mi_bins)
    resources.check_memory(est.total, f"registering on a {'x'.join(map(str, fixed_img.shape))} grid", path=path)
