"""Memory budget: estimate what a job needs from its grid sizes and refuse before starting.

A job that does not fit should stop in a second with a :class:`~regkit.errors.ResourceError`
(exit code 3) that says what to change, not be killed by the OOM killer after minutes.

* :func:`memory_limit` — bytes this process may use: ``REGKIT_MEMORY_LIMIT`` (e.g. ``8G``,
  ``500M``) if set, else the smaller of the memory the kernel reports available and the cgroup
  limit (containers).
* :func:`check_memory` — raise :class:`ResourceError` if ``bytes_needed`` exceeds it.
* :func:`estimate_registration` — peak bytes of an optimisation run from its grids; the
  optimiser calls it with its pyramid and passes the result to :func:`check_memory`.
* :func:`estimate_resample` / :func:`estimate_image_read` — resampling onto a grid, reading a file.

The per-voxel coefficients are peak RSS measured on CPU (float32) with
``benchmarks/memory_calibration.py`` (an affine + SVF step, warp, similarity, backward), rounded
up by ~15 %; they include allocator slack, which is what the OOM killer sees.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, Optional, Sequence, Union

from regkit.errors import InputError, ResourceError

ENV_LIMIT = "REGKIT_MEMORY_LIMIT"
PathLike = Union[str, Path]

#: fixed cost of a step on top of the per-voxel one (allocator arenas, thread-pool buffers): a
#: 72³–128³ fit of the measurements gives ~30 MiB + ~166 B/voxel.
WORKING_OVERHEAD_BYTES = 64 * 2**20
#: peak bytes per voxel of the reference grid when resampling through a transform (no grad;
#: world grid in float64, transformed points, sampling grid, output). Measured ≈72 B/voxel.
RESAMPLE_BYTES_PER_VOXEL = 88
#: fixed cost of reading a file (header, decompression buffers)
READ_OVERHEAD_BYTES = 16 * 2**20
#: bytes per control-grid voxel: 3 float32 components × (value, gradient, two Adam moments).
CONTROL_BYTES_PER_VOXEL = 3 * 4 * 4

_UNITS = {"": 1, "B": 1, "K": 2**10, "KB": 2**10, "KIB": 2**10, "M": 2**20, "MB": 2**20, "MIB": 2**20,
          "G": 2**30, "GB": 2**30, "GIB": 2**30, "T": 2**40, "TB": 2**40, "TIB": 2**40}


def parse_bytes(text: str) -> int:
    """``"8G"``, ``"512 MiB"``, ``"1.5GB"``, ``"1000000"`` → bytes (binary units: 1G = 2**30)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(text))
    unit = m.group(2).upper() if m else None
    if not m or unit not in _UNITS:
        raise InputError(f"{ENV_LIMIT}={text!r} is not a size (examples: 8G, 500M, 2GiB)")
    return int(float(m.group(1)) * _UNITS[unit])


