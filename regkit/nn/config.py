"""Configuration of a cascade model (validated by pydantic; unknown keys are errors).

Everything that fixes the network's weights' shapes or the meaning of its inputs lives here, and is
stored inside every checkpoint, so a checkpoint alone is enough to rebuild its model.
"""
from __future__ import annotations

import math
from typing import List, Literal, Tuple

from pydantic import Field, field_validator, model_validator

from regkit.config import StrictModel
from regkit.intensity import IntensityConfig


class AffineNetConfig(StrictModel):
    """Localisation network.

    ``head``: ``pool`` — strided conv encoder on the pair → global pooling → 12 affine parameters
    (last layer zero: identity at start); ``keypoints`` — one encoder per image (shared weights)
    → ``keypoints`` soft-argmax points each → least-squares affine between them (identity
    whenever moving equals fixed; see :class:`regkit.nn.networks.KeypointAffineNet`).

    ``scale``: the encoder sees the images average-pooled by this factor from the training grid.
    ``translation_scale_mm``: the network's translation output (unitless) times this is mm.
    The last layer starts at zero, so the cascade starts at the identity.
    """

    enabled: bool = True
    head: Literal["pool", "keypoints"] = "pool"
    scale: int = Field(2, ge=1)
    channels: List[int] = Field(default_factory=lambda: [16, 32, 32, 64])
    translation_scale_mm: float = Field(10.0, gt=0)
    keypoints: int = Field(32, ge=4, description="keypoints head: heat maps per image")
    ridge: float = Field(0.01, ge=0, description="keypoints head: pull of the fit towards the identity")
    gain_scale: float = Field(1.0, gt=0, description="keypoints head: the heat maps' gain (zero at the start) is learnt this many times faster")


class StageConfig(StrictModel):
    """One dense-field stage: a small U-Net (MONAI's ``UNet`` layout) on the pair at 1/``scale`` of the
    training grid, whose output is a displacement or stationary velocity field on that level's
    grid, in units of that level's voxel size (converted to mm)."""

    scale: int = Field(2, ge=1)
    channels: List[int] = Field(default_factory=lambda: [16, 32, 32, 32])
    field: Literal["displacement", "svf"] = "svf"
    svf_steps: int = Field(6, ge=0, le=10)
    head_channels: int = Field(16, ge=1)

    @field_validator("channels")
    @classmethod
    def _at_least_two(cls, v: List[int]) -> List[int]:
        if len(v) < 2:
            raise ValueError("a stage U-Net needs at least two channel entries (one down-sampling)")
        return v


class ModelConfig(StrictModel):
    """The whole cascade: the common training grid, the affine net and the field stages.

    The training grid is axis-aligned (RAS), ``grid_shape`` voxels of ``grid_spacing_mm``; both
    images are resampled onto it in physical space, each image's box centred on its intensity
    centre of mass, in training and at inference alike (:func:`regkit.nn.predict.prepare_pair`).
    """

    grid_shape: Tuple[int, int, int] = (96, 112, 96)
    grid_spacing_mm: float = Field(2.0, gt=0)
    in_channels: int = Field(1, ge=1)
    intensity: IntensityConfig = Field(default_factory=IntensityConfig)
    affine: AffineNetConfig = Field(default_factory=AffineNetConfig)
    stages: List[StageConfig] = Field(default_factory=lambda: [StageConfig(scale=4), StageConfig(scale=2)])

    @model_validator(mode="after")
    def _grid_fits_the_networks(self) -> "ModelConfig":
        """Every network's deepest layer must hold more than one voxel (instance norm needs it): a
        too-small grid_shape was an internal error at the first step or prediction."""
        halvings = [(f"stage {k}", s.scale, len(s.channels) - 1) for k, s in enumerate(self.stages)]
        if self.affine.enabled:
            down = len(self.affine.channels) - 2 if self.affine.head == "keypoints" else len(self.affine.channels)
            halvings.append(("affine net", self.affine.scale, max(down, 0)))
        for name, scale, down in halvings:
            sizes = [n // scale for n in self.grid_shape]
            deepest = math.prod(math.ceil(n / 2 ** down) for n in sizes) if min(sizes) >= 1 else 0
            if deepest <= 1:
                raise ValueError(f"grid_shape {list(self.grid_shape)} is too small for the {name} (images pooled by "
                                 f"{scale}, then halved {down} times): its deepest layer would hold {deepest} voxel(s)")
        return self
