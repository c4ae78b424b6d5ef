"""Transform files: regkit's own ``*.regkit.safetensors`` plus ITK/ANTs files, by suffix.

``read_transform(path)`` / ``write_transform(transform, path, reference=None, force=False)``:

* ``*.regkit.safetensors`` — regkit's format (docs/transform-format.md): a chain of
  :class:`AffineTransform` / :class:`DisplacementField` / :class:`VelocityField`; tensors in
  safetensors, the chain description, grid affines and format version in its JSON metadata.
  Round-trips exactly (dtype and values); loading never unpickles.
* ``.mat`` / ``.tfm`` / ``.txt`` / ``.h5`` — ITK/ANTs transforms (:mod:`regkit.io.itk`); an ITK
  composite ``.h5`` of affines and fields reads as a chain. Only a purely affine transform (or
  chain of affines) can be written.
* ``.nii`` / ``.nii.gz`` / ``.mha`` / ``.nrrd`` — ITK/ANTs displacement field (LPS mm vectors).
  Any transform can be written as one, on the grid of ``reference`` (an :class:`Image` or an
  ``(affine, shape)`` pair); a lone displacement or velocity field defaults to its own grid.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch

from regkit.errors import InputError
from regkit.grid import Grid
from regkit.image import Image
from regkit.io import itk, validate
from regkit.io.images import check_input_file
from regkit.transforms import AffineTransform, Compose, DisplacementField, Transform, VelocityField

PathLike = Union[str, Path]
Reference = Union[Image, Grid, Tuple[object, Sequence[int]], None]

NATIVE_SUFFIX = ".regkit.safetensors"
FORMAT_NAME = "regkit-transform"
FORMAT_VERSION = 1


# --------------------------------------------------------------------------- native format
def _chain(transform: Transform) -> List[Transform]:
    return list(transform.transforms) if isinstance(transform, Compose) else [transform]


def _tensor(t: torch.Tensor) -> torch.Tensor:
    return t.detach().cpu().contiguous()


def write_native(transform: Transform, path: PathLike, force: bool = False) -> Path:
    """Write ``transform`` (one transform or a :class:`Compose` chain) as ``*.regkit.safetensors``."""
    from regkit.io.safetensors_files import write_safetensors

    tensors: Dict[str, torch.Tensor] = {}
    steps: List[dict] = []
    for i, t in enumerate(_chain(transform)):
        key = f"{i}"
        if isinstance(t, AffineTransform):
            tensors[f"{key}.matrix"] = _tensor(t.matrix)
            tensors[f"{key}.translation"] = _tensor(t.translation)
            tensors[f"{key}.center"] = _tensor(t.center)
            steps.append({"type": "affine"})
        elif isinstance(t, DisplacementField):
            tensors[f"{key}.displacement"] = _tensor(t.displacement)
            steps.append({"type": "displacement", "grid_affine": t.affine.tolist()})
        elif isinstance(t, VelocityField):
            tensors[f"{key}.velocity"] = _tensor(t.velocity)
            steps.append({"type": "velocity", "grid_affine": t.affine.tolist(), "steps": t.steps})
        else:
            raise InputError(f"cannot save a {type(t).__name__} in a regkit transform file "
                             "(supported: AffineTransform, DisplacementField, VelocityField, Compose of them)", path)
    metadata = {
        "format": FORMAT_NAME,
        "version": str(FORMAT_VERSION),
        "direction": "fixed_to_moving",
        "world": "RAS_mm",
        "chain": json.dumps(steps),
    }
    return write_safetensors(path, tensors, metadata, force)


def read_native(path: PathLike) -> Transform:
    """Read a ``*.regkit.safetensors`` file: one transform, or a :class:`Compose` for a chain."""
    from safetensors import safe_open

    p = check_input_file(path)
    try:
        with safe_open(str(p), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:
        from regkit.io.safetensors_files import truncation_problem

        problem = truncation_problem(p)
        raise InputError(problem or f"cannot be read as a regkit transform file ({itk._first_line(e)})", p) from e
    if metadata.get("format") != FORMAT_NAME:
        raise InputError("is a safetensors file but not a regkit transform (metadata 'format' missing)", p)
    version = validate.integer(metadata.get("version", "0"), "transform format version", p, 0, 2**31)
    if version > FORMAT_VERSION:
        raise InputError(f"was written by a newer regkit (transform format v{version}; this one reads v{FORMAT_VERSION}); upgrade regkit", p)
    if "chain" not in metadata:
        raise InputError("has no transform chain in its metadata", p)
    steps = validate.parse_json(metadata["chain"], p, "its transform chain")
    if not isinstance(steps, list) or not steps:
        raise InputError("holds an empty transform chain" if steps == [] else "has a malformed transform chain (not a list)", p)
    if len(steps) > MAX_CHAIN:
        raise InputError(f"holds a chain of {len(steps)} transforms; at most {MAX_CHAIN} are read", p)
    transforms = [_build_step(str(i), step, tensors, p) for i, step in enumerate(steps)]
    return transforms[0] if len(transforms) == 1 else Compose(*transforms)


#: longest chain read from a native file (regkit writes at most a few)
MAX_CHAIN = 64


def _build_step(key: str, step: object, tensors: Dict[str, torch.Tensor], p: Path) -> Transform:
    """One transform of a native file's chain, every value checked (:mod:`regkit.io.validate`)."""
    from regkit.transforms.velocity import MAX_SQUARING_STEPS

    where = f"transform {int(key) + 1} of the chain"
    if not isinstance(step, dict) or not isinstance(step.get("type"), str):
        raise InputError(f"has a malformed transform chain ({where} has no 'type')", p)

    def tensor(name: str, *shapes):
        if f"{key}.{name}" not in tensors:
            raise InputError(f"has no tensor '{key}.{name}' for {where}", p)
        return validate.finite_tensor(tensors[f"{key}.{name}"], f"{where}'s {name}", p, shapes)

    kind = step["type"]
    if kind == "affine":
        matrix = tensor("matrix", (3, 3), (1, 3, 3))
        translation = tensor("translation", tuple(matrix.shape[:-2]) + (3,))
        center = tensor("center", (3,))
        det = float(torch.linalg.det(matrix.double()).abs().min())
        if not det > 1e-12:
            raise InputError(f"holds a singular affine ({where}: determinant 0), which cannot be applied or inverted", p)
        return AffineTransform(matrix, translation, center, requires_grad=False)
    if kind not in ("displacement", "velocity"):
        raise InputError(f"has an unknown transform type {kind!r} ({where})", p)
    affine = validate.grid_affine(step.get("grid_affine"), f"{where}'s grid_affine", p)
    field = tensor(kind, (3, None, None, None), (1, 3, None, None, None))
    if kind == "displacement":
        return DisplacementField(field, affine)
    steps = validate.integer(step.get("steps"), f"{where}'s steps", p, 0, MAX_SQUARING_STEPS)
    return VelocityField(field, affine, steps=steps)


