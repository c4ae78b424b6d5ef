"""The bad-input corpus: every kind of broken input regkit must refuse with one clear line.

Each :class:`Case` writes its bad file into a folder (generated, no binary blobs in the repo)
and says what the error must contain and which exit code it must give. ``tests/test_bad_inputs.py``
runs the cases through the CLI commands that read them; ``python tests/bad_input_corpus.py``
rewrites the table in ``docs/troubleshooting.md`` from the messages the reader really gives.

``role`` says where a case is bad:
* ``"image"`` — as any image input (intensity image or label map),
* ``"intensity"`` — as an intensity image only (a constant label map is fine),
* ``"label"`` — as a label map only (a float image is a fine intensity image).
"""
from __future__ import annotations

import gzip
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])
AFFINE[:3, 3] = (-16.0, -18.0, -14.0)
SHAPE = (16, 18, 14)


def _volume(seed: int = 0) -> np.ndarray:
    """A smooth blob with some contrast (so a good image is registrable)."""
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, s) for s in SHAPE], indexing="ij")
    rng = np.random.default_rng(seed)
    return (np.exp(-(x ** 2 + 1.5 * y ** 2 + z ** 2) * 3) * 100 + rng.normal(0, 1, SHAPE)).astype(np.float32)


def write_raw_nifti(path: Path, data: np.ndarray, **header_fields) -> Path:
    """Write a single-file NIfTI-1 byte by byte, so header fields can hold what nibabel would
    refuse to write (zero dims, NaN affines, codes of 0). ``.gz`` suffix: gzip-compressed."""
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(data.dtype)
    hdr.set_data_shape(data.shape)
    hdr.set_sform(AFFINE, code=1)
    hdr.set_qform(AFFINE, code=1)
    hdr["vox_offset"] = 352
    for key, value in header_fields.items():
        hdr[key] = value
    blob = hdr.binaryblock + b"\0" * 4 + np.asarray(data).tobytes(order="F")
    path.write_bytes(gzip.compress(blob, mtime=0) if path.name.endswith(".gz") else blob)
    return path


def _write(path: Path, content) -> Path:
    """Write text or bytes to ``path``; returns the path."""
    if isinstance(content, str):
        path.write_text(content)
    else:
        path.write_bytes(content)
    return path


def _folder(path: Path) -> Path:
    path.mkdir()
    return path


def _nifti(path: Path, data: np.ndarray, affine=AFFINE) -> Path:
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def _png_bytes() -> bytes:
    import SimpleITK as sitk
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        png = Path(d) / "slice.png"
        sitk.WriteImage(sitk.GetImageFromArray(np.arange(64, dtype=np.uint8).reshape(8, 8)), str(png))
        return png.read_bytes()


def _pickle_checkpoint(path: Path, marker: Path) -> Path:
    """A torch.save file whose unpickling would create ``marker`` (so a test can see code ran)."""
    import torch

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"state_dict": {}, "payload": Payload()}, str(path))
    return path


@dataclass
class Case:
    """One bad input: ``make(folder)`` writes it and returns its path."""

    name: str
    title: str
    make: Callable[[Path], Path]
    expect: str  # regular expression the one-line message must match (after the file name)
    code: int = 2
    role: str = "image"
    env: Dict[str, str] = field(default_factory=dict)
    fix: str = ""


def _truncated(folder: Path) -> Path:
    whole = _nifti(folder / "whole.nii.gz", _volume())
    p = folder / "truncated.nii.gz"
    p.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    whole.unlink()
    return p


def _truncated_uncompressed(folder: Path) -> Path:
    p = write_raw_nifti(folder / "truncated.nii", _volume())
    p.write_bytes(p.read_bytes()[:352 + 1000])
    return p


def _nan(folder: Path) -> Path:
    v = _volume()
    v[3, 4, 5] = np.nan
    v[0, 0, 0] = np.inf
    return _nifti(folder / "nan_voxels.nii.gz", v)


def _sform_qform(folder: Path) -> Path:
    flipped = AFFINE.copy()
    flipped[0, 0] = -2.0  # qform says left-right flipped
    img = nib.Nifti1Image(_volume(), AFFINE)
    img.set_sform(AFFINE, code=1)
    img.set_qform(flipped, code=1)
    path = folder / "sform_qform_disagree.nii.gz"
    nib.save(img, str(path))
    return path


