"""Other tools' transform files, each written by the library that stands in for the tool
(nitransforms for FSL FLIRT, FreeSurfer LTA, AFNI; SimpleITK for ITK B-splines and the ITK
transforms elastix is built on), read by regkit and compared with that library's own mapping
of 100 random points (< 1e-3 mm) on oblique, flipped grids."""
from __future__ import annotations

import math

import nibabel as nib
import nitransforms.linear as ntl
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from regkit.errors import InputError
from regkit.io.images import load_image
from regkit.io.transform_files import read_transform

LPS = np.array([-1.0, -1.0, 1.0])


def _rotation(axis, degrees):
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    a = math.radians(degrees)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(a) * k + (1 - math.cos(a)) * k @ k


def _grid_affine(spacing, flip, axis, degrees, origin):
    a = np.eye(4)
    a[:3, :3] = _rotation(axis, degrees) @ np.diag(np.asarray(spacing) * np.asarray(flip))
    a[:3, 3] = origin
    return a


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """A fixed (reference) and a moving image on oblique grids with flipped axes."""
    folder = tmp_path_factory.mktemp("foreign")
    rng = np.random.default_rng(0)
    fixed_affine = _grid_affine((2.0, 2.5, 3.0), (-1, 1, -1), (1, 2, 0.5), 12, (40.0, -30.0, 20.0))
    moving_affine = _grid_affine((1.5, 2.0, 2.0), (1, -1, 1), (0.3, 1, 1), -9, (-25.0, 35.0, -15.0))
    paths = {}
    for name, affine, shape in (("fixed", fixed_affine, (24, 20, 16)), ("moving", moving_affine, (30, 26, 22))):
        img = nib.Nifti1Image(rng.random(shape).astype(np.float32), affine)
        img.set_qform(affine, code=1)
        img.set_sform(affine, code=1)
        paths[name] = folder / f"{name}.nii.gz"
        nib.save(img, str(paths[name]))
    m = np.eye(4)
    m[:3, :3] = _rotation((0.2, 1, 0.4), 7) @ np.diag([1.05, 0.95, 1.1])
    m[:3, 3] = (4.0, -3.0, 6.0)
    return folder, paths, m, fixed_affine, (24, 20, 16)


def _points(affine, shape, n=100, seed=1):
    ijk = np.random.default_rng(seed).random((n, 3)) * (np.asarray(shape) - 1)
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def _regkit_map(transform, points):
    with torch.no_grad():
        return transform(torch.as_tensor(points, dtype=torch.float64)).double().numpy()


@pytest.mark.parametrize("fmt,name", [("fsl", "flirt.mat"), ("lta", "reg.lta"), ("afni", "reg.aff12.1D")])
def test_nitransforms_formats_map_points_like_nitransforms(images, fmt, name):
    folder, paths, m, fixed_affine, shape = images
    path = folder / name
    ntl.Affine(m, reference=str(paths["fixed"])).to_filename(str(path), fmt=fmt, moving=str(paths["moving"]))
    theirs = ntl.load(str(path), fmt=fmt, reference=str(paths["fixed"]), moving=str(paths["moving"]))
    t = read_transform(path, reference=paths["fixed"], moving=paths["moving"])
    x = _points(fixed_affine, shape)
    np.testing.assert_allclose(_regkit_map(t, x), theirs.map(x), atol=1e-3)
    np.testing.assert_allclose(_regkit_map(t, x), x @ m[:3, :3].T + m[:3, 3], atol=1e-3)  # nitransforms round-trips


def test_fsl_matrix_without_its_images_is_refused_by_name(images):
    folder, paths, m, *_ = images
    path = folder / "alone.mat"
    ntl.Affine(m, reference=str(paths["fixed"])).to_filename(str(path), fmt="fsl", moving=str(paths["moving"]))
    with pytest.raises(InputError) as e:
        read_transform(path)
    msg = str(e.value)
    assert "alone.mat" in msg and "FSL FLIRT" in msg and "regkit apply" in msg and ".cxx" not in msg


