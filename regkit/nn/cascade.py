"""The coarse-to-fine cascade: affine localisation net, then dense-field stages.

Every stage sees the moving image warped by everything before it: the stage's grid points go
through the whole chain built so far (``Compose``: newest field first, affine last — the
ANTs ``-t Warp -t Affine`` order) and the moving image of that level is sampled ONCE at the
resulting points. The chain is made of regkit's own transforms (``AffineTransform``,
``DisplacementField``, ``VelocityField``), so the prediction is an ordinary regkit transform.

Coordinates: the network works on the canonical grid of :mod:`regkit.nn.grid` (network world
mm, origin at the fixed image's centre); :meth:`CascadeNet.to_world` shifts the result to world mm.
"""
from __future__ import annotations

from typing import Dict, List, Optional

import torch
from torch import Tensor, nn

from regkit.nn.config import ModelConfig
from regkit.nn.grid import canonical_grid_affine, shifted
from regkit.nn.networks import AffineNet, FieldNet, KeypointAffineNet
from regkit.pyramid import average_pooled, pooled_grid_affine
from regkit.resample import warp
from regkit.transforms import AffineTransform, Compose, DisplacementField, Transform, VelocityField


class PredictedAffine(AffineTransform):
    """An :class:`AffineTransform` whose matrix and translation are network outputs.

    ``AffineTransform`` wraps its parameters in fresh ``nn.Parameter`` leaves (right for an
    optimiser, but it would cut the gradient to the network); here they are kept as the given
    tensors, so ``forward`` and ``homogeneous`` stay differentiable with respect to the network.
    """

    def __init__(self, matrix: Tensor, translation: Tensor, center: Tensor):
        nn.Module.__init__(self)
        self.register_buffer("matrix", matrix)
        self.register_buffer("translation", translation)
        self.register_buffer("center", center)


