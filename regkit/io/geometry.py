"""World orientation in files, in one place: RAS ↔ LPS, and NIfTI / SimpleITK images built on a grid.

regkit works in RAS mm (as NIfTI and nibabel); ITK — so ANTs, SimpleITK and their ``.mha``,
``.nrrd``, DICOM and transform files — works in LPS mm. The two differ by the flip
``F = diag(-1, -1, 1)``, its own inverse:

* points and vectors (displacements): ``p_lps = p_ras * LPS_FLIP``;
* a voxel→world affine: ``A_lps = FLIP4 @ A_ras`` (:func:`flip_affine`);
* a world→world point map: ``H_lps = FLIP4 @ H_ras @ FLIP4`` (:func:`flip_point_matrix`).

Arrays are in nibabel's voxel order ``(X, Y, Z[, C])``; SimpleITK's is the reverse ``(Z, Y, X[, C])``.
"""
from __future__ import annotations

import numpy as np

LPS_FLIP = np.array([-1.0, -1.0, 1.0])
"""RAS ↔ LPS for points and vectors (multiply; its own inverse)."""

FLIP4 = np.diag([-1.0, -1.0, 1.0, 1.0])
"""RAS ↔ LPS as a 4×4 homogeneous matrix (its own inverse)."""


def flip_affine(affine) -> np.ndarray:
    """A voxel→world affine (4×4) in RAS as the same grid in LPS, or LPS as RAS: ``FLIP4 @ affine``."""
    return FLIP4 @ np.asarray(affine, dtype=np.float64)


def flip_point_matrix(matrix4) -> np.ndarray:
    """A 4×4 world→world point map in LPS as the same map in RAS, or RAS as LPS: ``F H F``."""
    return FLIP4 @ np.asarray(matrix4, dtype=np.float64) @ FLIP4


def sitk_affine(img) -> np.ndarray:
    """RAS voxel→world affine (4×4, mm) of a SimpleITK image (whose geometry is LPS)."""
    d = np.array(img.GetDirection(), dtype=np.float64).reshape(3, 3)
    s = np.array(img.GetSpacing(), dtype=np.float64)
    a = np.eye(4)
    a[:3, :3] = d * s[None, :]
    a[:3, 3] = np.array(img.GetOrigin(), dtype=np.float64)
    return flip_affine(a)


def set_sitk_geometry(img, affine) -> None:
    """Give a SimpleITK image the geometry of a RAS voxel→world affine (converted to LPS)."""
    a = flip_affine(affine)
    s = np.linalg.norm(a[:3, :3], axis=0)
    img.SetSpacing([float(x) for x in s])
    img.SetDirection([float(x) for x in (a[:3, :3] / s[None, :]).ravel()])
    img.SetOrigin([float(x) for x in a[:3, 3]])


def sitk_image(array: np.ndarray, affine, vector: bool = False):
    """A SimpleITK image of ``array`` ``(X, Y, Z)``, or ``(X, Y, Z, C)`` with ``vector`` (C
    components per voxel), on the RAS grid ``affine``. Values are taken as they are: a
    displacement must already be in LPS (``* LPS_FLIP``)."""
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.ascontiguousarray(np.moveaxis(array, [0, 1, 2], [2, 1, 0])), isVector=vector)
    set_sitk_geometry(img, affine)
    return img


def nifti_image(array: np.ndarray, affine, nifti2: bool = False):
    """A nibabel NIfTI-1 (or NIfTI-2) image of ``array`` whose sform and qform are both ``affine``
    (RAS voxel→world, code 1: scanner)."""
    import nibabel as nib

    a = np.asarray(affine, dtype=np.float64)
    nii = (nib.Nifti2Image if nifti2 else nib.Nifti1Image)(array, a)
    nii.set_sform(a, code=1)
    nii.set_qform(a, code=1)
    return nii
