"""The two kinds of network in the cascade, built from MONAI blocks.

* :class:`AffineNet` — localisation network: strided convolutions, global average pooling and a
  linear layer giving 12 numbers (3×3 matrix offset from identity, translation). Its last layer
  starts at zero, so an untrained cascade is the identity.
* :class:`FieldNet` — a small MONAI ``UNet`` and a 3-channel convolution head (also zero at
  start) giving a vector field in units of its input grid's voxels.

Both take the pair concatenated on the channel axis, ``(N, 2C, X, Y, Z)``.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class AffineNet(nn.Module):
    """``(N, 2C, X, Y, Z)`` → ``(matrix (N, 3, 3), translation (N, 3))`` (translation unitless)."""

    def __init__(self, in_channels: int, channels: Sequence[int]):
        super().__init__()
        from monai.networks.blocks import Convolution

        layers = []
        c_in = in_channels
        for c_out in channels:
            layers.append(Convolution(3, c_in, c_out, strides=2, kernel_size=3, act=("leakyrelu", {"negative_slope": 0.2}), norm="instance"))
            c_in = c_out
        self.encoder = nn.Sequential(*layers)
        self.head = nn.Linear(c_in, 12)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, pair: Tensor) -> Tuple[Tensor, Tensor]:
        # Global average: position survives only through the borders' zero padding. A linear head
        # on the whole feature map (which keeps it) was tried on the brain2mm recipe and was
        # unstable at lr 5e-4 (val Dice 0.32 vs 0.44 at step 100), so it needs its own tuning.
        features = self.encoder(pair).mean(dim=(2, 3, 4))
        out = self.head(features)
        matrix = torch.eye(3, device=pair.device, dtype=out.dtype) + out[:, :9].reshape(-1, 3, 3)
        return matrix, out[:, 9:]


class FieldNet(nn.Module):
    """``(N, 2C, X, Y, Z)`` → vector field ``(N, 3, X, Y, Z)`` in voxels of the input grid.

    Inputs of any size work: they are zero-padded up to a multiple of the U-Net's total stride and
    the output is cropped back.
    """

    def __init__(self, in_channels: int, channels: Sequence[int], head_channels: int):
        super().__init__()
        from monai.networks.nets import UNet

        strides = [2] * (len(channels) - 1)
        self.multiple = 2 ** len(strides)
        self.unet = UNet(3, in_channels, head_channels, channels=list(channels), strides=strides,
                         act=("leakyrelu", {"negative_slope": 0.2}), norm="instance")
        self.act = nn.LeakyReLU(0.2)
        self.head = nn.Conv3d(head_channels, 3, kernel_size=3, padding=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, pair: Tensor) -> Tensor:
        shape = pair.shape[2:]
        pad = [(-s) % self.multiple for s in shape]
        if any(pad):
            pair = F.pad(pair, [0, pad[2], 0, pad[1], 0, pad[0]])
        out = self.head(self.act(self.unet(pair)))
        return out[:, :, : shape[0], : shape[1], : shape[2]]
