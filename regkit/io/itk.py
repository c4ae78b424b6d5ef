"""ITK / ANTs transform files ↔ regkit transforms (the flip itself: :mod:`regkit.io.geometry`).

ITK (and so ANTs and SimpleITK) stores world coordinates in **LPS** mm; regkit uses **RAS** mm.
Both map FIXED points to MOVING points, so only the coordinate flip ``F = diag(-1, -1, 1)``
changes: a point matrix ``H`` (4×4) becomes ``F H F`` and a displacement vector ``u`` becomes
``F u``.

Files handled:

* Affine transforms (``.mat`` MATLAB v4 as ANTs writes ``*0GenericAffine.mat``; text ``.tfm`` /
  ``.txt``; any linear ITK transform — ``AffineTransform_double_3_3``, ``_float_3_3``,
  ``MatrixOffsetTransformBase``, Euler/Versor/Similarity …) through ``sitk.ReadTransform`` /
  ``sitk.WriteTransform``. Composite ``.h5`` files (affines and displacement fields, as
  ``regkit export --format itk`` or ANTs write) are read as a chain.
* Displacement fields as ANTs writes ``*1Warp.nii.gz``: NIfTI ``X×Y×Z×1×3``, intent code 1007
  (``NIFTI_INTENT_VECTOR``), vectors in LPS mm, on the reference (fixed) grid. The 4D ``X×Y×Z×3``
  variant and ITK vector images (``.mha``, ``.nrrd``) are read too.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import List, Tuple, Union

import numpy as np
import torch

from regkit import space
from regkit.errors import InputError
from regkit.io.atomic import atomic_path
from regkit.io.geometry import LPS_FLIP, flip_affine, flip_point_matrix, nifti_image, set_sitk_geometry, sitk_affine, sitk_image
from regkit.io.images import _itk_reason, _quiet_c_stderr, check_header_size, check_input_file
from regkit.io.itk_header import check_transform_size
from regkit.resources import check_memory
from regkit.transforms import AffineTransform, Compose, DisplacementField, Transform

PathLike = Union[str, Path]
AFFINE_SUFFIXES = (".mat", ".tfm", ".txt", ".h5", ".hdf5")
FIELD_SUFFIXES = (".nii", ".nii.gz", ".mha", ".mhd", ".nrrd", ".nhdr")
NIFTI_INTENT_VECTOR = 1007
#: bytes per stored value a displacement field needs once read: float64 LPS, RAS and (3, X, Y, Z) copies
FIELD_WORKING_BYTES = 3 * 8
#: bytes per voxel of evaluating a B-spline on a grid: SimpleITK's uint8 reference and float64
#: field, then per vector component the NumPy copy, its float64 cast and the working copies above
BSPLINE_EVAL_BYTES_PER_VOXEL = 1 + 3 * (8 + 8 + 8 + FIELD_WORKING_BYTES)


# --------------------------------------------------------------------------- transform files
def _sitk_parts(tx) -> list:
    """The (downcast) parts of a SimpleITK transform in the order they act on points: an ITK
    composite applies its LAST added transform first."""
    import SimpleITK as sitk

    tx = tx.Downcast()
    if not isinstance(tx, sitk.CompositeTransform):
        return [tx]
    if tx.GetNumberOfTransforms() == 1 and isinstance(tx.GetNthTransform(0).Downcast(), sitk.CompositeTransform):
        # SimpleITK wraps a kind it has no class for (e.g. MatrixOffsetTransformBase) as a
        # one-element composite whose element is that wrapper again: it is a leaf
        return [tx]
    parts = []
    for i in reversed(range(tx.GetNumberOfTransforms())):
        parts.extend(_sitk_parts(tx.GetNthTransform(i)))
    return parts


def _lps_matrix(tx) -> np.ndarray:
    """4×4 LPS point matrix of a linear SimpleITK transform (any MatrixOffsetTransformBase kind)."""
    if hasattr(tx, "GetMatrix") and hasattr(tx, "GetTranslation") and hasattr(tx, "GetCenter"):
        m = np.array(tx.GetMatrix(), dtype=np.float64).reshape(3, 3)
        t = np.array(tx.GetTranslation(), dtype=np.float64)
        c = np.array(tx.GetCenter(), dtype=np.float64)
        h = np.eye(4)
        h[:3, :3] = m
        h[:3, 3] = t + c - m @ c
        return h
    # a linear transform without matrix accessors (e.g. TranslationTransform, identity):
    # recover the matrix from the images of the origin and the unit vectors
    o = np.array(tx.TransformPoint((0.0, 0.0, 0.0)))
    h = np.eye(4)
    for axis in range(3):
        e = [0.0, 0.0, 0.0]
        e[axis] = 1.0
        h[:3, axis] = np.array(tx.TransformPoint(tuple(e))) - o
    h[:3, 3] = o
    return h


def _affine_from_sitk(parts: list) -> AffineTransform:
    """One RAS :class:`AffineTransform` equal to linear SimpleITK parts (first acts first); the
    first part's centre of rotation is kept (converted to RAS)."""
    h = np.eye(4)
    for tx in parts:
        h = flip_point_matrix(_lps_matrix(tx)) @ h
    center = None
    if hasattr(parts[0], "GetCenter"):
        center = torch.as_tensor(np.array(parts[0].GetCenter(), dtype=np.float64) * LPS_FLIP)
    return AffineTransform.from_homogeneous(torch.as_tensor(h), center=center)


