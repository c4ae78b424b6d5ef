"""Read and write images in physical space.

NIfTI (``.nii``, ``.nii.gz``) and MGH (``.mgz``) go through nibabel; other ITK formats
(``.mha``, ``.mhd``, ``.nrrd``, ``.nhdr``) through SimpleITK, whose LPS geometry is turned into a
RAS voxel→world affine here. Every problem with a file is an :class:`InputError` (exit code 2)
naming the file, or a :class:`ResourceError` (exit code 3) when it would not fit in memory; the
header is checked before any voxel is read. Rules:

* NIfTI orientation (``header_policy``, default from ``$REGKIT_NIFTI_AFFINE``, else
  ``"strict"``): with ``"strict"`` a file whose sform and qform are both set but map the grid to
  places more than a tenth of a voxel apart is REFUSED — nibabel/FSL use the sform, ITK/ANTs may
  use the qform, so a silent choice could register in the wrong orientation — and so is a file
  with neither set (orientation unknown). ``"sform"`` / ``"qform"`` pick that one when set (the
  other otherwise, else the voxel sizes alone) and warn.
* A 4th dimension of length 1 is dropped; more than one volume is an error unless
  ``volume=`` picks one. Never a silent reshape.
* NaN/Inf voxels, a zero-length dimension, a singular or non-finite affine are errors.
* Label maps (``is_label=True``) must hold integer values and are returned as int32.
"""
from __future__ import annotations

import contextlib
import gzip
import logging
import os
import warnings
from pathlib import Path
from typing import List, Optional, Tuple, Union

import numpy as np
import torch

from regkit.errors import InputError, RegkitError, ResourceError
from regkit.image import Image
from regkit.io.atomic import atomic_path, note_input
from regkit.io.geometry import flip_affine, nifti_image, sitk_affine, sitk_image
from regkit.resources import check_memory, estimate_image_read

log = logging.getLogger(__name__)

PathLike = Union[str, Path]
NIBABEL_SUFFIXES = (".nii", ".nii.gz", ".mgz", ".mgh")
ITK_SUFFIXES = (".mha", ".mhd", ".nrrd", ".nhdr")
ENV_HEADER_POLICY = "REGKIT_NIFTI_AFFINE"
HEADER_POLICIES = ("strict", "sform", "qform")
#: sform and qform "agree" when they map every corner of the grid within this fraction of the
#: smallest voxel size of each other (float rounding of the quaternion stays far below it).
SFORM_QFORM_TOLERANCE_VOXELS = 0.1


class OrientationWarning(UserWarning):
    """A NIfTI orientation was chosen by ``$REGKIT_NIFTI_AFFINE`` rather than read unambiguously."""


def _has_suffix(path: Path, suffixes) -> bool:
    name = path.name.lower()
    return any(name.endswith(s) for s in suffixes)


def check_input_file(path: PathLike) -> Path:
    """The path as a Path, or an :class:`InputError` saying why it cannot be read."""
    p = Path(path)
    if not p.exists():
        raise InputError("no such file", p)
    if p.is_dir():
        dicom_series_files(p)  # InputError unless the folder holds one DICOM series
        note_input(p)
        return p
    if not os.access(p, os.R_OK):
        raise InputError("is not readable (permission denied)", p)
    if p.stat().st_size == 0:
        raise InputError("is empty (0 bytes)", p)
    note_input(p)  # the running command may not overwrite or remove it
    return p


