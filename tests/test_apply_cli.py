"""`regkit apply`: files written by SimpleITK give SimpleITK's result; points; inverse; errors."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from typer.testing import CliRunner

from regkit import space
from regkit.cli.main import app
from regkit.image import Image
from regkit.io.geometry import LPS_FLIP
from regkit.io.images import load_image, save_image
from regkit.io.transform_files import write_transform
from regkit.transforms import AffineTransform, Compose, DisplacementField, VelocityField

runner = CliRunner()


def _oblique_affine() -> np.ndarray:
    """Permuted, flipped and obliquely rotated axes with anisotropic spacing (no shear)."""
    c, s = np.cos(0.3), np.sin(0.3)
    rot = np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]]) @ np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    a = np.eye(4)
    a[:3, :3] = rot * np.array([1.5, 1.8, 1.2])[None, :]
    a[:3, 3] = [20.0, -14.0, -9.0]
    return a


MOVING_AFFINE = _oblique_affine()
FIXED_AFFINE = np.array([[-1.6, 0.0, 0.0, 13.0], [0.0, 1.7, 0.0, -12.0], [0.0, 0.0, 1.4, -8.0], [0.0, 0.0, 0.0, 1.0]])
MOVING_SHAPE, FIXED_SHAPE = (18, 20, 16), (16, 15, 14)


def _blob(affine, shape, centre_ras, width_mm=4.0) -> Image:
    x = space.world_grid(affine, shape, dtype=torch.float64)
    d2 = ((x - torch.as_tensor(centre_ras, dtype=torch.float64)) ** 2).sum(-1)
    return Image((100.0 * torch.exp(-d2 / (2 * width_mm ** 2))).float()[None], affine)


def _moving_centre() -> np.ndarray:
    return space.voxel_to_world(torch.tensor([8.0, 10.0, 7.0], dtype=torch.float64), torch.as_tensor(MOVING_AFFINE)).numpy()


@pytest.fixture()
def pair(tmp_path):
    """Smooth moving image + integer labels (oblique grid) and a fixed grid, as files."""
    moving = _blob(MOVING_AFFINE, MOVING_SHAPE, _moving_centre(), width_mm=6.0)
    i, j, k = np.indices(MOVING_SHAPE)  # piecewise-constant regions, as label maps are (0 = background)
    regions = (i // 4 + 2 * (j // 5) + k // 4) % 4
    labels = Image(torch.from_numpy(regions.astype(np.int32))[None], MOVING_AFFINE, is_label=True)
    save_image(moving, tmp_path / "moving.nii.gz")
    save_image(labels, tmp_path / "labels.nii.gz", dtype=np.uint8)
    save_image(Image(torch.zeros(1, *FIXED_SHAPE), FIXED_AFFINE), tmp_path / "fixed.nii.gz")
    return tmp_path


def _affine_sitk() -> sitk.AffineTransform:
    tx = sitk.AffineTransform(3)
    tx.SetMatrix([0.98, 0.1, 0.0, -0.08, 1.02, 0.05, 0.02, 0.0, 0.95])
    tx.SetTranslation([1.5, -2.0, 0.7])
    tx.SetCenter([-3.0, 4.0, 1.0])
    return tx


def _field_sitk(tmp_path):
    """A smooth displacement field (LPS, ±2 mm) on the fixed grid, written by SimpleITK."""
    ref = sitk.ReadImage(str(tmp_path / "fixed.nii.gz"))
    grid = np.stack(np.meshgrid(*[np.linspace(0, np.pi, s) for s in FIXED_SHAPE[::-1]], indexing="ij"), -1)  # (Z, Y, X, 3)
    u = 2.0 * np.stack([np.sin(grid[..., 2]) * np.cos(grid[..., 1]), np.sin(grid[..., 0]), np.cos(grid[..., 2] + grid[..., 0])], -1)
    img = sitk.GetImageFromArray(u, isVector=True)
    img.CopyInformation(ref)
    sitk.WriteImage(img, str(tmp_path / "sitk1Warp.nii.gz"))
    return sitk.DisplacementFieldTransform(sitk.Cast(sitk.ReadImage(str(tmp_path / "sitk1Warp.nii.gz")), sitk.sitkVectorFloat64))


def _sitk_resample(tmp_path, name, transform, interp=sitk.sitkLinear, default_value=0.0) -> np.ndarray:
    out = sitk.Resample(sitk.ReadImage(str(tmp_path / name)), sitk.ReadImage(str(tmp_path / "fixed.nii.gz")), transform, interp,
                        default_value)
    return np.moveaxis(sitk.GetArrayFromImage(out), [0, 1, 2], [2, 1, 0])


def _run(*args):
    result = runner.invoke(app, ["apply", *[str(a) for a in args]])
    return result


def test_simpleitk_mat_gives_simpleitk_result(pair):
    sitk.WriteTransform(_affine_sitk(), str(pair / "sitk0GenericAffine.mat"))
    r = _run(pair / "sitk0GenericAffine.mat", pair / "moving.nii.gz", "-r", pair / "fixed.nii.gz", "-o", pair / "out.nii.gz")
    assert r.exit_code == 0, r.output
    ours = load_image(pair / "out.nii.gz")
    assert torch.allclose(ours.affine, torch.as_tensor(FIXED_AFFINE), atol=1e-5)
    theirs = _sitk_resample(pair, "moving.nii.gz", _affine_sitk())
    assert np.count_nonzero(theirs > 1.0) > 100
    assert np.abs(ours.numpy() - theirs).max() < 1e-4 * 100


def test_simpleitk_field_and_chain_give_simpleitk_result(pair):
    field_tx = _field_sitk(pair)
    r = _run(pair / "sitk1Warp.nii.gz", pair / "moving.nii.gz", "-r", pair / "fixed.nii.gz", "-o", pair / "f.nii.gz")
    assert r.exit_code == 0, r.output
    theirs = _sitk_resample(pair, "moving.nii.gz", field_tx)
    assert np.abs(load_image(pair / "f.nii.gz").numpy() - theirs).max() < 1e-4 * 100
    # chain in ANTs order: the warp acts first on fixed points, then the affine
    sitk.WriteTransform(_affine_sitk(), str(pair / "sitk0GenericAffine.mat"))
    r = _run(pair / "sitk1Warp.nii.gz", pair / "sitk0GenericAffine.mat", pair / "moving.nii.gz", "-r", pair / "fixed.nii.gz", "-o", pair / "c.nii.gz")
    assert r.exit_code == 0, r.output
    composite = sitk.CompositeTransform([_affine_sitk(), field_tx])  # ITK: the last added acts first
    theirs = _sitk_resample(pair, "moving.nii.gz", composite)
    ours = load_image(pair / "c.nii.gz").numpy()
    assert np.abs(ours - theirs).max() < 1e-4 * 100
    assert np.abs(ours - _sitk_resample(pair, "moving.nii.gz", sitk.CompositeTransform([field_tx, _affine_sitk()]))).max() > 1.0


def test_default_value_outside_moving_is_simpleitks(pair):
    """--default-value (antsApplyTransforms -f, ITK's defaultPixelValue): where MOVING does not
    reach, e.g. air for CT instead of 0 HU; label maps keep 0 there."""
    tx = _affine_sitk()
    tx.SetTranslation([6.0, -2.0, 0.7])  # part of the fixed grid now maps outside the moving image
    sitk.WriteTransform(tx, str(pair / "far.mat"))
    r = _run(pair / "far.mat", pair / "moving.nii.gz", "-r", pair / "fixed.nii.gz", "-o", pair / "ct.nii.gz", "--default-value", -1000)
    assert r.exit_code == 0, r.output
    ours = load_image(pair / "ct.nii.gz").numpy()
    theirs = _sitk_resample(pair, "moving.nii.gz", tx, default_value=-1000.0)
    assert np.count_nonzero(theirs == -1000.0) > 50 and np.count_nonzero(theirs > 1.0) > 50
    assert np.array_equal(ours == -1000.0, theirs == -1000.0)
    assert np.abs(ours - theirs).max() < 1e-4 * 100
    r = _run(pair / "far.mat", pair / "labels.nii.gz", "-r", pair / "fixed.nii.gz", "-o", pair / "lab.nii.gz", "-f", -1000)
    assert r.exit_code == 0, r.output
    labels = load_image(pair / "lab.nii.gz", is_label=True).numpy()
    assert labels.min() == 0 and np.all(labels[theirs == -1000.0] == 0)
    # an int16 CT (thousands of values) resampled with --interp nearest is still an intensity
    # image: -1000 where it does not reach, as SimpleITK's nearest neighbour gives (was 0)
    import nibabel as nib

    src = nib.load(str(pair / "moving.nii.gz"))
    noise = np.random.default_rng(1).normal(0.0, 100.0, src.shape)
    hu = np.round(np.asarray(src.dataobj) * 40.0 - 1000.0 + noise).astype(np.int16)
    assert len(np.unique(hu)) > 1000
    nib.save(nib.Nifti1Image(hu, src.affine), str(pair / "hu.nii.gz"))
    r = _run(pair / "far.mat", pair / "hu.nii.gz", "-r", pair / "fixed.nii.gz", "-o", pair / "hu_nn.nii.gz", "--interp", "nearest", "-f", -1000)
    assert r.exit_code == 0, r.output
    out = nib.load(str(pair / "hu_nn.nii.gz"))
    assert out.get_data_dtype() == np.int16
    theirs = _sitk_resample(pair, "hu.nii.gz", tx, sitk.sitkNearestNeighbor, default_value=-1000.0)
    ours = np.asarray(out.dataobj)
    assert np.array_equal(ours == -1000, theirs == -1000) and np.count_nonzero(ours == -1000) > 50


def test_labels_auto_nearest_keep_dtype(pair):
    sitk.WriteTransform(_affine_sitk(), str(pair / "a.mat"))
    r = _run(pair / "a.mat", pair / "labels.nii.gz", "-r", pair / "fixed.nii.gz", "-o", pair / "wl.nii.gz")
    assert r.exit_code == 0, r.output
    assert "nearest" in r.output
    import nibabel as nib

    out = nib.load(str(pair / "wl.nii.gz"))
    assert out.get_data_dtype() == np.uint8
    theirs = _sitk_resample(pair, "labels.nii.gz", _affine_sitk(), sitk.sitkNearestNeighbor)
    ours = np.asarray(out.dataobj)
    assert (ours == theirs).mean() > 0.99  # identical except exact rounding ties
    assert set(np.unique(ours)) <= {0, 1, 2, 3}
    # --interp linear overrides the label detection: fractional values appear
    r = _run(pair / "a.mat", pair / "labels.nii.gz", "-r", pair / "fixed.nii.gz", "-o", pair / "wf.nii.gz", "--interp", "linear")
    assert r.exit_code == 0, r.output
    lin = load_image(pair / "wf.nii.gz").numpy()
    assert np.any(np.abs(lin - np.round(lin)) > 0.05)


def test_sample_labels_through_itk_affine(sample_paths, tmp_path):
    """The bundled sample labels through an ANTs-style .mat: SimpleITK's nearest result, int16 kept."""
    tx = sitk.Euler3DTransform((0.0, -18.0, 18.0), 0.05, -0.03, 0.08, (2.0, -1.0, 3.0))
    sitk.WriteTransform(tx, str(tmp_path / "e.tfm"))
    r = _run(tmp_path / "e.tfm", sample_paths["moving_labels"], "-r", sample_paths["fixed"], "-o", tmp_path / "wl.nii.gz")
    assert r.exit_code == 0, r.output
    import nibabel as nib

    ours = np.asarray(nib.load(str(tmp_path / "wl.nii.gz")).dataobj)
    out = sitk.Resample(sitk.ReadImage(str(sample_paths["moving_labels"])), sitk.ReadImage(str(sample_paths["fixed"])), tx, sitk.sitkNearestNeighbor, 0)
    theirs = np.moveaxis(sitk.GetArrayFromImage(out), [0, 1, 2], [2, 1, 0])
    assert ours.dtype == np.int16 and np.count_nonzero(theirs) > 1000
    assert (ours != theirs).sum() <= 1e-4 * theirs.size


def _read_points(path) -> np.ndarray:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return np.array([[float(r["x"]), float(r["y"]), float(r["z"])] for r in rows])


def _write_points(path, pts) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["x", "y", "z", "label"])
        for i, p in enumerate(pts):
            w.writerow([*p, f"p{i}"])