def _read_sitk_transform(path: PathLike):
    import SimpleITK as sitk

    p = check_input_file(path)
    check_transform_size(p, FIELD_WORKING_BYTES)  # ITK allocates what the headers declare, before reading
    try:
        with _quiet_c_stderr():  # HDF5 prints its stack for a damaged .h5; ITK's exception says enough
            tx = sitk.ReadTransform(str(p))
    except Exception as e:
        raise InputError(f"cannot be read as an ITK transform ({_itk_reason(e)})", p) from e
    if tx.GetDimension() != 3:
        raise InputError(f"holds a {tx.GetDimension()}D transform; regkit needs 3D", p)
    parts = _sitk_parts(tx)
    for part in parts:
        if part.IsLinear() and not abs(np.linalg.det(_lps_matrix(part)[:3, :3])) > 1e-9:
            raise InputError("holds a singular affine (determinant 0): it maps space onto a plane or line, "
                             "so it cannot be applied or inverted", p)
    return p, parts


def read_itk_affine(path: PathLike) -> AffineTransform:
    """Read an ITK/ANTs affine transform file (``.mat``, ``.tfm``, ``.txt``, linear ``.h5``).

    Returns an :class:`AffineTransform` (fixed → moving, RAS mm, float64) with the file's
    centre of rotation converted to RAS; a composite of linear parts becomes one affine.
    """
    p, parts = _read_sitk_transform(path)
    for tx in parts:
        if not tx.IsLinear():
            raise InputError(f"holds a non-linear ITK transform ({tx.GetName()}); expected an affine", p)
    return _affine_from_sitk(parts)


def read_itk_transform(path: PathLike, grid=None) -> Transform:
    """Read any ITK transform file: linear parts → :class:`AffineTransform` (consecutive ones
    merged), ``DisplacementFieldTransform`` → :class:`DisplacementField`, ``BSplineTransform``
    → a :class:`DisplacementField` evaluated by SimpleITK on ``grid`` (``(affine, shape)``;
    default the B-spline's own domain, see :func:`sitk_transform_to_regkit`); several → a
    :class:`Compose` in the order they act on fixed points (e.g. ITK ``Composite.h5``)."""
    p, parts = _read_sitk_transform(path)
    out: List[Transform] = []
    linear: list = []
    for tx in parts + [None]:
        if tx is not None and tx.IsLinear():
            linear.append(tx)
            continue
        if linear:
            out.append(_affine_from_sitk(linear))
            linear = []
        if tx is None:
            break
        out.append(sitk_transform_to_regkit(tx, p, grid))
    return out[0] if len(out) == 1 else Compose(*out)


