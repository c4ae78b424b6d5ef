"""The ``regkit`` Typer application: one sub-command per module in this package."""
from __future__ import annotations

import sys

import typer

from regkit.cli import common

app = typer.Typer(
    name="regkit",
    help=(
        "3D medical image registration in physical space (CT, MRI).\n\n"
        "Examples:\n\n"
        "  regkit register moving.nii.gz fixed.nii.gz --out result/\n\n"
        "  regkit apply result/transform.regkit.safetensors moving_labels.nii.gz --reference fixed.nii.gz -o warped_labels.nii.gz --interp nearest\n\n"
        "  regkit evaluate --fixed-labels fixed_labels.nii.gz --warped-labels result/warped_labels.nii.gz\n\n"
        + common.EXIT_CODES_HELP
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # click's plain help: paragraphs reflow to the terminal's width (up to 200 columns), no boxed
    # panels hard-wrapping the examples and no "<bool>" beside every flag
    rich_markup_mode=None,
    context_settings={"max_content_width": 200},
)


def _print_version(value: bool) -> None:
    if not value:
        return
    from importlib.metadata import PackageNotFoundError, version

    def of(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    typer.echo(f"regkit {of('regkit')} (torch {of('torch')}, monai {of('monai')}, nibabel {of('nibabel')}, "
               f"SimpleITK {of('SimpleITK')}, python {sys.version.split()[0]})")
    raise typer.Exit()


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
          show_version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                            help="Print the versions of regkit and its main libraries, and exit.")) -> None:
    common.STATE["debug"] = debug


def _register_commands() -> None:
    # each module adds its command(s) to `app`; kept separate so commands evolve independently
    import importlib

    for name in ("apply", "register", "train", "evaluate", "qc", "export", "invert", "models"):
        module = importlib.import_module(f"regkit.cli.{name}")
        module.add_to(app)


_register_commands()


def _reflowable(text: str) -> str:
    """``text`` with each paragraph's source line breaks (and the spaces aligning its continuation
    lines) folded into single spaces, so click rewraps it at the terminal's width instead of
    breaking lines early; each paragraph keeps its first line's indent."""
    paragraphs = []
    for par in text.split("\n\n"):
        lines = [line for line in par.splitlines() if line.strip()]
        if not lines or lines[0].startswith("\b"):
            paragraphs.append(par)
            continue
        indent = lines[0][: len(lines[0]) - len(lines[0].lstrip())]
        paragraphs.append(indent + " ".join(" ".join(line.split()) for line in lines))
    return "\n\n".join(paragraphs)


for _info in app.registered_commands:  # every command's help, however its module wrapped the source
    if _info.help:
        _info.help = _reflowable(_info.help)
app.info.help = _reflowable(app.info.help)


# click's UsageError, or the copy that newer Typer versions vendor: the base of typer.BadParameter
USAGE_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


def main() -> None:
    """Run the CLI; raises SystemExit with its exit code. A usage error (mistyped option, missing
    argument) is one line on stderr, exit 2, instead of Typer's boxed multi-line message."""
    sys.exit(_run())


def console_main() -> None:
    """The ``regkit`` command (and ``python -m regkit.cli.main``): :func:`main`, then the process
    ends without the interpreter's teardown (:func:`_end_process`). Not for calling from a
    program that goes on afterwards: use :func:`main` or the Python API there."""
    _end_process(_run())


def _run() -> int:
    """The CLI's exit code."""
    try:
        code = app(standalone_mode=False, prog_name="regkit")
    except USAGE_ERROR as e:
        if type(e).__name__ == "NoArgsIsHelpError" or e.ctx is None:  # `regkit` alone: the help
            e.show()
            return e.exit_code
        path = e.ctx.command_path
        typer.echo(f"{path}: {e.format_message()} (see '{path} --help')", err=True)
        return 2
    except typer.Abort:  # Ctrl-C outside a command's own handling
        typer.echo("Aborted.", err=True)
        return 130
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            return e.code or 0
        raise
    return code if isinstance(code, int) else 0


def _end_process(code: int) -> None:
    """Exit with ``code`` without the interpreter's teardown.

    When the command is done its files are written and closed; what remains of a normal exit is
    freeing every module and tensor one by one, a measurable part of a short registration's
    process (benchmarks/README.md, "CT"). The ``atexit`` handlers still run (logging's flush, coverage,
    multiprocessing's children), then stdout/stderr are flushed and the process ends. A plain
    ``sys.exit`` is used when another non-daemon thread is alive (it would be waited for)."""
    import atexit
    import os
    import threading

    run_exit_handlers = getattr(atexit, "_run_exitfuncs", None)
    others = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon and t.is_alive()]
    if run_exit_handlers is None or others:
        sys.exit(code)
    run_exit_handlers()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`regkit ... | head`): nothing left to say
            pass
    os._exit(code)


if __name__ == "__main__":
    console_main()
