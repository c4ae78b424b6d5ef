"""`regkit apply`: resample an image (or map points) through one or more transform files."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from regkit.cli.common import EXIT_CODES_HELP, handle_errors

HELP = f"""Apply transforms to an image (onto the reference grid) or to points.

Usage: regkit apply TRANSFORM... MOVING -r FIXED -o OUT, or regkit apply TRANSFORM... --points CSV --points-out CSV.

TRANSFORM files map FIXED points to MOVING points: regkit's *.regkit.safetensors, ITK/ANTs affines (.mat, .tfm, .txt) and ITK/ANTs displacement fields (*Warp.nii.gz, .nii, .mha; as written by ANTs, antspyx or SimpleITK). Several are given in antsApplyTransforms' order: the FIRST listed acts first on fixed-space points, so ANTs' output goes as `reg1Warp.nii.gz reg0GenericAffine.mat`. As in antsApplyTransforms, `[FILE,1]` inverts that one transform: ANTs' inverse is `"[reg0GenericAffine.mat,1]" reg1InverseWarp.nii.gz` (regkit register's: `"[DIR/0GenericAffine.mat,1]" DIR/1InverseWarp.nii.gz`, or DIR/inverse_field.nii.gz alone). The chain is collapsed into one sampling of MOVING.

Label maps are detected from the file: whole numbers (an integer type, or floats such as a float32 label map that are all whole), at most 5000 distinct values, and piecewise constant (at least half of the neighbouring voxel pairs outside the background hold equal values; an MRI or CT changes between most). They are resampled with nearest neighbour and keep their dtype, unless --interp is given; the choice is printed. --interp genericlabel (ANTs' GenericLabel) interpolates each label's indicator linearly and keeps the largest: smoother label edges than nearest neighbour.

--inverse inverts the whole chain (exact for affines and velocity fields; displacement fields by fixed-point iteration, the residual is printed).

With --points CSV (columns x,y,z in world mm, other columns kept; RAS unless --lps, as ANTs/ITK CSVs use) the points are mapped from fixed to moving space (with --inverse: moving to fixed) and written to --points-out; then no MOVING/--reference is needed. With --lps this equals antsApplyTransformsToPoints given the same transform list.

Examples:

  regkit apply out/transform.regkit.safetensors moving.nii.gz -r fixed.nii.gz -o warped.nii.gz

  regkit apply reg1Warp.nii.gz reg0GenericAffine.mat labels.nii.gz -r fixed.nii.gz -o warped_labels.nii.gz --interp nearest

  regkit apply reg0GenericAffine.mat fixed.nii.gz -r moving.nii.gz -o fixed_in_moving.nii.gz --inverse

  regkit apply "[reg0GenericAffine.mat,1]" reg1InverseWarp.nii.gz fixed_labels.nii.gz -r moving.nii.gz -o labels_on_moving.nii.gz -n GenericLabel

  regkit apply out/transform.regkit.safetensors ct.nii.gz -r fixed_ct.nii.gz -o warped_ct.nii.gz --default-value -1000

  regkit apply out/transform.regkit.safetensors --points fixed_landmarks.csv --points-out in_moving.csv

  regkit apply reg1Warp.nii.gz reg0GenericAffine.mat --points ants_points.csv --lps --points-out mapped.csv

{EXIT_CODES_HELP}"""

MAX_LABELS = 5000  # more distinct values than this: an image (CT, MRI), whatever else holds
MIN_SAME_NEIGHBOURS = 0.5  # label maps are piecewise constant; MRI/CT change between most neighbours


def add_to(app: typer.Typer) -> None:
    @app.command("apply", help=HELP, no_args_is_help=True)
    @handle_errors
    def apply(
        inputs: List[Path] = typer.Argument(..., metavar="FILES",
                                            help="Transform files (first acts first on fixed points), then the moving image (not with --points)."),
        reference: Optional[Path] = typer.Option(None, "--reference", "-r", help="Fixed image: the output grid."),
        output: Optional[Path] = typer.Option(None, "--output", "-o", help="Output image (.nii.gz, .nii, .mha, .nrrd)."),
        interp: Optional[str] = typer.Option(None, "--interp", "-n", help="linear | nearest | genericlabel (ANTs' names too: Linear, NearestNeighbor, GenericLabel, MultiLabel; default: nearest for label maps, else linear)."),
        inverse: bool = typer.Option(False, "--inverse", help="Apply the inverse of the whole chain."),
        points: Optional[Path] = typer.Option(None, "--points", help="CSV of points (x,y,z world mm) to map instead of an image."),
        points_out: Optional[Path] = typer.Option(None, "--points-out", help="Output CSV for --points."),
        lps: bool = typer.Option(False, "--lps", help="--points/--points-out hold LPS coordinates (ANTs/ITK CSVs), not RAS."),
        default_value: float = typer.Option(0.0, "--default-value", "-f", help="Value where MOVING does not reach (as antsApplyTransforms -f; default 0; CT: e.g. -1000). Label maps (detected, or --interp nearest on a file with few values) get 0."),
        force: bool = typer.Option(False, "--force", help="Overwrite existing outputs."),
    ) -> None:
        from regkit.errors import InputError

        if default_value != default_value or abs(default_value) == float("inf"):  # NaN voxels regkit itself refuses to read
            raise InputError(f"--default-value must be a finite number, got {default_value}")
        interp = interpolator(interp)
        if points is not None:
            if points_out is None:
                raise InputError("--points needs --points-out (the CSV to write)")
            if reference is not None or output is not None:
                raise InputError("--points maps points only; drop MOVING, --reference and -o (or run twice)")
            _apply_to_points(inputs, points, points_out, inverse, lps, force)
            return
        if len(inputs) < 2:
            raise InputError("give at least one TRANSFORM and the MOVING image (or --points CSV)")
        if reference is None or output is None:
            raise InputError("resampling an image needs --reference FIXED and -o OUTPUT")
        _apply_to_image(inputs[:-1], inputs[-1], reference, output, interp, inverse, force, default_value)


#: ``--interp`` values, ANTs' interpolator names included (antsApplyTransforms -n, antspyx
#: ``interpolator=``; compared case-insensitively) -> regkit's resampling mode
INTERPOLATORS = {"linear": "linear", "nearest": "nearest", "nearestneighbor": "nearest", "genericlabel": "label",
                 "multilabel": "label", "label": "label"}
NOT_AVAILABLE = ("bspline", "gaussian", "lanczoswindowedsinc", "cosinewindowedsinc", "welchwindowedsinc",
                 "hammingwindowedsinc", "blackmanwindowedsinc")


def interpolator(name: Optional[str]) -> Optional[str]:
    """regkit's mode (``linear``, ``nearest``, ``label``) for an ``--interp`` value, ANTs' names
    accepted (``NearestNeighbor``, ``GenericLabel[Linear]``...); InputError for anything else."""
    from regkit.errors import InputError

    if name is None:
        return None
    key = name.strip().lower().split("[")[0]
    if key in INTERPOLATORS:
        return INTERPOLATORS[key]
    if key in NOT_AVAILABLE:
        raise InputError(f"--interp {name}: not available in regkit; use Linear for images, GenericLabel or "
                         "NearestNeighbor for label maps")
    raise InputError(f"--interp must be linear, nearest or genericlabel (or ANTs' Linear, NearestNeighbor, "
                     f"GenericLabel, MultiLabel), got {name!r}")


def transform_argument(arg: Path):
    """``(path, invert)`` from a TRANSFORM argument: a file, or ANTs' ``[file,1]`` (inverted) and
    ``[file,0]`` (as is)."""
    import re

    from regkit.errors import InputError

    text = str(arg)
    if not text.startswith("["):
        return arg, False
    m = re.fullmatch(r"\[\s*(.+?)\s*,\s*([01]|true|false)\s*\]", text, flags=re.IGNORECASE)
    if m is None:
        raise InputError("expected a transform file or ANTs' [FILE,1] (inverted) / [FILE,0]", text)
    return Path(m.group(1)), m.group(2).lower() in ("1", "true")


def load_chain(paths: List[Path], inverse: bool, images=(None, None)):
    """The transforms of ``paths`` as one Compose (first acts first), inverted if asked
    (:func:`regkit.inverse.invert`; the fixed-point residual of displacement parts is printed).
    A path written ``[FILE,1]`` (antsApplyTransforms' per-transform flag) is inverted alone."""
    from regkit.inverse import invert
    from regkit.io.transform_files import read_transform
    from regkit.transforms import Compose

    parsed = [transform_argument(p) for p in paths]
    _warn_ants_inverse_list(parsed, inverse)
    residuals = []
    parts = []
    for path, flag in parsed:
        t = read_transform(path, *images)  # (FIXED, MOVING): FSL FLIRT matrices need them, B-splines use FIXED's grid
        if flag:
            result = invert(t)
            t = result.transform
            residuals.append(result.fixed_point_residual_mm)
        parts.append(t)
    chain = parts[0] if len(parts) == 1 else Compose(*parts)
    if inverse:
        result = invert(chain)
        chain = result.transform
        residuals.append(result.fixed_point_residual_mm)
    residuals = [r for r in residuals if r is not None]
    if residuals:
        typer.echo(f"inverted displacement field(s) by fixed-point iteration: residual max {max(residuals):.3g} mm", err=True)
    return chain


def _warn_ants_inverse_list(parsed, inverse: bool) -> None:
    """ANTs' inverse of its registration is ``[PREFIX0GenericAffine.mat,1] PREFIX1InverseWarp.nii.gz``:
    an InverseWarp beside an affine applied forward is that list with its flag forgotten, which
    runs and lands the labels in the wrong place, so say so."""
    if inverse or not any("inversewarp" in p.name.lower() for p, _ in parsed):
        return
    forward = [p for p, flag in parsed if not flag and p.name.lower().endswith((".mat", ".txt", ".tfm"))]
    for p in forward:
        typer.echo(f"regkit apply: warning: {p} is applied forward beside an InverseWarp; ANTs' inverse of its "
                   f"registration is \"[{p},1]\" then the InverseWarp (the affine inverted)", err=True)


def _apply_to_image(transform_paths: List[Path], moving_path: Path, reference_path: Path, output: Path,
                    interp: Optional[str], inverse: bool, force: bool, default_value: float = 0.0) -> None:
    import numpy as np
    import torch

    from regkit.errors import InputError
    from regkit.io.atomic import check_writable
    from regkit.io.images import check_image_output, load_image, save_image
    from regkit import resources
    from regkit.resample import resample

    check_image_output(output)
    check_writable(output, force)  # fail before any work
    chain = load_chain(transform_paths, inverse, images=(reference_path, moving_path))
    integer = integer_file(moving_path) if interp != "linear" else None
    label_map = integer is not None and is_label_map(*integer[1:])
    if interp is None and integer is not None:
        dtype, n, same = integer
        kind = "integer" if np.issubdtype(dtype, np.integer) else f"{dtype} file of whole numbers:"
        if not label_map:
            typer.echo(f"{moving_path}: {kind} image with {n} distinct values, {100 * same:.0f} % of neighbouring foreground voxels "
                       "equal -> linear, as intensities (pass --interp nearest for a label map)", err=True)
            integer = None
        else:
            typer.echo(f"{moving_path}: {kind} label map ({n} values, {100 * same:.0f} % of neighbouring foreground voxels equal) "
                       "-> nearest neighbour (pass --interp linear to override, GenericLabel for smoother edges)", err=True)
    # nearest (or per-label linear) on a label candidate keeps its voxel type; GenericLabel needs
    # whole numbers (load_image refuses others, naming the file)
    is_label = integer is not None or interp == "label"
    label_map = label_map or interp == "label"
    mode = interp or ("nearest" if is_label else "linear")
    if not label_map:  # an intensity image (e.g. int16 HU), also with --interp nearest: the value given
        fill = default_value
    else:  # a label map: background outside
        fill = 0.0
        if default_value != 0:
            typer.echo(f"{moving_path}: label map -> 0 (background) where it does not reach; --default-value applies to intensity images", err=True)
    moving = load_image(moving_path, is_label=is_label)
    reference = load_image(reference_path)
    resources.check_memory(resources.estimate_resample(reference.shape, moving.channels),
                           f"resampling onto the {'x'.join(map(str, reference.shape))} grid",
                           hint="use a coarser reference grid", path=reference_path)
    with torch.no_grad():
        warped = resample(moving, chain, reference, mode=mode, default_value=fill)
    if warped.data.is_floating_point() and not bool(torch.isfinite(warped.data).all()):  # overflowing transforms
        raise InputError("resampling through these transforms gives NaN/Inf voxels (the transforms' values overflow)",
                         transform_paths[0])
    save_image(warped, output, force=force, dtype=integer[0] if integer is not None and warped.is_label else None)
    typer.echo(f"wrote {output}")


def is_label_map(distinct_values: int, same_neighbours: float) -> bool:
    """Whether an integer image is a label map: few enough distinct values (:data:`MAX_LABELS`)
    and piecewise constant — at least :data:`MIN_SAME_NEIGHBOURS` of the face-neighbour pairs
    with a non-zero voxel hold equal values. A count of values alone misread both ways: a
    117-class uint8 segmentation (TotalSegmentator) as an image, an int16 MRI with 977 values
    as labels."""
    return distinct_values <= MAX_LABELS and same_neighbours >= MIN_SAME_NEIGHBOURS


def same_neighbour_fraction(values) -> float:
    """Fraction of face-neighbour voxel pairs (along each axis), at least one of them non-zero,
    whose values are equal (1.0 when there is no such pair)."""
    import numpy as np

    v = np.asarray(values)
    v = v.reshape(v.shape[:3]) if v.ndim > 3 and int(np.prod(v.shape[3:])) == 1 else v
    same = pairs = 0
    for axis in range(v.ndim):
        a, b = np.swapaxes(v, 0, axis)[1:], np.swapaxes(v, 0, axis)[:-1]
        foreground = (a != 0) | (b != 0)
        pairs += int(foreground.sum())
        same += int((foreground & (a == b)).sum())
    return same / pairs if pairs else 1.0


def integer_file(path: Path):
    """``(numpy dtype, number of distinct values, same-neighbour fraction)`` when ``path`` stores
    unscaled integers, or floats that are all whole numbers (a label map saved as float32 by
    many tools), i.e. a label map candidate; else None. Scaled NIfTI integers
    (scl_slope/scl_inter) are intensities."""
    import numpy as np

    from regkit.io.images import NIBABEL_SUFFIXES, check_header_size, stored_float_dtype, stored_integer_dtype

    p = Path(path)
    check_header_size(p)  # before reading every voxel: a small .nii.gz may unpack to gigabytes
    dtype = stored_integer_dtype(p) or stored_float_dtype(p)  # None for scaled integers and unreadable files
    if dtype is None:
        return None  # load_image reports an unreadable file with its own message
    try:
        if p.name.lower().endswith(NIBABEL_SUFFIXES):
            import nibabel as nib

            values = np.asarray(nib.load(str(p)).dataobj)
        else:
            import SimpleITK as sitk

            values = sitk.GetArrayFromImage(sitk.ReadImage(str(p)))
    except Exception:
        return None
    if np.issubdtype(dtype, np.floating):
        with np.errstate(all="ignore"):
            if not (np.isfinite(values).all() and np.array_equal(values, np.round(values))):
                return None  # fractions, NaN: intensities (load_image reports NaN)
    return dtype, int(np.unique(values).size), same_neighbour_fraction(values)


def _apply_to_points(transform_paths: List[Path], points_path: Path, points_out: Path, inverse: bool, lps: bool, force: bool) -> None:
    import torch

    from regkit.errors import InputError
    from regkit.io.atomic import check_writable
    from regkit.metrics import read_landmarks

    check_writable(points_out, force)
    pts = read_landmarks(points_path, lps=lps)  # RAS mm (P, 3) float64
    _refuse_scalar_images([transform_argument(p)[0] for p in transform_paths])
    chain = load_chain(transform_paths, inverse)
    with torch.no_grad():
        mapped = chain(pts).double()
    if not bool(torch.isfinite(mapped).all()):  # e.g. a long chain of large scalings overflows
        raise InputError("mapping the points through these transforms gives NaN/Inf (the transforms' values overflow)",
                         transform_paths[0])
    write_points_csv(points_path, mapped, points_out, lps=lps, force=force)
    typer.echo(f"mapped {pts.shape[0]} point{'s' if pts.shape[0] != 1 else ''} -> {points_out}")


def write_points_csv(source: Path, points_ras, path: Path, lps: bool, force: bool) -> None:
    """Write mapped points as CSV: the source's columns with x, y, z replaced (RAS, or LPS)."""
    import csv
    import io

    from regkit.io.atomic import write_text
    from regkit.io.geometry import LPS_FLIP
    from regkit.io.validate import csv_rows

    pts = points_ras.numpy().copy()
    if lps:
        pts = pts * LPS_FLIP
    if source.name.lower().endswith((".fcsv", ".mrk.json")):  # Slicer markups: written as a plain x,y,z CSV
        rows = [["x", "y", "z"]] + [["", "", ""] for _ in range(len(pts))]
    else:
        rows = csv_rows(source, "landmark file")  # the rows read_landmarks read (a byte-order mark dropped alike)
    header = [c.strip() for c in rows[0]]
    names = [c.lower() for c in header]
    if {"x", "y", "z"} <= set(names):
        cols, body = [names.index(a) for a in ("x", "y", "z")], rows[1:]
    else:
        header, cols, body = None, [0, 1, 2], rows
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    if header is not None:
        writer.writerow(header)
    for row, p in zip(body, pts):
        row = list(row)
        for c, v in zip(cols, p):
            row[c] = repr(float(v))
        writer.writerow(row)
    write_text(path, buf.getvalue(), force=force)


def _refuse_scalar_images(paths: List[Path]) -> None:
    """With --points every input is a transform: a scalar image among them (a MOVING image left
    on the line, or 'true' after a flag) gets this message instead of a displacement-field one."""
    from regkit.errors import InputError
    from regkit.io.images import NIBABEL_SUFFIXES

    for p in paths:
        if p.name.lower().endswith(NIBABEL_SUFFIXES) and p.is_file():
            import nibabel as nib

            try:
                shape = nib.load(str(p)).shape
            except Exception:  # noqa: BLE001 - the transform reader reports unreadable files
                continue
            if len(shape) == 3:
                raise InputError("is a 3D image, not a transform file: --points maps points through transform "
                                 "files only (no MOVING image; drop it)", p)

