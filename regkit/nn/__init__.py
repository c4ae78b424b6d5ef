"""Learned coarse-to-fine registration: an affine localisation net followed by dense-field stages
(U-Nets in MONAI's layout, plain torch), whose prediction is an ordinary regkit transform (fixed → moving, world mm).

``predict(checkpoint, moving, fixed)`` is the entry point; training lives in :mod:`regkit.train`.
Inference never imports MONAI (seconds per process); training uses its Dice loss.
"""
from regkit.nn.config import ModelConfig
from regkit.nn.predict import predict

__all__ = ["ModelConfig", "predict"]
