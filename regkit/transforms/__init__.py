"""Spatial transforms in world space (mm, RAS), mapping fixed points to moving points."""
from regkit.transforms.affine import AffineTransform
from regkit.transforms.base import Transform
from regkit.transforms.compose import Compose, to_displacement_field
from regkit.transforms.field import DisplacementField, invert_displacement, sample_field
from regkit.transforms.velocity import VelocityField, scaling_and_squaring

__all__ = [
    "Transform", "AffineTransform", "DisplacementField", "VelocityField", "Compose",
    "to_displacement_field", "invert_displacement", "sample_field", "scaling_and_squaring",
]