def _lps_points(tx, points_ras):
    return np.array([tx.TransformPoint(tuple(float(v) for v in p * LPS)) for p in points_ras]) * LPS


def _write_elastix(path, kind, params, center=None, initial="NoInitialTransform", extra=""):
    lines = [f'(Transform "{kind}")', f"(NumberOfParameters {len(params)})",
             "(TransformParameters " + " ".join(f"{v:.17g}" for v in params) + ")",
             f'(InitialTransformParametersFileName "{initial}")', '(HowToCombineTransforms "Compose")',
             "(FixedImageDimension 3)", "(MovingImageDimension 3)"]
    if center is not None:
        lines.append("(CenterOfRotationPoint " + " ".join(f"{v:.17g}" for v in center) + ")")
    path.write_text("// written by regkit's test, in elastix's layout\n" + "\n".join(lines) + "\n" + extra)
    return path


def _bspline(fixed_affine, shape):
    """A smooth ITK B-spline over the fixed image's box (LPS), coefficients up to 3 mm."""
    ref = sitk.Image([int(s) for s in shape], sitk.sitkUInt8)
    from regkit.io.geometry import set_sitk_geometry

    set_sitk_geometry(ref, fixed_affine)
    tx = sitk.BSplineTransformInitializer(ref, [4, 4, 3], order=3)
    coefficients = np.random.default_rng(2).uniform(-3, 3, len(tx.GetParameters()))
    tx.SetParameters([float(v) for v in coefficients])
    return tx


def test_elastix_parameter_files_map_points_like_itk(images):
    folder, paths, _, fixed_affine, shape = images
    x = _points(fixed_affine, shape)
    center = (10.0, -5.0, 12.0)
    euler = sitk.Euler3DTransform(center, 0.1, -0.05, 0.2, (3.0, -2.0, 5.0))
    similarity = sitk.Similarity3DTransform(1.08, (0.3, 1.0, 0.2), 0.12, (1.0, 4.0, -2.0), center)
    affine = sitk.AffineTransform([1.05, 0.1, 0.0, -0.05, 0.95, 0.08, 0.02, 0.0, 1.1], (2.0, -1.0, 3.0), center)
    for kind, tx in (("EulerTransform", euler), ("SimilarityTransform", similarity), ("AffineTransform", affine)):
        path = _write_elastix(folder / f"TransformParameters.{kind}.txt", kind, tx.GetParameters(), center)
        t = read_transform(path)
        np.testing.assert_allclose(_regkit_map(t, x), _lps_points(tx, x), atol=1e-3, err_msg=kind)

    # a chain: the initial B-spline (sampled on the reference grid: exact at its voxel centres) acts
    # first, then the Euler transform whose file names it
    bspline = _bspline(fixed_affine, shape)
    fixed = list(bspline.GetFixedParameters())
    grid = ("(GridSize " + " ".join(str(int(v)) for v in fixed[:3]) + ")\n(GridIndex 0 0 0)\n(GridOrigin "
            + " ".join(f"{v:.17g}" for v in fixed[3:6]) + ")\n(GridSpacing " + " ".join(f"{v:.17g}" for v in fixed[6:9])
            + ")\n(GridDirection " + " ".join(f"{v:.17g}" for v in fixed[9:18]) + ")\n(BSplineTransformSplineOrder 3)\n")
    initial = _write_elastix(folder / "TransformParameters.0.txt", "BSplineTransform", bspline.GetParameters(), extra=grid)
    path = _write_elastix(folder / "TransformParameters.1.txt", "EulerTransform", euler.GetParameters(), center,
                          initial=str(initial))
    t = read_transform(path, reference=paths["fixed"])
    ijk = np.random.default_rng(3).integers(0, shape, (100, 3))
    centres = ijk @ fixed_affine[:3, :3].T + fixed_affine[:3, 3]
    both = sitk.CompositeTransform([euler, bspline])  # ITK: the last added acts first
    np.testing.assert_allclose(_regkit_map(t, centres), _lps_points(both, centres), atol=1e-3)


