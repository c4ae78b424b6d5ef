"""Dense deformable stage: a stationary velocity field (or a displacement) on a coarse control
grid, refined level by level, in front of a fixed outer transform: ``x -> outer(x + u(x))``.

Per optimiser step (the design that makes it fast on a CPU):

* ``u`` lives on a control grid of ``control_spacing_mm`` (2-4x the level's voxels); for the SVF
  model ``exp(v)`` is integrated THERE by scaling and squaring (few steps), then sampled at the
  level's voxels with ONE trilinear upsampling (the same interpolation the final
  :class:`~regkit.transforms.VelocityField` uses, so the optimised and the saved maps agree),
  done as three matrix products (the grids are parallel);
* the moving image is sampled ONCE at ``outer(x + u(x))`` (no intermediate resampling); an
  affine ``outer`` is folded into one matrix — whose linear part is applied to ``u`` on the
  control grid, before the upsampling (both are linear) — a dense one (a cascade's prediction
  being refined) is evaluated once per level with its Jacobian and applied to first order;
* the regulariser acts on the control-grid parameters.

A level starts from the previous level's parameters resampled onto its own control grid, so the
result is ONE field on the finest control grid.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from regkit.optimize.config import DeformableStage, RegistrationConfig
from regkit.optimize.levels import Level
from regkit.optimize.loop import run_adam
from regkit.optimize.objective import Similarity, folding_penalty, regularizer
from regkit.grid import Grid
from regkit.transforms import AffineTransform, DisplacementField, Transform, VelocityField, sample_field, scaling_and_squaring
from regkit.transforms.field import apply_separable, separable_weights


def control_grid(level: Level, control_spacing_mm: float) -> Grid:
    """Control grid of a level: its corner voxels are the level grid's corner voxels and its
    spacing is close to ``control_spacing_mm`` (adjusted per axis so the corners coincide).

    With coinciding corners and parallel axes, trilinear sampling at the level's voxel centres is
    ``F.interpolate(..., mode="trilinear", align_corners=True)``, done as three matrix products
    (:func:`~regkit.transforms.field.separable_weights`) — on a CPU several times cheaper to
    differentiate than a ``grid_sample`` whose input needs a gradient, and than
    ``F.interpolate``, whose backward runs on one thread (benchmarks/README.md, "How regkit gets its speed").
    """
    spacing = max(float(control_spacing_mm), level.spacing_mm)
    level_spacing = level.grid.spacing
    extent = (torch.tensor([float(s) for s in level.grid.shape], dtype=torch.float64) - 1) * level_spacing
    shape = torch.clamp(torch.round(extent / spacing), min=1) + 1
    affine = level.grid.affine.clone()
    affine[:3, :3] = affine[:3, :3] / level_spacing * (extent / (shape - 1))
    return Grid(affine, tuple(int(s) for s in shape))  # type: ignore[arg-type]


def resample_parameters(field: Tensor, affine, grid: Grid) -> Tensor:
    """A vector field ``(1, 3, X, Y, Z)`` (grid ``affine``) trilinearly resampled onto ``grid``."""
    points = grid.world(device=field.device, dtype=field.dtype)
    return sample_field(field, affine, points).movedim(-1, 0)[None].contiguous()


def _upsampler(grid: Grid, level: Level):
    """``u_ctrl (1, C, *control shape) -> (1, C, *level shape)``: trilinear upsampling from the
    control grid to the level's voxels (:func:`control_grid`)."""
    weights = separable_weights(grid.affine, grid.shape, level.grid.affine, level.grid.shape,
                                dtype=level.world.dtype, device=level.world.device)
    if weights is None:  # not parallel (never for a control grid made by control_grid)
        return lambda u: F.interpolate(u, size=level.grid.shape, mode="trilinear", align_corners=True)
    return lambda u: apply_separable(u, weights)


def _points_to_moving_grid(outer: Transform, level: Level, upsample):
    """``u_ctrl (1, 3, *control shape) mm -> grid_sample coordinates of outer(x + u(x))`` in the
    moving copy, ``u`` = ``upsample(u_ctrl)``.

    For an affine ``outer`` the world→moving-grid matrix is folded into it once, and its linear
    part applied to ``u_ctrl`` on the control grid before upsampling, so a step costs a 3×3
    product on the small grid and one add at the level's voxels (measured: the point maths was a
    large part of a step on 2 cores); any other outer transform is applied to the points."""
    to_norm = level.world_to_moving_normalized()
    if isinstance(outer, AffineTransform) and not outer.batched:
        m = (to_norm @ outer.homogeneous().detach().double().cpu()).to(level.world.device, level.world.dtype)
        base = level.world @ m[:3, :3].T + m[:3, 3]
        lin = m[:3, :3]
        return lambda u_ctrl: base + upsample(torch.tensordot(lin, u_ctrl, dims=([1], [1])).movedim(0, 1)).movedim(1, -1)
    m = to_norm.to(level.world.device, level.world.dtype)
    return lambda u_ctrl: outer(level.world + upsample(u_ctrl).movedim(1, -1)) @ m[:3, :3].T + m[:3, 3]


