"""`regkit evaluate`: Dice, HD95, Jacobian statistics and TRE of a registration."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from regkit.cli.common import EXIT_CODES_HELP, handle_errors

HELP = f"""Score a registration: label overlap, surface distance, field regularity, landmark error.

Labels: --fixed-labels and --warped-labels are integer label maps on the same (fixed) grid, e.g.
the moving labels warped with `regkit apply ... --interp nearest`. Per label (0 = background is
skipped): Dice and HD95 (95th-percentile symmetric surface distance, mm).

Field: --field is any transform file (ANTs/ITK displacement NIfTI such as `regkit register`'s
field.nii.gz, *1Warp.nii.gz, or *.regkit.safetensors). Its Jacobian determinant is computed in
physical space (oblique/flipped grids handled): folding % (det J <= 0), std of log|J|, min, max;
also inside the fixed labels when the field is on their grid.

Landmarks: --landmarks-fixed/--landmarks-moving are CSV files of corresponding world points
(columns x,y,z with a header, or the first three columns), RAS mm by default; --lps for
ITK/ANTs/Slicer-legacy LPS files. TRE = |T(p_fixed) - p_moving| with --transform T (fixed ->
moving, as regkit, ANTs and ITK write them); the distance before registration is shown too.

Examples:

  regkit evaluate --fixed-labels fixed_labels.nii.gz --warped-labels result/warped_labels.nii.gz

  regkit evaluate --fixed-labels fixed_labels.nii.gz --warped-labels warped_labels.nii.gz --field result/field.nii.gz --json scores.json

  regkit evaluate --landmarks-fixed fixed.csv --landmarks-moving moving.csv --transform result/transform.regkit.safetensors --lps

