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


def gzip_bomb(path: Path, shape=(1024, 1024, 256), dtype=np.float32, vector: bool = False) -> Path:
    """A NIfTI of zeros whose gzip is ~1 MiB or less but unpacks to ``shape`` (1 GiB of float32 by
    default): one compressed 16 MiB member of zeros, repeated (gzip readers join members).
    ``vector``: an ITK/ANTs displacement field (X×Y×Z×1×3, vector intent)."""
    full = tuple(shape) + ((1, 3) if vector else ())
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(dtype)
    hdr.set_data_shape(full)
    hdr.set_sform(AFFINE, code=1)
    hdr.set_qform(AFFINE, code=1)
    hdr["vox_offset"] = 352
    if vector:
        hdr.set_intent(1007)
    total = 352 + int(np.prod(full)) * np.dtype(dtype).itemsize
    chunk = 16 * 2**20
    zeros = gzip.compress(b"\0" * chunk, compresslevel=9, mtime=0)
    with path.open("wb") as f:
        f.write(gzip.compress(hdr.binaryblock + b"\0" * 4, mtime=0))
        done = 352
        while done + chunk <= total:
            f.write(zeros)
            done += chunk
        if total > done:
            f.write(gzip.compress(b"\0" * (total - done), mtime=0))
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
    Case("qform_negative_pixdim", "qform only, with a negative pixdim (ITK flips the axis, nibabel does not)",
         lambda d: write_raw_nifti(d / "negative_pixdim.nii.gz", _volume(), sform_code=0, pixdim=[1, -2, 2, 2, 1, 1, 1, 1]),
         r"read differently by ITK/ANTs", fix="make the pixdim positive (and flip the axis in the qform if meant); or set REGKIT_NIFTI_AFFINE"),
    Case("gzip_bomb", "a small .nii.gz that unpacks to 1 GiB (REGKIT_MEMORY_LIMIT=512M)", lambda d: gzip_bomb(d / "bomb.nii.gz"),
         r"needs about .* of memory", code=3, env={"REGKIT_MEMORY_LIMIT": "512M"},
         fix="downsample or crop the image, or run where more memory is free"),
    Case("over_memory", "declared size beyond the memory budget (REGKIT_MEMORY_LIMIT=24M)",
         lambda d: _nifti(d / "huge.nii.gz", np.zeros((128, 128, 128), np.float32)),
         r"needs about .* of memory", code=3, env={"REGKIT_MEMORY_LIMIT": "24M"},
         fix="downsample or crop the image, or run where more memory is free"),
    Case("constant", "constant (all-zero) image (register)", lambda d: _nifti(d / "all_zero.nii.gz", np.zeros(SHAPE, np.float32)),
         r"is constant", role="intensity", fix="nothing to align; check the file"),
    Case("complex", "complex-valued voxels (e.g. raw MRI)", lambda d: _nifti(d / "complex.nii.gz", (_volume() * 1j).astype(np.complex64)),
         r"complex voxels", fix="save the magnitude image (or the real/imaginary part you mean) first"),
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


# ------------------------------------------------------------ cases that need a whole command
def identity_transform(folder: Path) -> Path:
    """regkit's own transform file holding the identity."""
    from regkit.io.transform_files import write_transform
    from regkit.transforms import AffineTransform

    path = folder / "identity.regkit.safetensors"
    if not path.exists():
        write_transform(AffineTransform(), path)
    return path


def train_recipe(folder: Path, moving: Path, fixed: Path, **extra) -> Path:
    """A tiny training recipe (the cascade tests' model) on one pair, both directions."""
    import yaml

    from cascade_helpers import TINY_MODEL

    manifest = folder / "pairs.csv"
    manifest.write_text(f"moving,fixed\n{moving},{fixed}\n{fixed},{moving}\n")
    recipe = {"model": TINY_MODEL, "data": {"manifest": str(manifest)}, "augment": {"enabled": False},
              "optim": {"steps": 2}, "val_every": 1000, "checkpoint_every": 1000, "log_every": 1}
    recipe.update(extra)
    path = folder / "train.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def other_model_checkpoint(folder: Path) -> Path:
    """A genuine cascade checkpoint, but of a model with one stage fewer than the tiny recipe's."""
    from cascade_helpers import TINY_MODEL

    from regkit.nn.cascade import CascadeNet
    from regkit.nn.checkpoint import model_tensors, write_checkpoint
    from regkit.nn.config import ModelConfig

    config = ModelConfig.model_validate(dict(TINY_MODEL, stages=TINY_MODEL["stages"][:1]))
    meta = {"model_config": config.model_dump(mode="json"), "step": 1}
    return write_checkpoint(folder / "other_model.safetensors", model_tensors(CascadeNet(config)), meta)


