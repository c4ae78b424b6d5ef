"""`regkit invert`: write the inverse of a transform (moving -> fixed)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from regkit.cli.common import EXIT_CODES_HELP, handle_errors

HELP = f"""Write the inverse of a transform: it then maps MOVING points to FIXED points.

Affines are inverted exactly (matrix inverse), velocity fields exactly (exp(-v)), displacement
fields by fixed-point iteration on their own grid (the residual is printed, with the round-trip
error |T^-1(T(x)) - x| over the field's grid). A chain is inverted part by part, in reverse order.

OUT's suffix picks the format: *.regkit.safetensors keeps the inverse exactly (any chain); .mat/.tfm
only for an affine; .nii.gz writes ONE dense ITK/ANTs displacement field, sampled on --reference,
which should be the MOVING image (the inverse's domain is moving space).

Examples:

  regkit invert result/transform.regkit.safetensors -o result/inverse.regkit.safetensors

  regkit invert reg0GenericAffine.mat -o reg0GenericAffine_inverse.mat

  regkit invert result/transform.regkit.safetensors -o inverse_field.nii.gz --reference moving.nii.gz

{EXIT_CODES_HELP}"""


def add_to(app: typer.Typer) -> None:
    @app.command("invert", help=HELP, no_args_is_help=True)
    @handle_errors
    def invert(
        transform: Path = typer.Argument(..., help="Transform file (fixed -> moving)."),
        output: Path = typer.Option(..., "--output", "-o", help="Inverse transform file (format from its suffix)."),
        reference: Optional[Path] = typer.Option(None, "--reference", "-r", help="Grid for a dense-field OUT (the moving image)."),
        iterations: int = typer.Option(50, "--iterations", min=1, help="Fixed-point iterations for displacement fields."),
        tolerance: float = typer.Option(1e-3, "--tolerance", help="Stop iterating below this residual (mm)."),
        force: bool = typer.Option(False, "--force", help="Overwrite OUT."),
    ) -> None:
        from regkit import inverse
        from regkit.io.atomic import check_writable
        from regkit.io.images import load_image
        from regkit.errors import InputError
        from regkit.io.transform_files import as_single_affine, read_transform, transform_kind, write_transform
        from regkit.transforms import DisplacementField

        if not 0 < tolerance < float("inf"):  # also NaN
            raise InputError(f"--tolerance must be a positive number of mm, got {tolerance}")
        check_writable(output, force)
        forward = read_transform(transform)
        if transform_kind(output) == "itk_affine" and as_single_affine(forward) is None:  # before the work, not after
            raise InputError("this suffix holds one affine transform and the inverse of this one is not affine; "
                             "use .regkit.safetensors or a displacement field (.nii.gz with --reference MOVING)", output)
        if transform_kind(output) == "itk_field" and reference is None and not isinstance(forward, DisplacementField):
            raise InputError("writing this inverse as one dense field needs --reference MOVING "
                             "(the inverse maps moving points to fixed points); or write .regkit.safetensors", output)
        result = inverse.invert(forward, iterations=iterations, tolerance_mm=tolerance)
        if result.fixed_point_residual_mm is not None:
            typer.echo(f"fixed-point residual (max over voxels): {result.fixed_point_residual_mm:.4g} mm")
        grid = inverse.field_grid(forward)
        if grid is not None:
            err = inverse.round_trip_error(forward, result.transform, *grid)
            typer.echo(f"round trip |T^-1(T(x)) - x| on the field grid: median {err['median']:.4g} mm, "
                       f"95% {err['p95']:.4g} mm, max {err['max']:.4g} mm")
        write_transform(result.transform, output, reference=load_image(reference) if reference is not None else None, force=force)
        typer.echo(f"wrote {output}")