def sitk_transform_to_regkit(tx, p: Path, grid=None) -> Transform:
    """One SimpleITK transform (LPS) as a regkit transform (RAS): linear → :class:`AffineTransform`;
    a displacement field → :class:`DisplacementField` on its grid; a B-spline → the displacement
    SimpleITK computes at the voxel centres of ``grid`` (``(affine, shape)``, RAS, or a function
    returning it; exact there, trilinear between), by default its own domain at a quarter of its
    control-point spacing."""
    import SimpleITK as sitk

    tx = tx.Downcast() if hasattr(tx, "Downcast") else tx
    if tx.IsLinear():
        return _affine_from_sitk([tx])
    if isinstance(tx, sitk.DisplacementFieldTransform):
        return _field_from_vectors(*_sitk_vectors(tx.GetDisplacementField(), p), p)
    if isinstance(tx, sitk.BSplineTransform):
        grid = grid() if callable(grid) else grid
        affine, shape = bspline_grid(tx) if grid is None else (space.as_affine(grid[0]).numpy(), tuple(int(s) for s in grid[1]))
        check_memory(math.prod(shape) * BSPLINE_EVAL_BYTES_PER_VOXEL, f"evaluating its B-spline on a "
                     f"{'x'.join(map(str, shape))} grid", hint="apply it with a coarser reference image", path=p)
        reference = sitk.Image([int(s) for s in shape], sitk.sitkUInt8)
        set_sitk_geometry(reference, affine)
        to_field = sitk.TransformToDisplacementFieldFilter()
        to_field.SetReferenceImage(reference)
        to_field.SetOutputPixelType(sitk.sitkVectorFloat64)
        return _field_from_vectors(*_sitk_vectors(to_field.Execute(tx), p), p)
    raise InputError(f"holds an ITK {tx.GetName()}, which regkit cannot read; it reads linear, displacement-field "
                     "and B-spline transforms", p)


def bspline_grid(tx) -> Tuple[np.ndarray, Tuple[int, int, int]]:
    """``(affine RAS, shape)``: the domain of an ITK B-spline (its cubic control grid less one
    spacing at the start and two at the end) sampled at a quarter of its control-point spacing."""
    fixed = np.asarray(tx.GetFixedParameters(), dtype=np.float64)
    size, origin, spacing, direction = fixed[:3], fixed[3:6], fixed[6:9], fixed[9:18].reshape(3, 3)
    step = spacing / 4
    lps = np.eye(4)
    lps[:3, :3] = direction * step[None, :]
    # the domain starts one control spacing in; ITK gives 0 (identity) on its edge itself, so
    # the samples sit at the centres of quarter-spacing cells, all strictly inside
    lps[:3, 3] = origin + direction @ (spacing + step / 2)
    shape = tuple(int(max(1, (s - 3) * 4)) for s in size)
    return flip_affine(lps), shape  # voxel → LPS becomes voxel → RAS


def affine_to_sitk(transform: AffineTransform):
    """A ``sitk.AffineTransform`` (LPS) equal to a regkit affine (RAS); centre kept."""
    import SimpleITK as sitk

    if transform.batched:
        if transform.matrix.shape[0] != 1:
            raise InputError(f"a batched affine (N={transform.matrix.shape[0]}) cannot be written as one ITK transform")
        h = transform.homogeneous()[0]
    else:
        h = transform.homogeneous()
    h = flip_point_matrix(h.detach().cpu().double().numpy())
    c = transform.center.detach().cpu().double().numpy() * LPS_FLIP
    m = h[:3, :3]
    t = h[:3, 3] - c + m @ c  # ITK: y = M (x - c) + c + t
    tx = sitk.AffineTransform(3)
    tx.SetMatrix([float(v) for v in m.ravel()])
    tx.SetCenter([float(v) for v in c])
    tx.SetTranslation([float(v) for v in t])
    return tx


