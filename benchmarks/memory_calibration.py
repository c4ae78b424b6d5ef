"""Measure the peak memory of one registration optimiser step per working-grid voxel (CPU).

Feeds the coefficients of :mod:`regkit.resources`: run
``python benchmarks/memory_calibration.py 96 lncc`` and compare ``bytes/voxel`` with
``regkit.similarities.METRICS`` (``working_bytes_per_voxel``). The step is a representative one built from the
core: an affine then an SVF (scaling and squaring on a control grid of half the resolution)
sampled on the working grid, one trilinear warp of the moving image, the similarity, a diffusion
penalty, and the backward pass. Peak RSS comes from ``VmHWM`` (reset through ``clear_refs``), so
the number includes allocator slack — what the OOM killer sees. Linux only.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F


def _peak_rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def _lncc(a: torch.Tensor, b: torch.Tensor, window: int = 5) -> torch.Tensor:
    pool = lambda x: F.avg_pool3d(x, window, stride=1, padding=window // 2)  # noqa: E731
    ma, mb = pool(a), pool(b)
    cov = pool(a * b) - ma * mb
    va = pool(a * a) - ma * ma
    vb = pool(b * b) - mb * mb
    return -(cov * cov / (va * vb + 1e-5)).mean()


def step_peak_bytes(n: int, metric: str = "lncc") -> int:
    """Peak RSS increase (bytes) of one forward+backward step on an ``n``³ working grid."""
    from regkit.resample import warp
    from regkit.space import world_grid
    from regkit.transforms import AffineTransform, VelocityField

    torch.set_num_threads(1)
    affine = torch.diag(torch.tensor([2.0, 2.0, 2.0, 1.0], dtype=torch.float64))
    control = affine.clone()
    control[:3, :3] *= 2
    fixed = torch.rand(1, 1, n, n, n)
    moving = torch.rand(1, 1, n, n, n)
    world = world_grid(affine, (n, n, n))[None]
    velocity = VelocityField(torch.zeros(1, 3, n // 2, n // 2, n // 2), control, steps=5, requires_grad=True)
    linear = AffineTransform(torch.eye(3)[None], torch.zeros(1, 3), requires_grad=True) if _affine_takes_grad() else None
    _reset_peak()
    base = _peak_rss_bytes()
    points = world if linear is None else linear(world)
    points = velocity(points)
    warped = warp(moving, affine, points)
    loss = _lncc(fixed, warped) if metric == "lncc" else ((fixed - warped) ** 2).mean()
    v = velocity.velocity
    loss = loss + sum((v.diff(dim=d) ** 2).mean() for d in (2, 3, 4))
    loss.backward()
    return _peak_rss_bytes() - base


def _affine_takes_grad() -> bool:
    import inspect

    from regkit.transforms import AffineTransform

    return "requires_grad" in inspect.signature(AffineTransform.__init__).parameters


if __name__ == "__main__":
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 96
    metric = sys.argv[2] if len(sys.argv) > 2 else "lncc"
    peak = step_peak_bytes(size, metric)
    print(f"grid {size}^3 metric {metric}: peak +{peak / 2**20:.1f} MiB = {peak / size**3:.1f} bytes/voxel")
