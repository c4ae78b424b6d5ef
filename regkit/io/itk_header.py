"""What an ITK transform file declares, read from its headers before SimpleITK reads it.

ITK allocates what a transform file declares before it reads (or checks) a value: the parameter
array (an HDF5 dataset's shape, a MATLAB v4 variable's header, the numbers on a text line) and,
for a displacement field, velocity field or B-spline, an image of the grid size that its fixed
parameters give. A compressed HDF5 dataset whose chunks were never written declares gigabytes in
8 KiB (a 512×512×320 field took 6.2 GB and 22 CPU seconds before "out of memory" named no file);
a 300-byte ``.tfm`` can declare a 600³ field (5 GB). :func:`check_transform_size` reads only the
headers and the few fixed parameters and refuses, before ITK sees the file, what would not fit:
:class:`~regkit.errors.ResourceError` (exit 3) naming the file.

Formats are recognised by content: HDF5 (``.h5``), ITK text (``#Insight Transform File``) and
binary MATLAB v4 (ANTs' ``*GenericAffine.mat``). Anything else, or a header that cannot be read,
is left to ITK's reader, which says why.
"""
from __future__ import annotations

import math
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from regkit.errors import InputError

#: bytes ITK holds per declared parameter or field value: its float64 read buffer and the
#: transform's own array (a displacement field's image). Measured with the header check's
#: ``working_bytes_per_value`` of 24: 31 B per value peak (96³–160³ fields via ``regkit apply``).
ITK_BYTES_PER_VALUE = 16
#: fixed parameters read to find a grid size (3D: 18; a 4D time-varying field: 28)
MAX_FIXED_PARAMETERS = 64
#: transforms in one file (an ITK composite of more is not a registration result)
MAX_TRANSFORMS = 10_000
#: largest text transform file read (a field as text takes ~10 bytes a value)
MAX_TEXT_BYTES = 1 << 30
#: largest binary MATLAB v4 transform file read (ANTs' affine is ~200 bytes)
MAX_MATLAB_BYTES = 16 * 2**20
#: ITK transforms whose fixed parameters give an image grid that ITK allocates
_GRID_KINDS = ("DisplacementField", "VelocityField", "BSpline", "Diffeomorphic")


@dataclass(frozen=True)
class DeclaredTransform:
    """One transform as a file declares it, before any parameter is read."""

    kind: str  #: ITK's class name, e.g. ``DisplacementFieldTransform_double_3_3``
    parameters: int  #: number of parameter values stored
    fixed: Tuple[float, ...] = ()  #: the fixed parameters (empty when there are too many to read)

    def dimension(self) -> int:
        """Spatial dimension from ITK's name (``..._double_3_3`` or ``..._double_3``), else 3."""
        m = re.search(r"_(\d)(?:_\d)?$", self.kind)
        return int(m.group(1)) if m else 3

    def grid(self) -> Optional[Tuple[float, ...]]:
        """Size (voxels per axis) of the image ITK allocates for a field or B-spline kind, from
        its fixed parameters (size, origin, spacing, direction); None for other kinds or a
        fixed-parameter count ITK itself refuses."""
        if not any(k in self.kind for k in _GRID_KINDS):
            return None
        axes = self.dimension() + 1 if "TimeVarying" in self.kind else self.dimension()
        if len(self.fixed) != axes * (axes + 3):
            return None
        return self.fixed[:axes]

    def grid_values(self, path: Path) -> int:
        """Values of the field (a vector a voxel) ITK allocates from the fixed parameters; 0 when none."""
        size = self.grid()
        if size is None:
            return 0
        if not all(math.isfinite(s) and s >= 0 for s in size):
            raise InputError(f"declares a {self.kind} on a grid of size {' x '.join(f'{s:g}' for s in size)}; "
                             "sizes are whole numbers of voxels", path)
        return self.dimension() * math.prod(int(s) for s in size)


def declared_transforms(path: Path) -> Optional[Tuple[List[DeclaredTransform], int]]:
    """The transforms ``path`` declares and the bytes its reader needs besides their values
    (HDF5 chunk buffers, strings, fixed parameters); None for a format not recognised here."""
    with path.open("rb") as f:
        head = f.read(64)
    if head.startswith(b"#Insight Transform File"):
        return _text_transforms(path), 0
    import h5py

    if head.startswith(b"\x89HDF\r\n\x1a\n") or h5py.is_hdf5(str(path)):
        return _hdf5_transforms(path)
    if not path.name.lower().endswith(".mat") or head.startswith(b"MATLAB") or all(32 <= b < 127 or b in b"\t\r\n" for b in head[:20]):
        return None  # MATLAB 5 (its own header), text (FSL's .mat) or no format of ITK's
    return _matlab_transforms(path), 0


