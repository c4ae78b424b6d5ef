"""Values read from files, checked before they are used: one place for the rules.

Everything regkit reads from a file a user hands it — transform-file and checkpoint metadata,
manifests, point CSVs, configs — goes through these helpers, which turn what would otherwise be
an ``OverflowError``, ``RecursionError``, ``UnicodeDecodeError``, a hang or a silently shifted
row into an :class:`~regkit.errors.InputError` (exit code 2) naming the file:

* text: UTF-8, a byte-order mark dropped (Excel's "CSV UTF-8"), other encodings refused with
  the offset of the first bad byte; at most :data:`MAX_TEXT_BYTES`;
* JSON and YAML: parsed with a nesting limit (:data:`MAX_JSON_DEPTH`), YAML as plain data only;
* numbers: finite, of the right kind (``True`` is not a number, ``"5"`` is not an integer) and
  within a range that bounds the work they cause;
* tensors and grid affines: finite, the expected shape, invertible.
"""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import List, Optional, Sequence, Union

from regkit.errors import InputError

PathLike = Union[str, Path]

#: deepest nesting of lists/objects accepted in JSON metadata (regkit's own reach 4)
MAX_JSON_DEPTH = 32
#: largest text file read whole (configs, manifests, point CSVs)
MAX_TEXT_BYTES = 256 * 2**20


def read_text(path: PathLike, what: str = "file", max_bytes: int = MAX_TEXT_BYTES) -> str:
    """The UTF-8 text of ``path`` (a leading byte-order mark removed); the file is noted as an
    input of the running command. InputError for a missing, unreadable, too large or non-UTF-8
    file."""
    from regkit.io.atomic import note_input

    p = Path(path)
    if p.is_dir():
        raise InputError(f"is a folder, expected a {what}", p)
    try:
        size = p.stat().st_size
        if size > max_bytes:
            raise InputError(f"is {size:,} bytes; a {what} larger than {max_bytes:,} bytes is refused", p)
        data = p.read_bytes()
    except FileNotFoundError:
        raise InputError(f"no such {what}", p) from None
    except PermissionError:
        raise InputError("is not readable (permission denied)", p) from None
    except OSError as e:
        raise InputError(f"cannot be read ({e.strerror or e})", p) from None
    note_input(p)
    return decode_text(data, p, what)