def write_itk_affine(transform: AffineTransform, path: PathLike, force: bool = False) -> Path:
    """Write an affine as an ITK transform file (``AffineTransform_double_3_3``, LPS), atomically.

    ``.mat`` gives the MATLAB v4 file ANTs writes (``*0GenericAffine.mat``); ``.tfm``/``.txt``
    the ITK text format.
    """
    import SimpleITK as sitk

    p = Path(path)
    tx = affine_to_sitk(transform)
    with atomic_path(p, force) as tmp:
        sitk.WriteTransform(tx, str(tmp))
    return p


# --------------------------------------------------------------------------- displacement fields
def _is_nifti(p: Path) -> bool:
    name = p.name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def read_itk_displacement(path: PathLike) -> DisplacementField:
    """Read an ITK/ANTs displacement field (LPS vectors) as a :class:`DisplacementField` (RAS).

    NIfTI: ``X×Y×Z×1×3`` (ANTs, SimpleITK) or ``X×Y×Z×3``; other ITK formats: a 3-component
    vector image. The field's grid is the file's grid.
    """
    p = check_input_file(path)
    check_header_size(p, working_bytes_per_value=FIELD_WORKING_BYTES)  # before the data: small files unpack big
    if _is_nifti(p):
        vectors, affine = _read_nifti_vectors(p)
    else:
        vectors, affine = _read_sitk_vectors(p)
    return _field_from_vectors(vectors, affine, p)


def _field_from_vectors(vectors: np.ndarray, affine: np.ndarray, p: Path) -> DisplacementField:
    """``(X, Y, Z, 3)`` LPS vectors on grid ``affine`` (RAS) → a RAS :class:`DisplacementField`."""
    ras = vectors * LPS_FLIP
    if not np.isfinite(ras).all():
        raise InputError("displacement field has NaN/Inf vectors", p)
    data = torch.from_numpy(np.ascontiguousarray(np.moveaxis(ras, -1, 0)))  # (3, X, Y, Z)
    return DisplacementField(data, affine)


def _read_nifti_vectors(p: Path) -> Tuple[np.ndarray, np.ndarray]:
    import nibabel as nib

    from regkit.io.images import _nifti_affine  # same sform/qform rule as images

    try:
        img = nib.load(str(p))
        if np.dtype(img.get_data_dtype()).kind not in "iuf":  # complex: numpy would drop the imaginary part
            raise InputError(f"holds {np.dtype(img.get_data_dtype())} values; a displacement field holds real numbers", p)
        array = np.asanyarray(img.dataobj)
        affine = _nifti_affine(img, p)
    except InputError:
        raise
    except Exception as e:
        raise InputError(f"cannot be read as a displacement field ({_first_line(e)})", p) from e
    shape = array.shape
    if len(shape) == 5 and shape[3] == 1 and shape[4] == 3:
        array = array[:, :, :, 0, :]
    elif not (len(shape) == 4 and shape[3] == 3):
        raise InputError(f"has shape {shape}; a displacement field is X×Y×Z×1×3 (ITK/ANTs) or X×Y×Z×3", p)
    vectors = np.asarray(array, dtype=np.float64)
    if is_ras_ddf(img.header):  # regkit's own `export --format nifti-ddf`: RAS vectors, made LPS here
        vectors = vectors * LPS_FLIP
    return vectors, np.asarray(affine, dtype=np.float64)


RAS_DDF_INTENT_NAME = b"RAS ddf (regkit)"  # 16 bytes: all NIfTI-1 allows


def mark_ras_ddf(header) -> None:
    """Mark a NIfTI header as holding RAS-mm vectors (``regkit export --format nifti-ddf``), so
    that regkit reads its own export back as RAS, not as the LPS of ITK/ANTs fields."""
    header["intent_name"] = RAS_DDF_INTENT_NAME


def is_ras_ddf(header) -> bool:
    try:
        return bytes(header["intent_name"]).rstrip(b"\0") == RAS_DDF_INTENT_NAME
    except (KeyError, TypeError, ValueError):
        return False


