"""The QC report: files, embedded PNG, numbers with known answers, and `regkit qc`."""
from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from regkit import space
from regkit.errors import OutputExistsError
from regkit.image import Image
from regkit.report import affine_residual, write_qc
from regkit.transforms import AffineTransform, DisplacementField

# flipped and permuted axes, anisotropic voxels
GRID = np.array([[0.0, -2.0, 0.0, 30.0], [1.5, 0.0, 0.0, -20.0], [0.0, 0.0, -2.5, 25.0], [0.0, 0.0, 0.0, 1.0]])
SHAPE = (24, 20, 16)


def _phantom() -> Image:
    x = space.world_grid(GRID, SHAPE, dtype=torch.float64)
    c = x.reshape(-1, 3).mean(0)
    r = (x - c).norm(dim=-1)
    data = torch.exp(-(r / 12.0) ** 2) + 0.5 * (r < 6).double() + 0.2 * torch.sin(x[..., 0] / 3.0)
    return Image(data[None].float(), GRID)


def _labels(image: Image) -> Image:
    return image.with_data((image.data > 0.6).int() + (image.data > 1.0).int(), is_label=True)


def _identity() -> AffineTransform:
    return AffineTransform(requires_grad=False)


def test_identity_report_files_and_numbers(tmp_path):
    img = _phantom()
    labels = _labels(img)
    out = write_qc(img, img, _identity(), tmp_path / "report", labels=(labels, labels))
    png, page, numbers = (tmp_path / "report" / n for n in ("qc.png", "qc.html", "qc.json"))
    assert [str(p) for p in (png, page, numbers)] == out["files"]
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    pixels = matplotlib.image.imread(str(png))
    assert pixels.shape[0] > 400 and pixels.shape[1] > 1000  # 3 rows × 6 columns of panels
    embedded = re.search(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page.read_text(encoding="utf-8"))
    assert embedded and base64.b64decode(embedded.group(1)) == data  # self-contained
    saved = json.loads(numbers.read_text(encoding="utf-8"))
    assert saved["ncc_after"] == pytest.approx(1.0) and saved["ncc_before"] == pytest.approx(1.0)
    assert saved["jacobian"]["folding_percent"] == 0.0
    assert saved["jacobian"]["min"] == pytest.approx(1.0, abs=1e-6) and saved["jacobian"]["max"] == pytest.approx(1.0, abs=1e-6)
    assert saved["mean_dice_after"] == 1.0 and saved["dice_after"] == {"1": 1.0, "2": 1.0}
    assert saved["displacement_mm"]["max"] == pytest.approx(0.0, abs=1e-5)
    assert saved["report_grid_stride"] == 1
    with pytest.raises(OutputExistsError):
        write_qc(img, img, _identity(), tmp_path / "report")
    write_qc(img, img, _identity(), tmp_path / "report", force=True)


def test_large_grids_are_reported_on_a_subsampled_grid(tmp_path):
    img = _phantom()  # 7680 voxels
    labels = _labels(img)
    numbers = write_qc(img, img, _identity(), tmp_path, labels=(labels, labels), max_voxels=1000)
    assert numbers["report_grid_stride"] == 2  # 7680 / 8 = 960 voxels
    assert numbers["jacobian"]["voxels"] == int((labels.data[0, ::2, ::2, ::2] > 0).sum())
    assert numbers["mean_dice_after"] == 1.0 and numbers["ncc_after"] == pytest.approx(1.0)


def test_report_counts_known_folds_and_separates_the_affine(tmp_path):
    img = _phantom()
    lin = torch.as_tensor(GRID[:3, :3])
    axis, h = lin[:, 0] / torch.linalg.norm(lin[:, 0]), float(torch.linalg.norm(lin[:, 0]))
    i = torch.arange(SHAPE[0], dtype=torch.float64)
    s = -3.0 * (i.clamp(8, 11) - 8) * h  # slope -3 along voxel axis 0 between voxels 8 and 11
    u = (axis[:, None, None, None] * s[None, :, None, None]).expand(3, *SHAPE).float()
    numbers = write_qc(img, img, DisplacementField(u, GRID), tmp_path)
    assert numbers["jacobian"]["folded_voxels"] == 4 * SHAPE[1] * SHAPE[2]
    assert numbers["jacobian"]["folding_percent"] == pytest.approx(100 * 4 / SHAPE[0])
    # a purely affine map leaves no non-affine residual
    x = space.world_grid(GRID, SHAPE, dtype=torch.float64)
    a = AffineTransform(torch.tensor([[1.1, 0.1, 0.0], [0.0, 0.9, 0.05], [0.02, 0.0, 1.0]], dtype=torch.float64),
                        torch.tensor([3.0, -2.0, 1.0], dtype=torch.float64), requires_grad=False)
    assert affine_residual(x, a(x)).abs().max() < 1e-9


