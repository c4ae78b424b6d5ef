"""Writing NIfTI files: ``.nii.gz`` compressed by ISA-L's igzip when available, plain gzip otherwise.

Compressing the float32 vector fields and images is most of what ``regkit register`` spends on
writing at 1 mm. ``isal`` (python-isal, Intel's ISA-L) writes the same gzip format at the same
ratio several times faster than ``zlib`` at level 1 (benchmarks/README.md, "Writing"); every
gzip reader (nibabel, ITK, ANTs, FSL) reads it.
"""
from __future__ import annotations

import gzip
from pathlib import Path
from typing import Union

#: gzip level: the fastest that still compresses (nibabel's default is 1 as well)
COMPRESS_LEVEL = 1


def gzip_bytes(data: bytes, level: int = COMPRESS_LEVEL) -> bytes:
    """``data`` as one gzip member (igzip when installed, else the standard library)."""
    try:
        from isal import igzip
    except ImportError:  # no wheel for this platform: the standard library's gzip
        return gzip.compress(data, compresslevel=level, mtime=0)
    return igzip.compress(data, compresslevel=level, mtime=0)


def save_nifti(nii, path: Union[str, Path]) -> None:
    """Write a nibabel image to ``path``; ``.nii.gz`` paths are compressed with :func:`gzip_bytes`.

    The file is built in memory and written once (callers write to a temporary path and rename).
    """
    p = Path(path)
    if p.name.endswith(".nii.gz"):  # one file; other formats (.mgz, .img pairs) through nibabel
        p.write_bytes(gzip_bytes(nii.to_bytes()))
    else:
        import nibabel as nib

        nib.save(nii, str(p))
