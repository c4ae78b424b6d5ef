"""Errors regkit raises for problems a user can fix.

The CLI turns a :class:`RegkitError` into one line on stderr and its ``exit_code``; anything
else is a bug and keeps its traceback (always shown with ``--debug``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union


class RegkitError(Exception):
    """A problem with the user's input, files or settings (not a bug in regkit)."""

    exit_code = 2

    def __init__(self, message: str, path: Optional[Union[str, Path]] = None):
        self.path = None if path is None else str(path)
        super().__init__(f"{self.path}: {message}" if self.path else message)


class InputError(RegkitError):
    """An input file or value is missing, unreadable or unusable (exit code 2)."""


class OutputExistsError(RegkitError):
    """An output file exists and ``--force`` was not given (exit code 2)."""


class ResourceError(RegkitError):
    """The job would not fit in memory or another resource limit (exit code 3)."""

    exit_code = 3


class RegistrationError(RegkitError):
    """Registration could not proceed, e.g. the images do not overlap (exit code 4)."""

    exit_code = 4


def os_error(error: OSError, path: Optional[Union[str, Path]] = None, writing: bool = False) -> RegkitError:
    """The one mapping of an operating-system error to regkit's errors, naming the file
    (``path``, else the error's own ``filename``): a full disk or quota is a
    :class:`ResourceError` (exit 3), anything else about a file — permission, read-only file
    system, missing folder, I/O error — an :class:`InputError` (exit 2)."""
    import errno

    where = path if path is not None else (error.filename if error.filename is not None else None)
    action = "writing it" if writing else "reading it"
    code = error.errno
    if code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return ResourceError(f"no space left on the device while {action} ({error.strerror}); free some space "
                             "or write elsewhere", where)
    reasons = {errno.EACCES: "permission denied", errno.EPERM: "operation not permitted",
               errno.EROFS: "is on a read-only file system", errno.ENOENT: "no such file or folder",
               errno.ENOTDIR: "a part of the path is not a folder", errno.EISDIR: "is a folder",
               errno.ENAMETOOLONG: "the name is too long", errno.EIO: "input/output error (a failing disk or share?)",
               errno.EMFILE: "too many open files", errno.ENXIO: "no such device"}
    reason = reasons.get(code, error.strerror or type(error).__name__)
    return InputError(f"{reason} ({action})", where)


def describe_validation_error(error) -> "tuple[str, str]":
    """``(where, what)`` for the most telling problem of a pydantic ``ValidationError``: an unknown
    (often mistyped) key first, as it explains the others; ``where`` is the dotted key path.
    YAML 1.1 reads ``1e4`` (no dot) as text: a number-like string gets a hint."""
    import re

    first = sorted(error.errors(), key=lambda x: x["type"] != "extra_forbidden")[0]
    where = ".".join(str(p) for p in first["loc"]) or "(top level)"
    what = "unknown setting (mistyped?)" if first["type"] == "extra_forbidden" else first["msg"]
    value = first.get("input")
    if isinstance(value, str) and re.fullmatch(r"[-+]?\d+(\.\d*)?[eE][-+]?\d+", value.strip()):
        what += f" (YAML reads {value} as text: write it with a dot, e.g. 1.0e4, or in full)"
    return where, what