class CascadeNet(nn.Module):
    """Affine localisation net (optional) followed by ``len(config.stages)`` field stages."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        pair_channels = 2 * config.in_channels
        self.affine_net: Optional[nn.Module] = None
        if config.affine.enabled and config.affine.head == "keypoints":
            self.affine_net = KeypointAffineNet(config.in_channels, config.affine.channels, config.affine.keypoints, config.affine.ridge,
                                               config.affine.gain_scale)
        elif config.affine.enabled:
            self.affine_net = AffineNet(pair_channels, config.affine.channels)
        self.stages = nn.ModuleList(FieldNet(pair_channels, s.channels, s.head_channels) for s in config.stages)
        self.grid_affine = canonical_grid_affine(config.grid_shape, config.grid_spacing_mm)

    # ------------------------------------------------------------------ forward
    def forward(self, moving: Tensor, fixed: Tensor, full_resolution: bool = True) -> Dict[str, Tensor]:
        """Predict the fixed→moving mapping of a batch on the canonical grid.

        Args:
            moving, fixed: ``(N, C, X, Y, Z)`` intensity-normalised, on the canonical grid.
            full_resolution: also map every grid voxel and warp the moving image (``points``,
                ``warped``: what the training loss needs); inference, which only needs the fields
                and the affine, skips it.
        Returns:
            ``warped`` (moving warped by the whole cascade, ``(N, C, X, Y, Z)``); ``points``
            (the mapped network-world mm of every grid voxel, ``(N, X, Y, Z, 3)``);
            ``affine_matrix`` ``(N, 3, 3)`` and ``affine_translation`` ``(N, 3)`` mm when the
            affine net is on (and, with ``full_resolution``, ``affine_points``: every grid voxel
            mapped by the affine alone, for the affine stage's own loss); ``field{k}`` ``(N, 3, ...)`` mm (displacement or velocity) of
            stage k on its level grid.
        """
        levels = {1: (moving, fixed)}
        for scale in self._scales():
            if scale not in levels:
                levels[scale] = (average_pooled(moving, scale), average_pooled(fixed, scale))
        out: Dict[str, Tensor] = {}
        chain: List[Transform] = []
        if self.affine_net is not None:
            mov, fix = levels[self.config.affine.scale]
            if isinstance(self.affine_net, KeypointAffineNet):
                level_affine = pooled_grid_affine(self.grid_affine, self.config.affine.scale)
                matrix, translation = self.affine_net(mov, fix, level_affine)
            else:
                matrix, translation = self.affine_net(torch.cat([mov, fix], dim=1))
                translation = translation * self.config.affine.translation_scale_mm
            out["affine_matrix"], out["affine_translation"] = matrix, translation
            chain.append(PredictedAffine(matrix, translation, torch.zeros(3, device=matrix.device, dtype=matrix.dtype)))
        for k, (stage, net) in enumerate(zip(self.config.stages, self.stages)):
            mov, fix = levels[stage.scale]
            affine = pooled_grid_affine(self.grid_affine, stage.scale)
            warped = self._warp(mov, affine, chain)
            voxel_mm = self.config.grid_spacing_mm * stage.scale
            field = net(torch.cat([warped, fix], dim=1)) * voxel_mm
            out[f"field{k}"] = field
            if not full_resolution and k == len(self.stages) - 1:
                break  # inference needs the fields, not the last stage's map (its exp is ~7 % of a prediction)
            if stage.field == "svf":
                step = VelocityField(field, affine, steps=stage.svf_steps).exp()
            else:
                step = DisplacementField(field, affine)
            chain.insert(0, step)
        if full_resolution:
            points = self._points(moving, self.grid_affine, chain)
            out["points"] = points
            if self.affine_net is not None:
                out["affine_points"] = self._points(moving, self.grid_affine, chain[-1:])
            out["warped"] = warp(moving, self.grid_affine, points)
        return out

    def _scales(self) -> List[int]:
        scales = [s.scale for s in self.config.stages]
        if self.affine_net is not None:
            scales.append(self.config.affine.scale)
        return scales

    @staticmethod
    def _points(volume: Tensor, affine: Tensor, chain: List[Transform]) -> Tensor:
        points = Compose(*chain).grid_points(affine, volume.shape[2:], device=volume.device)
        return points if points.dim() == 5 else points.expand(volume.shape[0], *points.shape)

    def _warp(self, volume: Tensor, affine: Tensor, chain: List[Transform]) -> Tensor:
        return warp(volume, affine, self._points(volume, affine, chain)) if chain else volume

    # ------------------------------------------------------------------ outputs as transforms
    def to_world(self, outputs: Dict[str, Tensor], offset_mm: Optional[Tensor] = None, index: int = 0,
                 moving_offset_mm: Optional[Tensor] = None) -> Compose:
        """Item ``index`` of a forward pass as a plain regkit transform in WORLD mm.

        ``offset_mm`` is the world position of the network origin in the fixed image (zero keeps
        network coordinates); ``moving_offset_mm`` its position in the moving image when the moving
        box was placed elsewhere (:func:`regkit.nn.predict.prepare_pair`: each image's centre of
        mass; default: the same). Returns ``Compose(field_K, ..., field_1, affine)`` (fixed world
        points → moving world points; the affine carries the boxes' offset), detached, batch size
        1, unbatched affine.
        """
        c = torch.zeros(3, dtype=torch.float64) if offset_mm is None else torch.as_tensor(offset_mm, dtype=torch.float64)
        between = torch.zeros(3, dtype=torch.float64) if moving_offset_mm is None else \
            torch.as_tensor(moving_offset_mm, dtype=torch.float64) - c
        transforms: List[Transform] = []
        for k, stage in enumerate(self.config.stages):
            field = outputs[f"field{k}"][index: index + 1].detach().float().cpu()
            affine = shifted(pooled_grid_affine(self.grid_affine, stage.scale), c)
            if stage.field == "svf":
                transforms.insert(0, VelocityField(field, affine, steps=stage.svf_steps))
            else:
                transforms.insert(0, DisplacementField(field, affine))
        if "affine_matrix" in outputs:
            matrix = outputs["affine_matrix"][index].detach().double().cpu()
            translation = outputs["affine_translation"][index].detach().double().cpu() + between
            transforms.append(AffineTransform(matrix, translation, center=c, requires_grad=False))
        elif bool(between.any()):
            transforms.append(AffineTransform(torch.eye(3, dtype=torch.float64), between, center=c, requires_grad=False))
        return Compose(*transforms)
