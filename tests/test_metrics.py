"""Metrics and `regkit evaluate` on hand-made cases with known answers."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from regkit import metrics, space
from regkit.image import Image
from regkit.io.images import save_image
from regkit.io.itk import write_itk_displacement
from regkit.transforms import AffineTransform

# permuted, flipped, anisotropic and oblique: the kind of grid that breaks voxel-space shortcuts
OBLIQUE = np.array([[0.13052775, -0.19142601, -2.59011197, 89.5],
                    [-2.18411016, -0.32404795, -0.13574202, 106.8],
                    [-0.22940244, 2.97629786, -0.18136683, -75.9],
                    [0.0, 0.0, 0.0, 1.0]])
AXIS_ALIGNED = np.diag([2.0, 1.5, 3.0, 1.0])


def _linear_field(matrix: torch.Tensor, affine, shape) -> torch.Tensor:
    """u(x) = (M - I) x on a grid: the transform x -> M x, whose Jacobian is M everywhere."""
    x = space.world_grid(affine, shape, dtype=torch.float64)
    return (x @ matrix.T - x).movedim(-1, 0)


@pytest.mark.parametrize("affine", [OBLIQUE, AXIS_ALIGNED], ids=["oblique", "axis-aligned"])
def test_jacobian_of_linear_map_is_its_determinant_on_any_grid(affine):
    m = torch.tensor([[1.1, 0.05, 0.0], [0.02, 0.9, 0.1], [0.0, -0.05, 1.2]], dtype=torch.float64)
    det = metrics.jacobian_determinant(_linear_field(m, affine, (9, 8, 7)), affine)
    assert det.shape == (9, 8, 7)
    assert torch.allclose(det, torch.linalg.det(m).expand_as(det), atol=1e-9)


def test_jacobian_agrees_with_simpleitk_on_an_axis_aligned_grid():
    import SimpleITK as sitk

    # SimpleITK's filter ignores the direction matrix, so compare on a grid that has none: index
    # axes = world axes, spacing only (an independent finite-difference implementation)
    shape = (12, 10, 8)
    spacing = (2.0, 1.5, 3.0)
    x = space.world_grid(AXIS_ALIGNED, shape, dtype=torch.float64)
    u = torch.stack([torch.sin(x[..., 1] / 5.0) * 2.0, torch.cos(x[..., 2] / 7.0) * x[..., 0] / 10.0, torch.sin(x[..., 0] / 6.0)], dim=0)
    ours = metrics.jacobian_determinant(u, AXIS_ALIGNED).numpy()
    img = sitk.GetImageFromArray(np.ascontiguousarray(np.moveaxis(u.numpy(), 0, -1).transpose(2, 1, 0, 3)), isVector=True)
    img.SetSpacing(spacing)  # identity direction: index axes = world axes, as in AXIS_ALIGNED
    theirs = sitk.GetArrayFromImage(sitk.DisplacementFieldJacobianDeterminant(img)).transpose(2, 1, 0)
    inner = (slice(1, -1),) * 3  # ITK's border handling differs
    np.testing.assert_allclose(ours[inner], theirs[inner], atol=1e-5)


def test_jacobian_in_slabs_equals_the_whole_computation():
    u = torch.randn(3, 7, 5, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    whole = metrics.jacobian_determinant(u, OBLIQUE)
    for voxels_per_chunk in (1, 20, 40):  # slabs of 1, 1 and 2 voxels along X
        assert torch.allclose(metrics.jacobian_determinant(u, OBLIQUE, voxels_per_chunk=voxels_per_chunk), whole, atol=1e-12)


def _folded_field(affine, shape, i0: int, i1: int) -> torch.Tensor:
    """u_x piecewise linear along the first voxel axis, slope -3 between voxels i0 and i1: det J
    is -2 strictly inside, -0.5 on the two kinks (central differences) and 1 elsewhere."""
    lin = space.as_affine(affine)[:3, :3]
    axis = lin[:, 0] / torch.linalg.norm(lin[:, 0])  # world direction of voxel axis 0
    h = float(torch.linalg.norm(lin[:, 0]))
    i = torch.arange(shape[0], dtype=torch.float64)
    s = -3.0 * (i.clamp(i0, i1) - i0) * h  # mm along the axis
    u = axis[:, None, None, None] * s[None, :, None, None]
    return u.expand(3, *shape).clone()


def test_known_folding_fraction_and_mask():
    shape = (20, 6, 5)
    det = metrics.jacobian_determinant(_folded_field(OBLIQUE, shape, 5, 9), OBLIQUE)
    stats = metrics.jacobian_stats(det)
    assert stats.folded_voxels == 5 * 6 * 5  # voxels 5..9 inclusive along axis 0
    assert stats.folding_percent == pytest.approx(100.0 * 5 / 20)
    assert stats.min == pytest.approx(-2.0) and stats.max == pytest.approx(1.0)
    mask = torch.zeros(shape, dtype=torch.bool)
    mask[12:] = True  # unfolded part only
    inside = metrics.jacobian_stats(det, mask)
    assert inside.folded_voxels == 0 and inside.std_log_jacobian == pytest.approx(0.0, abs=1e-12)


def _cubes(shift: int, affine=AXIS_ALIGNED):
    """Label 1: a 10³ cube and the same cube shifted by `shift` voxels along axis 0 (Dice =
    (10 - shift) / 10); label 2 only in the fixed map (Dice 0, HD95 NaN)."""
    f = np.zeros((30, 24, 20), np.int32)
    w = np.zeros_like(f)
    f[5:15, 5:15, 5:15] = 1
    w[5 + shift:15 + shift, 5:15, 5:15] = 1
    f[20:24, 18:22, 2:6] = 2
    return Image.from_numpy(f, affine, is_label=True), Image.from_numpy(w, affine, is_label=True)


def test_dice_known_overlap():
    f, w = _cubes(2)
    d = metrics.dice(f, w)
    assert d == {1: pytest.approx(0.8), 2: 0.0}
    assert metrics.summarize(d) == pytest.approx(0.4)
    assert metrics.dice(f, f) == {1: 1.0, 2: 1.0}


def test_dice_of_many_labels_equals_the_per_label_definition():
    """Dice counts every label in one pass (a loop over values cost labels × voxels); it equals
    2|F∩W| / (|F| + |W|) per value, NaN for a value in neither map, 0 for one in one only."""
    rng = np.random.default_rng(3)
    f = rng.integers(-3, 40, (12, 10, 8)).astype(np.int32)
    w = np.where(rng.random(f.shape) < 0.7, f, rng.integers(-3, 45, f.shape)).astype(np.int32)
    fi, wi = Image.from_numpy(f, np.eye(4), is_label=True), Image.from_numpy(w, np.eye(4), is_label=True)
    asked = [5, -3, 39, 44, 1000, 5]  # 44: in w only; 1000: in neither; 5 twice
    got = metrics.dice(fi, wi, asked)
    for v in asked:
        total = int((f == v).sum() + (w == v).sum())
        expected = 2.0 * int(((f == v) & (w == v)).sum()) / total if total else float("nan")
        assert got[v] == pytest.approx(expected, nan_ok=True), v
    assert got[44] == 0.0 and np.isnan(got[1000])
    assert sorted(metrics.dice(fi, wi)) == sorted(int(v) for v in np.unique(f) if v != 0)


def _brute_force_hd95(a: np.ndarray, b: np.ndarray, affine) -> float:
    """Independent HD95: surface voxels (6-neighbour border) in world mm, KD-tree distances."""
    from scipy.spatial import cKDTree

    def surface_points(m):
        padded = np.pad(m, 1)
        interior = np.ones_like(m)
        for axis in range(3):
            for step in (-1, 1):
                interior &= np.roll(padded, step, axis=axis)[1:-1, 1:-1, 1:-1]
        ijk = np.argwhere(m & ~interior)
        return ijk @ affine[:3, :3].T + affine[:3, 3]

    pa, pb = surface_points(a), surface_points(b)
    return max(np.percentile(cKDTree(pb).query(pa)[0], 95), np.percentile(cKDTree(pa).query(pb)[0], 95))


def test_hd95_matches_an_independent_computation_with_anisotropic_spacing():
    rng = np.random.default_rng(0)
    ijk = np.stack(np.meshgrid(*[np.arange(s) for s in (30, 24, 20)], indexing="ij"), axis=-1)
    ball = lambda c, r: (((ijk - c) * np.array([2.0, 1.5, 3.0])) ** 2).sum(-1) <= r ** 2
    f = ball(np.array([14, 12, 10]), 14.0)
    w = ball(np.array([15.5, 11, 10.4]) + rng.normal(0, 0.2, 3), 12.0)
    fi = Image.from_numpy(f.astype(np.int32), AXIS_ALIGNED, is_label=True)
    wi = Image.from_numpy(w.astype(np.int32), AXIS_ALIGNED, is_label=True)
    assert metrics.hd95(fi, wi)[1] == pytest.approx(_brute_force_hd95(f, w, AXIS_ALIGNED), abs=1e-6)
    f2, w2 = _cubes(3)
    h = metrics.hd95(f2, w2)
    assert h[1] == pytest.approx(_brute_force_hd95(f2.numpy() == 1, w2.numpy() == 1, AXIS_ALIGNED), abs=1e-6)
    assert h[1] <= 3 * 2.0 + 1e-9 and np.isnan(h[2])  # never more than the shift (3 voxels × 2 mm)


def test_landmarks_ras_and_lps_and_tre(tmp_path):
    fixed = np.array([[10.0, -20.0, 5.0], [0.0, 0.0, 0.0], [-30.5, 12.0, 40.0]])
    shift = np.array([1.0, 2.0, 2.0])  # |shift| = 3 mm
    errors = np.array([[0.0, 0.0, 0.0], [3.0, 4.0, 0.0], [0.0, 0.0, -1.0]])  # 0, 5, 1 mm
    moving = fixed + shift + errors
    (tmp_path / "f.csv").write_text("label,x,y,z\n" + "".join(f"p{i},{x},{y},{z}\n" for i, (x, y, z) in enumerate(fixed)))
    lps = moving * np.array([-1.0, -1.0, 1.0])
    (tmp_path / "m.csv").write_text("".join(f"{x},{y},{z},0\n" for x, y, z in lps))  # no header, ANTs t column
    pf = metrics.read_landmarks(tmp_path / "f.csv")
    pm = metrics.read_landmarks(tmp_path / "m.csv", lps=True)
    np.testing.assert_allclose(pm.numpy(), moving)
    translation = AffineTransform(translation=torch.tensor(shift, dtype=torch.float64), requires_grad=False).double()
    np.testing.assert_allclose(metrics.target_registration_error(pf, pm, translation).numpy(), [0.0, 5.0, 1.0], atol=1e-5)
    np.testing.assert_allclose(metrics.target_registration_error(pf, pm).numpy(), np.linalg.norm(shift + errors, axis=1))


def _cli(*args):
    from regkit.cli.main import app

    return CliRunner().invoke(app, [str(a) for a in args])


def test_evaluate_command_reports_known_dice_folding_and_tre(tmp_path):
    f, w = _cubes(2, affine=OBLIQUE)
    save_image(f, tmp_path / "fixed_labels.nii.gz")
    save_image(w, tmp_path / "warped_labels.nii.gz")
    write_itk_displacement(_folded_field(OBLIQUE, f.shape, 5, 9), OBLIQUE, tmp_path / "field.nii.gz")
    (tmp_path / "f.csv").write_text("x,y,z\n0,0,0\n10,10,10\n")
    (tmp_path / "m.csv").write_text("x,y,z\n3,4,0\n10,10,10\n")
    r = _cli("evaluate", "--fixed-labels", tmp_path / "fixed_labels.nii.gz", "--warped-labels", tmp_path / "warped_labels.nii.gz",
             "--field", tmp_path / "field.nii.gz", "--landmarks-fixed", tmp_path / "f.csv", "--landmarks-moving", tmp_path / "m.csv",
             "--json", tmp_path / "scores.json")
    assert r.exit_code == 0, r.output
    assert "Dice" in r.output and "folding 16.6667%" in r.output
    numbers = json.loads((tmp_path / "scores.json").read_text())
    assert numbers["labels"]["1"]["dice"] == pytest.approx(0.8)
    assert numbers["labels"]["2"]["dice"] == 0.0
    assert numbers["labels"]["2"]["hd95_mm"] is None  # label 2 is absent from the warped map: said so
    assert "note: label(s) 2 missing from one of the maps" in r.output
    assert numbers["jacobian"]["folded_voxels"] == 5 * 24 * 20
    assert numbers["jacobian"]["folding_percent"] == pytest.approx(100 * 5 / 30)
    assert numbers["initial_distance_mm"]["per_point"] == pytest.approx([5.0, 0.0])
    again = _cli("evaluate", "--fixed-labels", tmp_path / "fixed_labels.nii.gz", "--warped-labels", tmp_path / "warped_labels.nii.gz",
                 "--json", tmp_path / "scores.json")
    assert again.exit_code == 2 and "exists" in again.output


def test_evaluate_command_rejects_labels_on_another_grid(tmp_path):
    f, w = _cubes(1)
    save_image(f, tmp_path / "fixed_labels.nii.gz")
    save_image(Image(w.data, OBLIQUE, is_label=True), tmp_path / "warped_labels.nii.gz")
    r = _cli("evaluate", "--fixed-labels", tmp_path / "fixed_labels.nii.gz", "--warped-labels", tmp_path / "warped_labels.nii.gz")
    assert r.exit_code == 2 and "warped_labels.nii.gz" in r.output and "grid" in r.output


def test_landmark_csv_from_excel_reads_and_nan_coordinates_are_refused(tmp_path):
    """Excel's "CSV UTF-8" starts with a BOM ('\\ufeffx' was not a column name); a NaN coordinate
    used to map to NaN and report 'TRE: nan'."""
    from regkit.errors import InputError

    (tmp_path / "bom.csv").write_bytes("x,y,z\n1,2,3\n-4.5,0,7\n".encode("utf-8-sig"))
    np.testing.assert_array_equal(metrics.read_landmarks(tmp_path / "bom.csv").numpy(), [[1, 2, 3], [-4.5, 0, 7]])
    (tmp_path / "nan.csv").write_text("x,y,z\n1,2,3\n0,0,nan\n")
    with pytest.raises(InputError, match=r"nan.csv: landmark 2 .*NaN"):
        metrics.read_landmarks(tmp_path / "nan.csv")