@dataclass
class Run:
    """A command line that must fail: ``named`` must appear in the message, ``outputs`` stay empty."""

    args: List[str]
    named: Path
    env: Dict[str, str] = field(default_factory=dict)
    marker: Optional[Path] = None  # must not exist afterwards (code in a pickle did not run)


@dataclass
class CommandCase:
    name: str
    title: str
    command: str
    build: Callable[[Path, Path], Run]  # (inputs folder, outputs folder) -> Run
    expect: str
    code: int = 2
    fix: str = ""
    requires_option: Optional[str] = None  # the case waits until the command has this option

    def available(self) -> bool:
        """Whether the command (and the option the case needs) exists yet."""
        from typer.testing import CliRunner

        from regkit.cli.main import app

        result = CliRunner().invoke(app, [self.command, "--help"], terminal_width=200)
        text = result.output
        return result.exit_code == 0 and "not implemented yet" not in text and (
            self.requires_option is None or self.requires_option in text)


def _grid_mismatch(d: Path, out: Path) -> Run:
    other = AFFINE.copy()
    other[0, 0] = 3.0
    warped = _nifti(d / "warped_labels.nii.gz", (_volume() > 50).astype(np.int16), other)
    return Run(["evaluate", "--fixed-labels", str(good_labels(d)), "--warped-labels", str(warped), "--json", str(out / "scores.json")], warped)


def _no_overlap(d: Path, out: Path) -> Run:
    far = AFFINE.copy()
    far[:3, 3] += 1000.0  # one metre away, and the config starts from the identity
    moving = _nifti(d / "far_away.nii.gz", _volume(1), far)
    config = _write(d / "no_init.yaml", "affine:\n  init: none\n")
    return Run(["register", str(moving), str(good_image(d)), "--out", str(out / "result"), "--config", str(config), "--no-progress"], moving)


def _register_memory(d: Path, out: Path) -> Run:
    fixed = good_image(d, "fixed.nii.gz")
    return Run(["register", str(good_image(d)), str(fixed), "--out", str(out / "result"), "--config", "fast", "--no-progress"],
               fixed, env={"REGKIT_MEMORY_LIMIT": "32M"})


def _apply_memory(d: Path, out: Path) -> Run:
    # cheap to read (uint8: ~21 MiB) but ~74 MiB to resample onto
    reference = _nifti(d / "reference_96cubed.nii.gz", np.zeros((96, 96, 96), np.uint8))
    return Run(["apply", str(identity_transform(d)), str(good_image(d)), "-r", str(reference), "-o", str(out / "warped.nii.gz")],
               reference, env={"REGKIT_MEMORY_LIMIT": "32M"})


def _config_key_register(d: Path, out: Path) -> Run:
    config = _write(d / "mine.yaml", "metirc: lncc\n")
    return Run(["register", str(good_image(d)), str(good_image(d, "b.nii.gz", 2)), "--out", str(out / "result"),
                "--config", str(config)], config)


def _config_key_train(d: Path, out: Path) -> Run:
    config = train_recipe(d, good_image(d), good_image(d, "b.nii.gz", 2), optim={"stpes": 2})
    return Run(["train", "--config", str(config), "--out", str(out / "run"), "--no-progress"], config)


def _pickled_transform(d: Path, out: Path) -> Run:
    marker = d / "code_ran"
    bomb = _pickle_checkpoint(d / "transform.regkit.safetensors", marker)
    return Run(["apply", str(bomb), str(good_image(d)), "-r", str(good_image(d)), "-o", str(out / "warped.nii.gz")], bomb, marker=marker)


def _singular_affine(d: Path, out: Path) -> Run:
    import SimpleITK as sitk

    flat = sitk.AffineTransform(3)
    flat.SetMatrix((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0))  # squashes z: no inverse
    path = d / "flat.mat"
    sitk.WriteTransform(flat, str(path))
    return Run(["invert", str(path), "-o", str(out / "inverse.mat")], path)


def _output_suffix(d: Path, out: Path) -> Run:
    target = out / "warped.png"
    return Run(["apply", str(identity_transform(d)), str(good_image(d)), "-r", str(good_image(d)), "-o", str(target)], target)