def decode_text(data: bytes, path: Optional[PathLike], what: str = "file") -> str:
    """``data`` as UTF-8 text (a byte-order mark dropped), or an InputError saying where it is not."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise InputError(f"is not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); "
                         f"save the {what} as UTF-8", path) from None


def csv_rows(path: PathLike, what: str = "CSV file") -> List[List[str]]:
    """The non-blank, non-comment (``#``) rows of a CSV file, cells as read (not stripped).
    Both the reader of a points CSV and the writer that copies its other columns use this, so
    a header is recognised (or not) the same way by both."""
    p = Path(path)
    text = read_text(p, what)
    try:
        return [r for r in csv.reader(io.StringIO(text, newline=""))
                if r and any(c.strip() for c in r) and not r[0].lstrip().startswith("#")]
    except csv.Error as e:
        raise InputError(f"is not a valid {what} ({e})", p) from None


def parse_json(text: Union[str, bytes], path: Optional[PathLike], what: str = "JSON") -> object:
    """JSON with nesting at most :data:`MAX_JSON_DEPTH` (bare NaN/Infinity read as floats:
    :func:`number` and :func:`integer` refuse them where a value is used)."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise InputError(f"{what} is nested deeper than {MAX_JSON_DEPTH} levels", path) from None
    except (ValueError, TypeError) as e:  # JSONDecodeError, UnicodeDecodeError are ValueErrors
        raise InputError(f"{what} is not valid JSON ({str(e)[:120]})", path) from None
    if json_depth(value) > MAX_JSON_DEPTH:
        raise InputError(f"{what} is nested deeper than {MAX_JSON_DEPTH} levels", path)
    return value


def parse_yaml(text: str, path: Optional[PathLike], what: str = "YAML") -> object:
    """Plain-data YAML (``yaml.safe_load``: no Python objects) with nesting at most
    :data:`MAX_JSON_DEPTH`; a syntax error is an InputError with YAML's first line."""
    import yaml

    try:
        value = yaml.safe_load(text)
    except RecursionError:
        raise InputError(f"{what} is nested deeper than {MAX_JSON_DEPTH} levels", path) from None
    except yaml.YAMLError as e:
        raise InputError(f"is not valid YAML ({str(e).splitlines()[0]})", path) from None
    if json_depth(value) > MAX_JSON_DEPTH:
        raise InputError(f"{what} is nested deeper than {MAX_JSON_DEPTH} levels", path)
    return value


def json_depth(value: object) -> int:
    """Nesting depth of lists/dicts in ``value`` (0 for a scalar), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        children = v.values() if isinstance(v, dict) else v if isinstance(v, list) else None
        if children is None:
            continue
        deepest = max(deepest, d)
        if d <= MAX_JSON_DEPTH:  # no need to look deeper than the limit
            stack.extend((c, d + 1) for c in children)
    return deepest


def integer(value: object, name: str, path: Optional[PathLike], lo: int, hi: int) -> int:
    """``value`` as an int within ``[lo, hi]``: an int, or an integral float / digit string
    (as JSON and YAML may carry them); never a bool, NaN or Inf."""
    v = value
    if isinstance(v, str) and v.strip().lstrip("+-").isdigit() and len(v) < 40:
        v = int(v.strip())
    if isinstance(v, float) and math.isfinite(v) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int):
        raise InputError(f"{name} must be a whole number from {lo} to {hi}, got {_show(value)}", path)
    if not lo <= v <= hi:
        raise InputError(f"{name} must be from {lo} to {hi}, got {_show(value)}", path)
    return v


def number(value: object, name: str, path: Optional[PathLike], lo: float = -math.inf, hi: float = math.inf) -> float:
    """``value`` as a finite float within ``[lo, hi]`` (never a bool or a string)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{name} must be a number, got {_show(value)}", path)
    v = float(value)
    if not math.isfinite(v) or not lo <= v <= hi:
        raise InputError(f"{name} must be a finite number from {lo:g} to {hi:g}, got {_show(value)}", path)
    return v


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


#: largest magnitude of a coordinate, length or matrix entry read from a file (mm): 1 km.
#: Beyond it float32 arithmetic on world points overflows into Inf/NaN results.
MAX_ABS_VALUE = 1e6


def finite_tensor(tensor, name: str, path: Optional[PathLike], shapes: Sequence[Optional[Sequence[Optional[int]]]] = (),
                  max_abs: float = MAX_ABS_VALUE):
    """``tensor`` (a torch tensor) when it holds real floating-point, finite values of at most
    ``max_abs`` in magnitude and, if ``shapes`` are given, matches one of them (``None`` entries
    match any size)."""
    import torch

    if not torch.is_tensor(tensor):
        raise InputError(f"{name} is not a tensor", path)
    if not tensor.is_floating_point():
        raise InputError(f"{name} holds {str(tensor.dtype).replace('torch.', '')} values; expected floating point", path)
    if shapes and not any(len(s) == tensor.dim() and all(a is None or a == b for a, b in zip(s, tensor.shape)) for s in shapes):
        expected = " or ".join("(" + ", ".join("N" if a is None else str(a) for a in s) + ")" for s in shapes)
        raise InputError(f"{name} has shape {tuple(tensor.shape)}; expected {expected}", path)
    if tensor.numel() == 0:
        raise InputError(f"{name} is empty (shape {tuple(tensor.shape)})", path)
    if not bool(torch.isfinite(tensor).all()):
        raise InputError(f"{name} holds NaN/Inf values", path)
    largest = float(tensor.abs().max())
    if largest > max_abs:
        raise InputError(f"{name} holds a value of {largest:.3g}; values beyond {max_abs:g} (mm) are refused", path)
    return tensor


def grid_affine(value: object, name: str, path: Optional[PathLike]):
    """A 4×4 voxel→world matrix (float64 tensor) from nested lists: finite, last row 0 0 0 1,
    invertible (a singular grid has no voxel coordinates to sample)."""
    import torch

    if not (isinstance(value, list) and len(value) == 4 and all(isinstance(r, list) and len(r) == 4 for r in value)):
        raise InputError(f"{name} must be a 4x4 matrix (list of 4 rows of 4 numbers)", path)
    rows = [[number(x, name, path, -MAX_ABS_VALUE, MAX_ABS_VALUE) for x in r] for r in value]
    m = torch.tensor(rows, dtype=torch.float64)
    if not torch.equal(m[3], torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64)):
        raise InputError(f"{name}'s last row must be 0 0 0 1, got {m[3].tolist()}", path)
    det = float(torch.linalg.det(m[:3, :3]))
    if not math.isfinite(det) or abs(det) < 1e-9:
        raise InputError(f"{name} is singular (zero voxel size or collinear axes)", path)
    return m
