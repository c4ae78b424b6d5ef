"""Transform files of other tools, recognised by their content and read through the library
that knows each format.

* FSL FLIRT ``.mat`` (4×4 text; needs FLIRT's ``-ref`` and ``-in`` images), FreeSurfer ``.lta``
  and AFNI ``.aff12.1D`` affines — through **nitransforms**, which returns the RAS matrix mapping
  reference (fixed) points to moving points: regkit's direction.
* elastix ``TransformParameters.*.txt`` — ``EulerTransform``, ``SimilarityTransform``,
  ``AffineTransform``, ``TranslationTransform`` and ``BSplineTransform``, with their
  ``InitialTransformParametersFileName`` chain — parsed here (no library reads elastix's text)
  into the SimpleITK transforms elastix itself is built on (elastix maps fixed → moving points
  in ITK's LPS, as ITK does), then converted like any ITK transform (:mod:`regkit.io.itk`).

Affines are exact. A B-spline (ITK's or elastix's) becomes a :class:`DisplacementField` that
SimpleITK evaluates on the reference grid when one is given (exact at its voxel centres, where
resampling evaluates it), else on the B-spline's own domain at a quarter of its control-point
spacing.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List, Optional, Union

import numpy as np
import torch

from regkit.errors import InputError
from regkit.transforms import AffineTransform, Compose, Transform

PathLike = Union[str, Path]

#: what each recognised format is called in messages
FORMAT_NAMES: Dict[str, str] = {
    "fsl": "an FSL FLIRT matrix",
    "lta": "a FreeSurfer LTA transform",
    "afni": "an AFNI affine (.aff12.1D)",
    "elastix": "an elastix transform parameter file",
}
#: what regkit reads besides its own files, for refusals to point at
READABLE = (".regkit.safetensors, ITK/ANTs .mat/.tfm/.txt/.h5 and .nii.gz fields, FSL FLIRT .mat, "
            "FreeSurfer .lta, AFNI .aff12.1D and elastix TransformParameters files")
SNIFF_BYTES = 1 << 20  # transform text files are small; a bigger file is not one of these
MAX_INITIAL_CHAIN = 8  # elastix InitialTransformParametersFileName links followed


def _text(path: Path) -> Optional[str]:
    """The file as text when it is a small text file, else None (binary, e.g. ANTs' MATLAB .mat)."""
    try:
        with open(path, "rb") as f:
            head = f.read(SNIFF_BYTES + 1)
    except OSError:
        return None
    if len(head) > SNIFF_BYTES or b"\0" in head:
        return None
    try:
        return head.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _numbers(text: str) -> Optional[List[List[float]]]:
    """Rows of numbers of a plain numeric text (comment lines ``#`` skipped), else None."""
    rows = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            rows.append([float(v) for v in line.split()])
        except ValueError:
            return None
    return rows or None


def sniff(path: PathLike) -> Optional[str]:
    """``"fsl"``, ``"lta"``, ``"afni"`` or ``"elastix"`` when the file's content is one of those
    formats, else None (ITK's own text and binary files included)."""
    text = _text(Path(path))
    if text is None or text.lstrip().startswith("#Insight Transform File"):
        return None
    if re.search(r"^\s*\(Transform\s+\"", text, re.M) and "(TransformParameters" in text:
        return "elastix"
    if re.search(r"^\s*type\s*=", text, re.M) and re.search(r"^\s*nxforms\s*=", text, re.M):
        return "lta"
    rows = _numbers(text)
    if rows is None:
        return None
    if [len(r) for r in rows] == [4, 4, 4, 4] and np.allclose(rows[3], [0, 0, 0, 1]):
        return "fsl"
    if [len(r) for r in rows] == [12] or [len(r) for r in rows] == [4, 4, 4]:
        return "afni"
    return None


def describe(path: PathLike) -> str:
    """What a transform file regkit cannot read looks like, for the one-line refusal."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            head = f.read(128)
    except OSError:
        return "unreadable"
    if head.startswith(b"MATLAB 5.0") or head.startswith(b"MATLAB 7"):
        return "a MATLAB v5/v7 file (e.g. SPM's), not the v4 .mat ANTs writes"
    if head.startswith(b"\x89HDF"):
        return "an HDF5 file that is not an ITK transform"
    if head.startswith(b"#Insight Transform File"):
        return "an ITK transform file of a kind or version SimpleITK cannot read"
    text = _text(p)
    if text is None:
        return "binary data of no transform format regkit knows"
    return f"text of no transform format regkit knows (first line: {text.strip().splitlines()[0][:60]!r})" if text.strip() else "blank text"


def read_foreign(path: PathLike, kind: str, reference: Optional[PathLike] = None,
                 moving: Optional[PathLike] = None, grid=None) -> Transform:
    """Read a file :func:`sniff` recognised as ``kind`` (fixed → moving, RAS mm).

    Args:
        reference, moving: image files — FSL needs both (FLIRT's ``-ref`` = regkit's fixed,
            ``-in`` = the moving image); AFNI uses them for oblique grids.
        grid: ``(affine, shape)`` a B-spline is sampled on (default its own domain).
    """
    p = Path(path)
    if kind == "elastix":
        return read_elastix(p, grid)
    if kind == "fsl" and (reference is None or moving is None):
        raise InputError(f"looks like {FORMAT_NAMES['fsl']}, which is defined by the two images FLIRT was given; "
                         "apply it with `regkit apply FLIRT.mat MOVING -r FIXED` (FLIRT's -in and -ref)", p)
    return _read_nitransforms(p, kind, reference, moving)


def _read_nitransforms(p: Path, kind: str, reference, moving) -> AffineTransform:
    try:
        import nitransforms.linear as ntl
        from nitransforms.io.base import TransformFileError, TransformIOError
    except ImportError as e:  # a declared dependency; only a broken install gets here
        raise InputError(f"looks like {FORMAT_NAMES[kind]}; reading it needs nitransforms (pip install nitransforms)", p) from e
    from regkit.io.images import check_input_file

    for image in (reference, moving):
        if image is not None:
            check_input_file(image)  # a missing image named as itself, not as the transform
    try:
        xfm = ntl.load(str(p), fmt=kind, reference=str(reference) if reference is not None else None,
                       moving=str(moving) if moving is not None else None)
    except (TransformFileError, TransformIOError, ValueError, IndexError, KeyError, OSError) as e:
        raise InputError(f"looks like {FORMAT_NAMES[kind]} but cannot be read as one ({_reason(e)})", p) from e
    except Exception as e:  # nibabel's errors for an image nitransforms could not open
        raise InputError(f"looks like {FORMAT_NAMES[kind]}; reading it with its images failed ({type(e).__name__}: {_reason(e)})", p) from e
    matrix = np.asarray(xfm.matrix, dtype=np.float64)
    if matrix.shape != (4, 4):
        raise InputError(f"holds {matrix.shape[0] if matrix.ndim == 3 else '?'} transforms ({FORMAT_NAMES[kind]} series); "
                         "regkit reads one", p)
    return _affine(matrix, p)


def _affine(matrix: np.ndarray, p: Path) -> AffineTransform:
    if not np.isfinite(matrix).all() or not abs(np.linalg.det(matrix[:3, :3])) > 1e-9:
        raise InputError("holds a singular or non-finite affine, which cannot be applied or inverted", p)
    return AffineTransform.from_homogeneous(torch.as_tensor(matrix))


def _reason(e: Exception) -> str:
    s = str(e).strip()
    return (s.splitlines()[0] if s else type(e).__name__)[:200]


# --------------------------------------------------------------------------- elastix
def _elastix_parameters(p: Path) -> Dict[str, List[str]]:
    """``(Key value value ...)`` lines of an elastix parameter file; quoted values unquoted."""
    text = _text(p)
    if text is None:
        raise InputError("cannot be read as an elastix parameter file (not a small text file)", p)
    out: Dict[str, List[str]] = {}
    for line in text.splitlines():
        line = line.split("//", 1)[0].strip()
        m = re.match(r"^\((\w+)\s*(.*)\)$", line)
        if m:
            out[m.group(1)] = [v.strip('"') for v in re.findall(r'"[^"]*"|\S+', m.group(2))]
    return out


def _floats(params: Dict[str, List[str]], key: str, p: Path, n: Optional[int] = None) -> List[float]:
    if key not in params:
        raise InputError(f"is an elastix parameter file without ({key} ...)", p)
    try:
        values = [float(v) for v in params[key]]
    except ValueError as e:
        raise InputError(f"has a non-numeric value in ({key} ...)", p) from e
    if (n is not None and len(values) != n) or not np.isfinite(values).all():
        raise InputError(f"has ({key} ...) with {len(values)} values; expected {n} finite numbers", p)
    return values


def _elastix_sitk(params: Dict[str, List[str]], p: Path):
    """The SimpleITK transform (LPS, fixed → moving) of one elastix parameter file."""
    import SimpleITK as sitk

    kind = (params.get("Transform") or [""])[0]
    dim = int(_floats(params, "FixedImageDimension", p, 1)[0]) if "FixedImageDimension" in params else 3
    if dim != 3:
        raise InputError(f"holds a {dim}D elastix transform; regkit needs 3D", p)
    if kind == "RecursiveBSplineTransform":  # elastix 5's faster B-spline: the same parameters
        kind = "BSplineTransform"
    center = _floats(params, "CenterOfRotationPoint", p, 3) if kind not in ("TranslationTransform", "BSplineTransform") else None
    if kind == "EulerTransform":
        tx = sitk.Euler3DTransform()
        tx.SetCenter(center)
        tx.SetComputeZYX((params.get("ComputeZYX") or ["false"])[0].lower() == "true")
        tx.SetParameters(_floats(params, "TransformParameters", p, 6))
    elif kind == "SimilarityTransform":
        tx = sitk.Similarity3DTransform()
        tx.SetCenter(center)
        tx.SetParameters(_floats(params, "TransformParameters", p, 7))
    elif kind == "AffineTransform":
        tx = sitk.AffineTransform(3)
        tx.SetCenter(center)
        tx.SetParameters(_floats(params, "TransformParameters", p, 12))
    elif kind == "TranslationTransform":
        tx = sitk.TranslationTransform(3, _floats(params, "TransformParameters", p, 3))
    elif kind == "BSplineTransform":
        order = int(_floats(params, "BSplineTransformSplineOrder", p, 1)[0]) if "BSplineTransformSplineOrder" in params else 3
        if order != 3:
            raise InputError(f"holds an elastix B-spline of order {order}; regkit reads cubic (order 3) ones", p)
        size = _floats(params, "GridSize", p, 3)
        if "GridIndex" in params and any(_floats(params, "GridIndex", p, 3)):
            raise InputError("holds an elastix B-spline whose GridIndex is not 0 0 0; regkit reads whole control grids", p)
        fixed = size + _floats(params, "GridOrigin", p, 3) + _floats(params, "GridSpacing", p, 3) + _floats(params, "GridDirection", p, 9)
        coefficients = _floats(params, "TransformParameters", p, 3 * int(np.prod(size)))
        tx = sitk.BSplineTransform(3, 3)
        tx.SetFixedParameters(fixed)
        tx.SetParameters(coefficients)
    else:
        raise InputError(f"holds an elastix {kind or 'unnamed transform'}; regkit reads EulerTransform, SimilarityTransform, "
                         "AffineTransform, TranslationTransform and (Recursive)BSplineTransform", p)
    combine = (params.get("HowToCombineTransforms") or ["Compose"])[0]
    if combine != "Compose":
        raise InputError(f"combines its transforms by {combine!r}; regkit reads elastix's default, Compose", p)
    return tx


def read_elastix(path: PathLike, grid=None) -> Transform:
    """An elastix ``TransformParameters`` file and its ``InitialTransformParametersFileName``
    chain (the initial transform acts first on fixed points) as one regkit transform."""
    from regkit.io import itk

    parts = []
    p = Path(path)
    for _ in range(MAX_INITIAL_CHAIN + 1):
        params = _elastix_parameters(p)
        parts.append((p, _elastix_sitk(params, p)))
        initial = (params.get("InitialTransformParametersFileName") or ["NoInitialTransform"])[0]
        if initial == "NoInitialTransform":
            break
        nxt = Path(initial)
        if not nxt.is_absolute() and not nxt.exists():
            nxt = p.parent / nxt.name  # elastix writes absolute paths; a moved folder keeps the names
        if not nxt.is_file():
            raise InputError(f"names an initial transform {initial!r} that does not exist", p)
        p = nxt
    else:
        raise InputError(f"chains more than {MAX_INITIAL_CHAIN} initial transforms", Path(path))
    out: List[Transform] = []
    for source, tx in reversed(parts):  # the innermost initial transform acts first
        out.append(itk.sitk_transform_to_regkit(tx, source, grid))
    return out[0] if len(out) == 1 else Compose(*out)
