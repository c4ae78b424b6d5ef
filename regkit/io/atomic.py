"""Write files so that a crash never leaves a partial output, and never overwrite by accident.

Every output goes to a hidden temporary file beside the target (same folder, so the rename is
atomic on POSIX), is flushed to disk, then renamed onto the target: a reader sees the old file or
the complete new one, never half of one. Commands call :func:`check_outputs` with all their
outputs before starting work.

Two rules protect the user's files, whatever ``--force`` says:

* an INPUT is never an output: while a CLI command runs (:func:`command_scope`), every file it
  reads is noted (:func:`note_input`) and writing onto one of them is an :class:`InputError`;
* ``--force`` removes only what regkit wrote: a folder written by :func:`atomic_group` gets a
  record of its files (:data:`RECORD`, names with size and mtime), and a later ``--force`` run
  removes an earlier output it does not write again only when the record lists it and the file
  is still the one regkit wrote (same size and mtime) — never a file the user put there.
"""
from __future__ import annotations

import contextlib
import contextvars
import os
from pathlib import Path
from typing import Iterable, Iterator, List, Optional, Union

from regkit.errors import InputError, OutputExistsError, RegkitError, ResourceError, os_error

PathLike = Union[str, Path]


def _suffixes(path: Path) -> str:
    # keep compound suffixes (".nii.gz") so writers that look at the name still work
    name = path.name
    for compound in (".nii.gz", ".tar.gz"):
        if name.endswith(compound):
            return compound
    return path.suffix


def check_folder(path: PathLike) -> Path:
    """Raise :class:`InputError` unless ``path`` is a folder, or can be made one (its first
    existing ancestor is a writable folder): ``--out results`` where ``results`` is a file, or
    ``out/x.nii.gz`` under a file ``out``, is refused before any work."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise InputError("is a file, not a folder; give a folder here", p)
    ancestor = next((a for a in [p, *p.parents] if a.exists()), None)
    if ancestor is not None and not ancestor.is_dir():
        raise InputError(f"cannot be made: {ancestor} is a file, not a folder", p)
    if ancestor is not None and not os.access(ancestor, os.W_OK | os.X_OK):
        raise InputError(f"cannot be written: {ancestor} is not a writable folder", p)
    return p


def _check_location(target: Path) -> None:
    """InputError when ``target`` (an output file) is a directory or its folder cannot be made."""
    if target.is_dir():
        raise InputError("is a directory; give a file name for this output", target)
    check_folder(target.parent)


# ------------------------------------------------------------------ inputs are never outputs
_INPUTS: "contextvars.ContextVar[Optional[set]]" = contextvars.ContextVar("regkit_inputs", default=None)


@contextlib.contextmanager
def command_scope() -> Iterator[None]:
    """While inside (one CLI command), files passed to :func:`note_input` cannot be written or
    removed by :func:`atomic_path` / :func:`check_outputs` / the ``--force`` clean-up. Outside a
    scope (library use) nothing is noted."""
    token = _INPUTS.set(set())
    try:
        yield
    finally:
        _INPUTS.reset(token)


def _identity(path: PathLike) -> Optional[tuple]:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def note_input(*paths: Optional[PathLike]) -> None:
    """Note files the running command reads (no-op outside :func:`command_scope`; missing files
    and ``None`` are skipped). Identity is the file itself (device and inode), so another name
    for it (a link, ``./x``, an absolute path) is caught too."""
    noted = _INPUTS.get()
    if noted is None:
        return
    for p in paths:
        ident = _identity(p) if p is not None else None
        if ident is not None:
            noted.add(ident)


def is_input(path: PathLike) -> bool:
    """Whether ``path`` is a file the running command reads (see :func:`note_input`)."""
    noted = _INPUTS.get()
    return bool(noted) and _identity(path) in noted


def _refuse_input(p: Path) -> None:
    if is_input(p):
        raise InputError("is an input of this command; regkit never overwrites or removes an input, even with "
                         "--force: choose another output name or folder", p)


def check_writable(path: PathLike, force: bool = False) -> Path:
    """Raise :class:`OutputExistsError` if ``path`` exists and ``force`` is false, and
    :class:`InputError` if it is a directory, an input of the running command, or its folder
    cannot be written."""
    p = Path(path)
    _check_location(p)
    _refuse_input(p)
    if p.exists() and not force:
        raise OutputExistsError("exists; pass --force to overwrite", p)
    return p


def check_outputs(paths: Iterable[Optional[PathLike]], force: bool = False) -> List[Path]:
    """Check ALL outputs of a command before it starts work (``None`` entries are skipped).

    Raises :class:`OutputExistsError` naming every existing output (unless ``force``), or
    :class:`InputError` when an output path is a directory or its folder cannot be written, so
    a run never fails on its last file after minutes of work.
    """
    targets = [Path(p) for p in paths if p is not None]
    for t in targets:
        _check_location(t)
        _refuse_input(t)
    existing = [t for t in targets if t.exists()]
    if existing and not force:
        others = f" (and {len(existing) - 1} more: {', '.join(str(e) for e in existing[1:])})" if len(existing) > 1 else ""
        raise OutputExistsError(f"exists{others}; pass --force to overwrite", existing[0])
    return targets


@contextlib.contextmanager
def atomic_path(path: PathLike, force: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success.

    The temporary file keeps the suffix of ``path`` (e.g. ``.nii.gz``). On any exception it is
    removed and ``path`` is left untouched. The result gets the permissions of a file made by
    ``open()`` (``0o666`` less the umask), or keeps those of the file it replaces (``force``),
    whatever the writer used: safetensors, for one, creates owner-only (``0o600``) files.
    """
    target = check_writable(path, force)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}{_suffixes(target)}")
    group = _GROUP.get()
    deferred = False
    try:
        yield tmp
        if not tmp.exists():
            raise RuntimeError(f"writer produced no file for {target}")
        os.chmod(tmp, _mode_for(target))
        _fsync(tmp)  # the data is on disk before the name points at it (power loss, kill -9)
        if group is not None:  # renamed with the rest of its group (atomic_group)
            group.append((tmp, target))
            deferred = True
        else:
            os.replace(tmp, target)
    except OSError as e:  # disk full, permission, read-only...: one line naming the output
        raise os_error(e, target, writing=True) from e
    except Exception as e:  # writers in C++ (ITK) report a full disk as their own error type
        if not isinstance(e, RegkitError) and _disk_full(target):
            raise ResourceError("no space left on the device while writing it; free some space or write elsewhere",
                                target) from e
        raise
    finally:
        if not deferred and tmp.exists():
            tmp.unlink()


