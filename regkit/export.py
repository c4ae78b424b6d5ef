"""Hand a regkit transform to other tools: ANTs, ITK composite, plain NIfTI field, Learn2Reg.

Every format maps FIXED points to MOVING points (regkit's direction, also ANTs'/ITK's), and
fields are sampled on the grid of ``reference`` (the fixed image). Files, for ``prefix = P``:

``ants``
    ``P0GenericAffine.mat`` (ITK affine, LPS) and ``P1Warp.nii.gz`` (ANTs displacement field,
    ``X×Y×Z×1×3``, LPS mm, on the fixed grid), used as
    ``antsApplyTransforms -r fixed -i moving -t P1Warp.nii.gz -t P0GenericAffine.mat``, which maps
    a fixed point ``x`` to ``A(x + w(x))``. A regkit chain ``Compose(deformable..., affine)`` is
    split there (``A`` = the last affine, ``w`` = the deformable part sampled on the fixed grid);
    any other chain is written as identity ``A`` + the full field. Exact at voxel centres.
``itk``
    ``PComposite.h5``: an ITK ``CompositeTransform`` holding the same affine and field (SimpleITK
    writes it; ``sitk.ReadTransform`` / ``antsApplyTransforms -t PComposite.h5`` read it).
``nifti-ddf``
    ``Pddf_RAS.nii.gz``: a plain dense displacement field ``X×Y×Z×3`` float32 on the fixed grid,
    vectors in **RAS mm** (NOT the LPS of ITK files), ``T(x) = x + u(x)`` for the fixed-grid voxel
    centre ``x`` — for nibabel/MONAI-style tools. A NIfTI-2 file, so that ITK and ANTs refuse it
    instead of misreading it as their LPS field; its header's ``intent_name`` is
    ``RAS ddf (regkit)``, so regkit reads it back as RAS.
``learn2reg``
    What the Learn2Reg evaluator (MDL-UzL/L2R ``evaluation.py``) reads: ``Pdisp_FFFF_MMMM.npz`` —
    fixed and moving subject — when both images have the same modality (or fixed ``0000``, moving
    ``0001``), else ``Pdisp_FFFF_fmod_MMMM_mmod.npz``; subjects and modalities come from the images'
    Learn2Reg names (``TASK_SSSS_MMMM.nii.gz``) or ``case``. Array ``arr_0`` of shape
    ``(X, Y, Z, 3)`` (the fixed grid, channels last), float32 (float16 on request), in **voxel
    units**: fixed voxel ``i`` (nibabel index order) lands on moving voxel ``i + d[i]`` — the
    evaluator's ``map_coordinates(moving, identity + d)``; with ``moving`` given its grid is used,
    else the moving image is taken to be on the fixed grid (as Learn2Reg's data are).
``learn2reg-2021``
    The 2021 layout: ``Pdisp.npz``, ``arr_0`` of shape ``(3, X, Y, Z)`` (channels first) float32,
    voxel units of the fixed grid.
``fsl``, ``lta``, ``afni``
    An affine (only) as ``Pflirt.mat`` (FSL FLIRT: ``flirt -ref FIXED -in MOVING -applyxfm -init``),
    ``Paffine.lta`` (FreeSurfer) or ``Paffine.aff12.1D`` (AFNI), written by nitransforms from both
    images' grids (``moving`` needed).
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import re

import numpy as np
import torch
from torch import Tensor

from regkit import space
from regkit.image import Image
from regkit.io.atomic import atomic_group, atomic_path, check_writable
from regkit.transforms import AffineTransform, Compose, Transform

PathLike = Union[str, Path]
FORMATS = ("ants", "itk", "nifti-ddf", "learn2reg", "learn2reg-2021", "fsl", "lta", "afni")
SUFFIXES: Dict[str, Tuple[str, ...]] = {
    "ants": ("0GenericAffine.mat", "1Warp.nii.gz"),
    "itk": ("Composite.h5",),
    "nifti-ddf": ("ddf_RAS.nii.gz",),
    "learn2reg-2021": ("disp.npz",),
    "fsl": ("flirt.mat",),
    "lta": ("affine.lta",),
    "afni": ("affine.aff12.1D",),
}
#: a Learn2Reg image name: TASK_SSSS_MMMM.nii.gz (subject, modality; the evaluator slices these out)
L2R_IMAGE_NAME = re.compile(r"_(\d{4})_(\d{4})\.nii(\.gz)?$")
L2R_CASE = re.compile(r"^(\d{4})_(\d{4})_(\d{4})_(\d{4})$")


def learn2reg_case(fixed_name: str, moving_name: str) -> str:
    """``"FFFF_fmod_MMMM_mmod"`` from two Learn2Reg image names (InputError naming the one that is not)."""
    from regkit.errors import InputError

    ids = []
    for name in (fixed_name, moving_name):
        m = L2R_IMAGE_NAME.search(str(name))
        if m is None:
            raise InputError("is not named as Learn2Reg names images (TASK_SSSS_MMMM.nii.gz: subject, modality); "
                             "give the pair as --case FIXEDSUBJ_MOD_MOVINGSUBJ_MOD, e.g. 0001_0000_0002_0000", name)
        ids += [m.group(1), m.group(2)]
    return "_".join(ids)


def learn2reg_file_name(case: str) -> str:
    """The file the Learn2Reg evaluator looks for: ``disp_F_M.npz`` for the same modality (or
    ``0000`` → ``0001``), else ``disp_F_fmod_M_mmod.npz``."""
    from regkit.errors import InputError

    m = L2R_CASE.match(case)
    if m is None:
        raise InputError(f"--case must be FIXEDSUBJ_MOD_MOVINGSUBJ_MOD, four 4-digit numbers (e.g. 0001_0000_0002_0000); got {case!r}")
    fs, fm, ms, mm = m.groups()
    if fm == mm or (fm == "0000" and mm == "0001"):
        return f"disp_{fs}_{ms}.npz"
    return f"disp_{case}.npz"


def output_paths(prefix: PathLike, fmt: str, case: Optional[str] = None) -> List[Path]:
    """The files :func:`export_transform` writes for ``fmt`` with ``prefix`` (prefix + suffix;
    ``learn2reg`` needs the Learn2Reg ``case``, see :func:`learn2reg_case`)."""
    if fmt == "learn2reg":
        if case is None:
            raise ValueError("the learn2reg format names its file after the case (FIXEDSUBJ_MOD_MOVINGSUBJ_MOD)")
        return [Path(f"{prefix}{learn2reg_file_name(case)}")]
    if fmt not in SUFFIXES:
        raise ValueError(f"unknown export format {fmt!r}; choose from {', '.join(FORMATS)}")
    return [Path(f"{prefix}{s}") for s in SUFFIXES[fmt]]


def split_affine_and_warp(transform: Transform, reference: Image) -> Tuple[AffineTransform, Tensor]:
    """``(A, w)`` with ``transform(x) = A(x + w(x))`` at every voxel centre ``x`` of ``reference``.

    ``A`` is the chain's last step when that is an :class:`AffineTransform` (the affine of a
    regkit registration), else identity; ``w`` ``(3, X, Y, Z)`` float64 world mm (RAS) is what
    the rest of the chain does on the reference grid (all zeros for a purely affine chain).
    """
    from regkit.io.transform_files import as_single_affine

    pure = as_single_affine(transform)
    if pure is not None:
        return pure, torch.zeros(3, *reference.shape, dtype=torch.float64)
    chain = list(transform.transforms) if isinstance(transform, Compose) else [transform]
    if isinstance(chain[-1], AffineTransform):
        affine, rest = chain[-1], chain[:-1]
    else:
        affine, rest = AffineTransform(requires_grad=False).double(), chain
    deformable = rest[0] if len(rest) == 1 else Compose(*rest)
    with torch.no_grad():
        w = deformable.displacement_on(reference.affine, reference.shape, dtype=torch.float64)
    return affine, w[0] if w.dim() == 5 else w


def dense_displacement(transform: Transform, reference: Image) -> Tensor:
    """``T(x) - x`` (mm, RAS) at every voxel of ``reference``, ``(3, X, Y, Z)`` float64."""
    with torch.no_grad():
        u = transform.displacement_on(reference.affine, reference.shape, dtype=torch.float64)
    return u[0] if u.dim() == 5 else u


def voxel_displacement(transform: Transform, reference: Image, moving_affine=None) -> Tensor:
    """Learn2Reg's field ``B⁻¹ T(A i) - i`` in voxel units, ``(3, X, Y, Z)`` on ``reference``'s grid
    (``A``), ``B`` the moving image's voxel→world (default ``A``: the moving image on the fixed grid)."""
    a = space.as_affine(reference.affine)
    b = a if moving_affine is None else space.as_affine(moving_affine)
    with torch.no_grad():
        y = transform.grid_points(a, reference.shape, dtype=torch.float64)
    y = y[0] if y.dim() == 5 else y
    ijk = space.voxel_grid(reference.shape, dtype=torch.float64)
    return (space.world_to_voxel(y, b) - ijk).movedim(-1, 0)


