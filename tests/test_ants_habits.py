"""What a user of antsApplyTransforms / antspyx expects from `regkit apply`: ANTs' `[file,1]`
per-transform inversion, ANTs' interpolator names, GenericLabel, float32 label maps. Checked
against antspyx's own apply_transforms on an antspyx SyN result of the sample pair."""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from regkit.cli.main import app

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
runner = CliRunner()


def _run(*args):
    return runner.invoke(app, ["apply", *[str(a) for a in args]])


@pytest.fixture(scope="module")
def ants_syn(tmp_path_factory):
    """antspyx SyN of the sample pair (moving -> fixed), short schedule (~7 s on 2 busy cores)."""
    ants = pytest.importorskip("ants")
    out = tmp_path_factory.mktemp("ants_syn")
    fixed, moving = ants.image_read(str(SAMPLE / "fixed.nii.gz")), ants.image_read(str(SAMPLE / "moving.nii.gz"))
    reg = ants.registration(fixed, moving, type_of_transform="SyN", outprefix=str(out / "reg"), reg_iterations=(40, 20, 0),
                            aff_iterations=(100, 50, 0, 0), random_seed=1, verbose=False)
    affine, inverse_warp = reg["invtransforms"]
    assert affine.endswith("reg0GenericAffine.mat") and inverse_warp.endswith("reg1InverseWarp.nii.gz")
    return ants, out, affine, inverse_warp


@pytest.mark.parametrize("ours, theirs", [("NearestNeighbor", "nearestNeighbor"), ("GenericLabel", "genericLabel")])
def test_ants_inverse_list_with_flags_equals_antspyx(ants_syn, tmp_path, ours, theirs):
    """ANTs' own inverse list `[reg0GenericAffine.mat,1] reg1InverseWarp.nii.gz` on the fixed labels
    gives antspyx apply_transforms(whichtoinvert=[True, False]) (measured: 100 % identical)."""
    ants, _, affine, inverse_warp = ants_syn
    r = _run(f"[{affine},1]", inverse_warp, SAMPLE / "fixed_labels.nii.gz", "-r", SAMPLE / "moving.nii.gz",
             "-o", tmp_path / "ours.nii.gz", "--interp", ours)
    assert r.exit_code == 0, r.output
    expected = ants.apply_transforms(ants.image_read(str(SAMPLE / "moving.nii.gz")), ants.image_read(str(SAMPLE / "fixed_labels.nii.gz")),
                                      transformlist=[affine, inverse_warp], whichtoinvert=[True, False], interpolator=theirs).numpy()
    got = np.asarray(nib.load(str(tmp_path / "ours.nii.gz")).dataobj)
    assert got.dtype == np.int16  # the labels file's own type
    assert len(np.unique(expected)) > 3 and (got == expected).mean() >= 0.999


def test_ants_inverse_list_without_flag_warns(ants_syn, tmp_path):
    """The same list with the flag forgotten runs (it is a valid chain) but says what is wrong."""
    _, _, affine, inverse_warp = ants_syn
    r = _run(affine, inverse_warp, SAMPLE / "fixed_labels.nii.gz", "-r", SAMPLE / "moving.nii.gz", "-o", tmp_path / "o.nii.gz")
    assert r.exit_code == 0, r.output
    assert f"[{affine},1]" in r.output and "warning" in r.output


def test_flag_zero_and_bad_brackets(ants_syn, tmp_path):
    _, _, affine, _ = ants_syn
    r = _run(f"[{affine}, 0]", SAMPLE / "fixed_labels.nii.gz", "-r", SAMPLE / "fixed.nii.gz", "-o", tmp_path / "a.nii.gz")
    assert r.exit_code == 0, r.output
    r = _run(f"[{affine},2]", SAMPLE / "fixed_labels.nii.gz", "-r", SAMPLE / "fixed.nii.gz", "-o", tmp_path / "b.nii.gz")
    assert r.exit_code == 2 and "[FILE,1]" in r.output and not (tmp_path / "b.nii.gz").exists()


@pytest.mark.parametrize("name, ok", [("linear", True), ("Linear", True), ("nearest", True), ("NearestNeighbor", True),
                                      ("GenericLabel", True), ("genericLabel[Linear]", True), ("MultiLabel", True),
                                      ("BSpline", False), ("cubic", False)])
def test_interpolator_names(name, ok):
    from regkit.cli.apply import interpolator
    from regkit.errors import InputError

    if ok:
        assert interpolator(name) in ("linear", "nearest", "label")
    else:
        with pytest.raises(InputError, match="Linear"):
            interpolator(name)


def test_generic_label_is_smoother_than_nearest_and_keeps_label_set():
    """A 2-voxel-per-step staircase boundary shifted by half a voxel: per-label linear equals
    nearest where one label dominates and never invents a label."""
    import torch

    from regkit.image import Image
    from regkit.resample import resample
    from regkit.transforms import AffineTransform

    data = torch.zeros(1, 12, 12, 12, dtype=torch.int32)
    data[0, 3:9, 3:9, 3:9] = 5
    data[0, 5:7, 5:7, 5:7] = 9
    image = Image(data, np.diag([2.0, 2.0, 2.0, 1.0]), is_label=True)
    shift = AffineTransform(torch.eye(3), torch.tensor([0.6, 0.0, 0.0]))
    lab = resample(image, shift, image, mode="label").data
    nn = resample(image, shift, image, mode="nearest").data
    assert set(torch.unique(lab).tolist()) == {0, 5, 9}
    assert (lab == nn).float().mean() > 0.97
    # outside the moving grid: 0
    far = AffineTransform(torch.eye(3), torch.tensor([500.0, 0.0, 0.0]))
    assert int(resample(image, far, image, mode="label").data.abs().max()) == 0


def test_float32_label_map_detected(tmp_path):
    """A label map saved as float32 (as many tools do) is detected and resampled as labels."""
    img = nib.load(str(SAMPLE / "moving_labels.nii.gz"))
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj).astype(np.float32), img.affine), str(tmp_path / "labels_f32.nii.gz"))
    ident = tmp_path / "identity.mat"
    import SimpleITK as sitk

    sitk.WriteTransform(sitk.AffineTransform(3), str(ident))
    r = _run(ident, tmp_path / "labels_f32.nii.gz", "-r", SAMPLE / "fixed.nii.gz", "-o", tmp_path / "out.nii.gz")
    assert r.exit_code == 0, r.output
    assert "label map" in r.output and "nearest" in r.output
    out = np.asarray(nib.load(str(tmp_path / "out.nii.gz")).dataobj)
    assert set(np.unique(out)) <= set(np.unique(np.asarray(img.dataobj)))  # no blended values
    # a float image with fractions stays an image (linear)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj).astype(np.float32) + 0.25, img.affine), str(tmp_path / "frac.nii.gz"))
    r = _run(ident, tmp_path / "frac.nii.gz", "-r", SAMPLE / "fixed.nii.gz", "-o", tmp_path / "frac_out.nii.gz")
    assert r.exit_code == 0 and "label map" not in r.output
    # GenericLabel asked for on an intensity image: refused, naming the file, nothing written
    r = _run(ident, SAMPLE / "moving.nii.gz", "-r", SAMPLE / "fixed.nii.gz", "-o", tmp_path / "gl.nii.gz", "--interp", "GenericLabel")
    assert r.exit_code == 2 and "moving.nii.gz" in r.output and not (tmp_path / "gl.nii.gz").exists()