def _points_through_dense_outer(outer: Transform, level: Level, upsample):
    """Like :func:`_points_to_moving_grid` for a dense ``outer`` (e.g. a learned cascade's
    prediction being refined): ``outer`` is evaluated ONCE per level, as the moving-grid
    coordinates ``P(x)`` of ``outer(x)`` at every level voxel and their Jacobian ``J(x)`` (central
    differences, per mm); a step uses ``P(x) + J(x) u(x)``, first order in the refinement ``u``
    (``outer`` is smooth and ``u`` a correction of a few mm), so it costs elementwise products
    like the affine case instead of pushing the points through ``outer``'s fields or sampling a
    map with a gradient (measured on 2 cores: 2.4× and 1.7× slower per refinement). The moving
    image is still sampled once, at the mapped points."""
    to_norm = level.world_to_moving_normalized().to(level.world.device, level.world.dtype)
    with torch.no_grad():
        mapped = outer(level.world) @ to_norm[:3, :3].T + to_norm[:3, 3]                  # (1, X, Y, Z, 3)
        per_voxel = torch.stack(torch.gradient(mapped, dim=(1, 2, 3)), dim=-1)         # d mapped / d (i, j, k)
        per_mm = torch.linalg.inv(level.grid.affine[:3, :3].double()).to(mapped.device, mapped.dtype)
        jacobian = per_voxel @ per_mm                                                    # (1, X, Y, Z, 3, 3)
    return lambda u_ctrl: mapped + (jacobian @ upsample(u_ctrl).movedim(1, -1)[..., None])[..., 0]


def optimize_deformable(levels: List[Level], outer: Transform, sim: Similarity, stage: DeformableStage,
                        config: RegistrationConfig, initial: Optional[Tuple[Tensor, Tensor]] = None,
                        progress: bool = False) -> Tuple[Transform, List[Dict]]:
    """Optimise the deformable part on each level (``levels[i]`` pairs with ``stage.levels[i]``).

    Args:
        outer: the transform applied after the deformable one (the affine), kept fixed.
        initial: optional ``(parameters (1, 3, X, Y, Z) mm, affine)`` to start from.
    Returns:
        ``(VelocityField or DisplacementField on the finest control grid, logs per level)``.
    """
    reg = regularizer(stage.regularizer)
    weight = config.metric_weights.get(config.metric, 1.0)
    params, params_affine = initial if initial is not None else (None, None)
    logs: List[Dict] = []
    for i, (level, settings) in enumerate(zip(levels, stage.levels)):
        grid = control_grid(level, settings.control_spacing_mm)
        device = level.fixed.device
        if params is None:
            start = torch.zeros(1, 3, *grid.shape, device=device)
        else:
            start = resample_parameters(params.to(device), params_affine, grid)
        v = start.clone().requires_grad_(True)
        spacing = grid.spacing.to(device=device, dtype=v.dtype)

        upsample = _upsampler(grid, level)
        if isinstance(outer, AffineTransform) and not outer.batched:
            to_moving = _points_to_moving_grid(outer, level, upsample)
        else:
            to_moving = _points_through_dense_outer(outer, level, upsample)

        def loss_fn(level=level, grid=grid, spacing=spacing, v=v, to_moving=to_moving) -> Tensor:
            u_ctrl = scaling_and_squaring(v, grid.affine, stage.squaring_steps) if stage.model == "svf" else v
            warped, mask = level.sample_moving(to_moving(u_ctrl))
            loss = weight * sim(level.fixed, warped, mask)
            if stage.regularization_weight > 0:
                loss = loss + stage.regularization_weight * reg(v, spacing)
            if stage.folding_weight > 0:
                loss = loss + stage.folding_weight * folding_penalty(u_ctrl, grid.affine)
            return loss

        log = run_adam([{"params": [v], "lr": stage.lr_mm}], loss_fn, settings.iterations,
                       config.early_stop_window, config.early_stop_tolerance, progress=progress,
                       desc=f"deformable {i + 1}/{len(levels)} @{level.spacing_mm:g}mm",
                       warmup=min(stage.warmup_iterations, settings.iterations // 3) if params is not None else 0)
        log.update(stage="deformable", level=i, spacing_mm=level.spacing_mm, grid=list(level.grid.shape),
                   control_grid=list(grid.shape), control_spacing_mm=float(grid.spacing.min()))
        logs.append(log)
        params, params_affine = v.detach(), grid.affine
    if params is None:
        raise ValueError("the deformable stage needs at least one level")
    if stage.model == "svf":
        return VelocityField(params, params_affine, steps=stage.squaring_steps), logs
    return DisplacementField(params, params_affine), logs
