"""Shared pieces of the CLI: error handling, logging, device choice."""
from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import sys
import traceback
from typing import Callable, TypeVar

import typer

F = TypeVar("F", bound=Callable)

STATE = {"debug": False}

EXIT_CODES_HELP = (
    "Exit codes: 0 success; 1 internal error (a bug: please report with --debug output); "
    "2 bad input or usage (missing/unreadable file, output exists without --force, bad config); "
    "3 not enough memory/resources; 4 registration could not proceed (e.g. no overlap); "
    "130 interrupted."
)


def fail(message: str, code: int = 2) -> None:
    """Print one line to stderr and exit with ``code`` (line breaks in ``message`` are folded)."""
    one_line = " ".join(part.strip() for part in str(message).splitlines() if part.strip())
    typer.echo(f"regkit: error: {one_line}", err=True)
    raise typer.Exit(code)


def _sigterm_as_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def sigterm_as_interrupt():
    """While inside, SIGTERM (``kill``, a batch scheduler's time limit) unwinds like Ctrl-C, so
    temporary files are removed and training can save a checkpoint. Main thread only (a rule
    of ``signal``); the previous handler is restored on exit."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class _PipeSafe:
    """A stdout that keeps the command going when its reader has gone (``regkit evaluate ... |
    head -1``): what is printed after that is dropped, the command's files are still written
    and its exit code is its own, not a BrokenPipeError."""

    def __init__(self, stream):
        self._stream = stream
        self._gone = False

    def _drop(self) -> None:
        self._gone = True
        try:  # the interpreter's final flush must not fail either
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, self._stream.fileno())
            os.close(null)
        except (OSError, ValueError, AttributeError):
            pass

    def write(self, text):
        if not self._gone:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self._drop()
        return len(text)

    def flush(self) -> None:
        if not self._gone:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._drop()

    def __getattr__(self, name):
        return getattr(self._stream, name)


@contextlib.contextmanager
def pipe_safe_stdout():
    """While inside, ``sys.stdout`` survives a closed pipe (:class:`_PipeSafe`)."""
    saved = sys.stdout
    sys.stdout = _PipeSafe(saved)
    try:
        yield
    finally:
        if isinstance(sys.stdout, _PipeSafe):
            sys.stdout.flush()
        sys.stdout = saved


def handle_errors(fn: F) -> F:
    """Turn regkit's errors into one line + exit code; keep tracebacks for ``--debug``.

    SIGINT and SIGTERM end the command with exit code 130 after the ``finally`` blocks ran
    (temporary outputs removed).
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from regkit.errors import RegkitError
        from regkit.io.atomic import command_scope

        try:
            with sigterm_as_interrupt(), command_scope(), pipe_safe_stdout():  # inputs are never written or removed
                return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except RegkitError as e:
            if STATE["debug"]:
                traceback.print_exc()
            fail(str(e), e.exit_code)
        except KeyboardInterrupt:
            typer.echo("regkit: interrupted; no partial output was kept", err=True)
            raise typer.Exit(130)
        except OSError as e:  # a file the command reads or a folder it makes: one line naming it
            if STATE["debug"]:
                traceback.print_exc()
            from regkit.errors import os_error

            mapped = os_error(e)
            fail(str(mapped), mapped.exit_code)
        except Exception as e:  # MemoryError and torch's allocation errors: exit 3; anything else is a bug
            if STATE["debug"]:
                traceback.print_exc()
            from regkit.resources import is_out_of_memory

            msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
            if is_out_of_memory(e):
                fail("out of memory; try a coarser preset (--config fast), smaller images or --device cuda"
                     + (f" ({msg[:120]})" if msg else ""), 3)
            fail(f"internal error: {type(e).__name__}: {msg} (run with --debug for the traceback)", 1)

    return wrapper  # type: ignore[return-value]


def setup_logging(verbose: bool = False, quiet: bool = False) -> None:
    """Messages on stderr, one per line: INFO (progress lines), DEBUG with ``verbose``, warnings
    and errors only with ``quiet``."""
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr)
    logging.getLogger().setLevel(level)  # a second command in the same process (tests) sets its own
    logging.captureWarnings(True)


def resolve_device(device: str) -> str:
    """The ``--device`` option checked (auto, cpu, cuda, cuda:N) and resolved by
    :func:`regkit.devices.resolve_device` (``auto`` → ``cuda`` when available, else ``cpu``)."""
    from regkit.devices import resolve_device as resolved
    from regkit.errors import RegkitError

    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
        fail(f"--device must be auto, cpu, cuda or cuda:N, got {device!r}")
    try:
        return str(resolved(device))
    except RegkitError as e:
        fail(str(e))


def set_threads() -> None:
    """Use every core the process may use (torch defaults to the physical count)."""
    import torch

    from regkit.devices import available_cores

    torch.set_num_threads(max(1, available_cores()))