def test_qc_command_on_the_sample_pair(sample_paths, tmp_path):
    from regkit.cli.main import app
    from regkit.io.itk import write_itk_affine

    rotation = AffineTransform(torch.tensor([[0.99, -0.1, 0.0], [0.1, 0.99, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64),
                               torch.tensor([2.0, 0.0, -1.0], dtype=torch.float64), requires_grad=False)
    write_itk_affine(rotation, tmp_path / "affine.mat")
    args = ["qc", "--fixed", sample_paths["fixed"], "--moving", sample_paths["moving"], "-t", tmp_path / "affine.mat",
            "-o", tmp_path / "report", "--labels", sample_paths["fixed_labels"], "--moving-labels", sample_paths["moving_labels"]]
    r = CliRunner().invoke(app, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    assert "mean Dice" in r.output
    for name in ("qc.png", "qc.html", "qc.json"):
        assert (tmp_path / "report" / name).stat().st_size > 0
    numbers = json.loads((tmp_path / "report" / "qc.json").read_text(encoding="utf-8"))
    assert numbers["jacobian"]["min"] == pytest.approx(np.linalg.det(rotation.matrix.numpy()), abs=1e-4)
    r = CliRunner().invoke(app, [str(a) for a in args])
    assert r.exit_code == 2 and "exists" in r.output


def test_empty_fixed_label_map_reports_the_whole_grid_and_the_json_is_strict(tmp_path):
    """An all-zero fixed label map made `qc` fail ('the Jacobian mask selects no voxel')."""
    img = _phantom()
    empty = img.with_data(torch.zeros_like(img.data, dtype=torch.int32), is_label=True)
    numbers = write_qc(img, img, _identity(), tmp_path, labels=empty)
    assert numbers["jacobian_region"] == "whole fixed grid" and numbers["jacobian"]["voxels"] == int(np.prod(SHAPE))
    json.loads((tmp_path / "qc.json").read_text(encoding="utf-8"), parse_constant=lambda c: pytest.fail(f"bare {c} in qc.json"))


def test_default_value_is_drawn_where_the_moving_image_does_not_reach():
    """The QC drew 0 outside the moving image whatever --default-value said (mid-grey for a CT,
    like soft tissue); its numbers use only where the moving image has data, so they stay."""
    from regkit.report import qc_numbers

    img = _phantom()
    shift = AffineTransform(torch.eye(3), torch.tensor([0.0, 0.0, 20.0]), requires_grad=False)  # partly outside
    plain, volumes = qc_numbers(img, img, shift)
    numbers, filled = qc_numbers(img, img, shift, default_value=-1000.0)
    warped, warped_plain = filled["warped"].data, volumes["warped"].data
    outside = warped == -1000.0
    assert 0.05 * outside.numel() < int(outside.sum()) < 0.9 * outside.numel()
    assert torch.all(warped_plain[outside] == 0)
    assert torch.equal(warped[~outside], warped_plain[~outside])
    assert numbers["ncc_after"] == plain["ncc_after"]


def test_label_outlines_are_the_edges_between_different_values():
    """Every pixel edge between two different label values, and only those, in imshow's
    pixel coordinates (centres at whole numbers; x is the column)."""
    from regkit.report import label_outlines

    labels = np.array([[0, 0, 5],
                       [0, 3, 5]])
    segments = {tuple(map(tuple, s)) for s in label_outlines(labels).tolist()}
    assert segments == {((1.5, -0.5), (1.5, 0.5)),  # row 0: 0 | 5
                        ((0.5, 0.5), (0.5, 1.5)), ((1.5, 0.5), (1.5, 1.5)),  # row 1: 0 | 3 | 5
                        ((0.5, 0.5), (1.5, 0.5))}  # column 1: 0 above 3
    assert label_outlines(np.full((4, 3), 7)).shape == (0, 2, 2)
    noise = np.random.default_rng(0).integers(0, 10**6, (64, 64))
    assert len(label_outlines(noise)) == 2 * 64 * 63  # every edge of a map of distinct values
