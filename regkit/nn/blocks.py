"""Plain-torch building blocks of the cascade's networks, laid out like MONAI's.

:class:`ConvBlock` is MONAI's ``Convolution`` (kernel 3, "NDA" order: instance norm without
affine parameters, then leaky ReLU 0.2) and :class:`UNet` is MONAI's ``UNet`` with
``num_res_units=0`` — module for module, with the same parameter names, so checkpoints trained
with either load into the other; ``tests/test_nn_blocks.py`` pins them to MONAI's outputs.

Inference never imports MONAI (``regkit register --model`` runs one process per pair; the cost of
``import monai``: benchmarks/README.md, "Why not MONAI's").
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

LEAKY_SLOPE = 0.2


class ConvBlock(nn.Sequential):
    """3-D convolution (kernel 3, padding 1) → instance norm → leaky ReLU; or the convolution
    alone (``conv_only``). ``transposed`` makes it a stride-``stride`` up-sampling
    (``output_padding = stride - 1``, so the output is exactly ``stride`` times larger)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, transposed: bool = False, conv_only: bool = False):
        super().__init__()
        if transposed:
            self.add_module("conv", nn.ConvTranspose3d(in_channels, out_channels, 3, stride=stride, padding=1, output_padding=stride - 1))
        else:
            self.add_module("conv", nn.Conv3d(in_channels, out_channels, 3, stride=stride, padding=1))
        if not conv_only:
            self.add_module("adn", nn.Sequential())
            self.adn.add_module("N", nn.InstanceNorm3d(out_channels))
            self.adn.add_module("A", nn.LeakyReLU(LEAKY_SLOPE))


class SkipConnection(nn.Module):
    """``cat([x, submodule(x)], dim=1)``."""

    def __init__(self, submodule: nn.Module):
        super().__init__()
        self.submodule = submodule

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([x, self.submodule(x)], dim=1)


class UNet(nn.Module):
    """``(N, in_channels, X, Y, Z)`` → ``(N, out_channels, X, Y, Z)``; every size must be a
    multiple of the product of ``strides``.

    Level k: a strided :class:`ConvBlock` down to ``channels[k]``; the deepest entry is a
    stride-1 block; on the way up a transposed block takes the concatenation of the skip and
    the level below. The top up-sampling block is a bare convolution (MONAI's layout).
    """

    def __init__(self, in_channels: int, out_channels: int, channels: Sequence[int], strides: Sequence[int]):
        super().__init__()
        if len(channels) < 2 or len(strides) != len(channels) - 1:
            raise ValueError("a UNet needs >= 2 channel entries and one stride fewer")
        self.model = self._level(in_channels, out_channels, list(channels), list(strides), top=True)

    def _level(self, in_channels: int, out_channels: int, channels: Sequence[int], strides: Sequence[int], top: bool) -> nn.Sequential:
        c, s = channels[0], strides[0]
        if len(channels) > 2:
            below: nn.Module = self._level(c, c, channels[1:], strides[1:], top=False)
            up_in = 2 * c
        else:
            below = ConvBlock(c, channels[1])
            up_in = c + channels[1]
        return nn.Sequential(ConvBlock(in_channels, c, stride=s), SkipConnection(below),
                             ConvBlock(up_in, out_channels, stride=s, transposed=True, conv_only=top))

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)
