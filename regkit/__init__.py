"""regkit: 3D medical image registration in physical space.

An :class:`Image` is data plus its voxel→world affine (RAS mm); a transform maps FIXED world
points to MOVING world points; :func:`resample` applies one with a single ``grid_sample``.
"""
from regkit.image import Image
from regkit.io.images import load_image, load_label, save_image
from regkit.resample import resample, warp
from regkit.transforms import AffineTransform, Compose, DisplacementField, Transform, VelocityField

load = load_image
save = save_image

__version__ = "0.1.0"

__all__ = [
    "Image", "load", "save", "load_image", "load_label", "save_image", "resample", "warp",
    "Transform", "AffineTransform", "DisplacementField", "VelocityField", "Compose", "__version__",
]
