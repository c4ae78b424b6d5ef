"""regkit resampling equals SimpleITK's ``Resample`` through the same transform (via regkit.io.itk).

Random seeded cases: flipped/permuted axes, oblique direction cosines, anisotropic spacing,
moving and fixed on different grids; an affine and a displacement field on a third grid.
"""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from regkit import space
from regkit.image import Image
from regkit.io import itk
from regkit.io.geometry import LPS_FLIP
from regkit.io.images import image_to_sitk, sitk_to_image
from regkit.io.transform_files import read_transform, write_transform
from regkit.resample import resample
from regkit.transforms import AffineTransform, DisplacementField

N_CASES = 20


def _rotation(rng: np.random.Generator, oblique: bool) -> np.ndarray:
    """A random signed permutation, times a random rotation when ``oblique``."""
    p = np.eye(3)[rng.permutation(3)] * rng.choice([-1.0, 1.0], size=3)[:, None]
    if not oblique:
        return p
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q @ p


def _grid(rng, shape, oblique: bool, centre=np.zeros(3), spacing=(0.6, 2.5)):
    """Affine (RAS) of a grid of ``shape`` with random orientation/spacing, centred on ``centre``."""
    a = np.eye(4)
    a[:3, :3] = _rotation(rng, oblique) * rng.uniform(*spacing, size=3)[None, :]
    mid = (np.array(shape) - 1) / 2.0
    a[:3, 3] = centre - a[:3, :3] @ mid
    return a


def _covering_grid(rng, affine, shape, margin: int = 2):
    """A differently oriented/spaced grid that covers the grid (affine, shape) with a margin."""
    d = _rotation(rng, oblique=bool(rng.integers(2)))
    s = rng.uniform(0.8, 2.0, size=3)
    corners = np.array([[i, j, k, 1.0] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1) for k in (0, shape[2] - 1)])
    world = (np.asarray(affine) @ corners.T)[:3].T
    local = world @ d  # coordinates along d's columns
    lo, hi = local.min(0) - margin * s, local.max(0) + margin * s
    out_shape = tuple(int(x) for x in np.ceil((hi - lo) / s) + 1)
    a = np.eye(4)
    a[:3, :3] = d * s[None, :]
    a[:3, 3] = d @ lo
    return a, out_shape


def _smooth_volume(rng, shape) -> np.ndarray:
    """A smooth random intensity volume (sum of Gaussian blobs), range about [0, 100]."""
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1).astype(np.float64)
    vol = np.zeros(shape)
    for _ in range(4):
        c = rng.uniform(0, 1, 3) * (np.array(shape) - 1)
        w = rng.uniform(1.5, 4.0)
        vol += rng.uniform(20, 60) * np.exp(-((grid - c) ** 2).sum(-1) / (2 * w * w))
    return vol.astype(np.float32)


def _case(seed: int):
    rng = np.random.default_rng(1000 + seed)
    mshape = tuple(int(x) for x in rng.integers(7, 14, size=3))
    fshape = tuple(int(x) for x in rng.integers(6, 12, size=3))
    centre = rng.normal(scale=30.0, size=3)
    moving_affine = _grid(rng, mshape, oblique=seed % 2 == 1, centre=centre)
    # the fixed grid's extent is at most ~0.55 of the moving one's smallest, so they overlap well
    extent = float((np.linalg.norm(moving_affine[:3, :3], axis=0) * (np.array(mshape) - 1)).min())
    fixed_spacing = (0.3 * extent / max(fshape), 0.55 * extent / max(fshape))
    fixed_affine = _grid(rng, fshape, oblique=seed % 3 == 0, centre=centre + rng.normal(scale=1.0, size=3), spacing=fixed_spacing)
    moving = Image(torch.from_numpy(_smooth_volume(rng, mshape))[None], moving_affine)
    labels = Image(torch.from_numpy(rng.integers(0, 5, size=mshape).astype(np.int32))[None], moving_affine, is_label=True)
    fixed = Image(torch.zeros(1, *fshape), fixed_affine)
    m = np.eye(3) + rng.normal(scale=0.08, size=(3, 3))
    affine = AffineTransform(torch.from_numpy(m), torch.from_numpy(rng.normal(scale=2.0, size=3)), torch.from_numpy(centre), requires_grad=False)
    field_affine, field_shape = _covering_grid(rng, fixed_affine, fshape)
    u = np.stack([_smooth_volume(rng, field_shape) for _ in range(3)])
    u = (2.0 * u / u.max() - 1.0) * 0.15 * extent  # up to 15% of the moving grid's smallest extent
    field = DisplacementField(torch.from_numpy(u), field_affine)
    return moving, labels, fixed, affine, field


