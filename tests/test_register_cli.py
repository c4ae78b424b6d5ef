"""`regkit register` end to end on the sample pair: outputs, --force rule, `regkit apply` agreement."""
from __future__ import annotations

import json

import numpy as np
import nibabel as nib
import pytest
from typer.testing import CliRunner

from regkit.cli.main import app

runner = CliRunner()

TINY = """# a quick configuration for the tests
affine:
  levels:
    - {spacing_mm: 6, iterations: 8}
deformable:
  levels:
    - {spacing_mm: 5, control_spacing_mm: 10, iterations: 6}
"""
OUTPUTS = ["warped.nii.gz", "warped_labels.nii.gz", "field.nii.gz", "inverse_field.nii.gz", "transform.regkit.safetensors",
           "0GenericAffine.mat", "1Warp.nii.gz", "1InverseWarp.nii.gz", "log.json", "log.txt"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def registered(sample_paths, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("register")
    cfg = tmp / "tiny.yaml"
    cfg.write_text(TINY)
    out = tmp / "out"
    r = invoke("register", sample_paths["moving"], sample_paths["fixed"], "--out", out,
               "--moving-labels", sample_paths["moving_labels"], "--config", cfg, "--seed", 1, "--no-progress")
    assert r.exit_code == 0, r.output
    return {"out": out, "cfg": cfg, "output": r.output, "tmp": tmp}


def test_writes_every_output(registered, sample_paths):
    out = registered["out"]
    for name in OUTPUTS:
        assert (out / name).is_file(), name
    assert "regkit register: " in registered["output"] and "(fixed): done in" in registered["output"]
    field = nib.load(str(out / "field.nii.gz"))
    fixed = nib.load(str(sample_paths["fixed"]))
    assert field.shape == fixed.shape + (1, 3)
    assert field.header.get_intent()[0] == "vector"
    log = json.loads((out / "log.json").read_text())
    assert [lv["stage"] for lv in log["levels"]] == ["affine", "deformable"]
    labels = np.asarray(nib.load(str(out / "warped_labels.nii.gz")).dataobj)
    assert labels.dtype.kind == "i" and set(np.unique(labels)) <= set(range(7))


def test_refuses_to_overwrite_without_force(registered, sample_paths):
    out = registered["out"]
    before = (out / "warped.nii.gz").stat().st_mtime_ns
    r = invoke("register", sample_paths["moving"], sample_paths["fixed"], "--out", out, "--config", registered["cfg"], "--no-progress")
    assert r.exit_code == 2
    assert "exists" in r.output and "--force" in r.output
    assert (out / "warped.nii.gz").stat().st_mtime_ns == before


def test_out_that_is_a_file_is_refused_before_any_work(sample_paths, tmp_path):
    not_a_folder = tmp_path / "results"
    not_a_folder.write_text("a user's notes")
    r = invoke("register", sample_paths["moving"], sample_paths["fixed"], "--out", not_a_folder, "--no-progress")
    assert r.exit_code == 2
    assert f"{not_a_folder}: is a file, not a folder" in r.output and "Traceback" not in r.output
    assert "done in" not in r.output and "level" not in r.output  # refused before registering
    assert not_a_folder.read_text() == "a user's notes" and sorted(p.name for p in tmp_path.iterdir()) == ["results"]


def test_an_existing_qc_file_is_refused_before_any_work(sample_paths, tmp_path):
    """--qc's files are outputs too: refused up front, not after the registration with the other
    outputs already written."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "qc.html").write_text("last week's report")
    r = invoke("register", sample_paths["moving"], sample_paths["fixed"], "--out", out, "--qc", "--no-progress")
    assert r.exit_code == 2 and f"{out / 'qc.html'}: exists" in r.output, r.output
    assert "done in" not in r.output and sorted(p.name for p in out.iterdir()) == ["qc.html"]


def test_options_for_one_pair_are_refused_with_pairs(sample_paths, tmp_path):
    """--pairs used to accept --moving-labels, --qc, masks, --seed and MOVING FIXED and ignore them."""
    manifest = tmp_path / "pairs.csv"
    manifest.write_text(f"moving,fixed\n{sample_paths['moving']},{sample_paths['fixed']}\n")
    for extra in (["--qc"], ["--moving-labels", sample_paths["moving_labels"]], ["--seed", 1]):
        r = invoke("register", "--pairs", manifest, "--out", tmp_path / "cohort", *extra)
        assert r.exit_code == 2 and f"{manifest}: --pairs takes the images" in r.output and extra[0] in r.output, r.output
    r = invoke("register", sample_paths["moving"], sample_paths["fixed"], "--pairs", manifest, "--out", tmp_path / "cohort")
    assert r.exit_code == 2 and "MOVING/FIXED cannot be combined" in r.output, r.output
    assert not (tmp_path / "cohort").exists()


@pytest.mark.parametrize("transforms", [["transform.regkit.safetensors"], ["field.nii.gz"], ["1Warp.nii.gz", "0GenericAffine.mat"]])
def test_apply_reproduces_warped(registered, sample_paths, transforms, tmp_path):
    out = registered["out"]
    target = tmp_path / "again.nii.gz"
    r = invoke("apply", *[out / t for t in transforms], sample_paths["moving"], "-r", sample_paths["fixed"], "-o", target)
    assert r.exit_code == 0, r.output
    a = np.asarray(nib.load(str(target)).dataobj)
    b = np.asarray(nib.load(str(out / "warped.nii.gz")).dataobj)
    scale = float(np.abs(b).max())
    tol = 1e-4 if transforms == ["transform.regkit.safetensors"] else 0.02  # dense fields: trilinear of a trilinear
    assert float(np.abs(a - b).mean()) / scale < tol / 10
    assert float(np.percentile(np.abs(a - b), 99)) / scale < tol


def test_bad_config_key_is_one_line_exit_2(registered, sample_paths):
    bad = registered["tmp"] / "bad.yaml"
    bad.write_text("deformable:\n  regularisation_weight: 1\n")
    r = invoke("register", sample_paths["moving"], sample_paths["fixed"], "--out", registered["tmp"] / "x", "--config", bad)
    assert r.exit_code == 2
    assert "deformable.regularisation_weight" in r.output and len(r.output.strip().splitlines()) == 1


def test_unknown_metric_and_missing_file(registered, sample_paths):
    r = invoke("register", sample_paths["moving"], sample_paths["fixed"], "--out", registered["tmp"] / "y", "--metric", "ncc")
    assert r.exit_code == 2 and "--metric" in r.output
    r = invoke("register", registered["tmp"] / "nope.nii.gz", sample_paths["fixed"], "--out", registered["tmp"] / "y")
    assert r.exit_code == 2 and "nope.nii.gz" in r.output


def test_version_names_regkit_and_torch():
    from importlib.metadata import version

    r = invoke("--version")
    assert r.exit_code == 0 and r.output.startswith(f"regkit {version('regkit')} (torch {version('torch')}"), r.output


def test_warped_labels_keep_the_labels_file_type(registered, sample_paths, tmp_path):
    """A uint8 label map came back int16 (apply kept uint8): the file's own type is kept now,
    with the same values as the int16 run."""
    src = nib.load(str(sample_paths["moving_labels"]))
    labels_u8 = tmp_path / "labels_u8.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(src.dataobj).astype(np.uint8), src.affine), str(labels_u8))
    assert nib.load(str(labels_u8)).get_data_dtype() == np.uint8
    r = invoke("register", sample_paths["moving"], sample_paths["fixed"], "--out", tmp_path / "out",
               "--moving-labels", labels_u8, "--config", registered["cfg"], "--seed", 1, "--no-progress")
    assert r.exit_code == 0, r.output
    warped = nib.load(str(tmp_path / "out" / "warped_labels.nii.gz"))
    assert warped.get_data_dtype() == np.uint8
    before = np.asarray(nib.load(str(registered["out"] / "warped_labels.nii.gz")).dataobj)
    assert np.array_equal(np.asarray(warped.dataobj), before)
    assert np.asarray(nib.load(str(registered["out"] / "warped_labels.nii.gz")).dataobj).dtype == np.int16


def test_default_value_fills_where_the_moving_image_does_not_reach(registered, sample_paths, tmp_path):
    """--default-value: warped.nii.gz holds it where the (cropped) moving image does not reach,
    as `regkit apply -f` gives from the written transform; the labels keep 0 there."""
    src = nib.load(str(sample_paths["moving"]))
    cropped = tmp_path / "moving_cropped.nii.gz"
    nib.save(src.slicer[:, :, : src.shape[2] // 2], str(cropped))
    labels = nib.load(str(sample_paths["moving_labels"]))
    cropped_labels = tmp_path / "labels_cropped.nii.gz"
    nib.save(labels.slicer[:, :, : labels.shape[2] // 2], str(cropped_labels))
    out = tmp_path / "out"
    r = invoke("register", cropped, sample_paths["fixed"], "--out", out, "--moving-labels", cropped_labels,
               "--config", registered["cfg"], "--seed", 1, "--no-progress", "--default-value", -7)
    assert r.exit_code == 0, r.output
    warped = np.asarray(nib.load(str(out / "warped.nii.gz")).dataobj)
    outside = warped == -7
    assert outside.sum() > 0.2 * warped.size and (warped > 0).sum() > 0.2 * warped.size
    assert np.all(np.asarray(nib.load(str(out / "warped_labels.nii.gz")).dataobj)[outside] == 0)
    again = tmp_path / "again.nii.gz"
    r = invoke("apply", out / "transform.regkit.safetensors", cropped, "-r", sample_paths["fixed"], "-o", again, "-f", -7)
    assert r.exit_code == 0, r.output
    a = np.asarray(nib.load(str(again)).dataobj)
    assert np.array_equal(a == -7, outside) and np.abs(a - warped).max() < 1e-3 * np.abs(warped).max()
    assert json.loads((out / "log.json").read_text())["default_value"] == -7


def test_an_empty_mask_is_refused_in_one_line(sample_paths, tmp_path):
    """An all-zero --fixed-mask ran to the end with a flat loss of 1.0 and returned the start
    (exit 0); now exit 2 naming the file, before any output."""
    src = nib.load(str(sample_paths["fixed"]))
    empty = tmp_path / "empty_mask.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(src.shape, np.uint8), src.affine), str(empty))
    for option in ("--fixed-mask", "--moving-mask"):
        r = invoke("register", sample_paths["moving"], sample_paths["fixed"], "--out", tmp_path / "out", option, empty, "--no-progress")
        assert r.exit_code == 2, r.output
        assert "empty_mask.nii.gz" in r.output and "empty" in r.output and len(r.output.strip().splitlines()) == 1
        assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("suffix", [".mat", ".h5"])
def test_invert_to_an_affine_file_is_refused_before_the_work(registered, tmp_path, suffix):
    """invert of a deformable transform to .mat/.h5 inverted the whole field, printed its
    round-trip error, then refused the suffix; now refused first, in one line."""
    target = tmp_path / f"inverse{suffix}"
    r = invoke("invert", registered["out"] / "transform.regkit.safetensors", "-o", target)
    assert r.exit_code == 2, r.output
    assert "not affine" in r.output and "round trip" not in r.output and len(r.output.strip().splitlines()) == 1
    assert not target.exists()
    r = invoke("invert", registered["out"] / "0GenericAffine.mat", "-o", tmp_path / "affine_inverse.mat")  # an affine still is
    assert r.exit_code == 0, r.output


def test_optimiser_options_without_refinement_are_refused(sample_paths, tmp_path):
    """--model with --refine 0 ran the prediction alone and silently ignored --metric, --config,
    masks and --seed (writing --metric into the log); now exit 2 before any work."""
    r = invoke("register", sample_paths["moving"], sample_paths["fixed"], "--out", tmp_path / "o", "--model", tmp_path / "none.safetensors",
               "--metric", "mi", "--seed", 3)
    assert r.exit_code == 2 and "--metric, --seed set the optimiser's refinement" in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1 and not (tmp_path / "o").exists()


def test_evaluate_scores_a_native_transform_on_a_reference_grid(registered, sample_paths, tmp_path):
    """evaluate --field transform.regkit.safetensors needed label maps only to get a grid; with
    --reference FIXED it scores the same Jacobian as the written field.nii.gz."""
    out = registered["out"]
    r = invoke("evaluate", "--field", out / "transform.regkit.safetensors")
    assert r.exit_code == 2 and "--reference FIXED" in r.output, r.output
    scores = {}
    for name, args in (("native", ["--field", out / "transform.regkit.safetensors", "-r", sample_paths["fixed"]]),
                       ("field", ["--field", out / "field.nii.gz"])):
        r = invoke("evaluate", *args, "--json", tmp_path / f"{name}.json")
        assert r.exit_code == 0, r.output
        scores[name] = json.loads((tmp_path / f"{name}.json").read_text())["jacobian"]
    assert scores["native"]["std_log_jacobian"] > 0.01
    assert abs(scores["native"]["std_log_jacobian"] - scores["field"]["std_log_jacobian"]) < 1e-3


def test_qc_and_evaluate_take_an_ants_order_chain(registered, sample_paths, tmp_path):
    """-t 1Warp.nii.gz -t 0GenericAffine.mat scores the whole chain, as apply does (a repeated -t used
    to keep only the last file: the affine alone, with 0 mm of non-affine motion in the QC)."""
    out = registered["out"]
    points = tmp_path / "fixed.csv"
    points.write_text("x,y,z\n0,0,0\n10,-20,15\n-30,5,-10\n-12,18,4\n")
    r = invoke("apply", out / "transform.regkit.safetensors", "--points", points, "--points-out", tmp_path / "moving.csv")
    assert r.exit_code == 0, r.output

    def tre(*transforms):
        json_out = tmp_path / f"tre{len(transforms)}.json"
        args = [a for t in transforms for a in ("-t", out / t)]
        r = invoke("evaluate", "--landmarks-fixed", points, "--landmarks-moving", tmp_path / "moving.csv", *args, "--json", json_out)
        assert r.exit_code == 0, r.output
        return json.loads(json_out.read_text())["tre_mm"]["mean"]

    chain, affine_only = tre("1Warp.nii.gz", "0GenericAffine.mat"), tre("0GenericAffine.mat")
    assert chain < 0.1 < affine_only, (chain, affine_only)

    def nonaffine(name, *transforms):
        args = [a for t in transforms for a in ("-t", out / t)]
        r = invoke("qc", "--fixed", sample_paths["fixed"], "--moving", sample_paths["moving"], *args, "-o", tmp_path / name)
        assert r.exit_code == 0, r.output
        return json.loads((tmp_path / name / "qc.json").read_text())["nonaffine_displacement_mm"]["mean"]

    exact = nonaffine("native", "transform.regkit.safetensors")
    assert exact > 0.05 and abs(nonaffine("chain", "1Warp.nii.gz", "0GenericAffine.mat") - exact) < 0.05 * exact


@pytest.mark.parametrize("argv, expected", [
    (["register", "a.nii.gz", "b.nii.gz", "--outt", "x"], "regkit register: No such option: --outt (Possible options: --out, --quiet) (see 'regkit register --help')"),
    (["register", "a.nii.gz"], "regkit register: Missing option '--out' / '-o'. (see 'regkit register --help')"),
    (["regster"], "regkit: No such command 'regster'."),  # Typer may add "Did you mean 'register'?"
])
def test_usage_errors_are_one_line_exit_2(monkeypatch, capsys, argv, expected):
    """A mistyped option or a missing argument was Typer's five-line box; now one line, exit 2."""
    from regkit.cli.main import main

    monkeypatch.setattr("sys.argv", ["regkit", *argv])
    with pytest.raises(SystemExit) as info:
        main()
    err = capsys.readouterr().err
    assert info.value.code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith(expected.rsplit(" (see", 1)[0]) and err.rstrip().endswith("--help')"), err


def test_help_and_version_still_exit_0(monkeypatch, capsys):
    from regkit.cli.main import main

    for argv in (["register", "--help"], ["--version"]):
        monkeypatch.setattr("sys.argv", ["regkit", *argv])
        with pytest.raises(SystemExit) as info:
            main()
        assert info.value.code == 0
    out = capsys.readouterr().out
    assert "Usage: regkit register" in out and out.rstrip().splitlines()[-1].startswith("regkit ")