def _smooth_field() -> DisplacementField:
    x = space.world_grid(FIXED_AFFINE, FIXED_SHAPE, dtype=torch.float64)
    u = torch.stack([2.0 * torch.sin(x[..., 1] / 6.0), 1.5 * torch.cos(x[..., 0] / 7.0), torch.sin(x[..., 2] / 5.0)], 0)
    return DisplacementField(u, FIXED_AFFINE)


def test_blob_centre_moves_where_points_say(pair):
    """Warp an image with a blob through a field + affine chain; the warped blob's centre,
    mapped fixed→moving by --points, lands on the moving blob's centre (and back with --inverse)."""
    affine = AffineTransform.from_homogeneous(torch.tensor([[0.97, 0.05, 0.0, 4.0], [-0.04, 1.03, 0.0, -3.0], [0.0, 0.02, 1.0, 2.5], [0, 0, 0, 1.0]], dtype=torch.float64))
    write_transform(_smooth_field(), pair / "w.nii.gz")
    write_transform(affine, pair / "a.regkit.safetensors")
    centre = _moving_centre()
    save_image(_blob(MOVING_AFFINE, MOVING_SHAPE, centre, width_mm=2.5), pair / "blob.nii.gz")
    r = _run(pair / "w.nii.gz", pair / "a.regkit.safetensors", pair / "blob.nii.gz", "-r", pair / "fixed.nii.gz", "-o", pair / "wb.nii.gz")
    assert r.exit_code == 0, r.output
    warped = load_image(pair / "wb.nii.gz")
    w = warped.data[0].double()
    w = torch.where(w > 0.5 * w.max(), w, torch.zeros_like(w))
    x = warped.world_grid(dtype=torch.float64)
    found = ((x * w[..., None]).sum((0, 1, 2)) / w.sum()).numpy()  # blob centre in fixed space

    _write_points(pair / "found.csv", [found])
    r = _run(pair / "w.nii.gz", pair / "a.regkit.safetensors", "--points", pair / "found.csv", "--points-out", pair / "mapped.csv")
    assert r.exit_code == 0, r.output
    mapped = _read_points(pair / "mapped.csv")[0]
    assert np.linalg.norm(mapped - centre) < 0.5  # mm; voxels are 1.4-1.8 mm
    assert np.linalg.norm(found - centre) > 3.0  # the chain really moved it

    _write_points(pair / "centre.csv", [centre])
    r = _run(pair / "w.nii.gz", pair / "a.regkit.safetensors", "--points", pair / "centre.csv", "--points-out", pair / "back.csv", "--inverse")
    assert r.exit_code == 0, r.output
    assert "residual" in r.output
    assert np.linalg.norm(_read_points(pair / "back.csv")[0] - found) < 0.5