def _pickled_checkpoint(d: Path, out: Path) -> Run:
    marker = d / "code_ran"
    bomb = _pickle_checkpoint(d / "last.safetensors", marker)
    recipe = train_recipe(d, good_image(d), good_image(d, "b.nii.gz", 2))
    return Run(["train", "--config", str(recipe), "--out", str(out / "run"), "--resume", str(bomb), "--no-progress"], bomb, marker=marker)


def _other_model(d: Path, out: Path) -> Run:
    ckpt = other_model_checkpoint(d)
    recipe = train_recipe(d, good_image(d), good_image(d, "b.nii.gz", 2))
    return Run(["train", "--config", str(recipe), "--out", str(out / "run"), "--resume", str(ckpt), "--no-progress"], ckpt)


def _pickled_model(d: Path, out: Path) -> Run:
    marker = d / "code_ran"
    bomb = _pickle_checkpoint(d / "best.safetensors", marker)
    return Run(["register", str(good_image(d)), str(good_image(d, "b.nii.gz", 2)), "--model", str(bomb),
                "--out", str(out / "result"), "--no-progress"], bomb, marker=marker)


def _unknown_model(d: Path, out: Path) -> Run:
    return Run(["register", str(good_image(d)), str(good_image(d, "b.nii.gz", 2)), "--model", "brian",
                "--out", str(out / "result"), "--no-progress"], Path("brian"))


def _unsafe_yaml(d: Path, out: Path) -> Run:
    marker = d / "code_ran"
    config = _write(d / "evil.yaml", f"seed: !!python/object/apply:os.system ['touch {marker}']\n")
    return Run(["train", "--config", str(config), "--out", str(out / "run"), "--no-progress"], config, marker=marker)


# ------------------------------------------------- regkit's own transform files, crafted (issue 21)
def native_transform(path: Path, chain, tensors: Dict[str, object], **metadata: str) -> Path:
    """A ``.regkit.safetensors`` file written field by field, so its metadata and tensors can
    hold what ``write_transform`` never writes (``chain``: a list, or raw JSON text)."""
    import json

    import torch
    from safetensors.torch import save_file

    meta = {"format": "regkit-transform", "version": "1", "direction": "fixed_to_moving", "world": "RAS_mm",
            "chain": chain if isinstance(chain, str) else json.dumps(chain)}
    meta.update(metadata)
    save_file({k: torch.as_tensor(v) for k, v in tensors.items()}, str(path), metadata=meta)
    return path


def _grid() -> list:
    return AFFINE.tolist()


def _velocity(steps) -> Callable[[Path], Path]:
    import torch

    return lambda d: native_transform(d / "velocity.regkit.safetensors", [{"type": "velocity", "grid_affine": _grid(), "steps": steps}],
                                      {"0.velocity": torch.zeros(3, 8, 8, 8)})


def _affine_file(name: str, matrix, translation=(0.0, 0.0, 0.0), **metadata) -> Callable[[Path], Path]:
    import torch

    return lambda d: native_transform(d / name, [{"type": "affine"}], {
        "0.matrix": torch.tensor(matrix, dtype=torch.float64), "0.translation": torch.tensor(translation, dtype=torch.float64),
        "0.center": torch.zeros(3, dtype=torch.float64)}, **metadata)


def _displacement_file(name: str, fill: float = 0.0, grid=None) -> Callable[[Path], Path]:
    import torch

    def make(d: Path) -> Path:
        u = torch.zeros(3, 8, 8, 8)
        u[0, 2, 3, 4] = fill
        return native_transform(d / name, [{"type": "displacement", "grid_affine": grid if grid is not None else _grid()}],
                                {"0.displacement": u})
    return make


def _nested_chain(d: Path) -> Path:
    return native_transform(d / "nested.regkit.safetensors", "[" * 100_000 + "]" * 100_000, {"0.x": np.zeros(1, np.float32)})


def _applying(make: Callable[[Path], Path]) -> Callable[[Path, Path], Run]:
    """``regkit apply BAD good.nii.gz -r good.nii.gz -o out/warped.nii.gz``."""
    def build(d: Path, out: Path) -> Run:
        bad = make(d)
        return Run(["apply", str(bad), str(good_image(d)), "-r", str(good_image(d)), "-o", str(out / "warped.nii.gz")], bad)
    return build


def _inverting(make: Callable[[Path], Path], suffix: str = ".mat") -> Callable[[Path, Path], Run]:
    def build(d: Path, out: Path) -> Run:
        bad = make(d)
        return Run(["invert", str(bad), "-o", str(out / f"inverse{suffix}")], bad)
    return build


def _exporting(make: Callable[[Path], Path]) -> Callable[[Path, Path], Run]:
    def build(d: Path, out: Path) -> Run:
        bad = make(d)
        return Run(["export", str(bad), "-r", str(good_image(d)), "-f", "ants", "-o", str(out / "exported")], bad)
    return build


