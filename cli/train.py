"""`regkit train`: train the learned coarse-to-fine cascade from a YAML recipe."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from regkit.cli.common import handle_errors, resolve_device, set_threads, setup_logging

HELP = """Train the learned cascade (affine localisation net + dense-field U-Net stages).

The YAML recipe (see configs/train_*.yaml) names the data (a CSV/JSON manifest of pairs or a folder of subjects), the model, the loss, augmentation and the optimiser; unknown keys are errors. Paths in its data section are relative to the YAML file. With data.labelmaps (a folder of label maps) the images are synthesised from them on the fly, in random contrasts (configs/train_brain_synth.yaml, the recipe of the shipped brain model). The run folder gets last.safetensors, best.safetensors (by validation Dice), log.csv, config.yaml and tensorboard/ (when the tensorboard package is installed). Ctrl-C or SIGTERM saves last.safetensors and stops (exit 130); continue with --resume.

Examples:

  regkit train --config configs/train_brain2mm.yaml --out runs/brain2mm

  regkit train --config configs/train_brain_synth.yaml --data labelmaps/ --out runs/brain_synth --device cuda

  regkit train --config configs/train_brain2mm.yaml --out runs/brain2mm --resume runs/brain2mm/last.safetensors

  torchrun --nproc_per_node=2 -m regkit.cli train --config configs/train_brain2mm.yaml --out runs/ddp

  regkit register moving.nii.gz fixed.nii.gz --model runs/brain2mm/best.safetensors --out result/
"""


def add_to(app: typer.Typer) -> None:
    @app.command("train", help=HELP)
    @handle_errors
    def train_command(
        config: Path = typer.Option(..., "--config", "-c", help="Training recipe (YAML)."),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder (default: the recipe's out_dir)."),
        resume: Optional[Path] = typer.Option(None, "--resume", help="Checkpoint to continue from (same model config)."),
        device: str = typer.Option("auto", "--device", help="cpu, cuda, cuda:N or auto."),
        data: Optional[Path] = typer.Option(None, "--data", help="Replace the recipe's data source: its label-map or subjects "
                                            "folder (data.labelmaps / data.subjects), or its manifest."),
        steps: Optional[int] = typer.Option(None, "--steps", min=1, help="Override optim.steps (total steps, counted from 0)."),
        force: bool = typer.Option(False, "--force", help="Start over in a run folder that holds a run: overwrite its outputs; its best.safetensors is removed only if regkit recorded writing it (.regkit-outputs.json)."),
        no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar."),
        verbose: bool = typer.Option(False, "--verbose", "-v"),
    ) -> None:
        import os

        from regkit.train.config import load_train_config
        from regkit.train.loop import train

        setup_logging(verbose)
        set_threads()
        procs = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        if procs > 1:  # torchrun on one machine: share the cores between the processes
            import torch

            torch.set_num_threads(max(1, torch.get_num_threads() // procs))
        recipe = load_train_config(config)
        if data is not None:
            recipe = recipe.model_copy(update={"data": recipe.data.with_source(data)})
        if steps is not None:
            recipe = recipe.model_copy(update={"optim": recipe.optim.model_copy(update={"steps": steps})})
        result = train(recipe, out_dir=out, resume=resume, device=resolve_device(device), force=force,
                       progress=not no_progress)
        if int(os.environ.get("RANK", "0")) != 0:
            return
        best = ""
        if result.best:  # a run without validation has no score to print
            best = f", best {result.best}" + (f" ({result.best_metric:.4f})" if result.best_metric is not None else "")
        typer.echo(f"step {result.step}: last checkpoint {result.last}{best}")
        if result.interrupted:
            typer.echo(f"stopped by {result.interrupted}; continue with --resume {result.last}", err=True)
            raise typer.Exit(130)
