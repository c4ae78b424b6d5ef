"""Learned coarse-to-fine registration: an affine localisation net followed by dense-field stages
(MONAI U-Nets), whose prediction is an ordinary regkit transform (fixed → moving, world mm).

``predict(checkpoint, moving, fixed)`` is the entry point; training lives in :mod:`regkit.train`.
MONAI is imported only when a network is built.
"""
from regkit.nn.config import ModelConfig
from regkit.nn.predict import predict

__all__ = ["ModelConfig", "predict"]
