"""`regkit train` (not implemented yet)."""
from __future__ import annotations

import typer


def add_to(app: typer.Typer) -> None:
    @app.command("train", help="(not implemented yet)", hidden=True)
    def _not_yet() -> None:
        typer.echo("regkit train: not implemented yet", err=True)
        raise typer.Exit(1)