def export_transform(transform: Transform, reference: Image, fmt: str, prefix: PathLike, force: bool = False,
                     moving: Optional[Image] = None, case: Optional[str] = None, float16: bool = False) -> List[Path]:
    """Write ``transform`` (fixed → moving) for another tool; returns the files written.

    See the module docstring for each format's files and conventions. ``moving``, ``case`` and
    ``float16`` are for ``learn2reg`` (the moving image's grid, the Learn2Reg case
    ``FIXEDSUBJ_MOD_MOVINGSUBJ_MOD``, half-precision values). Nothing is written when any output
    exists and ``force`` is false.
    """
    paths = output_paths(prefix, fmt, case)
    for p in paths:
        check_writable(p, force)
    if fmt == "ants":
        from regkit.io.itk import write_itk_affine, write_itk_displacement

        affine, w = split_affine_and_warp(transform, reference)
        with atomic_group():  # both files or neither
            write_itk_affine(affine, paths[0], force)
            write_itk_displacement(w, reference.affine, paths[1], force)
    elif fmt == "itk":
        _write_itk_composite(transform, reference, paths[0], force)
    elif fmt == "nifti-ddf":
        _write_nifti(np.moveaxis(dense_displacement(transform, reference).numpy(), 0, -1), reference, paths[0], force)
    elif fmt in NITRANSFORMS_FORMATS:
        _write_nitransforms(transform, reference, moving, fmt, paths[0], force)
    elif fmt == "learn2reg":
        d = voxel_displacement(transform, reference, moving.affine if moving is not None else None)
        _write_npz(np.moveaxis(d.numpy(), 0, -1).astype(np.float16 if float16 else np.float32), paths[0], force)
    else:
        _write_npz(voxel_displacement(transform, reference).numpy().astype(np.float32), paths[0], force)
    return paths