def _sitk_resample(image: Image, reference: Image, transform, nearest: bool) -> np.ndarray:
    interp = sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear
    out = sitk.Resample(image_to_sitk(image), image_to_sitk(reference), transform, interp, 0.0)
    return sitk_to_image(out, is_label=nearest).numpy()


def _no_tie_mask(transform, moving: Image, fixed: Image) -> np.ndarray:
    """Voxels whose mapped continuous index is not within 1e-3 of a rounding/inside tie."""
    with torch.no_grad():
        y = transform(space.world_grid(fixed.affine, fixed.shape, dtype=torch.float64))
    frac = np.abs(np.mod(space.world_to_voxel(y, moving.affine).numpy(), 1.0) - 0.5)
    return (frac > 1e-3).all(-1)


def _check(transform, sitk_transform, moving, labels, fixed):
    ours = resample(moving, transform, fixed).numpy()
    theirs = _sitk_resample(moving, fixed, sitk_transform, nearest=False)
    value_range = float(moving.data.max() - moving.data.min())
    assert np.abs(ours - theirs).max() < 1e-4 * value_range
    assert np.count_nonzero(theirs) > 0.2 * theirs.size  # the grids overlap: the test means something
    ours_l = resample(labels, transform, fixed)
    assert ours_l.data.dtype == torch.int32
    theirs_l = _sitk_resample(labels, fixed, sitk_transform, nearest=True)
    keep = _no_tie_mask(transform, moving, fixed)
    assert keep.mean() > 0.95
    np.testing.assert_array_equal(ours_l.numpy()[keep], theirs_l[keep])


@pytest.mark.parametrize("seed", range(N_CASES))
def test_affine_resampling_equals_simpleitk(seed, tmp_path):
    moving, labels, fixed, affine, _ = _case(seed)
    # through a file, as users do: regkit writes .mat, SimpleITK reads it
    path = write_transform(affine, tmp_path / "a.mat")
    _check(affine, sitk.ReadTransform(str(path)), moving, labels, fixed)


@pytest.mark.parametrize("seed", range(N_CASES))
def test_displacement_resampling_equals_simpleitk(seed, tmp_path):
    moving, labels, fixed, _, field = _case(seed)
    path = write_transform(field, tmp_path / "f_warp.nii.gz")
    sitk_field = sitk.Cast(sitk.ReadImage(str(path)), sitk.sitkVectorFloat64)
    sitk_tx = sitk.DisplacementFieldTransform(sitk_field)
    ours = read_transform(path)  # float32 on disk: compare against what SimpleITK read
    _check(ours, sitk_tx, moving, labels, fixed)
    assert torch.allclose(ours.displacement.double(), field.displacement.double(), atol=1e-5)


