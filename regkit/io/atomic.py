"""Write files so that a crash never leaves a partial output, and never overwrite by accident.

Every output goes to a hidden temporary file beside the target (same folder, so the rename is
atomic on POSIX), is flushed to disk, then renamed onto the target: a reader sees the old file or
the complete new one, never half of one. Commands call :func:`check_outputs` with all their
outputs before starting work.
"""
from __future__ import annotations

import contextlib
import contextvars
import os
from pathlib import Path
from typing import Iterable, Iterator, List, Optional, Union

from regkit.errors import InputError, OutputExistsError

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


def check_writable(path: PathLike, force: bool = False) -> Path:
    """Raise :class:`OutputExistsError` if ``path`` exists and ``force`` is false, and
    :class:`InputError` if it is a directory or its folder cannot be written."""
    p = Path(path)
    _check_location(p)
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
    finally:
        if not deferred and tmp.exists():
            tmp.unlink()


_GROUP: "contextvars.ContextVar[Optional[List]]" = contextvars.ContextVar("regkit_atomic_group", default=None)


@contextlib.contextmanager
def atomic_group(folder: Optional[PathLike] = None) -> Iterator[None]:
    """Make the outputs written inside (through :func:`atomic_path`) appear together or not at all.

    Each file is still written to its temporary name; the renames onto the targets wait until the
    block ends without error. After an error or Ctrl-C every temporary file is removed, no target is
    touched (with ``--force`` the previous outputs stay whole), and ``folder``, when the block made
    it and it is empty, is removed too. Nested groups join the outer one. Threads must run in a
    copy of the caller's context (``contextvars.copy_context().run``) to join the group.
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
