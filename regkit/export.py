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
    ``Pddf.nii.gz``: a plain dense displacement field ``X×Y×Z×3`` float32 on the fixed grid, vectors
    in **RAS mm** (NOT the LPS of ITK files), ``T(x) = x + u(x)`` for the fixed-grid voxel centre ``x``;
    its header's ``intent_name`` is ``RAS ddf (regkit)``, so regkit reads it back as RAS.
``learn2reg``
    ``Pdisp.npz``: the Learn2Reg displacement, array ``arr_0`` of shape ``(3, X, Y, Z)`` (channels
    first) float32, in **voxel units of the fixed grid**: for fixed voxel ``i`` (nibabel index order)
    the moving location is ``i + d[:, i]`` in fixed-grid voxel indices — Learn2Reg's
    ``map_coordinates(moving, identity + d)`` convention, which assumes the moving image was put on
    the fixed grid. Full resolution (Learn2Reg 2021 also accepted half resolution).
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from regkit import space
from regkit.image import Image
from regkit.io.atomic import atomic_group, atomic_path, check_writable
from regkit.transforms import AffineTransform, Compose, Transform

PathLike = Union[str, Path]
FORMATS = ("ants", "itk", "nifti-ddf", "learn2reg")
SUFFIXES: Dict[str, Tuple[str, ...]] = {
    "ants": ("0GenericAffine.mat", "1Warp.nii.gz"),
    "itk": ("Composite.h5",),
    "nifti-ddf": ("ddf.nii.gz",),
    "learn2reg": ("disp.npz",),
}


def output_paths(prefix: PathLike, fmt: str) -> List[Path]:
    """The files :func:`export_transform` writes for ``fmt`` with ``prefix`` (prefix + suffix)."""
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


def voxel_displacement(transform: Transform, reference: Image) -> Tensor:
    """Learn2Reg's field: ``A⁻¹ T(A i) - i`` in voxel units of ``reference``, ``(3, X, Y, Z)``."""
    lin_inv = torch.linalg.inv(space.as_affine(reference.affine)[:3, :3])
    u = dense_displacement(transform, reference)
    return torch.einsum("ab,bxyz->axyz", lin_inv, u)


def export_transform(transform: Transform, reference: Image, fmt: str, prefix: PathLike, force: bool = False) -> List[Path]:
    """Write ``transform`` (fixed → moving) for another tool; returns the files written.

    See the module docstring for each format's files and conventions. Nothing is written when
    any output exists and ``force`` is false.
    """
    paths = output_paths(prefix, fmt)
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
    else:
        d = voxel_displacement(transform, reference).numpy().astype(np.float32)
        with atomic_path(paths[0], force) as tmp:
            with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to the temp name
                np.savez_compressed(f, d)
    return paths


def _write_nifti(array: np.ndarray, reference: Image, path: Path, force: bool) -> None:
    import nibabel as nib

    from regkit.io.itk import mark_ras_ddf

    a = reference.affine.numpy()
    nii = nib.Nifti1Image(array.astype(np.float32), a)
    nii.set_sform(a, code=1)
    nii.set_qform(a, code=1)
    mark_ras_ddf(nii.header)  # read back as RAS by regkit (an unmarked X×Y×Z×3 field is taken as ITK's LPS)
    with atomic_path(path, force) as tmp:
        nib.save(nii, str(tmp))


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


def ants_command(paths: List[Path], fixed: str = "fixed.nii.gz", moving: str = "moving.nii.gz") -> str:
    """The ``antsApplyTransforms`` line that applies an ``ants`` export."""
    return (f"antsApplyTransforms -d 3 -r {fixed} -i {moving} -o warped.nii.gz "
            f"-t {paths[1]} -t {paths[0]}")
