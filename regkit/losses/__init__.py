"""Similarity losses and regularisers shared by :mod:`regkit.optimize` and the learned cascade.

All return a scalar to MINIMISE; see :mod:`regkit.losses.similarity` and
:mod:`regkit.losses.regularization` for units and conventions. Nothing here imports MONAI.
"""
from regkit.losses.regularization import (
    affine_l2, bending_energy, diffusion, folding_penalty, get_regularizer, jacobian_determinant,
)
from regkit.losses.similarity import get_similarity, lncc, mind, mind_ssc, mse, mutual_information

__all__ = [
    "lncc", "mse", "mutual_information", "mind_ssc", "mind", "get_similarity",
    "diffusion", "bending_energy", "jacobian_determinant", "folding_penalty", "affine_l2", "get_regularizer",
]