def test_affine_read_from_simpleitk_files(tmp_path):
    """Files SimpleITK writes (.mat, .tfm, float .mat, Euler3D, composite .h5) map points as it does."""
    import scipy.io

    rng = np.random.default_rng(7)
    euler = sitk.Euler3DTransform((1.0, -2.0, 3.0), 0.1, -0.2, 0.3, (4.0, 5.0, -6.0))
    aff = sitk.AffineTransform(3)
    aff.SetMatrix(list((np.eye(3) + rng.normal(scale=0.1, size=(3, 3))).ravel()))
    aff.SetTranslation([2.0, -1.0, 0.5])
    aff.SetCenter([10.0, 0.0, -5.0])
    comp = sitk.CompositeTransform([aff, euler])
    files = {"euler.tfm": euler, "aff.mat": aff, "aff.txt": aff, "comp.h5": comp}
    for name, tx in files.items():
        sitk.WriteTransform(tx, str(tmp_path / name))
    # ANTs also writes AffineTransform_float_3_3 .mat files
    d = scipy.io.loadmat(str(tmp_path / "aff.mat"))
    scipy.io.savemat(str(tmp_path / "aff_float.mat"), {"AffineTransform_float_3_3": d["AffineTransform_double_3_3"].astype(np.float32),
                                                      "fixed": d["fixed"].astype(np.float32)}, format="4")
    files["aff_float.mat"] = aff
    pts_ras = rng.normal(scale=20.0, size=(10, 3))
    for name, tx in files.items():
        ours = read_transform(tmp_path / name)
        assert isinstance(ours, AffineTransform)
        expected = np.array([tx.TransformPoint(tuple(p * LPS_FLIP)) for p in pts_ras]) * LPS_FLIP
        tol = 1e-4 if "float" in name else 1e-9
        np.testing.assert_allclose(ours(torch.from_numpy(pts_ras)).detach().numpy(), expected, atol=tol, err_msg=name)


def test_simpleitk_written_field_is_read(tmp_path):
    """A displacement field SimpleITK writes (.nii.gz 5D and .mha) maps points as SimpleITK does."""
    rng = np.random.default_rng(3)
    img = sitk.GetImageFromArray(rng.normal(size=(5, 6, 7, 3)), isVector=True)  # (Z, Y, X, 3)
    img.SetSpacing((1.5, 2.0, 0.8))
    img.SetOrigin((3.0, -2.0, 10.0))
    img.SetDirection(tuple(_rotation(rng, oblique=True).ravel()))
    tx = sitk.DisplacementFieldTransform(sitk.Image(img))
    inner = sitk_to_image(img)
    pts_ras = space.world_grid(inner.affine, inner.shape, dtype=torch.float64)[1:-1, 1:-1, 1:-1].reshape(-1, 3) + 0.3
    expected = np.array([tx.TransformPoint(tuple(p * LPS_FLIP)) for p in pts_ras.numpy()]) * LPS_FLIP
    for name in ("sitk_field.nii.gz", "sitk_field.mha"):
        sitk.WriteImage(img, str(tmp_path / name))
        ours = read_transform(tmp_path / name)
        assert isinstance(ours, DisplacementField)
        np.testing.assert_allclose(ours(pts_ras).numpy(), expected, atol=1e-4, err_msg=name)


def test_written_field_layout_is_ants(tmp_path):
    import nibabel as nib

    _, _, fixed, affine, _ = _case(0)
    path = write_transform(affine, tmp_path / "x1Warp.nii.gz", reference=fixed)
    nii = nib.load(str(path))
    assert nii.shape == (*fixed.shape, 1, 3)
    assert int(nii.header["intent_code"]) == 1007
    np.testing.assert_allclose(nii.affine, fixed.affine.numpy(), atol=1e-5)
    # vectors are LPS: the x component of T(x) - x flips sign relative to regkit's RAS
    ras = affine.displacement_on(fixed.affine, fixed.shape, dtype=torch.float64).detach().numpy()
    np.testing.assert_allclose(np.asarray(nii.dataobj)[..., 0, 0], -ras[0], atol=1e-4)
    np.testing.assert_allclose(np.asarray(nii.dataobj)[..., 0, 2], ras[2], atol=1e-4)


def test_antspyx_applies_regkit_files_as_regkit_does(tmp_path):
    ants = pytest.importorskip("ants")
    moving, _, fixed, affine, field = _case(5)
    from regkit.io.images import save_image
    from regkit.transforms import Compose

    save_image(moving, tmp_path / "moving.nii.gz")
    save_image(Image(torch.zeros(1, *fixed.shape), fixed.affine), tmp_path / "fixed.nii.gz")
    write_transform(field, tmp_path / "f1Warp.nii.gz", reference=fixed)
    write_transform(affine, tmp_path / "f0GenericAffine.mat")
    out = ants.apply_transforms(ants.image_read(str(tmp_path / "fixed.nii.gz")), ants.image_read(str(tmp_path / "moving.nii.gz")),
                                transformlist=[str(tmp_path / "f1Warp.nii.gz"), str(tmp_path / "f0GenericAffine.mat")],
                                interpolator="linear")
    ants.image_write(out, str(tmp_path / "ants.nii.gz"))
    from regkit.io.images import load_image

    theirs = load_image(tmp_path / "ants.nii.gz").numpy()
    # antsApplyTransforms -t Warp -t Affine: the warp acts first on fixed points, as Compose(warp, affine)
    chain = Compose(read_transform(tmp_path / "f1Warp.nii.gz"), read_transform(tmp_path / "f0GenericAffine.mat"))
    ours = resample(moving, chain, fixed).numpy()
    assert np.count_nonzero(theirs) > 0.2 * theirs.size
    assert np.abs(ours - theirs).max() < 1e-3 * float(moving.data.max())