_GROUP: "contextvars.ContextVar[Optional[List]]" = contextvars.ContextVar("regkit_atomic_group", default=None)


@contextlib.contextmanager
def atomic_group(folder: Optional[PathLike] = None, replace_previous: bool = False) -> Iterator[None]:
    """Make the outputs written inside (through :func:`atomic_path`) appear together or not at all.

    Each file is still written to its temporary name; the renames onto the targets wait until the
    block ends without error. After an error or Ctrl-C every temporary file is removed, no target is
    touched (with ``--force`` the previous outputs stay whole), and ``folder``, when the block made
    it and it is empty, is removed too. Nested groups join the outer one (whose ``folder`` and
    ``replace_previous`` count). Threads must run in a copy of the caller's context
    (``contextvars.copy_context().run``) to join the group.

    With a ``folder``, the files written into it are added to its :data:`RECORD`; with
    ``replace_previous`` (``--force``) the files an earlier run recorded there and this one did
    not write are removed first (:func:`remove_previous_outputs`).
    """
    if _GROUP.get() is not None:
        yield
        return
    made = folder is not None and not Path(folder).exists()
    pending: List = []
    token = _GROUP.set(pending)
    try:
        yield
    except BaseException:
        for tmp, _ in pending:
            with contextlib.suppress(OSError):
                tmp.unlink()
        if made:
            with contextlib.suppress(OSError):
                Path(folder).rmdir()  # only when empty
        raise
    finally:
        _GROUP.reset(token)
    for tmp, target in pending:
        os.replace(tmp, target)
    if folder is not None:
        written = [t for _, t in pending if t.parent == Path(folder)]
        if replace_previous:
            remove_previous_outputs(folder, written)
        record_outputs(folder, written)