def test_points_lps_and_columns_kept(pair):
    tx = _affine_sitk()
    sitk.WriteTransform(tx, str(pair / "a.mat"))
    pts_lps = np.array([[1.0, 2.0, 3.0], [-10.0, 5.5, 0.25]])
    _write_points(pair / "p.csv", pts_lps)
    r = _run(pair / "a.mat", "--points", pair / "p.csv", "--points-out", pair / "q.csv", "--lps")
    assert r.exit_code == 0, r.output
    expected = np.array([tx.TransformPoint(tuple(p)) for p in pts_lps])  # ITK works in LPS
    np.testing.assert_allclose(_read_points(pair / "q.csv"), expected, atol=1e-9)
    with open(pair / "q.csv", newline="") as f:
        assert [row["label"] for row in csv.DictReader(f)] == ["p0", "p1"]
    # without --lps the same numbers are RAS: x, y flip sign around the mapping
    r = _run(pair / "a.mat", "--points", pair / "p.csv", "--points-out", pair / "r.csv")
    ras_expected = np.array([tx.TransformPoint(tuple(p * LPS_FLIP)) for p in pts_lps]) * LPS_FLIP
    np.testing.assert_allclose(_read_points(pair / "r.csv"), ras_expected, atol=1e-9)


@pytest.mark.parametrize("kind", ["affine", "velocity", "field"])
def test_inverse_undoes_forward(pair, kind):
    if kind == "affine":
        t = AffineTransform.from_homogeneous(torch.tensor([[1.1, 0.1, 0.0, 3.0], [0.0, 0.9, 0.2, -2.0], [0.05, 0.0, 1.0, 1.0], [0, 0, 0, 1.0]], dtype=torch.float64))
    elif kind == "velocity":
        t = VelocityField(_smooth_field().displacement, FIXED_AFFINE)
    else:
        t = _smooth_field()
    write_transform(Compose(t, AffineTransform.from_homogeneous(torch.eye(4, dtype=torch.float64) * 1.0)), pair / "t.regkit.safetensors")
    inner = space.world_grid(FIXED_AFFINE, FIXED_SHAPE, dtype=torch.float64)[3:-3, 3:-3, 3:-3].reshape(-1, 3).numpy()
    _write_points(pair / "p.csv", inner)
    assert _run(pair / "t.regkit.safetensors", "--points", pair / "p.csv", "--points-out", pair / "q.csv").exit_code == 0
    r = _run(pair / "t.regkit.safetensors", "--points", pair / "q.csv", "--points-out", pair / "back.csv", "--inverse")
    assert r.exit_code == 0, r.output
    err = np.linalg.norm(_read_points(pair / "back.csv") - inner, axis=1)
    assert err.max() < (1e-6 if kind == "affine" else 0.05)
    assert np.linalg.norm(_read_points(pair / "q.csv") - inner, axis=1).max() > 1.0