def _field_bomb(d: Path, out: Path) -> Run:
    bomb = gzip_bomb(d / "bomb1Warp.nii.gz", shape=(512, 512, 512), vector=True)
    return Run(["apply", str(bomb), str(good_image(d)), "-r", str(good_image(d)), "-o", str(out / "warped.nii.gz")],
               bomb, env={"REGKIT_MEMORY_LIMIT": "2G"})


def _moving_bomb(d: Path, out: Path) -> Run:
    bomb = gzip_bomb(d / "bomb.nii.gz")
    return Run(["apply", str(identity_transform(d)), str(bomb), "-r", str(good_image(d)), "-o", str(out / "warped.nii.gz")],
               bomb, env={"REGKIT_MEMORY_LIMIT": "2G"})


def matlab_bomb(path: Path) -> Path:
    """A 4 KiB MATLAB v4 .mat (ANTs' affine format) whose header declares 200 million doubles."""
    import struct

    name = b"AffineTransform_double_3_3\0"
    return _write(path, struct.pack("<5i", 0, 200_000_000, 1, 0, len(name)) + name + b"\0" * 4000)


def _matlab_bomb(d: Path, out: Path) -> Run:
    bomb = matlab_bomb(d / "bomb0GenericAffine.mat")
    return Run(["apply", str(bomb), str(good_image(d)), "-r", str(good_image(d)), "-o", str(out / "warped.nii.gz")], bomb)


def itk_field_bomb(path: Path, shape=(512, 512, 320)) -> Path:
    """An ITK displacement-field transform of a few KiB that declares a field of ``shape``
    (3 float64 values a voxel; 2 GiB by default). ``.h5``: a gzip-compressed, chunked dataset
    whose chunks were never written (HDF5 reads them as zeros), fixed parameters to match;
    ``.tfm`` / ``.mat``: 24 parameters, but fixed parameters giving the grid size (ITK allocates
    that field before it compares the parameter count)."""
    import struct

    import SimpleITK as sitk

    sitk.WriteTransform(sitk.DisplacementFieldTransform(sitk.Image([2, 2, 2], sitk.sitkVectorFloat64, 3)), str(path))
    if path.suffix == ".h5":
        import h5py

        n = int(np.prod(shape)) * 3
        with h5py.File(path, "r+") as f:
            group = f["TransformGroup/0"]
            fixed = group["TransformFixedParameters"][()]
            fixed[:3] = shape
            group["TransformFixedParameters"][...] = fixed
            del group["TransformParameters"]
            group.create_dataset("TransformParameters", shape=(n,), dtype=np.float64, chunks=(min(n, 2**20),),
                                 compression="gzip", fillvalue=0.0)
    elif path.suffix == ".mat":  # the variable "fixed": 18 float64 values after its name
        data = bytearray(path.read_bytes())
        at = data.index(b"fixed\0") + len(b"fixed\0")
        data[at:at + 24] = struct.pack("<3d", *shape)
        path.write_bytes(bytes(data))
    else:
        text = path.read_text()
        path.write_text(re.sub(r"FixedParameters: 2 2 2", "FixedParameters: " + " ".join(map(str, shape)), text))
    return path


def _itk_field_bomb(suffix: str) -> Callable[[Path, Path], Run]:
    def build(d: Path, out: Path) -> Run:
        bomb = itk_field_bomb(d / f"bomb{suffix}")
        return Run(["apply", str(bomb), str(good_image(d)), "-r", str(good_image(d)), "-o", str(out / "warped.nii.gz")],
                   bomb, env={"REGKIT_MEMORY_LIMIT": "2G"})
    return build


def _random_labels(d: Path, out: Path) -> Run:
    values = np.random.default_rng(0).integers(1, 10**6, (32, 32, 32)).astype(np.int32)
    labels = _nifti(d / "random_labels.nii.gz", values, np.eye(4))
    return Run(["evaluate", "--fixed-labels", str(labels), "--warped-labels", str(labels), "--json", str(out / "scores.json")], labels)


def _qc_random_labels(d: Path, out: Path) -> Run:
    values = np.random.default_rng(0).integers(1, 10**6, (32, 32, 32)).astype(np.int32)
    labels = _nifti(d / "random_labels.nii.gz", values, np.eye(4))
    image = _nifti(d / "image.nii.gz", values.astype(np.float32), np.eye(4))
    return Run(["qc", "--fixed", str(image), "--moving", str(image), "-t", str(identity_transform(d)), "-o", str(out / "qc"),
                "--labels", str(labels), "--moving-labels", str(labels)], labels)


