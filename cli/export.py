"""`regkit export`: write a transform for ANTs, ITK, a plain NIfTI field or Learn2Reg."""
from __future__ import annotations

from pathlib import Path

import typer

from regkit.cli.common import EXIT_CODES_HELP, handle_errors

HELP = f"""Export a transform (fixed -> moving) for other tools; fields are sampled on the --reference (fixed) grid.

Formats (files are PREFIX + suffix):

  ants       PREFIX0GenericAffine.mat + PREFIX1Warp.nii.gz (LPS, as antsRegistration writes them);
             apply with: antsApplyTransforms -d 3 -r fixed.nii.gz -i moving.nii.gz -o warped.nii.gz -t PREFIX1Warp.nii.gz -t PREFIX0GenericAffine.mat
             (a fixed point x goes to A(x + w(x)); regkit's affine is the .mat, the rest the warp).

  itk        PREFIXComposite.h5: ITK composite transform (the same affine + field), for SimpleITK/ITK/ANTs.

  nifti-ddf  PREFIXddf.nii.gz: dense displacement X×Y×Z×3 float32 on the fixed grid, vectors in RAS mm
             (T(x) = x + u(x)); NOT the LPS of ITK files (its intent_name says so; regkit reads it back as RAS).

  learn2reg  PREFIXdisp.npz: array arr_0 (3, X, Y, Z) float32, channels first, in voxel units of the
             fixed grid: fixed voxel i samples the moving image (already on the fixed grid) at i + d[:, i].

Examples:

  regkit export result/transform.regkit.safetensors --reference fixed.nii.gz --format ants -o ants/reg_

  regkit export result/transform.regkit.safetensors --reference fixed.nii.gz --format learn2reg -o submission/disp_0001_0002_

{EXIT_CODES_HELP}"""


def add_to(app: typer.Typer) -> None:
    @app.command("export", help=HELP, no_args_is_help=True)
    @handle_errors
    def export(
        transform: Path = typer.Argument(..., help="Transform file (fixed -> moving)."),
        reference: Path = typer.Option(..., "--reference", "-r", help="Fixed image: the grid fields are written on."),
        fmt: str = typer.Option(..., "--format", "-f", help="ants | itk | nifti-ddf | learn2reg."),
        prefix: str = typer.Option(..., "--output", "-o", help="Output prefix (a folder part is created)."),
        force: bool = typer.Option(False, "--force", help="Overwrite existing outputs."),
    ) -> None:
        from regkit.errors import InputError
        from regkit.export import FORMATS, ants_command, export_transform
        from regkit.io.images import load_image
        from regkit.io.transform_files import read_transform

        if fmt not in FORMATS:
            raise InputError(f"--format must be one of {', '.join(FORMATS)}; got {fmt!r}")
        paths = export_transform(read_transform(transform), load_image(reference), fmt, prefix, force=force)
        for p in paths:
            typer.echo(f"wrote {p}")
        if fmt == "ants":
            typer.echo("apply with: " + ants_command(paths, fixed=str(reference)))