# --------------------------------------------------------------------------- dispatch
#: suffixes of other tools' transform files that only their content tells apart (regkit/io/foreign.py)
FOREIGN_SUFFIXES = (".lta", ".1d", ".xfm")


def transform_kind(path: PathLike) -> str:
    """``"native"``, ``"itk_affine"``, ``"itk_field"`` or ``"foreign"`` (FreeSurfer, AFNI, FSL
    suffixes regkit reads but does not write) from a file name (InputError otherwise)."""
    from regkit.io.foreign import READABLE

    name = Path(path).name.lower()
    if name.endswith(NATIVE_SUFFIX) or name.endswith(".safetensors"):
        return "native"
    if name.endswith(itk.AFFINE_SUFFIXES):
        return "itk_affine"
    if name.endswith(itk.FIELD_SUFFIXES):
        return "itk_field"
    if name.endswith(FOREIGN_SUFFIXES):
        return "foreign"
    raise InputError(f"is not a transform file type regkit knows; it reads {READABLE}", path)


def read_transform(path: PathLike, reference: Optional[PathLike] = None, moving: Optional[PathLike] = None) -> Transform:
    """Read any supported transform file as a :class:`Transform` (fixed → moving, RAS mm).

    Files of other tools are recognised by their content (:mod:`regkit.io.foreign`): an FSL
    FLIRT matrix needs ``reference`` (FLIRT's ``-ref``, regkit's fixed image) and ``moving``
    (``-in``); a B-spline is evaluated on ``reference``'s grid when given.
    """
    from regkit.io import foreign

    kind = transform_kind(path)
    if kind == "native":
        return read_native(path)
    if kind in ("itk_affine", "foreign"):
        p = check_input_file(path)
        found = foreign.sniff(p)
        grid = (lambda: _image_grid(reference)) if reference is not None else None  # loaded only for a B-spline
        if found is not None:
            return foreign.read_foreign(p, found, reference, moving, grid)
        if kind == "foreign":
            raise InputError(f"is not {' nor '.join(foreign.FORMAT_NAMES[k] for k in ('lta', 'afni', 'fsl'))} "
                             f"that its suffix suggests; regkit reads {foreign.READABLE}", p)
        try:
            return itk.read_itk_transform(p, grid)
        except InputError as e:
            message = str(e)[len(f"{p}: "):] if str(e).startswith(f"{p}: ") else str(e)
            if not message.startswith("cannot be read as an ITK transform"):
                raise
            raise InputError(f"{message}: it looks like {foreign.describe(p)}; regkit reads {foreign.READABLE}", p) from e
    return itk.read_itk_displacement(path)