def _complex_field(d: Path, out: Path) -> Run:
    field = np.zeros(SHAPE + (1, 3), np.complex64)
    field[..., 0] = 1 + 1j
    img = nib.Nifti1Image(field, AFFINE)
    img.header.set_intent(1007)
    path = d / "complex1Warp.nii.gz"
    nib.save(img, str(path))
    return Run(["apply", str(path), str(good_image(d)), "-r", str(good_image(d)), "-o", str(out / "warped.nii.gz")], path)


def _garbage_h5(d: Path, out: Path) -> Run:
    path = _write(d / "garbage.h5", b"\x89HDF\r\n\x1a\n" + np.random.default_rng(0).bytes(4000))
    return Run(["apply", str(path), str(good_image(d)), "-r", str(good_image(d)), "-o", str(out / "warped.nii.gz")], path)


def _non_utf8_config(d: Path, out: Path) -> Run:
    config = _write(d / "latin1.yaml", "# réglages\nmetric: lncc\n".encode("latin-1"))
    return Run(["register", str(good_image(d)), str(good_image(d, "b.nii.gz", 2)), "--out", str(out / "result"),
                "--config", str(config), "--no-progress"], config)


def _huge_spacing_config(d: Path, out: Path) -> Run:
    config = _write(d / "huge_spacing.yaml", "affine:\n  levels:\n    - {spacing_mm: 1.0e+308, iterations: 3}\n")
    return Run(["register", str(good_image(d)), str(good_image(d, "b.nii.gz", 2)), "--out", str(out / "result"),
                "--config", str(config), "--no-progress"], config)


def _deep_yaml_config(d: Path, out: Path) -> Run:
    config = _write(d / "deep.yaml", "affine: " + "[" * 100_000 + "]" * 100_000 + "\n")
    return Run(["register", str(good_image(d)), str(good_image(d, "b.nii.gz", 2)), "--out", str(out / "result"),
                "--config", str(config), "--no-progress"], config)


def _deep_yaml_recipe(d: Path, out: Path) -> Run:
    recipe = _write(d / "deep_recipe.yaml", "data: " + "[" * 100_000 + "]" * 100_000 + "\n")
    return Run(["train", "--config", str(recipe), "--out", str(out / "run"), "--no-progress"], recipe)


def _manifest(name: str, content) -> Callable[[Path, Path], Run]:
    def build(d: Path, out: Path) -> Run:
        good_image(d, "a.nii.gz")
        good_image(d, "b.nii.gz", 2)
        manifest = _write(d / name, content)
        return Run(["register", "--pairs", str(manifest), "--out", str(out / "cohort"), "--config", "fast"], manifest)
    return build


def _non_utf8_points(d: Path, out: Path) -> Run:
    points = _write(d / "points.csv", "nom,x,y,z\nsérie,1,2,3\n".encode("latin-1"))
    return Run(["apply", str(identity_transform(d)), "--points", str(points), "--points-out", str(out / "mapped.csv")], points)


def _checkpoint_with(name: str, **metadata) -> Callable[[Path, Path], Run]:
    """``train --resume`` a genuine checkpoint whose metadata holds ``metadata`` (raw JSON text)."""
    def build(d: Path, out: Path) -> Run:
        from safetensors import safe_open
        from safetensors.torch import save_file

        genuine = other_model_checkpoint(d)
        with safe_open(str(genuine), framework="pt") as f:
            raw, tensors = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}
        raw.update(metadata)
        bad = d / name
        save_file(tensors, str(bad), metadata=raw)
        recipe = train_recipe(d, good_image(d), good_image(d, "b.nii.gz", 2))
        return Run(["train", "--config", str(recipe), "--out", str(out / "run"), "--resume", str(bad), "--no-progress"], bad)
    return build


