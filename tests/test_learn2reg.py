"""`regkit export --format learn2reg` passes the checks of the current Learn2Reg evaluator
(MDL-UzL/L2R ``evaluation/evaluation.py`` + ``utils.py``), reproduced here: which file name it
looks up for a pair, ``np.load(...)['arr_0']`` cast to float32, shape == expected ``X×Y×Z×3``;
and its Dice — moving labels warped by ``map_coordinates(moving, identity + d, order=0)`` —
equals regkit's own Dice to 1e-3. The sample pair's grids differ (the moving one is oblique,
flipped and anisotropic), so the moving grid's voxel units are checked too."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from known_transforms import known_transform
from typer.testing import CliRunner

from regkit import metrics
from regkit.io.images import load_image, load_label
from regkit.io.transform_files import write_transform
from regkit.resample import resample


def evaluator_finds(folder, fixed_name: str, moving_name: str):
    """The displacement file the evaluator opens for a pair, by its rule: subject = name[-16:-12],
    modality = name[-11:-7]; the short name for the same modality (or 0000 → 0001), else the full one."""
    fs, fm, ms, mm = fixed_name[-16:-12], fixed_name[-11:-7], moving_name[-16:-12], moving_name[-11:-7]
    stem = f"disp_{fs}_{ms}" if (fm == mm or (fm == "0000" and mm == "0001")) else f"disp_{fs}_{fm}_{ms}_{mm}"
    for ext in (".npz", ".nii.gz"):
        if os.path.isfile(os.path.join(folder, stem + ext)):
            return os.path.join(folder, stem + ext)
    return None


def evaluator_loads(path: str) -> np.ndarray:
    with np.load(path) as f:  # the evaluator passes allow_pickle=True; regkit's file needs no pickle
        disp = f["arr_0"]
    return disp.astype(np.float32) if disp.dtype != np.float32 else disp


def evaluator_dice(fixed_seg: np.ndarray, moving_seg: np.ndarray, disp: np.ndarray, labels) -> float:
    from scipy.ndimage import map_coordinates

    identity = np.meshgrid(*[np.arange(s) for s in fixed_seg.shape], indexing="ij")
    warped = map_coordinates(moving_seg, identity + disp.transpose(3, 0, 1, 2), order=0)
    scores = []
    for i in labels:
        if (fixed_seg == i).sum() == 0 or (moving_seg == i).sum() == 0:
            continue
        a, b = fixed_seg == i, warped == i
        scores.append(2 * (a & b).sum() / (a.sum() + b.sum()))
    return float(np.mean(scores))


@pytest.fixture(scope="module")
def l2r_pair(sample_paths, tmp_path_factory):
    folder = tmp_path_factory.mktemp("l2r")
    names = {"fixed": "OASIS_0001_0000.nii.gz", "moving": "OASIS_0002_0000.nii.gz",
             "fixed_labels": "labels_0001_0000.nii.gz", "moving_labels": "labels_0002_0000.nii.gz"}
    for key, name in names.items():
        (folder / name).symlink_to(sample_paths[key])
    fixed = load_image(sample_paths["fixed"])
    transform_path = folder / "t.regkit.safetensors"
    write_transform(known_transform(fixed), transform_path)
    return folder, names, transform_path


def _export(folder, names, transform_path, out, *extra):
    from regkit.cli.main import app

    return CliRunner().invoke(app, ["export", str(transform_path), "--reference", str(folder / names["fixed"]),
                                    "--moving", str(folder / names["moving"]), "--format", "learn2reg",
                                    "-o", f"{out}/", *extra])


@pytest.mark.parametrize("float16", [False, True])
def test_learn2reg_export_passes_the_evaluator_checks_and_gives_regkits_dice(l2r_pair, sample_paths, tmp_path, float16):
    folder, names, transform_path = l2r_pair
    out = tmp_path / "submission"
    r = _export(folder, names, transform_path, out, *(["--float16"] if float16 else []))
    assert r.exit_code == 0, r.output
    found = evaluator_finds(str(out), f"imagesTr/{names['fixed']}", f"imagesTr/{names['moving']}")
    assert found is not None and os.path.basename(found) == "disp_0001_0002.npz", sorted(os.listdir(out))
    with np.load(found, allow_pickle=False) as f:
        assert list(f.keys()) == ["arr_0"] and f["arr_0"].dtype == (np.float16 if float16 else np.float32)
    disp = evaluator_loads(found)
    fixed_labels, moving_labels = load_label(sample_paths["fixed_labels"]), load_label(sample_paths["moving_labels"])
    expected_shape = np.array(list(fixed_labels.shape) + [3])
    assert np.all(np.array(disp.shape) == expected_shape)

    fixed_seg, moving_seg = fixed_labels.data[0].numpy(), moving_labels.data[0].numpy()
    labels = sorted(int(v) for v in np.unique(fixed_seg) if v > 0)
    theirs = evaluator_dice(fixed_seg, moving_seg, disp, labels)
    with torch.no_grad():
        warped = resample(moving_labels, known_transform(load_image(sample_paths["fixed"])), fixed_labels)
    ours = metrics.summarize(metrics.dice(fixed_labels, warped, labels))
    assert abs(theirs - ours) < 1e-3, (theirs, ours)
    assert ours > 0.3  # the known transform is not the registration: the check is agreement, not quality


def test_learn2reg_names_cross_modality_pairs_in_full_and_refuses_unnamed_images(l2r_pair, sample_paths, tmp_path):
    folder, names, transform_path = l2r_pair
    r = _export(folder, names, transform_path, tmp_path / "a", "--case", "0001_0002_0003_0000")
    assert r.exit_code == 0, r.output
    assert evaluator_finds(str(tmp_path / "a"), "x/T_0001_0002.nii.gz", "x/T_0003_0000.nii.gz").endswith("disp_0001_0002_0003_0000.npz")

    from regkit.cli.main import app

    r = CliRunner().invoke(app, ["export", str(transform_path), "--reference", str(sample_paths["fixed"]),
                                 "--moving", str(sample_paths["moving"]), "--format", "learn2reg", "-o", f"{tmp_path / 'b'}/"])
    assert r.exit_code == 2 and "fixed.nii.gz" in r.output and "--case" in r.output and not (tmp_path / "b").exists()
    r = CliRunner().invoke(app, ["export", str(transform_path), "--reference", str(sample_paths["fixed"]),
                                 "--format", "learn2reg-2021", "-o", f"{tmp_path / 'c'}/"])
    assert r.exit_code == 0, r.output
    with np.load(tmp_path / "c" / "disp.npz", allow_pickle=False) as f:
        assert f["arr_0"].shape == (3,) + load_image(sample_paths["fixed"]).shape
