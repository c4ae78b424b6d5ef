"""Intensity rules shared by the engines: normalisation to [0, 1] and the intensity centre of mass.

Two normalisations, each with its own job (they are not interchangeable: each engine's results
and checkpoints depend on its own):

* :func:`robust_normalize` — the optimiser's: the 0.5 / 99.5 % quantiles of ALL voxels (a seeded
  subsample) map to 0 and 1, so CT (HU) and MRI (arbitrary units) get the same scale;
* :func:`normalize_intensity` — the cascade's, set by :class:`IntensityConfig` and stored in every
  checkpoint: percentiles of the NON-ZERO voxels, or a fixed window (CT);
  :func:`percentile_normalise` is the same rule on the training device for synthesised images
  (percentiles of a strided subset, torch only).
"""
from __future__ import annotations

from typing import Literal, Sequence, Tuple

import numpy as np
import torch
from pydantic import model_validator
from torch import Tensor

from regkit import space
from regkit.config import StrictModel
from regkit.image import Image


class IntensityConfig(StrictModel):
    """How an image's intensities are mapped to about [0, 1] before the network sees it.

    ``percentile`` (MRI): ``percentiles`` (low, high) of the image's non-zero voxels map to 0 and
    1. ``window`` (CT): ``window`` (low, high) in the image's own units (HU) map to 0 and 1.
    Values are clipped to [0, 1] either way.
    """

    mode: Literal["percentile", "window"] = "percentile"
    percentiles: Tuple[float, float] = (0.5, 99.5)
    window: Tuple[float, float] = (-1000.0, 1000.0)

    @model_validator(mode="after")
    def _ordered(self) -> "IntensityConfig":
        """A reversed pair made every image a near-binary mask (scale 1e-6), silently."""
        low, high = self.percentiles
        if not 0 <= low < high <= 100:
            raise ValueError(f"percentiles must be (low, high) with 0 <= low < high <= 100, got {list(self.percentiles)}")
        if not self.window[0] < self.window[1]:
            raise ValueError(f"window must be (low, high) with low < high, got {list(self.window)}")
        return self


def normalize_intensity(image: Image, config: IntensityConfig) -> Image:
    """Map intensities to [0, 1] (clipped) by percentiles of the non-zero voxels or a fixed window."""
    data = image.data.float()
    if config.mode == "window":
        low, high = config.window
    else:
        values = data[data != 0]
        if values.numel() == 0:
            return image.with_data(torch.zeros_like(data), is_label=False)
        # numpy's partition-based percentile: several times faster than torch.quantile's full sort
        low, high = (float(v) for v in np.percentile(values.cpu().numpy(), list(config.percentiles)))
    scaled = (data - low) / max(high - low, 1e-6)
    return image.with_data(scaled.clamp(0.0, 1.0), is_label=False)


def percentile_normalise(volume: Tensor, percentiles: Sequence[float], max_values: int = 50_000) -> Tensor:
    """Map ``percentiles`` of the non-zero voxels to 0 and 1, clipped: the rule of
    :func:`normalize_intensity` (percentiles of a strided subset of at most
    ``max_values`` voxels, on the volume's device)."""
    values = volume[volume != 0]
    if values.numel() == 0:
        return volume
    values = values[:: max(1, values.numel() // max_values)]
    q = torch.quantile(values, torch.tensor([p / 100 for p in percentiles], device=volume.device, dtype=values.dtype))
    return ((volume - q[0]) / (q[1] - q[0]).clamp(min=1e-6)).clamp(0.0, 1.0)


def robust_normalize(data: Tensor, low: float = 0.005, high: float = 0.995, samples: int = 200_000) -> Tensor:
    """Intensities mapped to [0, 1] by clipping at the ``low``/``high`` quantiles of a random
    (seeded) subsample — CT Hounsfield units and MRI arbitrary units get the same scale."""
    flat = data.reshape(-1).float()
    if flat.numel() > samples:
        g = torch.Generator().manual_seed(0)
        flat = flat[torch.randint(flat.numel(), (samples,), generator=g)]
    lo, hi = torch.quantile(flat, torch.tensor([low, high], dtype=flat.dtype)).tolist()
    if hi <= lo:
        hi = lo + 1.0
    return ((data.float() - lo) / (hi - lo)).clamp_(0.0, 1.0)


def center_of_mass(volume: Tensor, affine) -> Tensor:
    """Intensity-weighted centre (world mm) of ``(1, C, X, Y, Z)`` (negative values count 0)."""
    w = volume[0].sum(0).clamp(min=0).to(torch.float64)
    total = w.sum()
    if total <= 0:
        ijk = (torch.tensor(w.shape, dtype=torch.float64) - 1) / 2
    else:
        axes = [torch.arange(s, dtype=torch.float64) for s in w.shape]
        ijk = torch.stack([
            (w.sum((1, 2)) * axes[0]).sum(), (w.sum((0, 2)) * axes[1]).sum(), (w.sum((0, 1)) * axes[2]).sum(),
        ]) / total
    return space.voxel_to_world(ijk, affine)