{EXIT_CODES_HELP}"""


def add_to(app: typer.Typer) -> None:
    @app.command("evaluate", help=HELP, no_args_is_help=True)
    @handle_errors
    def evaluate(
        fixed_labels: Optional[Path] = typer.Option(None, "--fixed-labels", help="Fixed label map."),
        warped_labels: Optional[Path] = typer.Option(None, "--warped-labels", help="Moving label map warped onto the fixed grid."),
        field: Optional[Path] = typer.Option(None, "--field", help="Transform/displacement file whose Jacobian is scored."),
        reference: Optional[Path] = typer.Option(None, "--reference", "-r", help="Image whose grid a non-field --field (e.g. transform.regkit.safetensors) is scored on (the fixed image)."),
        landmarks_fixed: Optional[Path] = typer.Option(None, "--landmarks-fixed", help="CSV of fixed-space landmarks (world mm)."),
        landmarks_moving: Optional[Path] = typer.Option(None, "--landmarks-moving", help="CSV of the corresponding moving-space landmarks."),
        transform: Optional[List[Path]] = typer.Option(None, "--transform", "-t", help="Transform file (fixed -> moving) mapping the landmarks; repeat for a chain in antsApplyTransforms' order (-t warp.nii.gz -t affine.mat)."),
        lps: bool = typer.Option(False, "--lps", help="Landmark CSVs hold LPS coordinates (ITK/ANTs) instead of RAS."),
        json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the numbers as JSON here."),
        force: bool = typer.Option(False, "--force", help="Overwrite an existing --json file."),
    ) -> None:
        import torch

        from regkit import metrics
        from regkit.checks import check_label_count
        from regkit.errors import InputError
        from regkit.io.atomic import check_writable, json_text, write_text
        from regkit.io.images import load_label
        from regkit.cli.apply import load_chain
        from regkit.io.transform_files import read_transform
        from regkit.transforms import DisplacementField

        if (fixed_labels is None) != (warped_labels is None):
            raise InputError("--fixed-labels and --warped-labels go together")
        if (landmarks_fixed is None) != (landmarks_moving is None):
            raise InputError("--landmarks-fixed and --landmarks-moving go together")
        if fixed_labels is None and field is None and landmarks_fixed is None:
            raise InputError("nothing to evaluate: give labels, --field or landmarks (see --help)")
        if transform and landmarks_fixed is None:
            raise InputError("--transform maps landmarks; give --landmarks-fixed and --landmarks-moving too")
        if json_out is not None:
            check_writable(json_out, force)
        fl = load_label(fixed_labels) if fixed_labels is not None else None
        wl = load_label(warped_labels) if warped_labels is not None else None
        if fl is not None:  # each value is a Dice and an HD95: bounded
            check_label_count(fl, fixed_labels)
            check_label_count(wl, warped_labels)
        if fl is not None and not fl.same_grid(wl):
            raise InputError(f"is not on the grid of {fixed_labels}; resample it onto the fixed grid first (regkit apply ... --interp nearest)", warped_labels)
        landmarks = None
        if landmarks_fixed is not None:
            landmarks = {"fixed": metrics.read_landmarks(landmarks_fixed, lps), "moving": metrics.read_landmarks(landmarks_moving, lps)}
            if landmarks["fixed"].shape != landmarks["moving"].shape:
                raise InputError(f"has {landmarks['moving'].shape[0]} landmarks, {landmarks_fixed} has "
                                 f"{landmarks['fixed'].shape[0]}; they must correspond row by row", landmarks_moving)
        forward = read_transform(field) if field is not None else None
        if forward is not None and reference is not None and not isinstance(forward, DisplacementField):
            from regkit.io.images import load_image

            grid = load_image(reference)
            with torch.no_grad():
                forward = DisplacementField(forward.displacement_on(grid.affine, grid.shape)[None], grid.affine)
        if forward is not None and fl is None and not isinstance(forward, DisplacementField):
            raise InputError("is not a displacement field: its Jacobian needs a grid, so give --reference FIXED "
                             "(or --fixed-labels and --warped-labels, or the field.nii.gz of the result)", field)
        numbers = metrics.evaluate(fl, wl, forward, landmarks,
                                   load_chain(transform, inverse=False) if transform else None)
        if json_out is not None:  # first: a reader of stdout that stops early (| head) must not cost the file
            write_text(json_out, json_text(numbers) + "\n", force=force)
        typer.echo(format_table(numbers))
        if json_out is not None:
            typer.echo(f"wrote {json_out}")


def format_table(numbers: dict) -> str:
    """The terminal table of :func:`regkit.metrics.evaluate`'s numbers."""
    lines = []
    if "labels" in numbers:
        lines += [f"{'label':>8}  {'Dice':>7}  {'HD95 mm':>8}"]
        for label, v in numbers["labels"].items():
            lines.append(f"{label:>8}  {v['dice']:7.4f}  {v['hd95_mm']:8.2f}")
        lines.append(f"{'mean':>8}  {numbers['mean_dice']:7.4f}  {numbers['mean_hd95_mm']:8.2f}")
        missing = [str(label) for label, v in numbers["labels"].items() if v["hd95_mm"] != v["hd95_mm"]]  # NaN
        if missing:
            lines.append(f"note: label(s) {', '.join(missing)} missing from one of the maps (e.g. outside the warped "
                         "field of view): Dice 0 in the mean, HD95 undefined (nan) and left out of its mean")
    for key, title in (("jacobian", "Jacobian (whole field)"), ("jacobian_in_labels", "Jacobian (inside fixed labels)")):
        if key in numbers:
            j = numbers[key]
            lines.append(f"{title}: folding {j['folding_percent']:.4f}% ({j['folded_voxels']} voxels), "
                         f"std log|J| {j['std_log_jacobian']:.4f}, det J in [{j['min']:.3f}, {j['max']:.3f}]")
    for key, title in (("initial_distance_mm", "Landmark distance before"), ("tre_mm", "TRE")):
        if key in numbers:
            t = numbers[key]
            lines.append(f"{title}: {t['mean']:.2f} ± {t['std']:.2f} mm (median {t['median']:.2f}, max {t['max']:.2f}, {t['count']} points)")
    return "\n".join(lines)
