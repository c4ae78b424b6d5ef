"""``register(moving, fixed)``: centre-of-mass initialisation → affine → dense deformable, one pyramid.

The result maps FIXED world points to MOVING world points (mm, RAS):
``x -> A(x + u(x))``, i.e. ``Compose(deformable, affine)``.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

import torch

from regkit import space
from regkit.errors import InputError, RegistrationError
from regkit.grid import Grid
from regkit.image import Image
from regkit.checks import check_mask_not_empty
from regkit.devices import cpu_threads, resolve_device
from regkit.optimize.affine import as_affine_transform, initial_affine, optimize_affine, search_rotations
from regkit.optimize.config import DeformableStage, RegistrationConfig, load_config
from regkit.optimize.deformable import optimize_deformable
from regkit.intensity import robust_normalize
from regkit.optimize.levels import box_around, foreground_extent, level_margin_mm, make_level
from regkit.optimize.objective import similarity
from regkit.resample import resample
from regkit.transforms import AffineTransform, Compose, DisplacementField, Transform, VelocityField, to_displacement_field


@dataclass
class RegistrationResult:
    """What :func:`register` found.

    Attributes:
        transform: fixed→moving world map (mm, RAS), affine included: ``Compose(deformable, affine)``
            (or the affine alone when the deformable stage is off).
        warped: the moving image resampled on the fixed grid.
        reference: the fixed image (its grid is where :meth:`apply` resamples).
        log: settings, per-level losses and iteration counts, seconds.
        affine: the affine part alone.
        field: the whole transform as a dense displacement on the fixed grid (mm, RAS), computed
            once and reused by :meth:`apply` and the writers (it equals ``transform`` at the fixed
            voxels).
    """

    transform: Transform
    warped: Image
    reference: Image
    log: Dict[str, Any] = field(default_factory=dict)
    affine: Optional[Transform] = None
    field: Optional[DisplacementField] = None

    @property
    def grid(self) -> Grid:
        """The fixed grid: where :attr:`warped`, :attr:`field` and every written field live."""
        return self.reference.grid

    def apply(self, image: Image, mode: Optional[str] = None, default_value: float = 0.0) -> Image:
        """Resample ``image`` (in moving space) on the fixed grid; ``mode`` defaults to nearest
        for label images and linear otherwise; ``default_value`` outside ``image`` (not for labels)."""
        transform = self.field if self.field is not None else self.transform
        with torch.no_grad():
            return resample(image, transform.to(image.device), self.reference, mode=mode, default_value=default_value)


def _check_inputs(moving: Image, fixed: Image) -> None:
    for name, im in (("moving", moving), ("fixed", fixed)):
        if not isinstance(im, Image):
            raise InputError(f"{name} must be a regkit Image (use regkit.load_image), got {type(im).__name__}")
        if min(im.shape) < 4:
            raise InputError(f"{name} image is too small to register (shape {im.shape})")
    if moving.channels != fixed.channels:
        raise InputError(f"moving has {moving.channels} channels, fixed has {fixed.channels}")


def _normalized(image: Image) -> Image:
    return Image(robust_normalize(image.data), image.affine)


def register(moving: Image, fixed: Image, config=None, device: Optional[str] = None, seed: Optional[int] = None,
             initial_transform: Optional[Transform] = None, fixed_mask: Optional[Image] = None,
             moving_mask: Optional[Image] = None, metric: Optional[str] = None,
             progress: bool = False, default_value: float = 0.0) -> RegistrationResult:
    """Register ``moving`` to ``fixed``.

    Args:
        moving, fixed: images in world space (any grids; they need not match).
        config: preset name (``fast``, ``default``, ``accurate``, ``ct``, ``mri``), a YAML path, a
            dict or a :class:`RegistrationConfig`; ``default`` when None.
        device: ``cpu``, ``cuda`` or ``auto``/None.
        seed: seeds torch (the optimiser itself is deterministic on CPU).
        initial_transform: fixed→moving start. An :class:`AffineTransform` initialises the affine
            stage; any other transform (e.g. a learned cascade's prediction) replaces the affine
            stage and the deformable stage refines in front of it: ``x -> T0(x + u(x))``.
        fixed_mask, moving_mask: optional masks (non-zero = use) on their images' grids.
        metric: overrides the config's metric (``lncc``, ``mse``, ``mi``, ``mind``).
        progress: tqdm bars per level on stderr.
        default_value: the warped image's value where the moving image does not reach (e.g. -1000 for CT).
    Returns:
        a :class:`RegistrationResult`.
    """
    t_start = time.perf_counter()
    _check_inputs(moving, fixed)
    for mask, what in ((fixed_mask, "fixed mask"), (moving_mask, "moving mask")):
        if mask is not None:
            check_mask_not_empty(mask, what=what)
    cfg: RegistrationConfig = load_config(config, metric=metric)
    dev = resolve_device(device)
    if seed is not None:
        torch.manual_seed(int(seed))
    if dev.type == "cpu":
        torch.set_num_threads(cfg.threads or cpu_threads())

    levels = _Levels(fixed, moving, cfg, dev, fixed_mask, moving_mask)
    cfg = levels.cfg  # lengths scaled for small anatomy
    log: Dict[str, Any] = {"config": cfg.model_dump(), "device": str(dev), "seed": seed, "threads": torch.get_num_threads(),
                           "fixed_shape": list(fixed.shape), "moving_shape": list(moving.shape),
                           "working_box": list(levels.box.shape), "levels": []}
    if levels.scale < 1.0:
        log["length_scale"] = round(levels.scale, 4)

    outer, affine, initial_velocity = _start(initial_transform, levels, cfg, dev, log, progress)
    if "initial_transform" in log:  # the given start replaced the affine stage: do not log its settings as run
        log["config"]["affine"]["enabled"] = False

    # --- deformable stage
    transform: Transform = outer
    if cfg.deformable.enabled and cfg.deformable.levels:
        stage = levels_finer_each_time(cfg.deformable, float(space.spacing(fixed.affine).min()))
        def_levels = [levels.at(l.spacing_mm) for l in stage.levels]
        sim_def = similarity(cfg.metric, cfg.lncc_window, cfg.mi_bins)
        deformable, logs = optimize_deformable(def_levels, outer, sim_def, stage, cfg, initial=initial_velocity, progress=progress)
        log["levels"].extend(logs)
        transform = Compose(deformable, outer)
    transform = transform.cpu().requires_grad_(False)
    _check_finite(transform, log)
    _check_loss_did_not_rise(log)

    log["register_seconds"] = round(time.perf_counter() - t_start, 3)
    with torch.no_grad():
        dense = to_displacement_field(transform, fixed.affine, fixed.shape)  # the chain evaluated once
        warped = resample(moving, dense, fixed, default_value=default_value)
    if default_value != 0:
        log["default_value"] = default_value
    log["total_seconds"] = round(time.perf_counter() - t_start, 3)
    log["final_loss"] = log["levels"][-1]["loss"][-1] if log["levels"] and log["levels"][-1]["loss"] else None
    return RegistrationResult(transform, warped, fixed, log, affine.cpu() if affine is not None else None, dense)


class _Levels:
    """The pyramid levels of one registration, each built once per spacing (the affine and
    deformable stages share 4 mm) on the normalised images, cropped to the fixed foreground box
    (fine levels closer to it: :func:`level_margin_mm`). ``cfg``: the settings, their lengths
    scaled by ``scale`` when the anatomy is small (:func:`anatomy_scale`)."""

    def __init__(self, fixed: Image, moving: Image, cfg: RegistrationConfig, device, fixed_mask, moving_mask):
        self.fixed_n, self.moving_n = _normalized(fixed), _normalized(moving)
        self.extent = foreground_extent(self.fixed_n) if cfg.crop_margin_mm is not None else None
        self.box = box_around(self.fixed_n, self.extent, cfg.crop_margin_mm)
        self.scale = anatomy_scale(cfg, self.box)
        if self.scale < 1.0:  # e.g. a mouse brain: the preset's lengths are for human anatomy
            cfg = scaled_lengths(cfg, self.scale)
            self.box = box_around(self.fixed_n, self.extent, cfg.crop_margin_mm)
        self.cfg, self.device, self.masks = cfg, device, (fixed_mask, moving_mask)
        self._by_spacing: Dict[float, Any] = {}

    def at(self, spacing: float):
        """The level of ``spacing`` mm."""
        if spacing not in self._by_spacing:
            level_box = box_around(self.fixed_n, self.extent, level_margin_mm(self.cfg.crop_margin_mm, spacing))
            self._by_spacing[spacing] = make_level(self.fixed_n, self.moving_n, level_box, spacing, self.device, *self.masks)
        return self._by_spacing[spacing]


def _start(initial_transform: Optional[Transform], levels: _Levels, cfg: RegistrationConfig, dev, log: Dict[str, Any],
           progress: bool):
    """``(outer, affine, initial velocity)``: the transform the deformable stage refines in front
    of, its affine part (None when there is none) and the SVF to warm-start from (or None).

    Three ways: a given SVF chain (a learned cascade's SVFs + affine) warm-starts the optimiser's
    own velocity in front of its affine; any other non-affine start stays a fixed outer
    transform; otherwise the affine stage runs (from a given affine, or initialised by
    ``affine.init``). ``log`` records the start and the affine levels."""
    start_affine = as_affine_transform(initial_transform)
    warm = velocity_start(initial_transform) if cfg.deformable.model == "svf" and cfg.deformable.enabled else None
    if warm is not None:  # e.g. a learned cascade's SVFs + affine: the optimiser's own model, warm-started
        initial_velocity, start = warm
        outer = _float_copy(start).to(dev)
        log["initial_transform"] = f"{type(initial_transform).__name__} (velocity warm start)"
        return outer, outer, initial_velocity
    if initial_transform is not None and start_affine is None:
        outer = initial_transform.to(dev)
        for p in outer.parameters():
            p.requires_grad_(False)
        log["initial_transform"] = type(initial_transform).__name__
        affine = None
        if isinstance(outer, Compose) and isinstance(outer.transforms[-1], AffineTransform):
            affine = outer.transforms[-1]  # e.g. a learned cascade's affine: written as affine.mat + warp.nii.gz
        return outer, affine, None
    return (*_affine_stage(start_affine, levels, cfg, dev, log, progress), None)


def _affine_stage(start_affine: Optional[AffineTransform], levels: _Levels, cfg: RegistrationConfig, dev,
                  log: Dict[str, Any], progress: bool):
    """The affine stage: ``(affine, affine)`` optimised from ``start_affine`` or from
    ``affine.init`` (after the rotation search, when configured), its levels' logs added to ``log``."""
    aff_levels = [levels.at(l.spacing_mm) for l in cfg.affine.levels] if cfg.affine.enabled else []
    if start_affine is not None:
        aff = _float_copy(start_affine)
    else:
        aff = initial_affine(aff_levels[0] if aff_levels else levels.at(6.0), cfg.affine.init)
    if aff_levels:
        sim_aff = similarity(cfg.metric, cfg.affine.lncc_window, cfg.mi_bins)
        if start_affine is None and cfg.affine.rotation_search_deg:  # not from a user's start
            aff, log["rotation_search"] = search_rotations(aff_levels[0], aff, sim_aff, cfg.affine, cfg)
            aff = aff.to(dev)
        aff, logs = optimize_affine(aff_levels, aff, sim_aff, cfg.affine, cfg, progress)
        log["levels"].extend(logs)
        _check_overlap(aff_levels[-1], aff)
    affine = aff.to(dev)
    return affine, affine


REFERENCE_EXTENT_MM = 150.0
"""The presets' lengths suit anatomy whose fixed foreground box (with margin) has a median extent of
at least this (they were tuned on brains of 165-180 mm); smaller anatomy gets every length of the
settings scaled by ``extent / REFERENCE_EXTENT_MM`` (:func:`anatomy_scale`)."""


def anatomy_scale(cfg: RegistrationConfig, box) -> float:
    """Factor (<= 1) for the settings' lengths: the median extent (mm) of ``box`` (the fixed
    foreground + margin) over :data:`REFERENCE_EXTENT_MM`, at most 1.

    The presets' spacings, control grids, steps and margin are in mm, tuned on human anatomy
    (human brains and bodies: factor 1, nothing changes). A 16 mm mouse brain would otherwise be
    registered on 3-5 voxel grids with steps of a tenth of its size (its Dice: benchmarks/README.md, "Measurements behind design choices"); ANTs and
    elastix avoid that with shrink factors in voxels. The median extent, not the smallest, so a thin slab keeps the preset.
    ``cfg`` is unused today but kept so a config could opt out later."""
    del cfg
    extents = sorted(float(n) * float(sp) for n, sp in zip(box.shape, box.spacing))
    return min(1.0, extents[1] / REFERENCE_EXTENT_MM)


def scaled_lengths(cfg: RegistrationConfig, scale: float) -> RegistrationConfig:
    """``cfg`` with every length in mm (level and control spacings, Adam steps in mm, crop margin)
    multiplied by ``scale``; weights, windows (voxels) and iterations unchanged."""
    data = cfg.model_dump()
    for lv in data["affine"]["levels"]:
        lv["spacing_mm"] *= scale
    for lv in data["deformable"]["levels"]:
        lv["spacing_mm"] *= scale
        lv["control_spacing_mm"] *= scale
    data["affine"]["lr_translation_mm"] *= scale
    data["deformable"]["lr_mm"] *= scale
    if data["crop_margin_mm"] is not None:
        data["crop_margin_mm"] *= scale
    return RegistrationConfig.model_validate(data)


def levels_finer_each_time(stage: DeformableStage, finest_mm: float) -> DeformableStage:
    """``stage`` without the levels that would run at no finer a spacing than the level before.

    A level finer than the fixed image's voxels (``finest_mm``) runs at the image's spacing
    (:func:`~regkit.optimize.levels.make_level`), so on a 2 mm image the default preset's 1 mm
    level would repeat its 2 mm level, for seconds and no Dice (benchmarks/README.md, "Measurements behind design choices").
    The schedule of a fine image is unchanged."""
    kept, previous = [], None
    for settings in stage.levels:
        spacing = max(float(settings.spacing_mm), finest_mm)
        if previous is not None and spacing >= previous - 1e-6:
            continue
        kept.append(settings)
        previous = spacing
    return stage if len(kept) == len(stage.levels) else stage.model_copy(update={"levels": kept})


def _float_copy(affine: AffineTransform) -> AffineTransform:
    """A float32 copy of a start's affine with its own parameters (the start is left untouched)."""
    return AffineTransform(affine.matrix.detach().float(), affine.translation.detach().float(), affine.center.float())


def velocity_start(transform: Optional[Transform]):
    """``((velocity (1, 3, X, Y, Z) mm, its grid's affine), affine)`` when ``transform`` is a chain
    of stationary velocity fields followed by an affine — a learned cascade's SVF prediction,
    ``x -> A(exp(v_1)(...exp(v_K)(x)))`` — else None.

    The velocities are summed on the first (finest) field's grid: ``exp(v_1)∘exp(v_2) ≈
    exp(v_1 + v_2)`` to first order (Baker–Campbell–Hausdorff), and the optimiser corrects the
    rest. Refining from there optimises the optimiser's own model (one SVF in front of the
    affine, regularised as a whole) instead of a correction in front of the fixed chain, whose
    regulariser never sees the start's roughness and settles below the optimiser however many
    iterations it gets (benchmarks/README.md, "Measurements behind design choices")."""
    if not isinstance(transform, Compose) or len(transform) < 2:
        return None
    *fields, last = list(transform.transforms)
    affine = as_affine_transform(last)
    if affine is None or not all(isinstance(f, VelocityField) and f.batch_size is None for f in fields):
        return None
    first = fields[0]
    total = first.velocity.detach().float().clone()
    for other in fields[1:]:
        total = total + _velocity_on(other, first)
    return (total, first.affine), affine


def _velocity_on(field: "VelocityField", target: "VelocityField") -> torch.Tensor:
    """``field``'s velocity sampled at ``target``'s grid points, ``(1, 3, X, Y, Z)`` mm."""
    return DisplacementField(field.velocity.detach().float(), field.affine).displacement_on(
        target.affine, target.shape)[None]


def _check_finite(transform: Transform, log: Dict[str, Any]) -> None:
    """RegistrationError when the optimisation diverged (NaN/Inf parameters): refuse to write a
    NaN field with exit 0. Usually a weight or step size far too large for float32."""
    if all(bool(torch.isfinite(t).all()) for t in transform.state_dict().values() if t.is_floating_point()):
        return
    bad = next((f"{lv['stage']} level {lv['level']} @{lv['spacing_mm']:g}mm" for lv in log["levels"]
                if not all(map(math.isfinite, lv.get("loss") or [0.0]))), "the optimisation")
    raise RegistrationError(f"the optimisation diverged (non-finite values from {bad}); "
                            "lower the step size (lr_mm) or the weights in the settings")


def _check_loss_did_not_rise(log: Dict[str, Any]) -> None:
    """RegistrationError when a level ENDED well above where it started (by more than 0.05 + 10 %):
    the steps were too large and the result is worse than the level's start, though finite (e.g.
    lr_mm 50: loss 0.29 -> 0.40 and 0.52 -> 4.2, Dice 0.59; lr_mm 1e6: displacements of 1e5 mm).
    Converging runs end below their start (largest rise over 1718 levels of this project's
    benchmark runs: +0.0015)."""
    for lv in log["levels"]:
        loss = lv.get("loss") or []
        if len(loss) >= 2 and loss[-1] > loss[0] + 0.05 + 0.1 * abs(loss[0]):
            raise RegistrationError(f"the optimisation diverged ({lv['stage']} level {lv['level']} @{lv['spacing_mm']:g}mm "
                                    f"ended at loss {loss[-1]:.4g}, above its start {loss[0]:.4g}); lower the step size "
                                    "(lr_mm, lr_translation_mm) or the weights in the settings")


def _check_overlap(level, affine: AffineTransform, minimum: float = 0.05) -> None:
    """RegistrationError when less than ``minimum`` of the fixed foreground maps into the moving image."""
    with torch.no_grad():
        points = affine(level.world)
        grid = space.world_to_normalized(points, level.moving_affine, level.moving.shape[2:])
        inside = space.inside_mask(grid, level.moving.shape[2:]).float()
        fg = (level.fixed[0].sum(0) > 0.1).float()[None]
        frac = float((inside * fg).sum() / fg.sum().clamp(min=1))
    if frac < minimum:
        raise RegistrationError(f"after the affine stage only {100 * frac:.1f}% of the fixed foreground falls inside "
                                "the moving image; are these images of the same anatomy and in world space?")