def load_image(path: PathLike, is_label: bool = False, volume: Optional[int] = None, dtype=torch.float32,
               header_policy: Optional[str] = None) -> Image:
    """Read an image (or label map with ``is_label=True``) as an :class:`Image`.

    Args:
        path: NIfTI/MGH/ITK image file.
        is_label: read integer labels (int32) instead of float intensities.
        volume: index of the volume to take from a 4D file (else 4D with several volumes is an error).
        header_policy: NIfTI orientation rule, ``"strict"``, ``"sform"`` or ``"qform"`` (see the
            module docstring); ``None`` reads ``$REGKIT_NIFTI_AFFINE`` (default ``"strict"``).
    Raises:
        InputError: the file is missing, unreadable, not a 3D image, or its content is unusable.
        ResourceError: the header declares more voxels than fit in memory.
    """
    p = check_input_file(path)
    policy = _header_policy(header_policy)
    try:
        with np.errstate(all="ignore"):
            if p.is_dir():
                array, affine = _read_dicom_series(p, is_label)
            elif _has_suffix(p, ITK_SUFFIXES):
                array, affine = _read_sitk(p, is_label)
            else:
                array, affine = _read_nibabel(p, is_label, policy)
            array = _to_3d(array, p, volume)
            _check_geometry(affine, p)
            if is_label:
                return Image(torch.from_numpy(_as_labels(array, p))[None], affine, is_label=True)
            data = np.ascontiguousarray(array, dtype=np.float32)
            # min/max propagate NaN and show ±Inf, without a voxel-sized mask (75 MiB for a CT)
            if data.size and not (np.isfinite(data.min()) and np.isfinite(data.max())):
                bad = int((~np.isfinite(data)).sum())
                raise InputError(f"contains {bad} NaN/Inf voxels; clean the image (e.g. set them to 0) first", p)
    except RegkitError:
        raise
    except MemoryError as e:
        raise ResourceError("does not fit in memory while reading; downsample or crop it first", p) from e
    except Exception as e:  # any other failure on a damaged file is still the file's problem
        raise InputError(f"cannot be read as an image ({_short(e)})", p) from e
    return Image(torch.from_numpy(data)[None].to(dtype), affine)


def load_label(path: PathLike, volume: Optional[int] = None, header_policy: Optional[str] = None) -> Image:
    """Read a label map (integer values) as an int32 :class:`Image`."""
    return load_image(path, is_label=True, volume=volume, header_policy=header_policy)


def stored_integer_dtype(path: PathLike) -> Optional[np.dtype]:
    """The integer voxel type ``path`` stores (header only), or None for floats, scaled NIfTI
    integers and unreadable headers: what a label map written back should keep (uint8 stays uint8)."""
    dtype = _stored_dtype(path)
    return dtype if dtype is not None and np.issubdtype(dtype, np.integer) else None


def stored_float_dtype(path: PathLike) -> Optional[np.dtype]:
    """The floating-point voxel type ``path`` stores (header only), else None (integers, scaled
    NIfTI integers, unreadable headers)."""
    dtype = _stored_dtype(path)
    return dtype if dtype is not None and np.issubdtype(dtype, np.floating) else None


def _stored_dtype(path: PathLike) -> Optional[np.dtype]:
    """The voxel type ``path`` stores (header only); None for scaled NIfTI integers (intensities)
    and unreadable headers."""
    p = Path(path)
    try:
        if _has_suffix(p, NIBABEL_SUFFIXES):
            import nibabel as nib

            img = nib.load(str(p))
            dtype = np.dtype(img.get_data_dtype())
            slope, inter = getattr(img.dataobj, "slope", None), getattr(img.dataobj, "inter", None)
            if slope not in (None, 1.0) or inter not in (None, 0.0):
                return None  # scaled integers are intensities
        else:
            import SimpleITK as sitk

            reader = sitk.ImageFileReader()
            reader.SetFileName(str(p))
            reader.ReadImageInformation()
            dtype = np.dtype(sitk.GetArrayViewFromImage(sitk.Image([1, 1, 1], reader.GetPixelID())).dtype)
    except Exception:
        return None
    return dtype


def _header_policy(policy: Optional[str]) -> str:
    chosen = policy or os.environ.get(ENV_HEADER_POLICY) or "strict"
    if chosen not in HEADER_POLICIES:
        raise InputError(f"{ENV_HEADER_POLICY}={chosen!r}: expected one of {', '.join(HEADER_POLICIES)}")
    return chosen


def check_header_size(path: PathLike, working_bytes_per_value: int = 0) -> None:
    """Read only the header of image ``path`` and refuse (InputError / ResourceError, exit 2/3)
    a grid that is empty, truncated or would not fit in memory — before any voxel is read
    (a 1 MiB .nii.gz can unpack to gigabytes). ``working_bytes_per_value``: what the caller
    keeps per stored value on top of reading it (e.g. a displacement field as float64 copies).
    Headers that cannot be read are left to the reader, which says why."""
    import nibabel as nib

    p = check_input_file(path)
    try:
        if _has_suffix(p, ITK_SUFFIXES):
            import SimpleITK as sitk

            with _quiet_c_stderr():
                reader = sitk.ImageFileReader()
                reader.SetFileName(str(p))
                reader.ReadImageInformation()
            itemsize = np.dtype(sitk.GetArrayViewFromImage(sitk.Image([1, 1, 1], reader.GetPixelID())).dtype).itemsize
            shape = tuple(reader.GetSize()) + ((reader.GetNumberOfComponents(),) if reader.GetNumberOfComponents() > 1 else ())
            on_disk = None
        else:
            img = nib.load(str(p))
            shape, itemsize, on_disk = img.shape, np.dtype(img.get_data_dtype()).itemsize, _stored_bytes(img, p)
    except Exception:  # noqa: BLE001 - the reader reports an unreadable header in its own words
        return
    _check_declared_size(shape, itemsize, p, on_disk, working_bytes_per_value)


