"""Every `--help` reflows to the terminal's width (60, 80, 120 columns): no line longer than the
width, no paragraph line broken early (a hard-wrapped source line), no `<bool>` metavar."""
from __future__ import annotations

import pytest
import typer

from regkit.cli.main import app

COMMANDS = ["", "register", "apply", "evaluate", "qc", "export", "invert", "train", "models"]


def _help(command: str, columns: int, capsys) -> str:
    """The help as a terminal of ``columns`` shows it (CliRunner forces 80 columns)."""
    cmd = typer.main.get_command(app)
    code = cmd.main(args=[*([command] if command else []), "--help"], prog_name="regkit", standalone_mode=False,
                    terminal_width=columns)
    assert code in (0, None)
    return capsys.readouterr().out


@pytest.mark.parametrize("columns", [60, 80, 120])
@pytest.mark.parametrize("command", COMMANDS)
def test_help_reflows(command, columns, capsys):
    text = _help(command, columns, capsys)
    lines = text.splitlines()
    assert "<bool>" not in text
    assert max(map(len, lines)) <= columns, max(lines, key=len)
    limit = max(columns - 2, 50)  # click's text width
    description = lines[: next((i for i, line in enumerate(lines) if line.rstrip() in ("Arguments:", "Options:", "Commands:")), len(lines))]
    for line, following in zip(description, description[1:]):
        if not line.strip() or not following.strip():
            continue
        indent = len(following) - len(following.lstrip())
        if indent != len(line) - len(line.lstrip()):
            continue  # another paragraph or an example's own indent
        word = following.split()[0]
        assert len(line) + 1 + len(word) > limit, f"hard-wrapped at {columns} columns: {line!r} / {following!r}"
