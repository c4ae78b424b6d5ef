"""Where torch runs: the device a ``device`` argument names, and the CPU thread count.

Both engines and the CLI take a device as ``None``/``"auto"`` (CUDA when there is a GPU, else the
CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Union

from regkit.errors import InputError

if TYPE_CHECKING:
    import torch

MAX_DEFAULT_THREADS = 8
"""The default's cap, so a large server is not taken whole by one registration (``--threads``
for more)."""


def resolve_device(device: Union[None, str, "torch.device"]) -> "torch.device":
    """The ``torch.device`` that ``device`` names (``None``/``"auto"``: ``cuda`` when available,
    else ``cpu``); :class:`InputError` when CUDA is asked for and there is no GPU."""
    import torch

    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise InputError("device 'cuda' requested but no CUDA GPU is available (use 'cpu' or 'auto')")
    return torch.device(device)


def cpu_threads() -> int:
    """Threads for the CPU when the config does not set ``threads``: every core this process may
    use (its affinity), at most :data:`MAX_DEFAULT_THREADS` — a number fixed by the machine, never
    by its current load, so the same command and seed give the same result (float reductions
    split over another number of threads round differently: up to 0.15 mm between runs were
    measured when the count followed the load). ``OMP_NUM_THREADS``, when set, is used instead. On a
    machine busy with other work, fewer threads are far faster (``--threads 1``): torch
    synchronises its threads after every small operation (benchmarks/README.md)."""
    chosen = os.environ.get("OMP_NUM_THREADS", "").strip()  # the user's own fixed choice, as torch/OpenMP read it
    if chosen.isdigit() and int(chosen) > 0:
        return int(chosen)
    return max(1, min(available_cores(), MAX_DEFAULT_THREADS))


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity; the machine's count where there is none)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
