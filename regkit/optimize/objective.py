"""The terms the optimiser minimises, taken from :mod:`regkit.losses` (one implementation shared
with the learned cascade): similarity by name, regulariser by name, optional folding penalty."""
from __future__ import annotations

from typing import Callable, Optional

from torch import Tensor

Similarity = Callable[[Tensor, Tensor, Optional[Tensor]], Tensor]


def similarity(metric: str, lncc_window: int = 5, mi_bins: int = 32) -> Similarity:
    """``f(fixed, warped, mask) -> scalar to minimise`` for ``metric`` in lncc|mse|mi|mind."""
    from regkit.losses import similarity as sim

    if metric == "lncc":
        return lambda f, w, m=None: sim.lncc(f, w, window=lncc_window, mask=m)
    if metric == "mse":
        return lambda f, w, m=None: sim.mse(f, w, mask=m)
    if metric == "mi":
        return lambda f, w, m=None: sim.mutual_information(f, w, bins=mi_bins, mask=m)
    if metric == "mind":
        return lambda f, w, m=None: sim.mind(f, w, mask=m)
    raise ValueError(f"unknown metric {metric!r}")


def regularizer(name: str) -> Callable[[Tensor, Tensor], Tensor]:
    """``f(field (N, 3, X, Y, Z) mm, spacing (3,) mm) -> scalar``: diffusion or bending energy."""
    from regkit.losses import regularization as reg

    if name == "diffusion":
        return reg.diffusion
    if name == "bending":
        return reg.bending_energy
    raise ValueError(f"unknown regularizer {name!r}")


def folding_penalty(displacement: Tensor, affine: Tensor) -> Tensor:
    """Penalty on det J <= 0 of ``x + u(x)`` (``u`` ``(N, 3, X, Y, Z)`` mm on grid ``affine``)."""
    from regkit.losses import regularization as reg

    return reg.folding_penalty(displacement, affine)