def _stored_bytes(img, p: Path) -> Optional[int]:
    """Bytes of voxel data an uncompressed file holds after its header (None when compressed)."""
    proxy = getattr(img, "dataobj", None)
    if p.name.lower().endswith((".gz", ".mgz")) or not hasattr(proxy, "offset"):
        return None
    return p.stat().st_size - int(proxy.offset)


def _check_declared_size(shape: Tuple[int, ...], bytes_per_value: int, p: Path, on_disk: Optional[int] = None,
                         working_bytes_per_value: int = 0) -> None:
    """Refuse a header that declares an empty grid, more voxels than memory holds, or (for an
    uncompressed file) more data than the file contains — before reading any voxel."""
    if len(shape) < 2:
        raise InputError(f"is {len(shape)}D (shape {tuple(shape)}); regkit needs a 3D volume", p)
    if any(int(s) <= 0 for s in shape):
        raise InputError(f"has a zero-length (or negative) dimension (shape {tuple(int(s) for s in shape)})", p)
    n_bytes = int(np.prod([int(s) for s in shape], dtype=object)) * bytes_per_value
    if on_disk is not None and n_bytes > on_disk:
        raise InputError(f"is truncated: its header declares {n_bytes} bytes of voxel data but it holds {max(on_disk, 0)}", p)
    values = int(np.prod([int(s) for s in shape], dtype=object))
    check_memory(estimate_image_read(shape, bytes_per_value) + values * int(working_bytes_per_value),
                 f"reading it (shape {tuple(int(s) for s in shape)})", hint="downsample or crop it first", path=p)


def _read_nibabel(p: Path, is_label: bool, policy: str):
    import nibabel as nib

    # nibabel logs and warns as it fixes up odd headers; real problems raise and are reported.
    # Only regkit's own warnings (about the orientation choice) are passed on.
    # (nibabel's own LoggingOutputSuppressor removes its handler, after which logging's
    # last-resort handler prints the messages anyway; raising the level silences them.)
    nib_logger = logging.getLogger(nib.imageglobals.logger.name)
    level = nib_logger.level
    nib_logger.setLevel(logging.CRITICAL + 1)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = _read_nibabel_quietly(p, is_label, policy)
    finally:
        nib_logger.setLevel(level)
    for w in caught:
        if issubclass(w.category, OrientationWarning):
            warnings.warn(w.message, stacklevel=3)
    return result


def _read_nibabel_quietly(p: Path, is_label: bool, policy: str):
    import nibabel as nib

    try:
        try:
            img = nib.load(str(p))
        except (nib.filebasedimages.ImageFileError, gzip.BadGzipFile) as e:
            if "Cannot work out file type" in str(e):
                raise InputError("is not an image regkit can read (no NIfTI, MGH, MHA or NRRD header found)", p) from e
            if "not a gzip file" in str(e):
                raise InputError("is named .gz but is not gzip-compressed (not an image, or a renamed file)", p) from e
            raise
        if not hasattr(img, "dataobj") or not hasattr(img, "shape"):
            raise InputError(f"is not a volume image ({type(img).__name__})", p)
        proxy = img.dataobj
        _check_declared_size(img.shape, np.dtype(img.get_data_dtype()).itemsize, p, _stored_bytes(img, p))
        stored = np.dtype(img.get_data_dtype())
        if stored.kind == "c" or stored.fields is not None:  # casting would keep the real part / fail obscurely
            raise InputError(f"holds {'complex' if stored.kind == 'c' else 'RGB/structured'} voxels ({stored}); "
                             "regkit registers real scalar images: save the magnitude (or one channel) first", p)
        if isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
            affine = _nifti_affine(img, p, policy)
            if policy == "strict":
                _check_same_as_itk(affine, img.shape, p)
        else:
            affine = img.affine
        array = np.asanyarray(proxy) if is_label else _scaled_float32(proxy)
    except RegkitError:
        raise
    except MemoryError:
        raise
    except Exception as e:  # nibabel raises many types for bad files (ImageFileError, EOFError, zlib...)
        raise InputError(f"cannot be read as an image ({_short(e)})", p) from e
    return array, np.asarray(affine, dtype=np.float64)


