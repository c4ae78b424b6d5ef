"""What an ANTs/antspyx user expects from `regkit register`: ANTs' output names and the inverse
written, the same bytes for the same command and seed, partial configs on a preset with --set,
--type rigid/affine, --initial-transform, provenance in log.json, a summary that says what moved
onto what, line-by-line progress in a log file."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from regkit.cli.main import app

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
runner = CliRunner()
# a short schedule: enough to move the labels, seconds on 2 busy cores
SHORT = ["--config", "fast", "--set", "affine.levels.0.iterations=15", "--set", "deformable.levels.0.iterations=8",
         "--set", "deformable.levels.1.iterations=4"]


def _invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def _labels(path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    labels = [v for v in np.unique(b) if v != 0]
    return float(np.mean([2 * ((a == v) & (b == v)).sum() / ((a == v).sum() + (b == v).sum()) for v in labels]))


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    out = tmp_path_factory.mktemp("reg") / "result"
    r = _invoke("register", SAMPLE / "moving.nii.gz", SAMPLE / "fixed.nii.gz", "--out", out, "--config", "fast",
                "--moving-labels", SAMPLE / "moving_labels.nii.gz", "--seed", "1", "--threads", "1")
    assert r.exit_code == 0, r.output
    return out, r.output


def test_ants_names_and_the_inverse_are_written(registered, tmp_path):
    """0GenericAffine.mat + 1Warp.nii.gz = the forward map, "[0GenericAffine.mat,1]" + 1InverseWarp.nii.gz
    and inverse_field.nii.gz = the inverse: the fixed labels land on the moving grid as well as
    ANTs' InverseWarp does for its own SyN of this pair (measured: regkit fast 0.747, ANTs 0.735)."""
    out, _ = registered
    names = {p.name for p in out.iterdir()}
    assert {"0GenericAffine.mat", "1Warp.nii.gz", "1InverseWarp.nii.gz", "inverse_field.nii.gz", "field.nii.gz"} <= names
    dice = {}
    for key, transforms in {"chain": [f"[{out / '0GenericAffine.mat'},1]", out / "1InverseWarp.nii.gz"],
                            "whole": [out / "inverse_field.nii.gz"]}.items():
        r = _invoke("apply", *transforms, SAMPLE / "fixed_labels.nii.gz", "-r", SAMPLE / "moving.nii.gz", "-o", tmp_path / f"{key}.nii.gz")
        assert r.exit_code == 0, r.output
        dice[key] = _dice(_labels(tmp_path / f"{key}.nii.gz"), _labels(SAMPLE / "moving_labels.nii.gz"))
    forward = _dice(_labels(out / "warped_labels.nii.gz"), _labels(SAMPLE / "fixed_labels.nii.gz"))
    assert abs(dice["chain"] - dice["whole"]) < 0.005
    assert dice["chain"] > 0.735 - 0.01 and abs(dice["chain"] - forward) < 0.02, (dice, forward)


def test_ants_inverse_dice_on_its_own_result():
    """The figure the test above compares with: ANTs' InverseWarp of its own SyN (the schedule of
    test_ants_habits) lands the fixed labels on the moving grid with Dice 0.735."""
    ants = pytest.importorskip("ants")
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        fixed, moving = ants.image_read(str(SAMPLE / "fixed.nii.gz")), ants.image_read(str(SAMPLE / "moving.nii.gz"))
        reg = ants.registration(fixed, moving, type_of_transform="SyN", outprefix=str(Path(d) / "reg"), reg_iterations=(40, 20, 0),
                                aff_iterations=(100, 50, 0, 0), random_seed=1, verbose=False)
        inv = ants.apply_transforms(moving, ants.image_read(str(SAMPLE / "fixed_labels.nii.gz")), transformlist=reg["invtransforms"],
                                    whichtoinvert=[True, False], interpolator="nearestNeighbor").numpy()
    assert abs(_dice(inv, _labels(SAMPLE / "moving_labels.nii.gz")) - 0.735) < 0.02