def test_composite_h5_with_field_reads_as_chain(tmp_path):
    """An ITK Composite.h5 (affine + displacement field, last added acts first) maps points as
    SimpleITK does, and `regkit apply` resamples through it as SimpleITK's Resample."""
    from regkit.transforms import Compose

    moving, _, fixed, affine, field = _case(2)
    composite = sitk.CompositeTransform(3)
    composite.AddTransform(itk.affine_to_sitk(affine))
    composite.AddTransform(itk.displacement_to_sitk_transform(field))
    sitk.WriteTransform(composite, str(tmp_path / "Composite.h5"))
    ours = read_transform(tmp_path / "Composite.h5")
    assert isinstance(ours, Compose) and [type(t) for t in ours.transforms] == [DisplacementField, AffineTransform]
    pts = space.world_grid(fixed.affine, fixed.shape, dtype=torch.float64).reshape(-1, 3)[::7]
    expected = np.array([composite.TransformPoint(tuple(p * LPS_FLIP)) for p in pts.numpy()]) * LPS_FLIP
    np.testing.assert_allclose(ours(pts).detach().numpy(), expected, atol=1e-6)
    with pytest.raises(Exception, match="non-linear"):
        itk.read_itk_affine(tmp_path / "Composite.h5")


def test_matrix_offset_text_and_4d_nifti_field(tmp_path):
    """Older ANTs/ITK text files name the transform MatrixOffsetTransformBase; some tools write
    fields as X×Y×Z×3 NIfTI. Both read as SimpleITK / the LPS convention say."""
    import nibabel as nib

    (tmp_path / "mo.txt").write_text(
        "#Insight Transform File V1.0\n#Transform 0\nTransform: MatrixOffsetTransformBase_double_3_3\n"
        "Parameters: 0 -1 0 1 0 0 0 0 2 5 -3 1\nFixedParameters: 1 2 3\n")
    ours = read_transform(tmp_path / "mo.txt")
    tx = sitk.ReadTransform(str(tmp_path / "mo.txt"))
    p = np.array([[10.0, -4.0, 7.0], [0.0, 0.0, 0.0]])
    expected = np.array([tx.TransformPoint(tuple(q * LPS_FLIP)) for q in p]) * LPS_FLIP
    np.testing.assert_allclose(ours(torch.from_numpy(p)).detach().numpy(), expected, atol=1e-9)
    # by hand: LPS point q -> M (q - c) + c + t, with RAS = diag(-1,-1,1) LPS
    q = p[0] * LPS_FLIP
    m = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 2.0]])
    np.testing.assert_allclose(expected[0], (m @ (q - [1, 2, 3]) + [1, 2, 3] + [5, -3, 1]) * LPS_FLIP)

    affine = np.diag([2.0, -1.5, 1.0, 1.0])
    affine[:3, 3] = [4.0, 9.0, -3.0]
    lps = np.random.default_rng(0).normal(size=(3, 4, 5, 3)).astype(np.float32)
    nib.save(nib.Nifti1Image(lps, affine), str(tmp_path / "field4d.nii.gz"))
    field = read_transform(tmp_path / "field4d.nii.gz")
    assert isinstance(field, DisplacementField) and field.shape == (3, 4, 5)
    np.testing.assert_allclose(field.displacement[0, :, 1, 2, 3].numpy(), lps[1, 2, 3] * LPS_FLIP)
    np.testing.assert_allclose(field.affine.numpy(), affine)