def check_transform_size(path: Path, working_bytes_per_value: int) -> None:
    """Refuse (exit 3, the file named) an ITK transform file that declares more than fits in
    memory, from its headers alone. ``working_bytes_per_value``: what regkit keeps per field value
    on top of ITK's own (its float64 copies); an exit 2 for a damaged header."""
    from regkit.resources import READ_OVERHEAD_BYTES, check_memory

    declared = declared_transforms(path)
    if declared is None:
        return
    transforms, extra = declared
    need, largest, largest_bytes = READ_OVERHEAD_BYTES + extra, None, -1
    for t in transforms:
        grid = t.grid_values(path)
        n = max(t.parameters, grid) * ITK_BYTES_PER_VALUE + grid * working_bytes_per_value
        need += n
        if n > largest_bytes:
            largest, largest_bytes = t, n
    if largest is None:
        return
    size = largest.grid()
    what = (f"a {largest.kind} on a {'x'.join(str(int(s)) for s in size)} grid" if size and largest.grid_values(path)
            else f"a {largest.kind} of {largest.parameters:,} parameters")
    check_memory(need, f"reading it ({what})", hint="a coarser field, or more memory", path=path)


# ------------------------------------------------------------------------------------- HDF5
def _hdf5_transforms(path: Path) -> Optional[Tuple[List[DeclaredTransform], int]]:
    """ITK's HDF5 layout: ``/TransformGroup/0``, ``/1``, ... each with ``TransformType`` (a
    string), ``TransformFixedParameters`` and ``TransformParameters``; shapes from the headers,
    only the type and the few fixed parameters read. Chunk buffers count: HDF5 decompresses a
    whole chunk to read any value of it."""
    import h5py

    try:
        f = h5py.File(str(path), "r")
    except (OSError, ValueError):
        return None  # not HDF5 after all, or damaged: ITK's reader says so
    with f:
        try:
            group = f.get("TransformGroup")
            if not isinstance(group, h5py.Group):
                return None
            if len(group) > MAX_TRANSFORMS:
                raise InputError(f"holds {len(group):,} transforms; at most {MAX_TRANSFORMS:,} are read", path)
            transforms, extra = [], 0
            for i in range(len(group)):  # ITK opens the members by index
                member = group.get(str(i))
                if not isinstance(member, h5py.Group):
                    return None
                kind = _hdf5_string(member.get("TransformType"))
                params, fixed = member.get("TransformParameters"), member.get("TransformFixedParameters")
                extra += _dataset_bytes(params, whole=False) + _dataset_bytes(fixed, whole=True)
                extra += _dataset_bytes(member.get("TransformType"), whole=True)
                if kind is None:
                    return None
                transforms.append(DeclaredTransform(kind, _size(params), _hdf5_fixed(fixed)))
        except (OSError, ValueError, KeyError, TypeError, RuntimeError):
            return None  # a damaged header: ITK's reader says so
    return transforms, extra


def _size(dataset) -> int:
    """Values a dataset declares (0 for none or an empty dataspace), from its header."""
    import h5py

    if not isinstance(dataset, h5py.Dataset) or dataset.shape is None:
        return 0
    return math.prod(int(s) for s in dataset.shape)


def _chunk_bytes(dataset) -> int:
    return math.prod(int(c) for c in dataset.chunks) * dataset.dtype.itemsize if dataset.chunks else 0


def _dataset_bytes(dataset, whole: bool) -> int:
    """Bytes of reading ``dataset`` on top of its values (its chunk buffer), and with ``whole``
    its values too (at least 8 bytes each: ITK converts numbers to double)."""
    import h5py

    if not isinstance(dataset, h5py.Dataset):
        return 0
    return _chunk_bytes(dataset) + (_size(dataset) * max(8, dataset.dtype.itemsize) if whole else 0)


def _small(dataset, max_values: int) -> bool:
    """True when reading ``dataset`` whole is cheap: few values, small items, small chunks."""
    import h5py

    return (isinstance(dataset, h5py.Dataset) and _size(dataset) <= max_values and dataset.dtype.itemsize <= 4096
            and _chunk_bytes(dataset) <= 2**20)


def _hdf5_string(dataset) -> Optional[str]:
    """The first string of a small string dataset (ITK's ``TransformType``), else None."""
    if not _small(dataset, 4) or _size(dataset) == 0:
        return None
    value = np.asarray(dataset[()]).ravel()[0]
    return (value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)).strip("\0 ")


def _hdf5_fixed(dataset) -> Tuple[float, ...]:
    if not _small(dataset, MAX_FIXED_PARAMETERS) or dataset.dtype.kind not in "iuf":
        return ()
    return tuple(float(v) for v in np.asarray(dataset[()], dtype=np.float64).ravel())