def test_log_json_and_summary(registered):
    out, output = registered
    log = json.loads((out / "log.json").read_text())
    assert log["seed"] == 1 and log["threads"] == 1 and log["device"] == "cpu" and log["command_line"]
    assert log["inputs"]["moving"]["path"] == str((SAMPLE / "moving.nii.gz").resolve())
    import hashlib

    assert log["inputs"]["fixed"]["sha256"] == hashlib.sha256((SAMPLE / "fixed.nii.gz").read_bytes()).hexdigest()
    assert log["versions"]["torch"] == torch.__version__ and log["versions"]["regkit"]
    assert "moving.nii.gz (moving) -> " in output and "fixed.nii.gz (fixed)" in output
    assert "note:" not in output


def test_swapped_names_get_a_plain_note(tmp_path):
    from regkit.cli.register import swapped_note

    assert swapped_note(Path("fixed.nii.gz"), Path("moving.nii.gz")) is not None
    assert "swap" in swapped_note(Path("atlas_t1.nii.gz"), Path("sub01.nii.gz"))
    assert swapped_note(Path("moving.nii.gz"), Path("fixed.nii.gz")) is None
    assert swapped_note(Path("sub01.nii.gz"), Path("mni_template.nii.gz")) is None


def test_same_command_same_seed_same_bytes(tmp_path):
    """--seed 1 --threads 2 twice: byte-identical warped.nii.gz (and fields). Whole processes, as
    a user runs them; stderr to a file gets one line per level (no \\r frames)."""
    outs = []
    for run in ("a", "b"):
        out = tmp_path / run
        with open(tmp_path / f"{run}.err", "w") as err:
            p = subprocess.run([sys.executable, "-m", "regkit.cli", "register", str(SAMPLE / "moving.nii.gz"), str(SAMPLE / "fixed.nii.gz"),
                                "--out", str(out), *SHORT, "--seed", "1", "--threads", "2"], stderr=err, stdout=subprocess.DEVNULL,
                               env={**os.environ, "PYTHONHASHSEED": run == "a" and "1" or "2"})
        assert p.returncode == 0, (tmp_path / f"{run}.err").read_text()
        outs.append(out)
    for name in ("warped.nii.gz", "field.nii.gz", "1Warp.nii.gz", "1InverseWarp.nii.gz", "transform.regkit.safetensors"):
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name
    err = (tmp_path / "a.err").read_text()
    assert "\r" not in err and "deformable 2/2" in err and "(moving) ->" in err
    assert json.loads((outs[0] / "log.json").read_text())["command_line"].startswith("regkit register ")


def test_partial_yaml_is_layered_on_a_preset_and_set_overrides(tmp_path):
    from regkit.optimize import load_config

    (tmp_path / "mine.yaml").write_text("threads: 2\n")
    assert load_config(tmp_path / "mine.yaml").model_dump() == load_config("default", threads=2).model_dump()
    (tmp_path / "fast2.yaml").write_text("base: fast\ndeformable:\n  regularization_weight: 2.0\n")
    cfg = load_config(tmp_path / "fast2.yaml", sets=["deformable.levels.1.iterations=3"])
    fast = load_config("fast")
    assert cfg.deformable.regularization_weight == 2.0 and cfg.deformable.levels[1].iterations == 3
    assert cfg.deformable.levels[0] == fast.deformable.levels[0] and cfg.affine == fast.affine
    r = _invoke("register", SAMPLE / "moving.nii.gz", SAMPLE / "fixed.nii.gz", "--out", tmp_path / "o", "--set", "deformable.levls=1")
    assert r.exit_code == 2 and "levls" in r.output and not (tmp_path / "o").exists()
    r = _invoke("register", SAMPLE / "moving.nii.gz", SAMPLE / "fixed.nii.gz", "--out", tmp_path / "o", "--set", "novalue")
    assert r.exit_code == 2 and "KEY=VALUE" in r.output