def _write_npz(array: np.ndarray, path: Path, force: bool) -> None:
    """``array`` as ``arr_0`` of a compressed ``.npz`` (no pickle), atomically."""
    with atomic_path(path, force) as tmp:
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to the temp name
            np.savez_compressed(f, np.ascontiguousarray(array))


def _write_nifti(array: np.ndarray, reference: Image, path: Path, force: bool) -> None:
    from regkit.io.geometry import nifti_image
    from regkit.io.itk import mark_ras_ddf

    # NIfTI-2: ITK (so ANTs, SimpleITK, Slicer) refuses to open it, where it silently misreads an
    # X×Y×Z×3 NIfTI-1 field (as a zero or LPS displacement); nibabel, MONAI, FSL read it
    nii = nifti_image(array.astype(np.float32), reference.affine.numpy(), nifti2=True)
    mark_ras_ddf(nii.header)  # read back as RAS by regkit (an unmarked X×Y×Z×3 field is taken as ITK's LPS)
    with atomic_path(path, force) as tmp:
        from regkit.io.compression import save_nifti

        save_nifti(nii, tmp)


def _write_itk_composite(transform: Transform, reference: Image, path: Path, force: bool) -> None:
    import SimpleITK as sitk

    from regkit.io.itk import affine_to_sitk, displacement_to_sitk_transform
    from regkit.transforms import DisplacementField

    affine, w = split_affine_and_warp(transform, reference)
    # ITK's composite applies the LAST added transform first to points: the warp acts first
    composite = sitk.CompositeTransform(3)
    composite.AddTransform(affine_to_sitk(affine))
    composite.AddTransform(displacement_to_sitk_transform(DisplacementField(w, reference.affine)))
    with atomic_path(path, force) as tmp:
        sitk.WriteTransform(composite, str(tmp))


#: affine-only formats written by nitransforms (the library regkit also reads them with)
NITRANSFORMS_FORMATS = ("fsl", "lta", "afni")


def _nibabel_grid(image: Image):
    """A nibabel image with ``image``'s grid (uint8 zeros: nitransforms reads only the geometry)."""
    import nibabel as nib

    return nib.Nifti1Image(np.zeros(tuple(image.shape), dtype=np.uint8), image.affine.numpy())


def _write_nitransforms(transform: Transform, reference: Image, moving: Optional[Image], fmt: str, path: Path,
                        force: bool) -> None:
    """An affine as FSL FLIRT ``.mat``, FreeSurfer ``.lta`` or AFNI ``.aff12.1D`` (nitransforms)."""
    import nitransforms.linear as ntl

    from regkit.errors import InputError
    from regkit.io.transform_files import as_single_affine

    affine = as_single_affine(transform)
    if affine is None:
        raise InputError(f"--format {fmt} holds one affine and this transform is not affine; use ants, itk or nifti-ddf")
    if moving is None:
        raise InputError(f"--format {fmt} needs --moving MOVING: the file is defined by both images' grids")
    with torch.no_grad():
        matrix = affine.homogeneous().detach().double().cpu().numpy()
    xfm = ntl.Affine(matrix.reshape(4, 4), reference=_nibabel_grid(reference))
    with atomic_path(path, force) as tmp:
        xfm.to_filename(str(tmp), fmt=fmt, moving=_nibabel_grid(moving))


def ants_command(paths: List[Path], fixed: str = "fixed.nii.gz", moving: str = "moving.nii.gz") -> str:
    """The ``antsApplyTransforms`` line that applies an ``ants`` export."""
    return (f"antsApplyTransforms -d 3 -r {fixed} -i {moving} -o warped.nii.gz "
            f"-t {paths[1]} -t {paths[0]}")