def test_user_errors_exit_2_with_one_line(pair):
    sitk.WriteTransform(_affine_sitk(), str(pair / "a.mat"))
    (pair / "pts.csv").write_text("x,y,z\n1,2,3\n")
    cases = [
        ([pair / "missing.mat", pair / "moving.nii.gz", "-r", pair / "fixed.nii.gz", "-o", pair / "o.nii.gz"], "missing.mat"),
        ([pair / "a.mat", pair / "moving.nii.gz", "-r", pair / "fixed.nii.gz", "-o", pair / "moving.nii.gz"], "--force"),
        ([pair / "a.mat", pair / "moving.nii.gz", "-o", pair / "o.nii.gz"], "--reference"),
        ([pair / "a.mat", "--points", pair / "p.csv"], "--points-out"),
        ([pair / "a.mat", pair / "moving.nii.gz", "-r", pair / "fixed.nii.gz", "-o", pair / "o.nii.gz", "--interp", "cubic"], "--interp"),
        ([pair / "moving.nii.gz", pair / "moving.nii.gz", "-r", pair / "fixed.nii.gz", "-o", pair / "o.nii.gz"], "moving.nii.gz"),
        # a MOVING image left on the line with --points: said so (was a displacement-field shape error)
        ([pair / "a.mat", pair / "moving.nii.gz", "--points", pair / "pts.csv", "--points-out", pair / "q.csv"], "moving.nii.gz: is a 3D image, not a transform file"),
    ]
    for args, needle in cases:
        r = _run(*args)
        assert r.exit_code == 2, (args, r.output)
        lines = [line for line in r.output.splitlines() if line.startswith("regkit: error:")]
        assert len(lines) == 1 and needle in lines[0], r.output
    assert not (pair / "o.nii.gz").exists()