def test_a_copied_preset_file_registers_as_the_preset(tmp_path):
    """A user who copies configs/ct.yaml to edit it gets the ct preset, not ct layered on
    `default` (which would add default's rotation search and MI weight)."""
    import shutil
    from importlib import resources

    from regkit.optimize import load_config, preset_names

    for name in preset_names():
        copy = tmp_path / f"my_{name}.yaml"
        shutil.copyfile(resources.files("regkit.configs").joinpath(f"{name}.yaml"), copy)
        assert load_config(copy).model_dump() == load_config(name).model_dump(), name
    ct = load_config(tmp_path / "my_ct.yaml")
    assert ct.affine.rotation_search_deg == [] and ct.metric_weights["mi"] == 1.0
    (tmp_path / "ct_edit.yaml").write_text("base: ct\nlncc_window: 9\n")
    assert load_config(tmp_path / "ct_edit.yaml").model_dump() == load_config("ct", sets=["lncc_window=9"]).model_dump()


def _rotation_deg(m: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip((np.trace(m) - 1) / 2, -1, 1))))


def test_rigid_recovers_a_known_rotation(tmp_path):
    """The sample fixed image with its header rotated 8 degrees about an oblique axis (and shifted):
    --type rigid recovers the rotation to < 0.5 degree (measured 0.25) and writes an orthonormal matrix."""
    from scipy.spatial.transform import Rotation

    from regkit.io.transform_files import read_transform

    img = nib.load(str(SAMPLE / "fixed.nii.gz"))
    rot = Rotation.from_rotvec(np.radians(8.0) * np.array([1.0, 2.0, 0.5]) / np.linalg.norm([1.0, 2.0, 0.5])).as_matrix()
    world = np.eye(4)
    world[:3, :3], world[:3, 3] = rot, [4.0, -3.0, 2.0]
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), world @ img.affine), str(tmp_path / "moving.nii.gz"))
    r = _invoke("register", tmp_path / "moving.nii.gz", SAMPLE / "fixed.nii.gz", "--out", tmp_path / "out", "--type", "rigid",
                "--threads", "1", "--no-progress")  # default preset: 0.25 degree (fast, one 6 mm level: 0.75)
    assert r.exit_code == 0, r.output
    assert not (tmp_path / "out" / "1Warp.nii.gz").exists()
    m = read_transform(tmp_path / "out" / "0GenericAffine.mat").matrix.detach().double().numpy()
    # fixed world x maps to moving world: the moving file's content sits at world @ (its place in fixed)
    assert np.allclose(m @ m.T, np.eye(3), atol=1e-5)
    assert _rotation_deg(m.T @ rot) < 0.5, _rotation_deg(m.T @ rot)
    assert json.loads((tmp_path / "out" / "log.json").read_text())["config"]["affine"]["rigid"] is True


def test_initial_transform_is_kept_as_the_start(tmp_path):
    """A known affine given with --initial-transform and no iterations comes back unchanged."""
    import SimpleITK as sitk

    from regkit.io.transform_files import read_transform

    t = sitk.AffineTransform(3)
    t.SetMatrix([1.02, 0.03, 0.0, -0.02, 0.98, 0.01, 0.0, 0.02, 1.01])
    t.SetTranslation([3.0, -2.0, 1.5])
    sitk.WriteTransform(t, str(tmp_path / "start.mat"))
    r = _invoke("register", SAMPLE / "moving.nii.gz", SAMPLE / "fixed.nii.gz", "--out", tmp_path / "out", "--type", "affine",
                "--initial-transform", tmp_path / "start.mat", "--set", "affine.levels.0.iterations=0", "--set",
                "affine.levels.1.iterations=0", "--no-progress", "--threads", "1")
    assert r.exit_code == 0, r.output
    given, kept = read_transform(tmp_path / "start.mat"), read_transform(tmp_path / "out" / "0GenericAffine.mat")
    assert torch.allclose(given.homogeneous().double(), kept.homogeneous().double(), atol=1e-4)
    assert "start.mat" in json.loads((tmp_path / "out" / "log.json").read_text())["initial_transform_file"]
