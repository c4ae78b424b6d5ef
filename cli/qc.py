"""`regkit qc`: the QC report (PNG + self-contained HTML + JSON) of a registration."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from regkit.cli.common import EXIT_CODES_HELP, handle_errors

HELP = f"""Draw a QC report of a registration into a folder: qc.png, qc.html (PNG embedded), qc.json.

The PNG shows axial, coronal and sagittal slices through the fixed grid's centre: fixed, moving
before (in physical space), warped after, fixed edges on the warped image, the deformation grid
(affine part removed) and log|J| with folds (det J <= 0) in black. The numbers: NCC before/after,
Jacobian statistics in physical space, displacement sizes, and Dice before/after per label when
--labels and --moving-labels are given.

TRANSFORM maps fixed points to moving points: *.regkit.safetensors, an ITK/ANTs affine (.mat) or
displacement field (*Warp.nii.gz).

Examples:

  regkit qc --fixed fixed.nii.gz --moving moving.nii.gz --transform result/transform.regkit.safetensors -o report/

  regkit qc --fixed fixed.nii.gz --moving moving.nii.gz -t result/transform.regkit.safetensors -o report/ --labels fixed_labels.nii.gz --moving-labels moving_labels.nii.gz

{EXIT_CODES_HELP}"""


def add_to(app: typer.Typer) -> None:
    @app.command("qc", help=HELP, no_args_is_help=True)
    @handle_errors
    def qc(
        fixed: Path = typer.Option(..., "--fixed", help="Fixed image (the report's grid)."),
        moving: Path = typer.Option(..., "--moving", help="Moving image."),
        transform: List[Path] = typer.Option(..., "--transform", "-t", help="Transform file, fixed -> moving; repeat for a chain in antsApplyTransforms' order (-t warp.nii.gz -t affine.mat)."),
        out_dir: Path = typer.Option(..., "--output", "-o", help="Report folder (created if needed)."),
        labels: Optional[Path] = typer.Option(None, "--labels", help="Fixed label map: contours, and Jacobian numbers inside labels > 0."),
        moving_labels: Optional[Path] = typer.Option(None, "--moving-labels", help="Moving label map: adds Dice before/after per label value (needs --labels; at most 5000 values, as evaluate)."),
        force: bool = typer.Option(False, "--force", help="Overwrite existing report files."),
        default_value: float = typer.Option(0.0, "--default-value", help="Drawn where the moving image does not reach (CT: e.g. -1000)."),
    ) -> None:
        from regkit.errors import InputError
        from regkit.io.images import load_image, load_label
        from regkit.cli.apply import load_chain
        from regkit.report import summary_line, write_qc

        if moving_labels is not None and labels is None:
            raise InputError("--moving-labels needs --labels (the fixed label map) for Dice")
        fixed_image, moving_image = load_image(fixed), load_image(moving)
        label_arg = None
        if labels is not None:
            fixed_labels = load_label(labels)
            if not fixed_labels.same_grid(fixed_image):
                raise InputError(f"is not on the grid of {fixed}", labels)
            label_arg = fixed_labels
            if moving_labels is not None:  # a Dice a label value, as `regkit evaluate`: the same limit
                from regkit.checks import check_label_count

                label_arg = (fixed_labels, load_label(moving_labels))
                check_label_count(fixed_labels, labels)
                check_label_count(label_arg[1], moving_labels)
        result = write_qc(fixed_image, moving_image, load_chain(transform, inverse=False), out_dir, labels=label_arg, force=force, default_value=default_value,
                          title=f"regkit QC: {moving.name} -> {fixed.name}")
        typer.echo(summary_line(result))
        for f in result["files"]:
            typer.echo(f"wrote {f}")