def _image_grid(path: PathLike):
    """``(affine, shape)`` of an image file, from its header."""
    from regkit.io.images import load_image

    image = load_image(path)
    return image.affine, image.shape


def read_transform_chain(paths: Sequence[PathLike], reference: Optional[PathLike] = None,
                         moving: Optional[PathLike] = None) -> Transform:
    """Several transform files as one fixed → moving transform, in antsApplyTransforms' order:
    the FIRST file acts first on fixed points (``warp.nii.gz affine.mat``); one file: itself.
    ``reference``/``moving``: the images, for files that need them (:func:`read_transform`)."""
    from regkit.transforms import Compose

    transforms = [read_transform(p, reference, moving) for p in paths]
    if not transforms:
        raise ValueError("no transform file given")
    return transforms[0] if len(transforms) == 1 else Compose(*transforms)


def _reference_grid(reference: Reference, transform: Transform, path: PathLike):
    if isinstance(reference, Image):
        return reference.grid
    if reference is not None:
        return Grid.of(*reference)
    if isinstance(transform, (DisplacementField, VelocityField)):
        return transform.grid
    raise InputError("writing this transform as a displacement field needs a reference grid (the fixed image)", path)


def as_single_affine(transform: Transform) -> Optional[AffineTransform]:
    """One AffineTransform equal to a purely affine transform/chain, else None."""
    chain = _chain(transform)
    if not all(isinstance(t, AffineTransform) for t in chain):
        return None
    if len(chain) == 1:
        return chain[0]
    h = torch.eye(4, dtype=torch.float64)
    for t in chain:  # the first acts first: H = H_n … H_1
        ht = t.homogeneous().detach().double()
        if ht.dim() == 3:
            if ht.shape[0] != 1:
                return None
            ht = ht[0]
        h = ht @ h
    return AffineTransform.from_homogeneous(h, center=chain[0].center.detach().double())


_as_affine = as_single_affine  # the name regkit.export imports


def write_transform(transform: Transform, path: PathLike, reference: Reference = None, force: bool = False) -> Path:
    """Write ``transform`` in the format its suffix names, atomically (never overwriting without
    ``force``).

    Args:
        transform: fixed → moving (RAS mm); a :class:`Compose` chain is allowed.
        path: ``*.regkit.safetensors`` (any chain, exact), ``.mat``/``.tfm``/``.txt`` (affine
            only) or ``.nii.gz``/``.nii``/``.mha``/``.nrrd`` (a displacement field).
        reference: grid of a written displacement field — an :class:`Image`, a
            :class:`~regkit.grid.Grid` or ``(affine, shape)``; not needed for a lone displacement or velocity field (its
            own grid).
    """
    kind = transform_kind(path)
    if kind == "foreign":
        raise InputError("has a suffix of a format regkit reads but does not write; write .regkit.safetensors, "
                         "an ITK affine (.mat, .tfm) or a displacement field (.nii.gz)", path)
    if kind == "native":
        return write_native(transform, path, force)
    if kind == "itk_affine":
        affine = as_single_affine(transform)
        if affine is None:
            raise InputError("this suffix holds one affine transform and this one is not affine; use .regkit.safetensors, "
                             "a displacement field (.nii.gz with a reference) or `regkit export --format itk` (.h5 chains)", path)
        return itk.write_itk_affine(affine, path, force)
    affine, shape = _reference_grid(reference, transform, path)
    if isinstance(transform, DisplacementField) and reference is None:
        displacement = transform.displacement
    else:
        with torch.no_grad():
            displacement = transform.displacement_on(affine, shape, dtype=torch.float32)
    return itk.write_itk_displacement(displacement, affine, path, force)