_FIX_NATIVE = "regkit writes these files itself; the file is damaged or was not written by regkit: write it again"
NATIVE_CASES: List[CommandCase] = [
    CommandCase("velocity_steps_huge", "velocity transform metadata: steps 1e30 (2**steps work)", "apply", _applying(_velocity(1e30)),
                r"steps must be", fix=_FIX_NATIVE),
    CommandCase("velocity_steps_overflow", "velocity transform metadata: steps 1000000", "apply", _applying(_velocity(1_000_000)),
                r"steps must be from 0 to 30", fix=_FIX_NATIVE),
    CommandCase("velocity_steps_negative", "velocity transform metadata: steps -5", "apply", _applying(_velocity(-5)),
                r"steps must be from 0 to 30", fix=_FIX_NATIVE),
    CommandCase("native_version_text", "transform format version 'abc'", "apply",
                _applying(_affine_file("version.regkit.safetensors", np.eye(3), version="abc")),
                r"transform format version must be a whole number", fix=_FIX_NATIVE),
    CommandCase("native_matrix_2x2", "a 2x2 affine matrix", "apply", _applying(_affine_file("matrix2x2.regkit.safetensors", np.eye(2), (0.0, 0.0))),
                r"matrix has shape \(2, 2\)", fix=_FIX_NATIVE),
    CommandCase("native_batched", "a batch of 2 affine matrices", "apply",
                _applying(_affine_file("batched.regkit.safetensors", np.stack([np.eye(3)] * 2), np.zeros((2, 3)))),
                r"matrix has shape \(2, 3, 3\)", fix=_FIX_NATIVE),
    CommandCase("native_singular_grid", "a displacement field on a singular grid affine", "apply",
                _applying(_displacement_file("singular_grid.regkit.safetensors", grid=np.diag([0.0, 2.0, 2.0, 1.0]).tolist())),
                r"grid_affine is singular", fix=_FIX_NATIVE),
    CommandCase("native_nested_chain", "a transform chain nested 100,000 deep", "apply", _applying(_nested_chain),
                r"nested deeper than", fix=_FIX_NATIVE),
    CommandCase("native_nan_displacement", "NaN in a displacement field (apply)", "apply",
                _applying(_displacement_file("nan_field.regkit.safetensors", float("nan"))), r"NaN/Inf", fix=_FIX_NATIVE),
    CommandCase("native_nan_matrix", "NaN in an affine matrix (invert)", "invert",
                _inverting(_affine_file("nan_matrix.regkit.safetensors", [[1.0, 0.0, 0.0], [0.0, float("nan"), 0.0], [0.0, 0.0, 1.0]])),
                r"NaN/Inf", fix=_FIX_NATIVE),
    CommandCase("native_inf_translation", "Inf in an affine translation (export)", "export",
                _exporting(_affine_file("inf_translation.regkit.safetensors", np.eye(3), (float("inf"), 0.0, 0.0))),
                r"NaN/Inf", fix=_FIX_NATIVE),
]