def test_itk_bspline_file_maps_points_like_simpleitk(images, tmp_path):
    _, paths, _, fixed_affine, shape = images
    tx = _bspline(fixed_affine, shape)
    path = tmp_path / "bspline.tfm"
    sitk.WriteTransform(tx, str(path))
    t = read_transform(path, reference=paths["fixed"])
    ijk = np.random.default_rng(4).integers(0, shape, (100, 3))
    centres = ijk @ fixed_affine[:3, :3].T + fixed_affine[:3, 3]
    np.testing.assert_allclose(_regkit_map(t, centres), _lps_points(tx, centres), atol=1e-3)
    alone = read_transform(path)  # on its own domain (a quarter of the control spacing): close between nodes
    x = _points(fixed_affine, shape)
    assert np.abs(_regkit_map(alone, x) - _lps_points(tx, x)).max() < 0.2


def test_unknown_files_are_refused_naming_what_regkit_reads(tmp_path):
    bad = tmp_path / "notes.lta"
    bad.write_text("hello\n")
    with pytest.raises(InputError) as e:
        read_transform(bad)
    assert "notes.lta" in str(e.value) and "FreeSurfer" in str(e.value) and ".regkit.safetensors" in str(e.value)
    with pytest.raises(InputError) as e:
        read_transform(tmp_path / "x.xyz")
    assert "elastix" in str(e.value)


def test_apply_reads_a_flirt_matrix_with_its_images(images, tmp_path):
    from typer.testing import CliRunner

    from regkit.cli.main import app
    from regkit.resample import resample

    folder, paths, m, *_ = images
    path = tmp_path / "flirt.mat"
    ntl.Affine(m, reference=str(paths["fixed"])).to_filename(str(path), fmt="fsl", moving=str(paths["moving"]))
    out = tmp_path / "warped.nii.gz"
    r = CliRunner().invoke(app, ["apply", str(path), str(paths["moving"]), "-r", str(paths["fixed"]), "-o", str(out)])
    assert r.exit_code == 0, r.output
    fixed = load_image(paths["fixed"])
    with torch.no_grad():
        expected = resample(load_image(paths["moving"]), read_transform(path, paths["fixed"], paths["moving"]), fixed).numpy()
    np.testing.assert_allclose(load_image(out).numpy(), expected, atol=1e-5)


@pytest.mark.parametrize("fmt,suffix", [("fsl", "flirt.mat"), ("lta", "affine.lta"), ("afni", "affine.aff12.1D")])
def test_affine_export_is_read_by_nitransforms_as_regkit_maps(images, tmp_path, fmt, suffix):
    from typer.testing import CliRunner

    from regkit.cli.main import app
    from regkit.io.transform_files import write_transform
    from regkit.transforms import AffineTransform

    folder, paths, m, fixed_affine, shape = images
    t = AffineTransform.from_homogeneous(torch.as_tensor(m))
    write_transform(t, tmp_path / "t.regkit.safetensors")
    r = CliRunner().invoke(app, ["export", str(tmp_path / "t.regkit.safetensors"), "-r", str(paths["fixed"]),
                                 "--moving", str(paths["moving"]), "--format", fmt, "-o", str(tmp_path / "x_")])
    assert r.exit_code == 0, r.output
    written = tmp_path / f"x_{suffix}"
    theirs = ntl.load(str(written), fmt=fmt, reference=str(paths["fixed"]), moving=str(paths["moving"]))
    x = _points(fixed_affine, shape)
    np.testing.assert_allclose(theirs.map(x), _regkit_map(t, x), atol=1e-3)
    np.testing.assert_allclose(_regkit_map(read_transform(written, paths["fixed"], paths["moving"]), x), _regkit_map(t, x), atol=1e-3)