def _read_sitk_vectors(p: Path) -> Tuple[np.ndarray, np.ndarray]:
    import SimpleITK as sitk

    try:
        with _quiet_c_stderr():
            img = sitk.ReadImage(str(p))
    except Exception as e:
        raise InputError(f"cannot be read as a displacement field ({_itk_reason(e)})", p) from e
    return _sitk_vectors(img, p)


def _sitk_vectors(img, p: Path) -> Tuple[np.ndarray, np.ndarray]:
    """``(X, Y, Z, 3)`` float64 LPS vectors and the RAS grid affine of a SimpleITK vector image."""
    import SimpleITK as sitk

    if img.GetDimension() != 3 or img.GetNumberOfComponentsPerPixel() != 3:
        raise InputError(f"is not a 3D field of 3-vectors ({img.GetDimension()}D, {img.GetNumberOfComponentsPerPixel()} components)", p)
    array = sitk.GetArrayFromImage(img)  # (Z, Y, X, 3)
    return np.moveaxis(array, [0, 1, 2], [2, 1, 0]).astype(np.float64), sitk_affine(img)


def write_itk_displacement(displacement: torch.Tensor, affine, path: PathLike, force: bool = False) -> Path:
    """Write a displacement ``(3, X, Y, Z)`` (RAS mm, grid ``affine``) as ITK/ANTs do, atomically.

    NIfTI: ``X×Y×Z×1×3`` float32, intent code 1007 (vector), LPS vectors, sform = qform =
    ``affine`` — the layout of ANTs' ``*1Warp.nii.gz`` that SimpleITK's ``ReadImage`` +
    ``DisplacementFieldTransform`` and antspyx ``apply_transforms`` read. Other suffixes
    (``.mha``, ``.nrrd``) are written by SimpleITK as vector images.
    """
    u = torch.as_tensor(displacement).detach().cpu()
    if u.dim() == 5:
        if u.shape[0] != 1:
            raise InputError(f"a batched field (N={u.shape[0]}) cannot be written as one ITK displacement field")
        u = u[0]
    p = Path(path)
    a = space.as_affine(affine).numpy()
    with atomic_path(p, force) as tmp:
        if _is_nifti(p):
            # float32 (flipping a sign is exact in it), laid out as NIfTI stores it (x fastest):
            # one multi-threaded torch product per component into the transposed layout (faster
            # than permuting all three at once: benchmarks/README.md, "A body CT at 1 mm"), then nibabel
            # writes the bytes as they are
            u = u.float()
            on_disk_t = torch.empty((3, *u.shape[1:][::-1]), dtype=torch.float32)  # (3, Z, Y, X)
            for c in range(3):
                torch.mul(u[c].permute(2, 1, 0), float(LPS_FLIP[c]), out=on_disk_t[c])
            on_disk = on_disk_t.numpy()
            nii = nifti_image(on_disk.T[:, :, :, None, :], a)  # (X, Y, Z, 1, 3), Fortran order
            nii.header.set_intent(NIFTI_INTENT_VECTOR)
            from regkit.io.compression import save_nifti

            save_nifti(nii, tmp)
        else:
            import SimpleITK as sitk

            lps = np.moveaxis(u.double().numpy(), 0, -1) * LPS_FLIP  # (X, Y, Z, 3)
            sitk.WriteImage(sitk_image(lps, a, vector=True), str(tmp))
    return p


def displacement_to_sitk_transform(field: DisplacementField):
    """A ``sitk.DisplacementFieldTransform`` equal to a regkit field (for tests and interop)."""
    import SimpleITK as sitk

    u = field.displacement.detach().cpu()[0]
    lps = np.moveaxis(u.double().numpy(), 0, -1) * LPS_FLIP
    return sitk.DisplacementFieldTransform(sitk_image(lps, field.affine.numpy(), vector=True))


def _first_line(e: Exception) -> str:
    s = str(e).strip()
    return (s.splitlines()[0] if s else type(e).__name__)[:200]