def _scaled_float32(proxy) -> np.ndarray:
    """The voxel values as float32, the header's slope/intercept applied in float32.

    nibabel applies them in float64 and casts afterwards: a 512×512×300 int16 CT then peaks at
    ~900 MiB instead of ~460 MiB (measured, VmHWM), which matters for the 8 GB target.
    """
    if not hasattr(proxy, "get_unscaled"):
        return np.asarray(proxy, dtype=np.float32)
    slope = float(proxy.slope) if getattr(proxy, "slope", None) is not None else 1.0
    inter = float(proxy.inter) if getattr(proxy, "inter", None) is not None else 0.0
    out = np.asarray(proxy.get_unscaled()).astype(np.float32)  # a copy: never write into a memory map
    if slope != 1.0:
        out *= np.float32(slope)
    if inter != 0.0:
        out += np.float32(inter)
    return out


def _corner_distance(a: np.ndarray, b: np.ndarray, shape) -> float:
    """Largest distance (mm) between where affines ``a`` and ``b`` put the grid's 8 corners."""
    ext = [max(int(s) - 1, 0) for s in shape[:3]]
    corners = np.array([[i, j, k, 1.0] for i in (0, ext[0]) for j in (0, ext[1]) for k in (0, ext[2])])
    return float(np.linalg.norm((corners @ a.T - corners @ b.T)[:, :3], axis=1).max())


#: mm per unit of a NIfTI header's spatial ``xyzt_units`` (unknown is taken as mm, as by ITK)
NIFTI_UNIT_MM = {"meter": 1000.0, "mm": 1.0, "micron": 0.001, "unknown": 1.0}


def _nifti_affine(img, p: Path, policy: Optional[str] = None) -> np.ndarray:
    """The voxel→world affine (mm) of a NIfTI header under ``policy`` (module docstring); a
    header in metres or micrometres (``xyzt_units``) is scaled to mm, as ITK/ANTs read it."""
    unit = str(img.header.get_xyzt_units()[0])
    return _nifti_affine_in_units(img, p, policy) * np.array([NIFTI_UNIT_MM.get(unit, 1.0)] * 3 + [1.0])[:, None]


def _check_same_as_itk(affine: np.ndarray, shape, p: Path) -> None:
    """Refuse a NIfTI header that ITK (so ANTs, SimpleITK, Slicer) maps to a different place
    than regkit does — negative pixdim in a qform, sforms ITK does not take, ... — by more than
    :data:`SFORM_QFORM_TOLERANCE_VOXELS`: a transform from one would be wrong for the other.
    Headers ITK cannot read or reads as another dimension are not compared, nor anything where
    SimpleITK is not installed (a bare training image, e.g. a GPU machine's)."""
    try:
        import SimpleITK as sitk
    except ImportError:
        return

    try:
        with _quiet_c_stderr():
            reader = sitk.ImageFileReader()
            reader.SetImageIO("NiftiImageIO")
            reader.SetFileName(str(p))
            reader.ReadImageInformation()
        if reader.GetDimension() != 3:
            return
        itk = np.eye(4)
        itk[:3, :3] = np.array(reader.GetDirection(), dtype=np.float64).reshape(3, 3) * np.array(reader.GetSpacing())[None, :]
        itk[:3, 3] = reader.GetOrigin()
        itk = flip_affine(itk)
    except Exception:  # noqa: BLE001 - ITK cannot read it: nothing to compare with
        return
    voxel = float(np.linalg.norm(affine[:3, :3], axis=0).min()) or 1.0
    gap = _corner_distance(affine, itk, shape)
    if np.isfinite(gap) and gap > SFORM_QFORM_TOLERANCE_VOXELS * voxel:
        raise InputError(
            f"its header is read differently by ITK/ANTs (grid corners up to {gap:.3g} mm apart; e.g. negative "
            f"pixdim, or an sform ITK does not take), so its geometry is ambiguous; fix the header or set "
            f"{ENV_HEADER_POLICY}=sform or =qform to use nibabel's reading", p)


