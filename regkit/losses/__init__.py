"""Similarity losses and regularisers shared by :mod:`regkit.optimize` and the learned cascade.

All return a scalar to MINIMISE; see :mod:`regkit.losses.similarity` and
:mod:`regkit.losses.regularization` for units and conventions. Nothing here imports MONAI
(``import monai`` costs seconds; see the similarity module's docstring).
"""
from regkit.losses.regularization import bending_energy, diffusion, get_regularizer
from regkit.losses.similarity import get_similarity, lncc, mse

__all__ = ["lncc", "mse", "get_similarity", "diffusion", "bending_energy", "get_regularizer"]
