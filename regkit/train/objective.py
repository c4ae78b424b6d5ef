"""The training loss, built from :mod:`regkit.losses` (the same terms the optimiser uses):

``similarity_weight · similarity(fixed, warped) + reg_weight · Σ_stages regulariser(field_k, level spacing)
+ dice_weight · soft Dice(fixed labels, moving labels one-hot warped with linear interpolation)
+ affine_l2_weight · affine_l2(matrix, translation)
+ affine_stage_weight · (similarity_weight · similarity + dice_weight · soft Dice) of the affine alone``
(deep supervision of the localisation net, scored on every ``affine_stage_stride``-th voxel).

Velocity stages are regularised on their velocity, displacement stages on their displacement.
"""
from __future__ import annotations

from typing import Callable, Dict, Tuple

import torch
from torch import Tensor

from regkit.resample import warp


class CascadeLoss:
    """Callable ``(outputs, batch) -> (total, {term: value})`` for a :class:`CascadeNet`."""

    def __init__(self, loss_config, model_config, num_labels: int = 0):
        from regkit.losses import regularization, similarity

        self.config = loss_config
        self.model_config = model_config
        self.similarity: Callable = similarity.get_similarity(loss_config.similarity, **loss_config.similarity_options)
        self.regularizer: Callable = regularization.get_regularizer(loss_config.regularization)
        self.affine_l2: Callable = getattr(regularization, "affine_l2", None)
        if loss_config.affine_l2_weight > 0 and self.affine_l2 is None:
            raise ValueError("loss.affine_l2_weight > 0 needs regkit.losses.regularization.affine_l2")
        self.num_labels = num_labels
        self.dice = None
        if loss_config.dice_weight > 0 and num_labels > 1:
            from monai.losses import DiceLoss

            self.dice = DiceLoss(include_background=False, reduction="mean")

    def __call__(self, outputs: Dict[str, Tensor], batch: Dict[str, Tensor], grid_affine: Tensor) -> Tuple[Tensor, Dict[str, float]]:
        cfg = self.config
        terms: Dict[str, Tensor] = {"similarity": self.similarity(batch["fixed"], outputs["warped"])}
        reg = outputs["warped"].new_zeros(())
        for k, stage in enumerate(self.model_config.stages):
            spacing = torch.full((3,), self.model_config.grid_spacing_mm * stage.scale)
            reg = reg + self.regularizer(outputs[f"field{k}"], spacing)
        terms["regularization"] = reg
        total = cfg.similarity_weight * terms["similarity"] + cfg.reg_weight * reg
        if self.dice is not None and "moving_labels" in batch:
            batch = {**batch, "moving_one_hot": one_hot(batch["moving_labels"], self.num_labels)}  # made once, warped twice
            terms["dice"] = self.soft_dice(outputs["points"], batch, grid_affine)
            total = total + cfg.dice_weight * terms["dice"]
        if cfg.affine_l2_weight > 0 and "affine_matrix" in outputs:
            terms["affine_l2"] = self.affine_l2(outputs["affine_matrix"], outputs["affine_translation"])
            total = total + cfg.affine_l2_weight * terms["affine_l2"]
        if cfg.affine_stage_weight > 0 and "affine_points" in outputs:
            terms["affine_stage"] = self.affine_stage(outputs["affine_points"], batch, grid_affine)
            total = total + cfg.affine_stage_weight * terms["affine_stage"]
        return total, {k: float(v.detach()) for k, v in terms.items()}

    def affine_stage(self, points: Tensor, batch: Dict[str, Tensor], grid_affine: Tensor) -> Tensor:
        """Similarity (+ ``dice_weight`` · soft Dice) of the moving image mapped through the
        affine stage's ``points`` alone, on every ``affine_stage_stride``-th voxel per axis."""
        s = self.config.affine_stage_stride
        term = points.new_zeros(())
        if self.config.similarity_weight > 0:
            sub = points[:, ::s, ::s, ::s]
            term = self.config.similarity_weight * self.similarity(batch["fixed"][:, :, ::s, ::s, ::s], warp(batch["moving"], grid_affine, sub))
        if self.dice is not None and "moving_labels" in batch:
            term = term + self.config.dice_weight * self.soft_dice(points, batch, grid_affine, s)
        return term

    def soft_dice(self, points: Tensor, batch: Dict[str, Tensor], grid_affine: Tensor, stride: int = 0) -> Tensor:
        """1 − mean foreground Dice of the moving labels' one-hot maps warped linearly through
        ``points`` against the fixed labels (both on the network grid), on every
        ``dice_stride``-th voxel per axis (exact sampling at those voxels, 8× cheaper at 2)."""
        s = stride or self.config.dice_stride
        moving = batch["moving_one_hot"] if "moving_one_hot" in batch else one_hot(batch["moving_labels"], self.num_labels)
        fixed = one_hot(batch["fixed_labels"][:, :, ::s, ::s, ::s], self.num_labels)
        warped = warp(moving, grid_affine, points[:, ::s, ::s, ::s], mode="linear")
        return self.dice(warped, fixed)


def one_hot(labels: Tensor, num_labels: int) -> Tensor:
    """``(N, 1, X, Y, Z)`` integer labels → ``(N, num_labels, X, Y, Z)`` float (values ≥
    ``num_labels`` count as background)."""
    lab = labels.long()
    lab = torch.where(lab < num_labels, lab, torch.zeros_like(lab))
    # scattered straight into float32: F.one_hot builds an int64 copy 2x its size first
    out = torch.zeros(lab.shape[0], num_labels, *lab.shape[2:], device=lab.device)
    return out.scatter_(1, lab, 1.0)
