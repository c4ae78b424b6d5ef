"""The terms the optimiser minimises, taken from :mod:`regkit.losses` (one implementation shared
with the learned cascade): similarity by name, regulariser by name, optional folding penalty."""
from __future__ import annotations

from typing import Callable, Optional

from torch import Tensor

Similarity = Callable[[Tensor, Tensor, Optional[Tensor]], Tensor]


def similarity(metric: str, lncc_window: int = 5, mi_bins: int = 32) -> Similarity:
    """``f(fixed, warped, mask) -> scalar to minimise`` for ``metric`` (:data:`regkit.similarities.METRICS`),
    its options taken from the optimiser's settings of those names (``lncc_window``, ``mi_bins``)."""
    from regkit.losses.similarity import get_similarity
    from regkit.similarities import similarity_metric

    settings = {"lncc_window": lncc_window, "mi_bins": mi_bins}
    options = {option: settings[setting] for setting, option in similarity_metric(metric).optimizer_settings.items()}
    return get_similarity(metric, **options)


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