LABEL_SHAPE = (40, 40, 40)


def _label_like(values: int) -> np.ndarray:
    """Blocks of 5×5×5 voxels numbered 1.. (cycling through ``values`` labels) on background 0."""
    i, j, k = np.indices(LABEL_SHAPE) // 5
    blocks = (i * 8 + j) * 8 + k
    return np.where(blocks % 7 == 0, 0, 1 + blocks % values)


def _image_like(values: int) -> np.ndarray:
    """A smooth ramp plus noise spanning ``values`` integer levels (an MRI or CT)."""
    rng = np.random.default_rng(0)
    ramp = np.indices(LABEL_SHAPE).sum(0) / (3 * (LABEL_SHAPE[0] - 1))
    return np.clip(np.round(ramp * (values - 1) + rng.normal(0, values / 20, LABEL_SHAPE)), 0, values - 1)


@pytest.mark.parametrize("make, dtype, values, expect_labels", [
    (_label_like, np.uint8, 117, True),     # a TotalSegmentator-size uint8 segmentation (was linear: > 64 values)
    (_label_like, np.int16, 300, True),
    (_image_like, np.uint8, 200, False),    # an 8-bit MRI
    (_image_like, np.int16, 900, False),    # an int16 MRI with < 1000 values (was a label map)
    (_image_like, np.int16, 3000, False),   # a CT
])
def test_label_detection(tmp_path, make, dtype, values, expect_labels):
    """Label maps are told from images by being piecewise constant, not by the number of values
    alone; --interp nearest on any integer file keeps its integer type."""
    import nibabel as nib

    data = make(values)
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    nib.save(nib.Nifti1Image(data.astype(dtype), affine), str(tmp_path / "x.nii.gz"))
    nib.save(nib.Nifti1Image(np.zeros((30, 30, 30), np.float32), affine), str(tmp_path / "fixed.nii.gz"))
    write_transform(AffineTransform.from_homogeneous(torch.eye(4, dtype=torch.float64)), tmp_path / "id.mat")
    r = _run(tmp_path / "id.mat", tmp_path / "x.nii.gz", "-r", tmp_path / "fixed.nii.gz", "-o", tmp_path / "auto.nii.gz")
    assert r.exit_code == 0, r.output
    assert ("nearest neighbour" in r.output) == expect_labels and ("as intensities" in r.output) != expect_labels, r.output
    auto = nib.load(str(tmp_path / "auto.nii.gz"))
    assert (auto.get_data_dtype() == np.dtype(dtype)) == expect_labels
    r = _run(tmp_path / "id.mat", tmp_path / "x.nii.gz", "-r", tmp_path / "fixed.nii.gz", "-o", tmp_path / "nn.nii.gz", "--interp", "nearest")
    assert r.exit_code == 0, r.output
    nn = nib.load(str(tmp_path / "nn.nii.gz"))
    assert nn.get_data_dtype() == np.dtype(dtype)
    assert set(np.unique(np.asarray(nn.dataobj))) <= set(np.unique(data))