FILE_CASES: List[CommandCase] = [
    CommandCase("moving_gzip_bomb", "apply: a 1 MiB moving .nii.gz that unpacks to 1 GiB (REGKIT_MEMORY_LIMIT=2G)", "apply",
                _moving_bomb, r"needs about .* of memory", code=3, fix="downsample or crop the image, or run where more memory is free"),
    CommandCase("field_gzip_bomb", "a 1.5 MiB displacement field that unpacks to 512³×3 (REGKIT_MEMORY_LIMIT=2G)", "apply",
                _field_bomb, r"needs about .* of memory", code=3, fix="a coarser field, or more memory"),
    CommandCase("matlab_bomb", "a 4 KiB ANTs .mat whose header declares 200 million values (1.9 GB in ITK)", "apply",
                _matlab_bomb, r"declares 200000000x1 values, more than", fix="copy the file again; check it opens in ITK/ANTs"),
    CommandCase("h5_field_bomb", "an 8 KiB ITK .h5 displacement field whose compressed dataset declares 512x512x320x3 "
                "float64 (REGKIT_MEMORY_LIMIT=2G)", "apply", _itk_field_bomb(".h5"), r"512x512x320 grid\) needs about .* of memory",
                code=3, fix="a coarser field, or more memory"),
    CommandCase("tfm_field_bomb", "a 1 KiB ITK .tfm whose fixed parameters declare a 512x512x320 field "
                "(REGKIT_MEMORY_LIMIT=2G)", "apply", _itk_field_bomb(".tfm"), r"512x512x320 grid\) needs about .* of memory",
                code=3, fix="a coarser field, or more memory"),
    CommandCase("mat_field_bomb", "a 1 KiB ITK .mat whose fixed parameters declare a 512x512x320 field "
                "(REGKIT_MEMORY_LIMIT=2G)", "apply", _itk_field_bomb(".mat"), r"512x512x320 grid\) needs about .* of memory",
                code=3, fix="a coarser field, or more memory"),
    CommandCase("random_labels", "a 'label map' of 32,000 random values (a Dice and an HD95 each: hours)", "evaluate",
                _random_labels, r"distinct label values; at most 5000", fix="pass the label map, not an intensity image"),
    CommandCase("qc_random_labels", "qc --moving-labels: a 'label map' of 32,000 random values (a Dice each)", "qc",
                _qc_random_labels, r"distinct label values; at most 5000", fix="pass the label map, not an intensity image"),
    CommandCase("complex_field", "a complex-valued displacement field", "apply", _complex_field,
                r"complex64 values", fix="displacements are real vectors: save the real part"),
    CommandCase("garbage_h5", "an .h5 transform of garbage after the HDF5 signature", "apply", _garbage_h5,
                r"cannot be read as an ITK transform", fix="copy the file again; check it opens in ITK/ANTs"),
    CommandCase("non_utf8_config", "a config saved as Latin-1 (not UTF-8)", "register", _non_utf8_config,
                r"is not UTF-8 text", fix="save the file as UTF-8"),
    CommandCase("deep_yaml_config", "a config nested 100,000 deep", "register", _deep_yaml_config,
                r"nested deeper than", fix="configs are flat settings: see configs/default.yaml"),
    CommandCase("deep_yaml_recipe", "a training recipe nested 100,000 deep", "train", _deep_yaml_recipe,
                r"nested deeper than", fix="recipes are plain settings: see configs/train_*.yaml"),
    CommandCase("huge_spacing", "spacing_mm: 1.0e+308 in a config", "register", _huge_spacing_config,
                r"spacing_mm", fix="give a voxel size in mm (at most 1e5)"),
    CommandCase("non_utf8_manifest", "a manifest saved as Latin-1 (not UTF-8)", "register",
                _manifest("pairs.csv", "moving,fixed\na.nii.gz,b.nii.gz # série\n".encode("latin-1")),
                r"is not UTF-8 text", fix="save the manifest as UTF-8"),
    CommandCase("deep_manifest", "a JSON manifest nested 100,000 deep", "register",
                _manifest("pairs.json", "[" * 100_000 + "]" * 100_000), r"nested deeper than", fix="a manifest is a list of {moving, fixed} objects"),
    CommandCase("non_utf8_points", "a points CSV saved as Latin-1 (not UTF-8)", "apply", _non_utf8_points,
                r"is not UTF-8 text", fix="save the CSV as UTF-8 (Excel: CSV UTF-8)"),
    CommandCase("checkpoint_step_text", "a checkpoint whose step is \"abc\"", "train", _checkpoint_with("step_text.safetensors", step='"abc"'),
                r"checkpoint step must be", fix="the checkpoint's metadata is damaged: resume from another one"),
    CommandCase("checkpoint_step_nan", "a checkpoint whose step is NaN", "train", _checkpoint_with("step_nan.safetensors", step="NaN"),
                r"checkpoint step must be", fix="the checkpoint's metadata is damaged: resume from another one"),
    CommandCase("checkpoint_step_list", "a checkpoint whose step is [1, 2]", "train", _checkpoint_with("step_list.safetensors", step="[1, 2]"),
                r"checkpoint step must be", fix="the checkpoint's metadata is damaged: resume from another one"),
    CommandCase("checkpoint_deep_json", "checkpoint metadata nested 100,000 deep", "train",
                _checkpoint_with("deep.safetensors", extra="[" * 100_000 + "]" * 100_000),
                r"nested deeper than", fix="the checkpoint's metadata is damaged: resume from another one"),
]


