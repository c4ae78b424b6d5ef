"""Read and write images in physical space.

NIfTI (``.nii``, ``.nii.gz``) and MGH (``.mgz``) go through nibabel; other ITK formats
(``.mha``, ``.mhd``, ``.nrrd``, ``.nhdr``) through SimpleITK, whose LPS geometry is turned into a
RAS voxel→world affine here. Rules:

* NIfTI affine: the sform when its code is set, else the qform, else nibabel's pixdim fallback
  with a warning (orientation unknown).
* A 4th dimension of length 1 is dropped; more than one volume is an error unless
  ``volume=`` picks one. Never a silent reshape.
* Label maps (``is_label=True``) must hold integer values and are returned as int32.
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch

from regkit import space
from regkit.errors import InputError
from regkit.image import Image
from regkit.io.atomic import atomic_path

log = logging.getLogger(__name__)

PathLike = Union[str, Path]
NIBABEL_SUFFIXES = (".nii", ".nii.gz", ".mgz", ".mgh")
ITK_SUFFIXES = (".mha", ".mhd", ".nrrd", ".nhdr")


def _has_suffix(path: Path, suffixes) -> bool:
    name = path.name.lower()
    return any(name.endswith(s) for s in suffixes)


def check_input_file(path: PathLike) -> Path:
    """The path as a Path, or an :class:`InputError` saying why it cannot be read."""
    p = Path(path)
    if not p.exists():
        raise InputError("no such file", p)
    if p.is_dir():
        raise InputError("is a directory, expected an image file", p)
    if p.stat().st_size == 0:
        raise InputError("is empty (0 bytes)", p)
    return p


def load_image(path: PathLike, is_label: bool = False, volume: Optional[int] = None, dtype=torch.float32) -> Image:
    """Read an image (or label map with ``is_label=True``) as an :class:`Image`."""
    p = check_input_file(path)
    if _has_suffix(p, ITK_SUFFIXES):
        array, affine = _read_sitk(p)
    else:
        array, affine = _read_nibabel(p)
    array = _to_3d(array, p, volume)
    _check_geometry(array, affine, p)
    if is_label:
        return Image(torch.from_numpy(_as_labels(array, p))[None], affine, is_label=True)
    data = array.astype(np.float32, copy=False)
    if not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise InputError(f"contains {bad} NaN/Inf voxels; clean the image (e.g. set them to 0) first", p)
    return Image(torch.from_numpy(np.ascontiguousarray(data))[None].to(dtype), affine)


def load_label(path: PathLike, volume: Optional[int] = None) -> Image:
    """Read a label map (integer values) as an int32 :class:`Image`."""
    return load_image(path, is_label=True, volume=volume)


def _read_nibabel(p: Path):
    import nibabel as nib

    try:
        img = nib.load(str(p))
        if isinstance(img, nib.Nifti1Image) or isinstance(img, nib.Nifti2Image):
            affine = _nifti_affine(img, p)
        else:
            affine = img.affine
        array = np.asanyarray(img.dataobj)
    except InputError:
        raise
    except Exception as e:  # nibabel raises many types for bad files (ImageFileError, EOFError, zlib...)
        raise InputError(f"cannot be read as an image ({_short(e)})", p) from e
    return array, np.asarray(affine, dtype=np.float64)


def _nifti_affine(img, p: Path) -> np.ndarray:
    hdr = img.header
    sform, scode = hdr.get_sform(coded=True)
    qform, qcode = hdr.get_qform(coded=True)
    if scode and scode > 0:
        if qcode and qcode > 0 and not np.allclose(sform, qform, atol=1e-3):
            warnings.warn(f"{p}: sform and qform disagree (max difference {np.abs(sform - qform).max():.3g}); using the sform", stacklevel=3)
        return sform
    if qcode and qcode > 0:
        return qform
    warnings.warn(f"{p}: neither sform nor qform is set; orientation is unknown, assuming voxel spacing only", stacklevel=3)
    return hdr.get_base_affine()


def _read_sitk(p: Path):
    import SimpleITK as sitk

    try:
        img = sitk.ReadImage(str(p))
    except Exception as e:
        raise InputError(f"cannot be read as an image ({_short(e)})", p) from e
    if img.GetDimension() != 3:
        raise InputError(f"is {img.GetDimension()}D; regkit needs a 3D volume", p)
    array = sitk.GetArrayFromImage(img)  # (Z, Y, X[, C])
    array = np.moveaxis(array, [0, 1, 2], [2, 1, 0]) if array.ndim == 3 else np.moveaxis(array, [0, 1, 2], [2, 1, 0])
    return array, sitk_affine(img)


def sitk_affine(img) -> np.ndarray:
    """RAS voxel→world affine of a SimpleITK image (which is LPS)."""
    d = np.array(img.GetDirection(), dtype=np.float64).reshape(3, 3)
    s = np.array(img.GetSpacing(), dtype=np.float64)
    o = np.array(img.GetOrigin(), dtype=np.float64)
    a = np.eye(4)
    a[:3, :3] = d * s[None, :]
    a[:3, 3] = o
    return space.ras_to_lps_matrix().numpy() @ a


def _to_3d(array: np.ndarray, p: Path, volume: Optional[int]) -> np.ndarray:
    if array.ndim < 3:
        raise InputError(f"is {array.ndim}D (shape {array.shape}); regkit needs a 3D volume", p)
    if any(s == 0 for s in array.shape):
        raise InputError(f"has a zero-length dimension (shape {array.shape})", p)
    extra = array.shape[3:]
    if not extra or int(np.prod(extra)) == 1:
        return np.asarray(array).reshape(array.shape[:3])
    n = int(np.prod(extra))
    if volume is None:
        raise InputError(f"has {n} volumes (shape {array.shape}); regkit registers one 3D volume — extract one first", p)
    if not 0 <= volume < n:
        raise InputError(f"volume {volume} requested but the file has {n}", p)
    return np.asarray(array).reshape(array.shape[:3] + (n,))[..., volume]


def _check_geometry(array: np.ndarray, affine: np.ndarray, p: Path) -> None:
    if not np.isfinite(affine).all():
        raise InputError("voxel-to-world affine has NaN/Inf entries", p)
    if abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise InputError("voxel-to-world affine is singular (zero voxel size or collinear axes)", p)


def _as_labels(array: np.ndarray, p: Path) -> np.ndarray:
    if np.issubdtype(array.dtype, np.integer) or array.dtype == bool:
        return np.ascontiguousarray(array.astype(np.int32))
    a = np.asarray(array, dtype=np.float64)
    if not np.isfinite(a).all():
        raise InputError("label map contains NaN/Inf", p)
    r = np.rint(a)
    if np.abs(a - r).max() > 1e-3:
        raise InputError("label map has non-integer values; is it an intensity image?", p)
    return np.ascontiguousarray(r.astype(np.int32))


def _short(e: Exception) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return msg[:200]


def save_image(image: Image, path: PathLike, force: bool = False, dtype: Optional[np.dtype] = None) -> Path:
    """Write ``image`` (NIfTI via nibabel, other suffixes via SimpleITK), atomically.

    NIfTI files get the affine as both sform and qform (code 1, scanner). Label images are saved
    as int16/int32; intensities as float32 unless ``dtype`` says otherwise.
    """
    p = Path(path)
    array = image.numpy()
    if dtype is not None:
        array = array.astype(dtype)
    elif image.is_label:
        array = array.astype(np.int16 if array.size and array.min() >= -32768 and array.max() <= 32767 else np.int32)
    elif array.dtype != np.float32:
        array = array.astype(np.float32)
    affine = image.affine.numpy()
    with atomic_path(p, force) as tmp:
        if _has_suffix(p, NIBABEL_SUFFIXES):
            import nibabel as nib

            nii = nib.Nifti1Image(array, affine)
            nii.set_sform(affine, code=1)
            nii.set_qform(affine, code=1)
            nib.save(nii, str(tmp))
        else:
            import SimpleITK as sitk

            itk = sitk.GetImageFromArray(np.ascontiguousarray(np.moveaxis(array, [0, 1, 2], [2, 1, 0])), isVector=array.ndim == 4)
            set_sitk_geometry(itk, affine)
            sitk.WriteImage(itk, str(tmp))
    return p


def set_sitk_geometry(img, affine: np.ndarray) -> None:
    """Give a SimpleITK image the geometry of a RAS voxel→world affine (converted to LPS)."""
    a = space.ras_to_lps_matrix().numpy() @ np.asarray(affine, dtype=np.float64)
    s = np.linalg.norm(a[:3, :3], axis=0)
    img.SetSpacing([float(x) for x in s])
    img.SetDirection([float(x) for x in (a[:3, :3] / s[None, :]).ravel()])
    img.SetOrigin([float(x) for x in a[:3, 3]])


def image_to_sitk(image: Image):
    """A SimpleITK image (first channel, or vector image for several) with the same geometry."""
    import SimpleITK as sitk

    array = image.numpy()
    itk = sitk.GetImageFromArray(np.ascontiguousarray(np.moveaxis(array, [0, 1, 2], [2, 1, 0])), isVector=array.ndim == 4)
    set_sitk_geometry(itk, image.affine.numpy())
    return itk


def sitk_to_image(img, is_label: bool = False) -> Image:
    """An :class:`Image` from a SimpleITK image."""
    import SimpleITK as sitk

    array = np.moveaxis(sitk.GetArrayFromImage(img), [0, 1, 2], [2, 1, 0])
    return Image.from_numpy(array if is_label else array.astype(np.float32), sitk_affine(img), is_label=is_label)