def format_bytes(n: float) -> str:
    """Human-readable binary size, e.g. ``1.5 GiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _meminfo_available() -> Optional[int]:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _cgroup_available() -> Optional[int]:
    # cgroup v2, then v1; "max" or a huge number means no limit
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit = Path(limit_file).read_text().strip()
            usage = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 2**60:
            return max(0, int(limit) - usage)
    return None


def memory_limit() -> int:
    """Bytes a job may use: ``$REGKIT_MEMORY_LIMIT``, else min(available RAM, cgroup headroom)."""
    env = os.environ.get(ENV_LIMIT)
    if env:
        return parse_bytes(env)
    known = [b for b in (_meminfo_available(), _cgroup_available()) if b is not None]
    if known:
        return min(known)
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 2**63


DEFAULT_HINT = "use a coarser preset (--config fast) or downsample the images (e.g. a larger finest spacing_mm)"


def check_memory(bytes_needed: int, what: str, hint: str = DEFAULT_HINT, path: Optional[PathLike] = None) -> None:
    """Raise :class:`ResourceError` (exit code 3) if ``bytes_needed`` exceeds :func:`memory_limit`.

    Args:
        bytes_needed: estimated peak bytes of the job (e.g. ``estimate_registration(...).total``).
        what: what needs it, e.g. ``"registering on a 512x512x300 grid"``.
        hint: what the user can change.
        path: the file the message starts with (the one to downsample), if any.
    """
    limit = memory_limit()
    if bytes_needed > limit:
        raise ResourceError(
            f"{what} needs about {format_bytes(bytes_needed)} of memory but {format_bytes(limit)} is "
            f"available; {hint} (or set {ENV_LIMIT} if the limit is wrong)", path)


def voxels(shape: Sequence[int]) -> int:
    """Number of voxels of a grid shape (X, Y, Z[, ...])."""
    return int(math.prod(int(s) for s in shape))


@dataclass
class MemoryEstimate:
    """Peak memory of a job as named parts (bytes); ``total`` is their sum."""

    parts: Dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return int(sum(self.parts.values()))

    def describe(self) -> str:
        """One line, largest part first: ``"finest level 1.2 GiB + images 300.0 MiB"``."""
        items = sorted(self.parts.items(), key=lambda kv: -kv[1])
        return " + ".join(f"{name} {format_bytes(b)}" for name, b in items if b > 0)


def working_bytes_per_voxel(metric: str, mi_bins: int = 32) -> int:
    """Peak bytes per working-grid voxel of one optimiser step with similarity ``metric`` (the
    figures are :data:`regkit.similarities.METRICS`')."""
    from regkit.similarities import similarity_metric

    return similarity_metric(metric).step_bytes_per_voxel(mi_bins)


def working_step_bytes(voxels_in_level: int, metric: str = "lncc", mi_bins: int = 32) -> int:
    """Peak bytes of one optimiser step (forward + backward) on a working grid of that many voxels."""
    return WORKING_OVERHEAD_BYTES + int(voxels_in_level) * working_bytes_per_voxel(metric, mi_bins)


def estimate_registration(fixed_shape: Sequence[int], moving_shape: Sequence[int],
                          level_shapes: Iterable[Sequence[int]] = (), control_shapes: Iterable[Sequence[int]] = (),
                          metric: str = "lncc", mi_bins: int = 32, output_shape: Optional[Sequence[int]] = None,
                          resample_chunk_voxels: Optional[int] = None) -> MemoryEstimate:
    """Peak memory (bytes, CPU float32) of registering ``moving`` to ``fixed``.

    Args:
        fixed_shape, moving_shape: grid shapes (X, Y, Z) of the input images as loaded.
        level_shapes: working-grid shapes of the pyramid levels the optimiser iterates on; the
            largest dominates. Empty: the fixed grid itself (a full-resolution level).
        control_shapes: shapes of the transform's parameter grids (velocity/displacement control
            points), one per level; empty for an affine-only run.
        metric: a name of :data:`regkit.similarities.METRICS`.
        output_shape: grid of the final resampling (default: the fixed grid).
        resample_chunk_voxels: if the final resampling is done in chunks, voxels per chunk.
    Returns:
        :class:`MemoryEstimate` with parts ``images`` (inputs with their pyramid copies),
        ``finest level`` (optimiser step), ``control grid`` and ``final resampling``. The step and
        the final resampling do not overlap in time, so only the larger counts.
    """
    levels = [voxels(s) for s in level_shapes] or [voxels(fixed_shape)]
    controls = [voxels(s) for s in control_shapes] or [0]
    out = voxels(output_shape if output_shape is not None else fixed_shape)
    if resample_chunk_voxels:
        out = min(out, int(resample_chunk_voxels))
    # inputs as float32 plus one pyramid copy per level of at most their size (≤ 1/7 in total
    # for halving levels; bounded here by the working grids themselves)
    images = 4 * (voxels(fixed_shape) + voxels(moving_shape)) + 4 * 2 * sum(levels)
    step = working_step_bytes(max(levels), metric, mi_bins)
    final = out * RESAMPLE_BYTES_PER_VOXEL
    parts = {"images": images, "control grid": max(controls) * CONTROL_BYTES_PER_VOXEL}
    if step >= final:
        parts["finest level"] = step
    else:
        parts["final resampling"] = final
    return MemoryEstimate(parts)


def estimate_resample(output_shape: Sequence[int], channels: int = 1) -> int:
    """Peak bytes of resampling through a transform onto a grid of ``output_shape`` (no grad),
    e.g. ``regkit apply``: check it with :func:`check_memory` before starting."""
    return voxels(output_shape) * (RESAMPLE_BYTES_PER_VOXEL + 4 * (int(channels) - 1))


def minimum_prediction_bytes(grid_shape: Sequence[int], channels: int = 1) -> int:
    """A lower bound on the bytes a trained cascade needs to predict on its ``grid_shape``: the
    grid's world points (3 float32), both images on it (``channels`` each) and the output field
    (3). Not an estimate of the peak (the networks' activations come on top): it refuses a
    checkpoint that cannot fit at all; a run that fails later is exit 3 through
    :func:`is_out_of_memory`."""
    return voxels(grid_shape) * 4 * (3 + 2 * int(channels) + 3)


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is a failed allocation: ``MemoryError``, torch's ``OutOfMemoryError``
    (CUDA) or the ``RuntimeError`` its CPU allocator raises ("can't allocate memory")."""
    if isinstance(error, MemoryError):
        return True
    if type(error).__name__ == "OutOfMemoryError":
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and any(
        k in text for k in ("can't allocate memory", "not enough memory", "out of memory", "failed to allocate"))


def estimate_image_read(shape: Sequence[int], bytes_per_value: int) -> int:
    """Peak bytes of reading an image of ``shape`` stored with ``bytes_per_value``: the stored
    values twice (nibabel's read buffer and its array) and the float32 (or int32) result. A
    512×512×300 int16 CT with slope/intercept: measured 605 MiB peak (VmHWM), estimated 616 MiB."""
    n = voxels(shape)
    return READ_OVERHEAD_BYTES + n * (2 * bytes_per_value + max(4, bytes_per_value))