def test_files_written_by_ants_registration_give_ants_result(tmp_path):
    """A real ANTs SyN output (1Warp.nii.gz + 0GenericAffine.mat, float .mat) applied in ANTs'
    order gives antspyx apply_transforms' result."""
    ants = pytest.importorskip("ants")
    g = np.stack(np.meshgrid(*[np.arange(24.0)] * 3, indexing="ij"), -1)

    def blobs(c1, c2):
        return (100 * np.exp(-((g - c1) ** 2).sum(-1) / 32.0) + 50 * np.exp(-((g - c2) ** 2).sum(-1) / 32.0)).astype(np.float32)

    fixed = ants.from_numpy(blobs([12, 12, 12], [6, 16, 10]), origin=(0.0, 0.0, 0.0), spacing=(2.0, 2.0, 2.0))
    moving = ants.from_numpy(blobs([13, 11, 12.5], [7, 17, 9]), origin=(1.0, -2.0, 0.5), spacing=(2.0, 2.0, 2.0))
    reg = ants.registration(fixed, moving, type_of_transform="SyN", outprefix=str(tmp_path / "reg_"), reg_iterations=(20, 10),
                            aff_iterations=(50, 20), aff_shrink_factors=(2, 1), aff_smoothing_sigmas=(1, 0), verbose=False)
    warp, affine = reg["fwdtransforms"]
    assert warp.endswith("1Warp.nii.gz") and affine.endswith("0GenericAffine.mat")
    ants.image_write(fixed, str(tmp_path / "fixed.nii.gz"))
    ants.image_write(moving, str(tmp_path / "moving.nii.gz"))
    theirs = ants.apply_transforms(fixed, moving, transformlist=[warp, affine], interpolator="linear").numpy()
    r = _run(warp, affine, tmp_path / "moving.nii.gz", "-r", tmp_path / "fixed.nii.gz", "-o", tmp_path / "ours.nii.gz")
    assert r.exit_code == 0, r.output
    ours = load_image(tmp_path / "ours.nii.gz").numpy()
    assert np.abs(ours - theirs).max() < 1e-4 * 100  # measured 2.7e-5
    from regkit.io.transform_files import read_transform

    assert read_transform(warp).displacement.abs().max() > 0.05  # ANTs really produced a warp
    # points (LPS CSV, as ANTs): the same list maps fixed -> moving as antsApplyTransformsToPoints
    import pandas as pd

    pts = pd.DataFrame({"x": [10.0, 20.0, 30.0], "y": [15.0, 22.0, 8.0], "z": [20.0, 25.0, 12.0]})
    pts.to_csv(tmp_path / "pts.csv", index=False)
    expected = ants.apply_transforms_to_points(3, pts, [warp, affine])[["x", "y", "z"]].to_numpy()
    r = _run(warp, affine, "--points", tmp_path / "pts.csv", "--points-out", tmp_path / "mapped.csv", "--lps")
    assert r.exit_code == 0, r.output
    np.testing.assert_allclose(_read_points(tmp_path / "mapped.csv"), expected, atol=1e-4)
    assert np.abs(expected - pts.to_numpy()).max() > 0.5
