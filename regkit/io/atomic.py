"""Write files so that a crash never leaves a partial output, and never overwrite by accident."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator, Union

from regkit.errors import OutputExistsError

PathLike = Union[str, Path]


def _suffixes(path: Path) -> str:
    # keep compound suffixes (".nii.gz") so writers that look at the name still work
    name = path.name
    for compound in (".nii.gz", ".tar.gz"):
        if name.endswith(compound):
            return compound
    return path.suffix


def check_writable(path: PathLike, force: bool = False) -> Path:
    """Raise :class:`OutputExistsError` if ``path`` exists and ``force`` is false."""
    p = Path(path)
    if p.exists() and not force:
        raise OutputExistsError("exists; pass --force to overwrite", p)
    return p


@contextlib.contextmanager
def atomic_path(path: PathLike, force: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success.

    The temporary file keeps the suffix of ``path`` (e.g. ``.nii.gz``). On any exception it is
    removed and ``path`` is left untouched.
    """
    target = check_writable(path, force)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}{_suffixes(target)}")
    try:
        yield tmp
        if not tmp.exists():
            raise RuntimeError(f"writer produced no file for {target}")
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_bytes(path: PathLike, data: bytes, force: bool = False) -> Path:
    with atomic_path(path, force) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: PathLike, text: str, force: bool = False) -> Path:
    return write_bytes(path, text.encode("utf-8"), force)