def _nifti_affine_in_units(img, p: Path, policy: Optional[str] = None) -> np.ndarray:
    """The voxel→world affine of a NIfTI header under ``policy``, in the header's units."""
    policy = _header_policy(policy)
    hdr = img.header
    sform, scode = hdr.get_sform(coded=True)
    qform, qcode = hdr.get_qform(coded=True)
    has_s = bool(scode) and scode > 0 and sform is not None
    has_q = bool(qcode) and qcode > 0 and qform is not None
    if has_s and has_q:
        voxel = float(np.linalg.norm(sform[:3, :3], axis=0).min()) or 1.0
        gap = _corner_distance(sform, qform, img.shape)
        if not np.isfinite(gap) or gap > SFORM_QFORM_TOLERANCE_VOXELS * voxel:
            if policy == "strict":
                raise InputError(
                    f"sform and qform disagree (by up to {gap:.3g} mm over the grid), so its orientation is "
                    f"ambiguous (nibabel uses the sform, ITK may use the qform); fix the header or set "
                    f"{ENV_HEADER_POLICY}=sform or =qform to choose", p)
            warnings.warn(f"{p}: sform and qform disagree by up to {gap:.3g} mm; using the {policy} ({ENV_HEADER_POLICY})", OrientationWarning)
        return qform if policy == "qform" else sform
    if has_s or has_q:
        return sform if has_s else qform
    if policy == "strict":
        raise InputError(
            f"has neither sform nor qform set, so its orientation is unknown; fix the header or set "
            f"{ENV_HEADER_POLICY}=sform to accept voxel sizes only (no orientation)", p)
    warnings.warn(f"{p}: neither sform nor qform is set; orientation is unknown, assuming voxel spacing only", OrientationWarning)
    return hdr.get_base_affine()


def _read_sitk(p: Path, is_label: bool = False, series: Optional[List[str]] = None):
    """``(array X,Y,Z[,C], affine RAS)`` of an ITK image file, or of the DICOM files ``series``
    (in slice order) of the folder ``p``: the header checked before any voxel is read."""
    import SimpleITK as sitk

    try:
        with _quiet_c_stderr():
            reader, itemsize = _image_info(series[0] if series else str(p))
        if series:  # one 2D file per slice: the stack is the image
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(series)
            size = tuple(_image_info(series[0])[0].GetSize()[:2]) + (len(series),)
        else:
            if reader.GetDimension() != 3:
                raise InputError(f"is {reader.GetDimension()}D; regkit needs a 3D volume", p)
            size = tuple(reader.GetSize()) + ((reader.GetNumberOfComponents(),) if reader.GetNumberOfComponents() > 1 else ())
        _check_declared_size(size, itemsize, p)
        with _quiet_c_stderr():
            img = reader.Execute()
    except RegkitError:
        raise
    except Exception as e:
        raise InputError(f"cannot be read as an image ({_itk_reason(e)}; is it damaged or truncated?)", p) from e
    if img.GetDimension() != 3:
        raise InputError(f"is {img.GetDimension()}D; regkit needs a 3D volume", p)
    return _sitk_array(img, p, is_label)


