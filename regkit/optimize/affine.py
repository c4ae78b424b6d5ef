"""Affine stage: initialisation by centres of mass, then 12 parameters optimised coarse to fine."""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor

from regkit import space
from regkit.intensity import center_of_mass
from regkit.optimize.config import AffineLevel, AffineStage, RegistrationConfig
from regkit.optimize.levels import Level
from regkit.optimize.loop import run_adam
from regkit.optimize.objective import Similarity
from regkit.transforms import AffineTransform


def initial_affine(level: Level, how: str) -> AffineTransform:
    """Identity matrix about the fixed centre of mass, translated onto the moving one
    (``center_of_mass``); about the grid centres (``geometric_center``); or identity (``none``)."""
    if how == "center_of_mass":
        cf = center_of_mass(level.fixed.cpu(), level.grid.affine)
        cm = center_of_mass(level.moving.cpu(), level.moving_affine)
    elif how == "geometric_center":
        cf = _grid_center(level.grid.affine, level.grid.shape)
        cm = _grid_center(level.moving_affine, level.moving.shape[2:])
    else:
        cf = _grid_center(level.grid.affine, level.grid.shape)
        cm = cf
    return AffineTransform(torch.eye(3), (cm - cf).float(), cf.float())


def _grid_center(affine, shape) -> Tensor:
    return space.voxel_to_world((torch.tensor([float(s) for s in shape[-3:]], dtype=torch.float64) - 1) / 2, affine)


def optimize_affine(levels: List[Level], transform: AffineTransform, sim: Similarity, stage: AffineStage,
                    config: RegistrationConfig, progress: bool = False) -> Tuple[AffineTransform, List[Dict]]:
    """Optimise ``transform`` (in place; its matrix and translation are Parameters) on each level.

    ``levels[i]`` pairs with ``stage.levels[i]``. Returns the transform and one log per level.
    """
    device = levels[0].fixed.device if levels else None
    transform = transform.to(device)
    transform.matrix.requires_grad_(True)
    transform.translation.requires_grad_(True)
    logs = []
    for i, (level, settings) in enumerate(zip(levels, stage.levels)):
        to_norm = level.world_to_moving_normalized().to(level.world.device, level.world.dtype)

        base = None
        if stage.rigid:  # rotations about this level's start: R = base @ exp(skew(base^T M)), smooth at M = base
            with torch.no_grad():
                base = nearest_rotation(transform.matrix)
                transform.matrix.copy_(base)

        def loss_fn(level=level, to_norm=to_norm, base=base) -> Tensor:
            h = _rigid_homogeneous(transform, base) if base is not None else transform.homogeneous()
            m = to_norm @ h.to(to_norm.dtype)  # world -> moving grid_sample coords
            warped, mask = level.sample_moving(level.world @ m[:3, :3].T + m[:3, 3])
            return sim(level.fixed, warped, mask)

        groups = [{"params": [transform.matrix], "lr": stage.lr_matrix},
                  {"params": [transform.translation], "lr": stage.lr_translation_mm}]
        log = run_adam(groups, loss_fn, settings.iterations, config.early_stop_window, config.early_stop_tolerance,
                       progress=progress, desc=f"affine {i + 1}/{len(levels)} @{level.spacing_mm:g}mm")
        log.update(stage="affine", level=i, spacing_mm=level.spacing_mm, grid=list(level.grid.shape))
        logs.append(log)
        if base is not None:
            with torch.no_grad():
                transform.matrix.copy_(_rotation(transform.matrix, base))
    transform.matrix.requires_grad_(False)
    transform.translation.requires_grad_(False)
    return transform, logs


def nearest_rotation(matrix: Tensor) -> Tensor:
    """The rotation closest to ``matrix`` (3, 3) (Frobenius; SVD, determinant +1). Not for
    gradients: SVD's is undefined where singular values repeat (a rotation's are all 1)."""
    u, _, vh = torch.linalg.svd(matrix)
    d = torch.ones(3, dtype=matrix.dtype, device=matrix.device)
    d[2] = torch.sign(torch.det(u @ vh))
    return u @ torch.diag(d) @ vh


def _rotation(matrix: Tensor, base: Tensor) -> Tensor:
    """``base @ exp(skew(base^T matrix))``: a rotation for any ``matrix``, ``base`` at ``matrix =
    base``, differentiable everywhere (the rigid stage's parametrisation)."""
    a = base.T @ matrix
    return base @ torch.linalg.matrix_exp(0.5 * (a - a.T))


def _rigid_homogeneous(transform: AffineTransform, base: Tensor) -> Tensor:
    """``transform``'s 4x4 with its matrix replaced by :func:`_rotation` (rigid stage: the
    optimiser moves 9 numbers, the image sees only a rotation)."""
    h = transform.homogeneous()  # [M | t + c - M c]
    r = _rotation(transform.matrix, base)
    c = transform.center.to(r.dtype)
    top = torch.cat([r, (h[:3, 3] + (transform.matrix - r) @ c)[:, None]], dim=1)  # [R | t + c - R c]
    return torch.cat([top, h[3:]], dim=0)


def search_rotations(level: Level, start: AffineTransform, sim: Similarity, stage: AffineStage,
                     config: RegistrationConfig, iterations: int = 10) -> Tuple[AffineTransform, Dict]:
    """The best of several starting rotations, each refined briefly on ``level`` (the coarsest).

    Candidates: ``start`` and ``start`` turned about its centre by ± each of
    ``stage.rotation_search_deg`` (degrees) about each world axis (with 15 and 30: 13 starts).
    Each is optimised for ``iterations`` steps and the one with the lowest loss is returned, so
    an affine stage that would settle in the local optimum next to the centre-of-mass start
    (heads pitched 30° apart) starts near the right one (benchmarks/README.md, "Measurements behind design choices").
    Returns ``(transform, log)``; the log names the chosen rotation (axis 0/1/2 = x/y/z world).
    """
    import math
    import time

    t0 = time.perf_counter()
    short = stage.model_copy(update={"levels": [AffineLevel(spacing_mm=level.spacing_mm, iterations=iterations)]})
    candidates = [(None, 0.0)] + [(axis, sign * float(a)) for a in stage.rotation_search_deg
                                  for axis in range(3) for sign in (1.0, -1.0)]
    best = None
    for axis, degrees in candidates:
        turn = torch.eye(3, dtype=start.matrix.dtype)
        if axis is not None:
            i, j = [(1, 2), (0, 2), (0, 1)][axis]
            c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
            turn[i, i], turn[j, j], turn[i, j], turn[j, i] = c, c, -s, s
        candidate = AffineTransform((turn @ start.matrix.detach().cpu()).clone(), start.translation.detach().cpu().clone(),
                                    start.center.detach().cpu().clone())
        candidate, logs = optimize_affine([level], candidate, sim, short, config)
        loss = logs[0]["loss"][-1] if logs[0]["loss"] else float("inf")
        if best is None or loss < best[0]:
            best = (loss, candidate, axis, degrees)
    assert best is not None
    log = {"candidates": len(candidates), "chosen_axis": best[2], "chosen_degrees": best[3], "loss": best[0],
           "seconds": round(time.perf_counter() - t0, 3)}
    return best[1], log


def as_affine_transform(t: Optional[object]) -> Optional[AffineTransform]:
    """``t`` when it is a (non-batched) :class:`AffineTransform`, else None."""
    return t if isinstance(t, AffineTransform) and not t.batched else None
