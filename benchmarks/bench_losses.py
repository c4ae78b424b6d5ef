"""Forward+backward time of regkit's losses against MONAI's, at the size of a 2 mm brain.

Usage::

    python benchmarks/bench_losses.py                       # 100x120x100, 2 threads
    python benchmarks/bench_losses.py --shape 64 64 64 --threads 1 --repeats 10
    python benchmarks/bench_losses.py --no-monai            # regkit's losses only

Prints, per loss, the best and median wall time of ``--repeats`` runs (ms) of
``loss(fixed, warped)`` followed by ``backward()`` with gradient on the warped image only (as in
registration), after one warm-up run, and the best process CPU time (all threads together).
Wall times taken while other jobs share the CPU are unreliable (CPU time less so): compare
numbers from the same run.
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable, List, Tuple

import torch


def smooth_pair(shape: Tuple[int, int, int], seed: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
    """Two related smooth volumes ``(1, 1, X, Y, Z)`` in [0, ~1000] (CT/MRI-like magnitudes)."""
    from regkit.losses.similarity import box_sum

    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(2, 1, *[s + 6 for s in shape], generator=g)
    smooth = box_sum(box_sum(noise, 4), 4)[..., : shape[0], : shape[1], : shape[2]].contiguous()
    fixed = 500.0 + 40.0 * smooth[:1]
    warped = 300.0 + 25.0 * (smooth[:1] + 0.5 * smooth[1:])
    return fixed, warped


Timings = Tuple[List[float], List[float]]  # wall seconds, process CPU seconds


def time_backward(make_loss: Callable[[torch.Tensor], torch.Tensor], leaf: torch.Tensor, repeats: int) -> Timings:
    """Seconds per ``make_loss(x).backward()`` (x a fresh leaf copy of ``leaf``), after a warm-up."""
    wall, cpu = [], []
    for i in range(repeats + 1):
        x = leaf.detach().clone().requires_grad_()
        start, start_cpu = time.perf_counter(), time.process_time()
        make_loss(x).backward()
        if i:
            wall.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
    return wall, cpu


def time_forward_backward(loss: Callable, fixed: torch.Tensor, warped: torch.Tensor, repeats: int) -> Timings:
    """Timings of ``loss(fixed, w).backward()`` with a gradient for the warped image only."""
    return time_backward(lambda w: loss(fixed, w), warped, repeats)


def report(name: str, timings: Timings) -> None:
    wall, cpu = timings
    print(
        f"{name:<44s} wall best {1e3 * min(wall):7.1f} ms  median {1e3 * statistics.median(wall):7.1f} ms"
        f"   cpu best {1e3 * min(cpu):7.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=3, default=(100, 120, 100), help="volume size in voxels")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-monai", action="store_true", help="skip MONAI's losses")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from regkit.losses import regularization as reg
    from regkit.losses import similarity as sim

    shape = tuple(args.shape)
    fixed, warped = smooth_pair(shape)
    print(f"shape {shape}, {args.threads} threads, torch {torch.__version__}, best/median of {args.repeats}")

    report("regkit lncc window 5", time_forward_backward(lambda f, w: sim.lncc(f, w, 5), fixed, warped, args.repeats))
    report("regkit lncc window 9", time_forward_backward(lambda f, w: sim.lncc(f, w, 9), fixed, warped, args.repeats))
    report("regkit mse", time_forward_backward(sim.mse, fixed, warped, args.repeats))
    report("regkit mutual_information 32 bins bspline", time_forward_backward(sim.mutual_information, fixed, warped, args.repeats))
    report("regkit mind (radius 2, dilation 2)", time_forward_backward(sim.mind, fixed, warped, args.repeats))

    field = 2.0 * torch.randn(1, 3, *shape)
    spacing = (2.0, 2.0, 2.0)
    affine = torch.diag(torch.tensor([-2.0, 2.0, 2.0, 1.0], dtype=torch.float64))
    report("regkit diffusion", time_backward(lambda u: reg.diffusion(u, spacing), field, args.repeats))
    report("regkit bending_energy", time_backward(lambda u: reg.bending_energy(u, spacing), field, args.repeats))
    report("regkit folding_penalty", time_backward(lambda u: reg.folding_penalty(u, affine), field, args.repeats))

    if args.no_monai:
        return
    start = time.perf_counter()
    from monai.losses import GlobalMutualInformationLoss, LocalNormalizedCrossCorrelationLoss

    print(f"import monai.losses: {time.perf_counter() - start:.2f} s")
    for window in (5, 9):
        monai_lncc = LocalNormalizedCrossCorrelationLoss(spatial_dims=3, kernel_size=window, kernel_type="rectangular")
        report(f"monai LocalNCC rectangular {window}", time_forward_backward(lambda f, w: monai_lncc(w, f), fixed, warped, args.repeats))
    from monai.losses import BendingEnergyLoss, DiffusionLoss

    # voxel units only: no spacing, so not physical on anisotropic grids (timed for comparison)
    report("monai DiffusionLoss (voxel units)", time_backward(DiffusionLoss(), field, args.repeats))
    report("monai BendingEnergyLoss (voxel units)", time_backward(BendingEnergyLoss(), field, args.repeats))
    for kernel in ("b-spline", "gaussian"):
        monai_mi = GlobalMutualInformationLoss(kernel_type=kernel, num_bins=32)
        # MONAI's MI expects intensities in [0, 1]
        low, high = float(min(fixed.min(), warped.min())), float(max(fixed.max(), warped.max()))
        scaled = lambda f, w, m=monai_mi: m((w - low) / (high - low), (f - low) / (high - low))  # noqa: E731
        report(f"monai GlobalMI {kernel} 32 bins", time_forward_backward(scaled, fixed, warped, args.repeats))


if __name__ == "__main__":
    main()