def _image_info(filename: str):
    """SimpleITK's reader of ``filename`` with its header read, and the bytes of one voxel value."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(filename)
    reader.ReadImageInformation()
    return reader, np.dtype(sitk.GetArrayViewFromImage(sitk.Image([1, 1, 1], reader.GetPixelID())).dtype).itemsize


def dicom_series_files(folder: Path) -> List[str]:
    """The files of the one DICOM series in ``folder``, in slice order (GDCM, as SimpleITK's
    ImageSeriesReader sorts them); InputError when the folder holds none or several."""
    import SimpleITK as sitk

    with _quiet_c_stderr():
        ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not ids:
        raise InputError("is a directory without a DICOM series; give an image file or a folder of one DICOM series", folder)
    if len(ids) > 1:
        raise InputError(f"holds {len(ids)} DICOM series ({', '.join(list(ids)[:3])}{'...' if len(ids) > 3 else ''}); "
                         "give a folder with one series", folder)
    with _quiet_c_stderr():
        return list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), ids[0]))


def _read_dicom_series(p: Path, is_label: bool = False):
    """A folder of one DICOM series as ``(array X,Y,Z, affine RAS)`` via SimpleITK's
    ImageSeriesReader (slice order and geometry from the DICOM tags, as ITK/ANTs read them)."""
    return _read_sitk(p, is_label, series=dicom_series_files(p))


def _sitk_array(img, p: Path, is_label: bool):
    """``(array X,Y,Z[,C], affine RAS)`` of a SimpleITK image read from ``p``."""
    import SimpleITK as sitk

    array = sitk.GetArrayFromImage(img)  # (Z, Y, X[, C])
    if np.iscomplexobj(array):
        raise InputError(f"holds complex voxels ({array.dtype}); regkit registers real scalar images: "
                         "save the magnitude first", p)
    array = np.moveaxis(array, [0, 1, 2], [2, 1, 0])
    return (array if is_label else array.astype(np.float32, copy=False)), sitk_affine(img)


@contextlib.contextmanager
def _quiet_c_stderr():
    """Silence what ITK's C++ readers print straight to file descriptor 2 (MetaIO, NRRD), so a
    damaged file gives regkit's one-line error only; the reason is in ITK's exception. Also puts
    back the process's C locale, which GDCM (SimpleITK's DICOM reader) sets to "C": Python's
    default text encoding then became ASCII for the rest of the process (a later read of a
    UTF-8 file failed)."""
    import locale

    saved_locale = locale.setlocale(locale.LC_ALL)
    try:
        saved = os.dup(2)
    except OSError:  # no usable stderr descriptor (embedded interpreters)
        saved = None
    try:
        if saved is None:
            yield
        else:
            with open(os.devnull, "wb") as null:
                os.dup2(null.fileno(), 2)
                yield
    finally:
        if saved is not None:
            os.dup2(saved, 2)
            os.close(saved)
        locale.setlocale(locale.LC_ALL, saved_locale)


def _itk_reason(e: Exception) -> str:
    """The useful line of an ITK exception ("ITK ERROR: MetaImageIO(0x..): <reason>")."""
    for line in str(e).splitlines():
        if "ERROR:" in line:
            return line.split("):", 1)[-1].strip().rstrip(".")[:200]
    return _short(e)


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


def _check_geometry(affine: np.ndarray, p: Path) -> None:
    if affine.shape != (4, 4) or not np.isfinite(affine).all():
        raise InputError("voxel-to-world affine has NaN/Inf entries", p)
    if abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise InputError("voxel-to-world affine is singular (zero voxel size or collinear axes)", p)


def _as_labels(array: np.ndarray, p: Path) -> np.ndarray:
    if np.issubdtype(array.dtype, np.integer) or array.dtype == bool:
        if array.size and (array.max() > np.iinfo(np.int32).max or array.min() < np.iinfo(np.int32).min):
            raise InputError("label map has values beyond the int32 range", p)
        return np.ascontiguousarray(array.astype(np.int32))
    a = np.asarray(array, dtype=np.float64)
    if not np.isfinite(a).all():
        raise InputError("label map contains NaN/Inf", p)
    r = np.rint(a)
    if np.abs(a - r).max() > 1e-3:
        raise InputError("label map has non-integer values; is it an intensity image?", p)
    if np.abs(r).max() > np.iinfo(np.int32).max:
        raise InputError("label map has values beyond the int32 range", p)
    return np.ascontiguousarray(r.astype(np.int32))


def _short(e: Exception) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return msg[:200]


def check_image_output(path: PathLike) -> Path:
    """InputError unless ``path`` names an image format regkit writes (by its suffix), so that
    ``-o result.png`` fails before the work, not in the writer after it."""
    p = Path(path)
    if not _has_suffix(p, NIBABEL_SUFFIXES + ITK_SUFFIXES):
        raise InputError("unsupported image format; give a name ending in " + ", ".join(NIBABEL_SUFFIXES + ITK_SUFFIXES), p)
    return p


def save_image(image: Image, path: PathLike, force: bool = False, dtype: Optional[np.dtype] = None) -> Path:
    """Write ``image`` (NIfTI via nibabel, other suffixes via SimpleITK), atomically.

    NIfTI files get the affine as both sform and qform (code 1, scanner). Label images are saved
    as int16/int32; intensities as float32 unless ``dtype`` says otherwise.
    """
    p = check_image_output(path)
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
            from regkit.io.compression import save_nifti

            save_nifti(nifti_image(array, affine), tmp)
        else:
            import SimpleITK as sitk

            sitk.WriteImage(sitk_image(array, affine, vector=array.ndim == 4), str(tmp))
    return p


def image_to_sitk(image: Image):
    """A SimpleITK image (first channel, or vector image for several) with the same geometry."""
    array = image.numpy()
    return sitk_image(array, image.affine.numpy(), vector=array.ndim == 4)


def sitk_to_image(img, is_label: bool = False) -> Image:
    """An :class:`Image` from a SimpleITK image."""
    import SimpleITK as sitk

    array = np.moveaxis(sitk.GetArrayFromImage(img), [0, 1, 2], [2, 1, 0])
    return Image.from_numpy(array if is_label else array.astype(np.float32), sitk_affine(img), is_label=is_label)