IMAGE_CASES: List[Case] = [
    Case("missing", "missing path", lambda d: d / "does_not_exist.nii.gz", r"no such file",
         fix="check the path (relative paths start from the current folder)"),
    Case("directory", "a directory instead of a file", lambda d: _folder(d / "a_folder.nii.gz"),
         r"is a directory", fix="give the image file inside it"),
    Case("empty", "empty file (0 bytes)", lambda d: _write(d / "empty.nii.gz", b""),
         r"is empty", fix="the upload/copy failed; copy the file again"),
    Case("text", "a text file named .nii.gz", lambda d: _write(d / "notes.nii.gz", "patient notes\n"),
         r"not gzip-compressed", fix="not an image; check which file you passed"),
    Case("text_nii", "a text file named .nii", lambda d: _write(d / "notes.nii", "patient notes\n" * 40),
         r"is not an image regkit can read", fix="not an image; check which file you passed"),
    Case("png", "a PNG renamed .nii.gz", lambda d: _write(d / "photo.nii.gz", _png_bytes()),
         r"not gzip-compressed", fix="convert 2D photos/DICOM slices to a 3D NIfTI first (e.g. dcm2niix)"),
    Case("truncated_gz", "truncated .nii.gz (interrupted download)", _truncated,
         r"cannot be read as an image \(Compressed file ended", fix="copy/download the file again"),
    Case("truncated_nii", "truncated .nii", _truncated_uncompressed, r"is truncated: its header declares",
         fix="copy/download the file again"),
    Case("gzip_garbage", "gzip of random bytes", lambda d: _write(d / "garbage.nii.gz", gzip.compress(np.random.default_rng(0).bytes(2000), mtime=0)),
         r"is not an image regkit can read", fix="not an image; check which file you passed"),
    Case("two_d", "a 2D image", lambda d: _nifti(d / "slice_2d.nii.gz", _volume()[:, :, 0]),
         r"is 2D", fix="regkit registers 3D volumes"),
    Case("four_d", "4D with several volumes", lambda d: _nifti(d / "series_4d.nii.gz", np.stack([_volume(i) for i in range(3)], -1)),
         r"has 3 volumes", fix="extract one volume first, e.g. fslroi in.nii.gz out.nii.gz 0 1"),
    Case("nan", "NaN/Inf voxels", _nan, r"NaN/Inf", fix="set them to 0 (e.g. fslmaths in -nan out) or mask them"),
    Case("zero_dim", "a zero-length dimension", lambda d: write_raw_nifti(d / "zero_dim.nii.gz", _volume(), dim=[3, 16, 0, 14, 1, 1, 1, 1]),
         r"zero-length", fix="the header is broken; re-export the image"),
    Case("singular_affine", "singular affine (zero voxel size)",
         lambda d: write_raw_nifti(d / "singular_affine.nii.gz", _volume(), srow_x=[0, 0, 0, 0], qform_code=0),
         r"affine is singular", fix="the header is broken; re-export the image"),
    Case("nonfinite_affine", "non-finite affine (NaN in sform)",
         lambda d: write_raw_nifti(d / "nan_affine.nii.gz", _volume(), srow_x=[np.nan, 0, 0, 0], qform_code=0),
         r"affine has NaN/Inf", fix="the header is broken; re-export the image"),
    Case("sform_qform", "sform and qform disagree", _sform_qform, r"sform and qform disagree",
         fix="fix the header, or set REGKIT_NIFTI_AFFINE=sform (nibabel/FSL) or =qform (ITK) to choose"),
    Case("no_orientation", "neither sform nor qform set",
         lambda d: write_raw_nifti(d / "no_orientation.nii.gz", _volume(), sform_code=0, qform_code=0),
         r"neither sform nor qform", fix="fix the header, or set REGKIT_NIFTI_AFFINE=sform to use voxel sizes only"),
    Case("over_memory", "declared size beyond the memory budget (REGKIT_MEMORY_LIMIT=12M)",
         lambda d: _nifti(d / "huge.nii.gz", np.zeros((128, 128, 128), np.float32)),
         r"needs about .* of memory", code=3, env={"REGKIT_MEMORY_LIMIT": "12M"},
         fix="downsample or crop the image, or run where more memory is free"),
    Case("constant", "constant (all-zero) image (register)", lambda d: _nifti(d / "all_zero.nii.gz", np.zeros(SHAPE, np.float32)),
         r"is constant", role="intensity", fix="nothing to align; check the file"),
    Case("label_float", "label map with non-integer values", lambda d: _nifti(d / "float_labels.nii.gz", _volume()),
         r"non-integer values", role="label", fix="pass the label map, not the intensity image"),
]


def good_image(folder: Path, name: str = "good.nii.gz", seed: int = 0) -> Path:
    return _nifti(folder / name, _volume(seed))


def good_labels(folder: Path, name: str = "good_labels.nii.gz") -> Path:
    return _nifti(folder / name, (_volume() > 50).astype(np.int16))


def reader_message(case: Case, folder: Path) -> Optional[str]:
    """The message ``load_image``/``load_label`` gives for ``case`` (None if it loads)."""
    import os

    from regkit.errors import RegkitError
    from regkit.io.images import load_image

    path = case.make(folder)
    saved = {k: os.environ.get(k) for k in case.env}
    os.environ.update(case.env)
    try:
        image = load_image(path, is_label=case.role == "label")
        if case.role == "intensity":
            from regkit.checks import check_has_contrast

            check_has_contrast(image, path)
        return None
    except RegkitError as e:
        return str(e)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


TABLE_START = "<!-- corpus table: generated by `python tests/bad_input_corpus.py`; do not edit by hand -->"
TABLE_END = "<!-- end of corpus table -->"


def corpus_table(folder: Path) -> str:
    """Markdown table: case, exit code, the reader's message (file name as written), what to do."""
    rows = ["| input | exit | message (`regkit: error: ...`) | what to do |", "|---|---|---|---|"]
    for case in IMAGE_CASES:
        sub = folder / case.name
        sub.mkdir()
        msg = reader_message(case, sub)
        if msg is None:
            raise AssertionError(f"corpus case {case.name} was accepted")
        msg = msg.replace(str(sub) + "/", "")
        rows.append(f"| {case.title} | {case.code} | `{msg}` | {case.fix} |")
    return "\n".join(rows)


def rewrite_docs(doc: Path = ROOT / "docs" / "troubleshooting.md") -> bool:
    """Replace the generated table in ``doc``; True if the file changed."""
    import tempfile

    text = doc.read_text()
    with tempfile.TemporaryDirectory() as d:
        table = corpus_table(Path(d))
    new = re.sub(re.escape(TABLE_START) + ".*?" + re.escape(TABLE_END), lambda m: f"{TABLE_START}\n{table}\n{TABLE_END}",
                 text, flags=re.S)
    if new != text:
        doc.write_text(new)
    return new != text


if __name__ == "__main__":
    print("docs/troubleshooting.md " + ("updated" if rewrite_docs() else "already current"), file=sys.stderr)
