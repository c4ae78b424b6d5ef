"""`regkit models`: the trained models that ship with regkit (usable as `--model NAME`)."""
from __future__ import annotations

import typer

from regkit.cli.common import handle_errors

HELP = """List the trained models shipped inside regkit: `regkit register MOVING FIXED --model NAME [--refine N]`.

Each is a cascade checkpoint inside the package (no download); its model card is docs/models/NAME.md.

Example:

  regkit register t2.nii.gz t1.nii.gz --out result/ --model brain --refine 40
"""


def add_to(app: typer.Typer) -> None:
    @app.command("models", help=HELP)
    @handle_errors
    def models_command() -> None:
        from regkit.nn.shipped import SHIPPED, MODELS_DIR, model_metadata

        for name, description in sorted(SHIPPED.items()):
            path = MODELS_DIR / f"{name}.safetensors"
            if not path.is_file():
                typer.echo(f"{name}\t(missing from this installation)\t{description}")
                continue
            meta = model_metadata(path)
            config = meta.get("model_config") or {}
            grid = "x".join(map(str, config.get("grid_shape", []))) if isinstance(config, dict) else "?"
            spacing = config.get("grid_spacing_mm", "?") if isinstance(config, dict) else "?"
            trained = meta.get("trained", {}) if isinstance(meta.get("trained"), dict) else {}
            typer.echo(f"{name}\t{description}; grid {grid} @ {spacing} mm; {path.stat().st_size / 1e6:.1f} MB; "
                       f"commit {trained.get('commit', '?')}, {trained.get('steps', '?')} steps; card docs/models/{name}.md")
