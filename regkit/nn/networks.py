"""The two kinds of network in the cascade, built from MONAI-layout blocks (:mod:`regkit.nn.blocks`).

* :class:`AffineNet` — localisation network: strided convolutions, global average pooling and a
  linear layer giving 12 numbers (3×3 matrix offset from identity, translation). Its last layer
  starts at zero, so an untrained cascade is the identity.
* :class:`KeypointAffineNet` — localisation by matched keypoints: one encoder, shared by both
  images, gives K heat maps per image; their soft-argmax positions are K corresponding points,
  and the affine is their least-squares fit (closed form). It is exactly the identity whenever
  moving equals fixed, at any stage of training, and it sees position explicitly.
* :class:`FieldNet` — a small U-Net (MONAI's ``UNet`` layout) and a 3-channel convolution head (also zero at
  start) giving a vector field in units of its input grid's voxels.

Both take the pair concatenated on the channel axis, ``(N, 2C, X, Y, Z)``.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from regkit.nn.blocks import ConvBlock, UNet


def conv_encoder(in_channels: int, channels: Sequence[int], strides: Sequence[int]) -> nn.Sequential:
    """:class:`~regkit.nn.blocks.ConvBlock` s (kernel 3, instance norm, leaky ReLU 0.2), one per entry."""
    layers, c_in = [], in_channels
    for c_out, stride in zip(channels, strides):
        layers.append(ConvBlock(c_in, c_out, stride=stride))
        c_in = c_out
    return nn.Sequential(*layers)


class AffineNet(nn.Module):
    """``(N, 2C, X, Y, Z)`` → ``(matrix (N, 3, 3), translation (N, 3))`` (translation unitless)."""

    def __init__(self, in_channels: int, channels: Sequence[int]):
        super().__init__()
        self.encoder = conv_encoder(in_channels, channels, [2] * len(channels))
        self.head = nn.Linear(channels[-1], 12)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, pair: Tensor) -> Tuple[Tensor, Tensor]:
        # Global average: position survives only through the borders' zero padding. A linear head
        # on the whole feature map (which keeps it) was unstable on the brain2mm recipe
        # (benchmarks/README.md, "Measurements behind design choices"), so it needs its own tuning.
        features = self.encoder(pair).mean(dim=(2, 3, 4))
        out = self.head(features)
        matrix = torch.eye(3, device=pair.device, dtype=out.dtype) + out[:, :9].reshape(-1, 3, 3)
        return matrix, out[:, 9:]


class KeypointAffineNet(nn.Module):
    """``moving, fixed (N, C, X, Y, Z)`` on a grid with voxel→mm affine ``grid_affine`` →
    ``(matrix (N, 3, 3), translation (N, 3) mm)`` with ``moving_point = matrix @ fixed_point +
    translation`` (network mm, about the origin).

    The encoder (strided convolution blocks; the first and last keep the resolution) ends in
    ``keypoints`` heat maps; a spatial softmax turns each into an expected position in mm — on
    the fixed image ``p_k``, on the moving image ``q_k``. The affine minimises
    ``Σ_k |A p_k + t − q_k|² + (ridge · s² + K · 2 mm²) |A − I|²`` (``s²``: the fixed points'
    spread), solved in closed form, so keypoints bunched together fall back to the identity
    instead of an ill-posed fit. The heat maps' gain starts at zero, so every keypoint starts at
    the grid centre and the untrained net gives exactly the identity.
    """

    RIDGE_FLOOR_MM = 2.0

    def __init__(self, in_channels: int, channels: Sequence[int], keypoints: int = 32, ridge: float = 0.01, gain_scale: float = 1.0):
        super().__init__()
        self.encoder = conv_encoder(in_channels, channels, [1] + [2] * (len(channels) - 2) + [1])
        # Heat maps = gain · (1×1 convolution). The convolution starts RANDOM and the gain at
        # zero: flat heat maps put every keypoint at the grid centre in both images (the
        # identity), yet the keypoints differ from the first step on. A zero-initialised
        # convolution instead gives all K channels the same gradient forever: the recipe trained
        # that way ended with 32 copies of one keypoint, i.e. a translation-only "affine".
        self.heatmaps = nn.Conv3d(channels[-1], keypoints, kernel_size=1)
        nn.init.zeros_(self.heatmaps.bias)
        self.gain = nn.Parameter(torch.zeros(1))
        self.gain_scale = float(gain_scale)  # heat maps = gain_scale · gain · conv: the gain learns gain_scale× faster
        self.stride = 2 ** (len(channels) - 2)
        self.ridge = ridge

    def keypoints(self, volume: Tensor, grid_affine: Tensor) -> Tensor:
        """``(N, C, X, Y, Z)`` → ``(N, K, 3)`` expected keypoint positions in mm."""
        logits = (self.gain_scale * self.gain) * self.heatmaps(self.encoder(volume))
        n, k = logits.shape[:2]
        weights = torch.softmax(logits.reshape(n, k, -1), dim=-1)
        # a stride-2 convolution (kernel 3, padding 1) centres output voxel i on input voxel 2i
        shape = logits.shape[2:]
        axes = [torch.arange(s, device=volume.device, dtype=volume.dtype) * self.stride for s in shape]
        index = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)
        a = grid_affine.to(device=volume.device, dtype=volume.dtype)
        mm = index @ a[:3, :3].T + a[:3, 3]
        return weights @ mm

    def forward(self, moving: Tensor, fixed: Tensor, grid_affine: Tensor) -> Tuple[Tensor, Tensor]:
        points = self.keypoints(torch.cat([fixed, moving]), grid_affine)
        p, q = points.chunk(2)
        p_mean, q_mean = p.mean(dim=1, keepdim=True), q.mean(dim=1, keepdim=True)
        pc, qc = p - p_mean, q - q_mean
        gram = pc.transpose(1, 2) @ pc                                   # (N, 3, 3)
        eye = torch.eye(3, device=p.device, dtype=p.dtype)
        spread = gram.diagonal(dim1=1, dim2=2).sum(-1) / 3
        reg = (self.ridge * spread + p.shape[1] * self.RIDGE_FLOOR_MM ** 2)[:, None, None] * eye
        # (Pcᵀ Pc + r I) Aᵀ = Pcᵀ Qc + r I  →  A = I exactly when Q = P
        matrix_t = torch.linalg.solve(gram + reg, pc.transpose(1, 2) @ qc + reg)
        matrix = matrix_t.transpose(1, 2)
        translation = q_mean[:, 0] - (matrix @ p_mean[:, 0, :, None])[..., 0]
        return matrix, translation


class FieldNet(nn.Module):
    """``(N, 2C, X, Y, Z)`` → vector field ``(N, 3, X, Y, Z)`` in voxels of the input grid.

    Inputs of any size work: they are zero-padded up to a multiple of the U-Net's total stride and
    the output is cropped back.
    """

    def __init__(self, in_channels: int, channels: Sequence[int], head_channels: int):
        super().__init__()
        strides = [2] * (len(channels) - 1)
        self.multiple = 2 ** len(strides)
        self.unet = UNet(in_channels, head_channels, channels, strides)
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