# ------------------------------------------------------------------ what regkit wrote in a folder
#: the record of regkit's outputs in a folder: JSON ``{"regkit_outputs": {name: [size, mtime_ns]}}``
RECORD = ".regkit-outputs.json"
_MAX_RECORD_BYTES = 1 << 20


def _stamp(path: Path) -> Optional[List[int]]:
    """``[size, mtime_ns]`` of a regular file (not a link), else None."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    import stat

    return [st.st_size, st.st_mtime_ns] if stat.S_ISREG(st.st_mode) else None


def read_record(folder: PathLike) -> dict:
    """``{name: [size, mtime_ns]}`` from ``folder``'s :data:`RECORD`; empty when it is missing,
    damaged or odd in any way (then nothing is removed: the safe side)."""
    import json

    path = Path(folder) / RECORD
    try:
        if _stamp(path) is None or path.stat().st_size > _MAX_RECORD_BYTES:
            return {}
        entries = json.loads(path.read_bytes().decode("utf-8")).get("regkit_outputs", {})
    except (OSError, ValueError, AttributeError, RecursionError):
        return {}
    if not isinstance(entries, dict):
        return {}
    return {name: v for name, v in entries.items()
            if isinstance(name, str) and name not in ("", ".", "..", RECORD) and "/" not in name and "\\" not in name
            and "\0" not in name and isinstance(v, list) and len(v) == 2 and all(type(x) is int for x in v)}


def remove_previous_outputs(folder: PathLike, written: Iterable[PathLike]) -> List[Path]:
    """Remove the files of ``folder``'s record that were not just ``written``, when each is still
    exactly what regkit wrote (a regular file of the recorded size and mtime) and is not an input
    of the running command; returns the removed paths. Files the record does not list — the
    user's, or ones replaced since — are never touched."""
    out = Path(folder)
    keep = {Path(p).name for p in written}
    removed = []
    for name, stamp in read_record(out).items():
        path = out / name
        if name in keep or _stamp(path) != stamp or is_input(path):
            continue
        with contextlib.suppress(OSError):
            path.unlink()
            removed.append(path)
    return removed


def record_outputs(folder: PathLike, written: Iterable[PathLike]) -> None:
    """Add ``written`` (files in ``folder``) to its :data:`RECORD`, keeping earlier entries that
    still match their file; best effort (a folder that cannot take it only loses the clean-up)."""
    import json

    out = Path(folder)
    entries = {name: stamp for name, stamp in read_record(out).items() if _stamp(out / name) == stamp}
    for p in written:
        stamp = _stamp(out / Path(p).name)
        if stamp is not None:
            entries[Path(p).name] = stamp
    with contextlib.suppress(OSError, InputError):
        write_text(out / RECORD, json.dumps({"regkit_outputs": entries}, indent=1), force=True)


def _disk_full(target: Path) -> bool:
    """Whether the file system of ``target`` has (almost) no space left."""
    import shutil

    try:
        return shutil.disk_usage(target.parent).free < 2**20
    except OSError:
        return False


def _read_umask() -> int:
    umask = os.umask(0)  # the only way to read it; done once, at import (outputs are written on threads)
    os.umask(umask)
    return umask


_UMASK = _read_umask()


def _mode_for(target: Path) -> int:
    """Permission bits for ``target``: those of the file it replaces, else ``0o666`` less the umask."""
    try:
        return target.stat().st_mode & 0o777
    except OSError:
        return 0o666 & ~_UMASK


def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems do not support it; the rename is still atomic
        pass
    finally:
        os.close(fd)


def write_bytes(path: PathLike, data: bytes, force: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path, force) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: PathLike, text: str, force: bool = False) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically (see :func:`atomic_path`)."""
    return write_bytes(path, text.encode("utf-8"), force)


def json_text(value) -> str:
    """Strict JSON of ``value`` (indented): NaN and ±Inf, which ``json.dumps`` writes as bare
    ``NaN``/``Infinity`` that jq and JavaScript refuse, become ``null`` (e.g. HD95 of a label
    missing from the warped map)."""
    import json
    import math

    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    return json.dumps(clean(value), indent=1, allow_nan=False)
