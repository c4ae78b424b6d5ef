"""`regkit export`: write a transform for ANTs, ITK, a plain NIfTI field or Learn2Reg."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from regkit.cli.common import EXIT_CODES_HELP, handle_errors

HELP = f"""Export a transform (fixed -> moving) for other tools; fields are sampled on the --reference (fixed) grid.

Formats (files are PREFIX + suffix):

  ants       PREFIX0GenericAffine.mat + PREFIX1Warp.nii.gz (LPS, as antsRegistration writes them);
             apply with: antsApplyTransforms -d 3 -r fixed.nii.gz -i moving.nii.gz -o warped.nii.gz -t PREFIX1Warp.nii.gz -t PREFIX0GenericAffine.mat
             (a fixed point x goes to A(x + w(x)); regkit's affine is the .mat, the rest the warp).

  itk        PREFIXComposite.h5: ITK composite transform (the same affine + field), for SimpleITK/ITK/ANTs.

  nifti-ddf  PREFIXddf_RAS.nii.gz: NIfTI-2 dense displacement X×Y×Z×3 float32 on the fixed grid, vectors in RAS mm
             (T(x) = x + u(x)); NOT the LPS of ITK files (its intent_name says so; regkit reads it back as RAS).

  learn2reg  what the Learn2Reg evaluator (MDL-UzL/L2R) reads: PREFIXdisp_FFFF_MMMM.npz (same modality,
             or 0000 -> 0001) else PREFIXdisp_FFFF_fmod_MMMM_mmod.npz, named from the images' Learn2Reg
             names (TASK_SSSS_MMMM.nii.gz) or --case; array arr_0 (X, Y, Z, 3) channels last, float32
             (--float16 halves the size), voxel units: fixed voxel i lands on moving voxel i + d[i].
             Needs --moving (its name and grid).

  learn2reg-2021  the 2021 layout: PREFIXdisp.npz, arr_0 (3, X, Y, Z) float32, channels first, voxel
             units of the fixed grid.

  fsl, lta, afni  an affine only, with --moving: PREFIXflirt.mat (FSL FLIRT; flirt -ref FIXED -in MOVING
             -applyxfm -init PREFIXflirt.mat), PREFIXaffine.lta (FreeSurfer), PREFIXaffine.aff12.1D (AFNI),
             written by nitransforms.

Examples:

  regkit export result/transform.regkit.safetensors --reference fixed.nii.gz --format ants -o ants/reg_

  regkit export result/transform.regkit.safetensors --reference OASIS_0001_0000.nii.gz --moving OASIS_0002_0000.nii.gz --format learn2reg --float16 -o submission/

{EXIT_CODES_HELP}"""


def add_to(app: typer.Typer) -> None:
    @app.command("export", help=HELP, no_args_is_help=True)
    @handle_errors
    def export(
        transform: Path = typer.Argument(..., help="Transform file (fixed -> moving)."),
        reference: Path = typer.Option(..., "--reference", "-r", help="Fixed image: the grid fields are written on."),
        fmt: str = typer.Option(..., "--format", "-f", help="ants | itk | nifti-ddf | learn2reg | learn2reg-2021 | fsl | lta | afni."),
        prefix: str = typer.Option(..., "--output", "-o", help="Output prefix (a folder part is created)."),
        force: bool = typer.Option(False, "--force", help="Overwrite existing outputs."),
        moving: Optional[Path] = typer.Option(None, "--moving", "-m", help="learn2reg, fsl, lta, afni: the moving image (its grid; for learn2reg its name)."),
        case: Optional[str] = typer.Option(None, "--case", help="learn2reg: FIXEDSUBJ_MOD_MOVINGSUBJ_MOD (default: from the images' names)."),
        float16: bool = typer.Option(False, "--float16", help="learn2reg: store float16 (half the size)."),
    ) -> None:
        from regkit.errors import InputError
        from regkit.export import FORMATS, ants_command, export_transform, learn2reg_case, learn2reg_file_name
        from regkit.io.images import load_image
        from regkit.io.transform_files import read_transform

        if fmt not in FORMATS:
            raise InputError(f"--format must be one of {', '.join(FORMATS)}; got {fmt!r}")
        if fmt != "learn2reg" and (case is not None or float16):
            raise InputError("--case and --float16 are for --format learn2reg")
        if moving is not None and fmt not in ("learn2reg", "fsl", "lta", "afni"):
            raise InputError("--moving is for --format learn2reg, fsl, lta and afni")
        moving_image = load_image(moving) if moving is not None else None
        if fmt == "learn2reg":
            if moving is None:
                raise InputError("--format learn2reg needs --moving MOVING (the evaluator indexes the moving image's voxels)")
            if case is None:
                case = learn2reg_case(reference.name, moving.name)
            learn2reg_file_name(case)  # a bad --case: one line before any work
        paths = export_transform(read_transform(transform), load_image(reference), fmt, prefix, force=force,
                                 moving=moving_image, case=case, float16=float16)
        for p in paths:
            typer.echo(f"wrote {p}")
        if fmt == "ants":
            typer.echo("apply with: " + ants_command(paths, fixed=str(reference)))
