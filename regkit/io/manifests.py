"""Lists of image pairs: a manifest file, or the subjects of a folder.

A manifest is a CSV with a header (``moving,fixed[,moving_labels,fixed_labels]``) or a JSON list
of objects with those keys (or ``{"pairs": [...]}``); paths are relative to the manifest's folder
and every file is checked when the manifest is read. Training and cohort registration read them alike.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

from regkit.errors import InputError
from regkit.io import validate

KEYS = ("moving", "fixed", "moving_labels", "fixed_labels")
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".mgz", ".mha", ".nrrd")


@dataclass(frozen=True)
class PairPaths:
    moving: Path
    fixed: Path
    moving_labels: Optional[Path] = None
    fixed_labels: Optional[Path] = None

    @property
    def has_labels(self) -> bool:
        return self.moving_labels is not None and self.fixed_labels is not None


def read_manifest(path: Path) -> List[PairPaths]:
    """Pairs from a CSV or JSON manifest; a missing file or column is an :class:`InputError`."""
    p = Path(path)
    if not p.is_file():
        raise InputError("no such manifest", p)
    text = validate.read_text(p, "manifest")  # UTF-8, Excel's byte-order mark dropped
    if p.suffix.lower() == ".json":
        rows = validate.parse_json(text, p, "manifest")
        rows = rows.get("pairs", rows) if isinstance(rows, dict) else rows
        if not isinstance(rows, list):
            raise InputError("JSON manifest must be a list of {moving, fixed, ...} objects", p)
    else:
        try:
            reader = csv.DictReader(io.StringIO(text, newline=""), skipinitialspace=True)
            rows = [{(k.strip() if isinstance(k, str) else k): v for k, v in row.items()} for row in reader]
        except csv.Error as e:
            raise InputError(f"is not a valid CSV manifest ({e})", p) from None
    if not rows:
        raise InputError("manifest lists no pairs", p)
    pairs = []
    for n, row in enumerate(rows, start=1):
        if not isinstance(row, dict) or not row.get("moving") or not row.get("fixed"):
            found = f" (found: {', '.join(map(str, row))})" if isinstance(row, dict) else ""
            hint = "; is the file comma-separated?" if isinstance(row, dict) and any(";" in str(k) for k in row) else ""
            raise InputError(f"pair {n} needs 'moving' and 'fixed' entries{found}{hint}", p)
        if None in row:  # csv.DictReader files fields beyond the header under None: they would be dropped
            raise InputError(f"pair {n} has more fields than the header names ({', '.join(row[None])}); "
                             f"name every column in the header (moving,fixed,moving_labels,fixed_labels)", p)
        unknown = set(k for k in row if k) - set(KEYS)
        if unknown:
            raise InputError(f"pair {n} has unknown column(s) {sorted(unknown)}; expected {list(KEYS)}", p)
        files = {}
        for key in KEYS:
            value = row.get(key)
            if value and not isinstance(value, str):
                raise InputError(f"pair {n}: {key} must be a file path, not {type(value).__name__} {value!r}", p)
            if value:
                f = Path(value) if Path(value).is_absolute() else p.parent / value
                if not f.is_file():
                    raise InputError(f"pair {n}: {key} file {f} does not exist", p)
                files[key] = f
        pairs.append(PairPaths(**files))
    return pairs


def _strip_suffix(name: str) -> Tuple[str, str]:
    for s in IMAGE_SUFFIXES:
        if name.endswith(s):
            return name[: -len(s)], s
    return name, ""


def subjects_in_folder(folder: Path, label_suffix: str = "_labels") -> List[Tuple[Path, Optional[Path]]]:
    """``(image, labels or None)`` for every image in ``folder`` (sorted by name); files whose
    stem ends with ``label_suffix`` are the labels of the image without it."""
    d = Path(folder)
    if not d.is_dir():
        raise InputError("no such subjects folder", d)
    files = {f.name: f for f in d.iterdir() if _strip_suffix(f.name)[1]}
    out = []
    for name in sorted(files):
        stem, suffix = _strip_suffix(name)
        if stem.endswith(label_suffix):
            continue
        out.append((files[name], files.get(stem + label_suffix + suffix)))
    if len(out) < 2:
        raise InputError(f"needs at least 2 subject images, found {len(out)}", d)
    return out


def all_ordered_pairs(subjects: List[Tuple[Path, Optional[Path]]]) -> List[PairPaths]:
    """Every (moving, fixed) pair of different subjects; the sampler draws them in random order."""
    return [PairPaths(m, f, ml, fl) for i, (m, ml) in enumerate(subjects) for j, (f, fl) in enumerate(subjects) if i != j]
