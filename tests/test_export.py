"""Exports for ANTs / ITK / NIfTI / Learn2Reg and the inverse, on the sample pair with a known
smooth transform (affine + SVF): other tools must reproduce regkit's own resampling."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from known_transforms import known_transform
from typer.testing import CliRunner

from regkit import inverse, space
from regkit.export import export_transform, split_affine_and_warp
from regkit.io.images import load_image, load_label
from regkit.io.transform_files import read_transform, write_transform
from regkit.resample import resample
from regkit.transforms import AffineTransform, Compose, to_displacement_field


@pytest.fixture(scope="module")
def pair(sample_paths):
    fixed = load_image(sample_paths["fixed"])
    return {
        "fixed": fixed,
        "moving": load_image(sample_paths["moving"]),
        "moving_labels": load_label(sample_paths["moving_labels"]),
        "fixed_labels": load_label(sample_paths["fixed_labels"]),
        "transform": known_transform(fixed),
    }


@pytest.fixture(scope="module")
def regkit_warped(pair):
    with torch.no_grad():
        image = resample(pair["moving"], pair["transform"], pair["fixed"]).numpy()
        labels = resample(pair["moving_labels"], pair["transform"], pair["fixed"]).numpy()
    return image, labels


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def _labelled_agreement(ours: np.ndarray, theirs: np.ndarray) -> float:
    labelled = (ours > 0) | (theirs > 0)
    return float((ours[labelled] == theirs[labelled]).mean())


def test_ants_export_reproduces_regkit_resampling(pair, regkit_warped, sample_paths, tmp_path):
    ants = pytest.importorskip("ants", reason="antspyx (test extra: pip install regkit[test]) is needed to check the ANTs export")
    mat, warp = export_transform(pair["transform"], pair["fixed"], "ants", tmp_path / "reg_")
    assert mat.name == "reg_0GenericAffine.mat" and warp.name == "reg_1Warp.nii.gz"
    fixed = ants.image_read(str(sample_paths["fixed"]))
    # antsApplyTransforms -t reg_1Warp.nii.gz -t reg_0GenericAffine.mat
    image = ants.apply_transforms(fixed, ants.image_read(str(sample_paths["moving"])), [str(warp), str(mat)], interpolator="linear").numpy()
    labels = ants.apply_transforms(fixed, ants.image_read(str(sample_paths["moving_labels"])), [str(warp), str(mat)],
                                   interpolator="nearestNeighbor").numpy()
    ours_image, ours_labels = regkit_warped
    assert _ncc(ours_image, image) > 0.999
    assert _labelled_agreement(ours_labels, labels) >= 0.999


def test_itk_composite_export_reproduces_regkit_resampling(pair, regkit_warped, sample_paths, tmp_path):
    import SimpleITK as sitk

    (path,) = export_transform(pair["transform"], pair["fixed"], "itk", tmp_path / "reg_")
    tx = sitk.ReadTransform(str(path))
    fixed = sitk.ReadImage(str(sample_paths["fixed"]))
    image = sitk.Resample(sitk.ReadImage(str(sample_paths["moving"]), sitk.sitkFloat32), fixed, tx, sitk.sitkLinear, 0.0)
    labels = sitk.Resample(sitk.ReadImage(str(sample_paths["moving_labels"])), fixed, tx, sitk.sitkNearestNeighbor, 0)
    as_xyz = lambda img: np.transpose(sitk.GetArrayFromImage(img), (2, 1, 0))
    ours_image, ours_labels = regkit_warped
    assert _ncc(ours_image, as_xyz(image)) > 0.999
    assert _labelled_agreement(ours_labels, as_xyz(labels)) >= 0.999


def test_ants_refuses_the_ras_ddf_rather_than_misapplying_it(pair, regkit_warped, sample_paths, tmp_path):
    """antspyx given regkit's RAS field either refuses it or reproduces regkit's warp — never a
    silent identity (a NIfTI-1 X×Y×Z×3 field is taken by ANTs as a zero displacement)."""
    ants = pytest.importorskip("ants", reason="antspyx (test extra: pip install regkit[test]) is needed to check the ANTs export")
    import SimpleITK as sitk

    fixed_image = pair["fixed"]
    ras_only = pair["transform"].transforms[0]  # the SVF part: an export of the field alone
    (ddf,) = export_transform(ras_only, fixed_image, "nifti-ddf", tmp_path / "x_")
    assert ddf.name == "x_ddf_RAS.nii.gz"
    fixed = ants.image_read(str(sample_paths["fixed"]))
    moving = ants.image_read(str(sample_paths["fixed"]))  # fixed resampled by the field: identity is recognisable
    try:
        theirs = ants.apply_transforms(fixed, moving, [str(ddf)], interpolator="linear").numpy()
    except Exception as e:  # refused: fine
        assert "non-zero exit" in str(e) or "ddf" in str(e), e
    else:
        with torch.no_grad():
            ours = resample(fixed_image, ras_only, fixed_image).numpy()
        assert _ncc(ours[0] if ours.ndim == 4 else ours, theirs) > 0.999
    with pytest.raises(RuntimeError):  # SimpleITK (ITK) refuses it too
        sitk.ReadImage(str(ddf))


def _voxel_points(fixed, n: int = 200) -> tuple:
    g = torch.Generator().manual_seed(0)
    ijk = torch.stack([torch.randint(0, s, (n,), generator=g) for s in fixed.shape], dim=-1)
    return ijk, space.voxel_to_world(ijk.double(), fixed.affine)


def test_split_is_exact_at_voxel_centres(pair):
    fixed, t = pair["fixed"], pair["transform"]
    ijk, x = _voxel_points(fixed)
    for chain in (t, Compose(t.transforms[1], t.transforms[0])):  # splittable, and affine-first (identity A)
        a, w = split_affine_and_warp(chain, fixed)
        assert isinstance(a, AffineTransform)
        w_at = w[:, ijk[:, 0], ijk[:, 1], ijk[:, 2]].T
        with torch.no_grad():
            expected = chain(x.float()).double()
            got = a.double()(x + w_at)
        assert torch.allclose(got, expected, atol=1e-3)
    a, w = split_affine_and_warp(t, fixed)
    assert torch.allclose(a.homogeneous(), t.transforms[1].homogeneous())


def test_nifti_ddf_and_learn2reg_conventions(pair, tmp_path):
    import nibabel as nib

    fixed, t = pair["fixed"], pair["transform"]
    (ddf_path,) = export_transform(t, fixed, "nifti-ddf", tmp_path / "x_")
    (l2r_path,) = export_transform(t, fixed, "learn2reg-2021", tmp_path / "x_")
    nii = nib.load(str(ddf_path))
    ddf = np.asarray(nii.dataobj)
    assert ddf.shape == fixed.shape + (3,) and np.allclose(nii.affine, fixed.affine.numpy())
    with np.load(l2r_path, allow_pickle=False) as f:
        disp = f["arr_0"]
    assert disp.shape == (3,) + fixed.shape and disp.dtype == np.float32
    ijk, x = _voxel_points(fixed)
    with torch.no_grad():
        y = t(x.float()).double().numpy()
    i, j, k = ijk.T.numpy()
    # RAS mm: T(x) = x + u(x)
    np.testing.assert_allclose(x.numpy() + ddf[i, j, k], y, atol=1e-3)
    # Learn2Reg: the moving point in fixed-grid voxel units is i + d[:, i]
    moving_vox = ijk.numpy() + disp[:, i, j, k].T
    np.testing.assert_allclose(space.voxel_to_world(torch.from_numpy(moving_vox).double(), fixed.affine).numpy(), y, atol=1e-3)

    # regkit reads its own RAS export back as RAS (an unmarked X×Y×Z×3 file is ITK's LPS)
    back = read_transform(ddf_path)
    with torch.no_grad():
        np.testing.assert_allclose(back(x.float()).double().numpy(), y, atol=1e-3)


def _brain(pair) -> torch.Tensor:
    return pair["fixed_labels"].data[0] > 0


def test_inverse_of_svf_and_of_displacement_undo_the_forward(pair):
    fixed, t = pair["fixed"], pair["transform"]
    velocity, affine = t.transforms
    # exp(v) sampled on the fixed grid, as `regkit register` writes its field
    as_field = Compose(to_displacement_field(velocity, fixed.affine, fixed.shape), affine)
    for forward in (t, as_field):
        result = inverse.invert(forward)
        err = inverse.round_trip_error(forward, result.transform, fixed.affine, fixed.shape, _brain(pair))
        assert err["median"] < 0.1, (type(forward.transforms[0]).__name__, err)
    assert inverse.invert(t).fixed_point_residual_mm < 0.01  # exp(-v) refined against exp(v)
    assert inverse.invert(t.transforms[1]).fixed_point_residual_mm is None  # the matrix inverse: exact
    assert inverse.invert(as_field).fixed_point_residual_mm < 0.01
    # an affine inverse is exact
    x = fixed.world_grid(dtype=torch.float64)[::8, ::8, ::8]
    assert torch.allclose(inverse.invert(affine).transform(affine(x)), x, atol=1e-9)


def _cli(*args: str):
    from regkit.cli.main import app

    return CliRunner().invoke(app, [str(a) for a in args])


def test_export_and_invert_commands(pair, sample_paths, tmp_path):
    transform_path = tmp_path / "t.regkit.safetensors"
    write_transform(pair["transform"], transform_path)
    r = _cli("export", transform_path, "--reference", sample_paths["fixed"], "--format", "ants", "-o", tmp_path / "ants" / "reg_")
    assert r.exit_code == 0, r.output
    assert "antsApplyTransforms" in r.output and (tmp_path / "ants" / "reg_1Warp.nii.gz").exists()
    again = _cli("export", transform_path, "--reference", sample_paths["fixed"], "--format", "ants", "-o", tmp_path / "ants" / "reg_")
    assert again.exit_code == 2 and "exists" in again.output
    bad = _cli("export", transform_path, "--reference", sample_paths["fixed"], "--format", "fsl", "-o", tmp_path / "x_")
    assert bad.exit_code == 2 and "--format" in bad.output

    # the inverse of the exported warp: residual reported, file reads back as a field
    r = _cli("invert", tmp_path / "ants" / "reg_1Warp.nii.gz", "-o", tmp_path / "inverse_warp.nii.gz")
    assert r.exit_code == 0, r.output
    assert "fixed-point residual" in r.output and "round trip" in r.output
    forward, backward = read_transform(tmp_path / "ants" / "reg_1Warp.nii.gz"), read_transform(tmp_path / "inverse_warp.nii.gz")
    err = inverse.round_trip_error(forward, backward, pair["fixed"].affine, pair["fixed"].shape, _brain(pair))
    assert err["median"] < 0.1
    r = _cli("invert", tmp_path / "ants" / "reg_0GenericAffine.mat", "-o", tmp_path / "inverse.mat")
    assert r.exit_code == 0, r.output
    x = pair["fixed"].world_grid(dtype=torch.float64)[::10, ::10, ::10]
    a, a_inv = read_transform(tmp_path / "ants" / "reg_0GenericAffine.mat"), read_transform(tmp_path / "inverse.mat")
    assert torch.allclose(a_inv(a(x)), x, atol=1e-6)


def test_invert_command_dense_output_needs_the_moving_grid(pair, sample_paths, tmp_path):
    transform_path = tmp_path / "t.regkit.safetensors"
    write_transform(pair["transform"], transform_path)
    r = _cli("invert", transform_path, "-o", tmp_path / "inverse.nii.gz")
    assert r.exit_code == 2 and "--reference" in r.output and not (tmp_path / "inverse.nii.gz").exists()
    r = _cli("invert", transform_path, "-o", tmp_path / "inverse.nii.gz", "--reference", sample_paths["moving"])
    assert r.exit_code == 0, r.output
    backward = read_transform(tmp_path / "inverse.nii.gz")  # moving -> fixed, on the moving grid
    moving = pair["moving"]
    assert backward.shape == moving.shape and torch.allclose(backward.affine, moving.affine, atol=1e-4)
    # maps the forward image of fixed brain points back to where they came from
    x = pair["fixed"].world_grid(dtype=torch.float32)[_brain(pair)][::50]
    with torch.no_grad():
        err = (backward(pair["transform"](x)) - x).norm(dim=-1)
    assert float(err.median()) < 0.1
