"""Fuzzing the image reader: random byte mutations of a valid small NIfTI must give either a
loaded image or a clean :class:`RegkitError` (InputError / ResourceError) — never another
exception, a hang or a crash of the interpreter.

A seeded loop (reproducible in CI; a failing case prints its seed): each case overwrites a few bytes,
mostly in the header fields the parser interprets, and may then insert, delete or cut bytes. Run uncompressed (the header is parsed as written) and gzip-compressed.
"""
from __future__ import annotations

import gzip
import random

import nibabel as nib
import numpy as np
import pytest

from regkit.errors import RegkitError
from regkit.io.images import load_image, load_label

N_CASES = 300
# the header's fields that describe the data (dim, datatype, pixdim, vox_offset, scaling,
# qform/sform): mutating sizeof_hdr or the magic only ever tests "not a NIfTI"
FIELD_BYTES = (40, 328)


def _valid_nifti_bytes() -> bytes:
    affine = np.array([[0.0, 0.0, -2.5, 40.0], [-2.0, 0.0, 0.0, 30.0], [0.0, 3.0, 0.0, -10.0], [0.0, 0.0, 0.0, 1.0]])
    data = np.arange(6 * 5 * 4, dtype=np.int16).reshape(6, 5, 4)
    img = nib.Nifti1Image(data, affine)
    img.header.set_slope_inter(0.5, 1.0)
    return img.to_bytes()


def _mutate(blob: bytes, rng: random.Random) -> bytes:
    """Overwrite bytes (mostly in the header fields), then maybe insert, delete or cut bytes."""
    b = bytearray(blob)
    for _ in range(rng.randint(1, 4)):
        pos = rng.randrange(*FIELD_BYTES) if rng.random() < 0.7 else rng.randrange(len(b))
        kind = rng.choice(("flip", "byte", "int"))
        if kind == "flip":
            b[pos] ^= 1 << rng.randrange(8)
        elif kind == "byte":
            b[pos] = rng.randrange(256)
        else:  # an extreme 16/32-bit value where dims, datatype, offsets or codes live
            b[pos:pos + 4] = rng.choice((b"\xff\xff\xff\x7f", b"\x00\x00\x00\x80", b"\xff\xff\xff\xff", b"\x00\x00\x00\x00"))
    shape_change = rng.choice((None, None, "insert", "delete", "truncate"))
    pos = rng.randrange(len(b) + 1)
    if shape_change == "insert":
        b[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
    elif shape_change == "delete":
        del b[pos:pos + rng.randint(1, 8)]
    elif shape_change == "truncate":
        del b[pos:]
    return bytes(b)


def _load_or_clean_error(path) -> str:
    try:
        img = load_image(path)
    except RegkitError as e:
        msg = str(e)
        assert "\n" not in msg and path.name in msg, msg
        return "error"
    assert img.data.dim() == 4 and img.data.dtype.is_floating_point
    assert bool(np.isfinite(img.numpy()).all())
    try:
        load_label(path)
    except RegkitError as e:
        assert path.name in str(e)
    return "loaded"


def _count_outcome(path, seed: int, outcomes: dict) -> None:
    """Load one mutated file, count how it ended, and fail with the seed on any unclean error."""
    try:
        outcomes[_load_or_clean_error(path)] += 1
    except AssertionError:
        raise
    except Exception as e:  # pragma: no cover - the failure report
        pytest.fail(f"seed {seed} ({path.name}): {type(e).__name__}: {e}")
    path.unlink()


@pytest.mark.parametrize("compressed", [False, True], ids=["nii", "nii.gz"])
def test_mutated_nifti_gives_image_or_clean_error(tmp_path, compressed):
    valid = _valid_nifti_bytes()
    outcomes = {"loaded": 0, "error": 0}
    for seed in range(N_CASES // 2):
        rng = random.Random(seed * 2 + int(compressed))
        blob = _mutate(valid, rng)
        path = tmp_path / f"case{seed}.nii{'.gz' if compressed else ''}"
        path.write_bytes(gzip.compress(blob, mtime=0) if compressed else blob)
        _count_outcome(path, seed, outcomes)
    # the mutations really reach both outcomes (a fuzzer that only ever errors tests nothing)
    assert outcomes["loaded"] > 10 and outcomes["error"] > 10, outcomes


def test_unmutated_file_loads_with_its_geometry(tmp_path):
    path = tmp_path / "valid.nii"
    path.write_bytes(_valid_nifti_bytes())
    img = load_image(path)
    assert img.shape == (6, 5, 4)
    assert float(img.data[0, 1, 0, 0]) == pytest.approx(4 * 5 * 0.5 + 1.0)  # slope 0.5, inter 1
    assert img.spacing == pytest.approx((2.0, 3.0, 2.5))


def _mutate_text_header(blob: bytes, header_end: int, rng: random.Random) -> bytes:
    """Change a few characters of a MetaImage's text header (digits, signs, separators mostly)."""
    b = bytearray(blob)
    for _ in range(rng.randint(1, 3)):
        pos = rng.randrange(header_end) if rng.random() < 0.8 else rng.randrange(len(b))
        b[pos] = rng.choice(b"0123456789-. \ne9") if rng.random() < 0.7 else rng.randrange(256)
    return bytes(b)


def test_mutated_metaimage_gives_image_or_clean_error(tmp_path):
    """The SimpleITK path (.mha): 100 header mutations, same rule as for NIfTI."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6))
    image.SetSpacing([1.5, 2.0, 2.5])
    valid_path = tmp_path / "valid.mha"
    sitk.WriteImage(image, str(valid_path))
    valid = valid_path.read_bytes()
    header_end = valid.index(b"ElementDataFile = LOCAL\n") + len(b"ElementDataFile = LOCAL\n")
    outcomes = {"loaded": 0, "error": 0}
    for seed in range(100):
        path = tmp_path / f"case{seed}.mha"
        path.write_bytes(_mutate_text_header(valid, header_end, random.Random(seed)))
        _count_outcome(path, seed, outcomes)
    assert outcomes["loaded"] > 10 and outcomes["error"] > 10, outcomes