COMMAND_CASES: List[CommandCase] = [
    CommandCase("grid_mismatch", "warped labels not on the fixed labels' grid", "evaluate", _grid_mismatch,
                r"is not on the grid of", fix="resample them onto the fixed grid: regkit apply ... --interp nearest"),
    CommandCase("no_overlap", "no overlap in world space after initialisation", "register", _no_overlap,
                r"falls inside the moving image", code=4,
                fix="check both files are in world space (scanner coordinates); use affine.init center_of_mass"),
    CommandCase("register_memory", "registration beyond the memory budget (REGKIT_MEMORY_LIMIT=32M)", "register", _register_memory,
                r"needs about .* of memory", code=3, fix="--config fast, a larger finest spacing_mm, or more memory"),
    CommandCase("apply_memory", "resampled output beyond the memory budget (REGKIT_MEMORY_LIMIT=32M)", "apply", _apply_memory,
                r"needs about .* of memory", code=3, fix="a coarser reference grid, or more memory"),
    CommandCase("config_key_register", "mistyped key in a register config", "register", _config_key_register,
                r"metirc", fix="fix the key; `regkit register --help` lists the presets, configs/*.yaml the keys"),
    CommandCase("config_key_train", "mistyped key in a training recipe", "train", _config_key_train,
                r"optim\.stpes", fix="fix the key (see configs/train_*.yaml)"),
    CommandCase("unsafe_yaml", "YAML with a Python object tag", "train", _unsafe_yaml,
                r"YAML", fix="remove the tag: recipes are plain data"),
    CommandCase("pickled_transform", "a pickle (torch.save) named .regkit.safetensors", "apply", _pickled_transform,
                r"cannot be read as a regkit transform file", fix="only safetensors transforms are read; pickles are never unpickled"),
    CommandCase("singular_affine", "an affine file whose matrix has no inverse", "invert", _singular_affine,
                r"singular affine", fix="check the file: its 3×3 matrix has determinant 0"),
    CommandCase("output_suffix", "an output image name regkit cannot write (.png)", "apply", _output_suffix,
                r"unsupported image format", fix="name the output .nii.gz, .nii, .mgz, .mgh, .mha, .mhd, .nrrd or .nhdr"),
    CommandCase("pickled_checkpoint", "a pickled checkpoint (torch.save)", "train", _pickled_checkpoint,
                r"pickle", fix="only regkit's safetensors checkpoints are read; pickles are never unpickled"),
    CommandCase("other_model", "a checkpoint of another model", "train", _other_model,
                r"different model config", fix="resume with the recipe it was trained with"),
    CommandCase("pickled_model", "a pickled model for learned registration", "register", _pickled_model,
                r"pickle", fix="only regkit's safetensors checkpoints are read; pickles are never unpickled",
                requires_option="--model"),
    CommandCase("unknown_model", "--model names no file and no shipped model", "register", _unknown_model,
                r"neither a checkpoint file nor a shipped model", fix="give a checkpoint path, or a name that 'regkit models' lists",
                requires_option="--model"),
    *NATIVE_CASES,
    *FILE_CASES,
]


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


COMMANDS_START = "<!-- command table: generated by `python tests/bad_input_corpus.py`; do not edit by hand -->"
COMMANDS_END = "<!-- end of command table -->"
DOC = ROOT / "docs" / "troubleshooting.md"


def run_command_case(case: CommandCase, folder: Path):
    """Run ``case`` through the CLI in-process; returns (Run, exit code, stderr, files left in outputs)."""
    from typer.testing import CliRunner

    from regkit.cli.main import app

    inputs, outputs = folder / "in", folder / "out"
    inputs.mkdir()
    outputs.mkdir()
    run = case.build(inputs, outputs)
    result = CliRunner().invoke(app, run.args, env=run.env or None)
    left = sorted(p for p in outputs.rglob("*") if p.is_file())
    return run, result.exit_code, result.stderr, left


def command_row(case: CommandCase, code: int, stderr: str, folder: Path) -> str:
    """The docs row for what a command case really did (paths shortened to file names)."""
    errors = [line for line in stderr.splitlines() if line.startswith("regkit: error: ")]
    if code == 0 or not errors:
        observed = "(accepted: not refused yet)"
    else:
        observed = "`" + errors[-1][len("regkit: error: "):].replace(str(folder / "in") + "/", "").replace(str(folder / "out") + "/", "") + "`"
    return f"| {case.title} | `regkit {case.command}` | {code} | {observed} | {case.fix} |"


def command_table(folder: Path) -> str:
    rows = ["| input | command | exit | message (`regkit: error: ...`) | what to do |", "|---|---|---|---|---|"]
    for case in COMMAND_CASES:
        if not case.available():
            continue
        sub = folder / case.name
        sub.mkdir()
        _, code, stderr, _ = run_command_case(case, sub)
        rows.append(command_row(case, code, stderr, sub))
    return "\n".join(rows)


def _replace_between(text: str, start: str, end: str, body: str) -> str:
    return re.sub(re.escape(start) + ".*?" + re.escape(end), lambda m: f"{start}\n{body}\n{end}", text, flags=re.S)


def rewrite_docs(doc: Path = DOC) -> bool:
    """Regenerate both tables in ``doc`` from real runs; True if the file changed."""
    import tempfile

    text = doc.read_text()
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "reader").mkdir()
        (Path(d) / "commands").mkdir()
        new = _replace_between(text, TABLE_START, TABLE_END, corpus_table(Path(d) / "reader"))
        new = _replace_between(new, COMMANDS_START, COMMANDS_END, command_table(Path(d) / "commands"))
    if new != text:
        doc.write_text(new)
    return new != text


if __name__ == "__main__":
    print("docs/troubleshooting.md " + ("updated" if rewrite_docs() else "already current"), file=sys.stderr)