# ------------------------------------------------------------------------------------- text
_TOKEN = re.compile(rb"\S+")


def _text_transforms(path: Path) -> List[DeclaredTransform]:
    """``Transform:``, ``Parameters:`` and ``FixedParameters:`` lines of an ITK text file;
    parameters counted, not parsed."""
    size = path.stat().st_size
    if size > MAX_TEXT_BYTES:
        raise InputError(f"is {size:,} bytes; an ITK text transform larger than {MAX_TEXT_BYTES:,} bytes is refused", path)
    transforms: List[DeclaredTransform] = []
    kind, parameters, fixed = None, 0, ()
    with path.open("rb") as f:
        for line in f:
            key, _, rest = line.partition(b":")
            key = key.strip()
            if key == b"Transform":
                if kind is not None:
                    transforms.append(DeclaredTransform(kind, parameters, fixed))
                kind, parameters, fixed = rest.strip().decode("ascii", "replace"), 0, ()
            elif key == b"Parameters":
                parameters = sum(1 for _ in _TOKEN.finditer(rest))
            elif key == b"FixedParameters":
                fixed = _numbers(rest.split(maxsplit=MAX_FIXED_PARAMETERS))
    if kind is not None:
        transforms.append(DeclaredTransform(kind, parameters, fixed))
    return transforms


def _numbers(tokens: List[bytes]) -> Tuple[float, ...]:
    """``tokens`` as floats; empty when there are too many or one is not a number (ITK refuses)."""
    if len(tokens) > MAX_FIXED_PARAMETERS:
        return ()
    try:
        return tuple(float(t) for t in tokens)
    except ValueError:
        return ()


# ------------------------------------------------------------------------------- MATLAB v4
#: numpy type of a MATLAB v4 variable's values, by the precision digit P of its type MOPT
_MAT4_TYPES = {0: "f8", 1: "f4", 2: "i4", 3: "i2", 4: "u2", 5: "u1"}


def _matlab_transforms(path: Path) -> List[DeclaredTransform]:
    """ITK's MATLAB v4 layout: a variable named by the transform's class holding its parameters,
    then one named ``fixed``. Refuses variable headers that declare more data than the file
    holds (a 4 KiB file declaring 200 million values took 1.9 GB and 15 s in ITK)."""
    transforms: List[DeclaredTransform] = []
    for name, count, values in _matlab_variables(path):
        if name == "fixed" and transforms:
            transforms[-1] = DeclaredTransform(transforms[-1].kind, transforms[-1].parameters, values)
        else:
            transforms.append(DeclaredTransform(name, count))
    return transforms


def _matlab_variables(path: Path) -> List[Tuple[str, int, Tuple[float, ...]]]:
    """``(name, number of values, values)`` of each variable of a binary MATLAB v4 file; the
    values only when there are at most :data:`MAX_FIXED_PARAMETERS` (else empty)."""
    size = path.stat().st_size
    if size > MAX_MATLAB_BYTES:
        raise InputError(f"is {size:,} bytes; a MATLAB transform file larger than {MAX_MATLAB_BYTES:,} bytes is refused", path)
    data = path.read_bytes()
    out: List[Tuple[str, int, Tuple[float, ...]]] = []
    pos = 0
    while pos < size:
        if size - pos < 20:
            raise InputError(f"is damaged: {size - pos} stray bytes after its last MATLAB variable", path)
        for order in "<>":
            mopt, rows, cols, imagf, namlen = struct.unpack(order + "5i", data[pos:pos + 20])
            if 0 <= mopt < 5000 and mopt // 100 % 10 == 0:
                break
        else:
            raise InputError("is not a MATLAB v4 transform file (an unknown variable type)", path)
        kind = _MAT4_TYPES.get(mopt // 10 % 10)
        if kind is None or rows < 0 or cols < 0 or imagf not in (0, 1) or not 0 < namlen <= 4096:
            raise InputError("is not a MATLAB v4 transform file (a variable header is damaged)", path)
        dtype, start, count = np.dtype(order + kind), pos + 20 + namlen, rows * cols
        pos = start + count * dtype.itemsize * (1 + imagf)
        if pos > size:
            raise InputError(f"is damaged or truncated: a MATLAB variable declares {rows}x{cols} values, more than "
                             f"the file's {size:,} bytes hold", path)
        name = data[start - namlen:start].split(b"\0", 1)[0].decode("ascii", "replace")
        values = tuple(float(v) for v in np.frombuffer(data, dtype, count, start)) if count <= MAX_FIXED_PARAMETERS else ()
        out.append((name, count, values))
    return out
