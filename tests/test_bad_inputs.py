"""The bad-input corpus (tests/bad_input_corpus.py) through the reader and every CLI command that
reads images: each case must end in ONE line on stderr naming the file and the problem, exit code
2 (3 for memory), no traceback unless --debug, and no output left behind.

The bulk runs in-process through ``typer.testing.CliRunner``; a few end-to-end cases run the real
``regkit`` executable (real exit codes and stderr). Commands that do not exist yet are skipped
with the reason.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bad_input_corpus import (COMMAND_CASES, DOC, IMAGE_CASES, Case, command_row, good_image, good_labels,  # noqa: E402
                              identity_transform, other_model_checkpoint, run_command_case, train_recipe)

from regkit.cli.main import app  # noqa: E402
from regkit.errors import RegkitError  # noqa: E402

CASES = {c.name: c for c in IMAGE_CASES}


# ---------------------------------------------------------------------------- the reader itself
@pytest.mark.parametrize("case", [c for c in IMAGE_CASES if c.role != "intensity"], ids=lambda c: c.name)
def test_reader_refuses_with_one_line_naming_the_file(case: Case, tmp_path, monkeypatch):
    from regkit.io.images import load_image

    for k, v in case.env.items():
        monkeypatch.setenv(k, v)
    path = case.make(tmp_path)
    with pytest.raises(RegkitError) as info:
        load_image(path, is_label=case.role == "label")
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(f"{path}: ") or str(path) in msg, msg
    assert re.search(case.expect, msg), msg
    assert info.value.exit_code == case.code


def test_constant_image_loads_but_is_refused_for_registration(tmp_path):
    from regkit.checks import check_has_contrast
    from regkit.errors import InputError
    from regkit.io.images import load_image

    path = CASES["constant"].make(tmp_path)
    image = load_image(path)  # a constant image is a valid file (masks, empty label maps)...
    with pytest.raises(InputError, match=r"all_zero.nii.gz: image is constant \(every voxel is 0\)"):
        check_has_contrast(image, path)  # ...but nothing to register
    check_has_contrast(load_image(good_image(tmp_path)), "good.nii.gz")


def test_orientation_policy_env_chooses_and_warns(tmp_path, monkeypatch):
    from regkit.io.images import OrientationWarning, load_image

    path = CASES["sform_qform"].make(tmp_path)
    monkeypatch.setenv("REGKIT_NIFTI_AFFINE", "sform")
    with pytest.warns(OrientationWarning, match="using the sform"):
        assert float(load_image(path).affine[0, 0]) == 2.0
    monkeypatch.setenv("REGKIT_NIFTI_AFFINE", "qform")
    with pytest.warns(OrientationWarning, match="using the qform"):
        assert float(load_image(path).affine[0, 0]) == -2.0
    no_orientation = CASES["no_orientation"].make(tmp_path)
    with pytest.warns(OrientationWarning, match="neither sform nor qform"):
        assert load_image(no_orientation).spacing == pytest.approx((2.0, 2.0, 2.0))
    monkeypatch.setenv("REGKIT_NIFTI_AFFINE", "sfrom")
    with pytest.raises(RegkitError, match="REGKIT_NIFTI_AFFINE='sfrom'"):
        load_image(path)


def test_qform_rounding_is_not_a_disagreement(tmp_path):
    """An oblique affine stored as sform + (quaternion, float32) qform differs by rounding only."""
    import nibabel as nib

    from regkit.io.images import load_image

    c, s = np.cos(0.3), np.sin(0.3)
    affine = np.array([[c * 1.1, -s * 0.9, 0, 10.5], [s * 1.1, c * 0.9, 0, -20.25], [0, 0, 3.0, 7.0], [0, 0, 0, 1]])
    img = nib.Nifti1Image(np.random.default_rng(0).random((20, 20, 10)).astype(np.float32), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=2)
    nib.save(img, str(tmp_path / "oblique.nii.gz"))
    assert np.allclose(load_image(tmp_path / "oblique.nii.gz").affine.numpy(), affine, atol=1e-5)


def test_label_map_reads_as_int32(tmp_path):
    from regkit.io.images import load_label

    labels = load_label(good_labels(tmp_path))
    assert labels.data.dtype.is_floating_point is False and labels.is_label
    assert set(np.unique(labels.numpy()).tolist()) == {0, 1}


def test_troubleshooting_table_is_current(tmp_path):
    """docs/troubleshooting.md lists the messages the reader gives now (regenerate with
    ``python tests/bad_input_corpus.py``)."""
    from bad_input_corpus import ROOT, TABLE_END, TABLE_START, corpus_table

    doc = (ROOT / "docs" / "troubleshooting.md").read_text()
    assert f"{TABLE_START}\n{corpus_table(tmp_path)}\n{TABLE_END}" in doc


# ------------------------------------------------------------------------------- the commands
def _command_ready(name: str) -> bool:
    result = CliRunner().invoke(app, [name, "--help"])
    return result.exit_code == 0 and "not implemented yet" not in result.output


# Each builder: (inputs folder, bad file, outputs folder) -> command line; it applies to the
# roles listed. Outputs go to their own folder, which must stay empty.
Builder = Callable[[Path, Path, Path], List[str]]
COMMANDS: Dict[str, Tuple[str, Tuple[str, ...], Builder]] = {
    "apply-moving": ("apply", ("image",), lambda d, bad, out: [
        "apply", str(identity_transform(d)), str(bad), "-r", str(good_image(d)), "-o", str(out / "warped.nii.gz")]),
    "apply-reference": ("apply", ("image",), lambda d, bad, out: [
        "apply", str(identity_transform(d)), str(good_image(d)), "-r", str(bad), "-o", str(out / "warped.nii.gz")]),
    "evaluate-labels": ("evaluate", ("image", "label"), lambda d, bad, out: [
        "evaluate", "--fixed-labels", str(good_labels(d)), "--warped-labels", str(bad), "--json", str(out / "scores.json")]),
    "register-moving": ("register", ("image", "intensity"), lambda d, bad, out: [
        "register", str(bad), str(good_image(d)), "--out", str(out / "result"), "--config", "fast", "--no-progress"]),
    "register-fixed": ("register", ("image", "intensity"), lambda d, bad, out: [
        "register", str(good_image(d)), str(bad), "--out", str(out / "result"), "--config", "fast", "--no-progress"]),
    "register-moving-labels": ("register", ("image", "label"), lambda d, bad, out: [
        "register", str(good_image(d)), str(good_image(d, "b.nii.gz", 2)), "--moving-labels", str(bad),
        "--out", str(out / "result"), "--config", "fast", "--no-progress"]),
    "qc-moving": ("qc", ("image",), lambda d, bad, out: [
        "qc", "--fixed", str(good_image(d)), "--moving", str(bad), "-t", str(identity_transform(d)), "-o", str(out / "qc")]),
    "export-reference": ("export", ("image",), lambda d, bad, out: [
        "export", str(identity_transform(d)), "-r", str(bad), "-f", "ants", "-o", str(out / "exported")]),
    "train-manifest": ("train", ("image",), lambda d, bad, out: [
        "train", "--config", str(train_recipe(d, bad, good_image(d))), "--out", str(out / "run"), "--no-progress"]),
}
# where a command words a case its own way (the manifest reader checks files exist itself)
EXPECT_OVERRIDE = {("train-manifest", "missing"): r"does not exist", ("train-manifest", "directory"): r"does not exist"}
# known gaps, reported to their owners; xfail (not skip) so the test starts passing when fixed
KNOWN_GAPS: dict = {}
KNOWN_LEFTOVERS: dict = {}


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("regkit: error: ")]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr
    return errors[0][len("regkit: error: "):]


def _files_under(folder: Path) -> List[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def _run_case(command_key: str, case: Case, tmp_path: Path) -> Tuple[int, str, List[Path], Path]:
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    outputs.mkdir()
    bad = case.make(inputs)
    args = COMMANDS[command_key][2](inputs, bad, outputs)
    result = CliRunner().invoke(app, args, env=case.env or None)
    return result.exit_code, result.stderr, _files_under(outputs), bad


@pytest.mark.parametrize("case", IMAGE_CASES, ids=lambda c: c.name)
@pytest.mark.parametrize("command_key", list(COMMANDS))
def test_command_refuses_bad_input(command_key: str, case: Case, tmp_path):
    name, roles, _ = COMMANDS[command_key]
    if case.role not in roles:
        pytest.skip(f"not an error for {command_key} ({case.role}-only case)")
    if not _command_ready(name):
        pytest.skip(f"regkit {name} is not implemented yet")
    code, stderr, left, bad = _run_case(command_key, case, tmp_path)
    try:
        message = _one_error_line(stderr)
        assert str(bad) in message, message
        assert re.search(EXPECT_OVERRIDE.get((command_key, case.name), case.expect), message), message
        assert code == case.code, (code, message)
    except AssertionError as e:
        if (name, case.name) in KNOWN_GAPS:
            pytest.xfail(f"{KNOWN_GAPS[(name, case.name)]} (exit {code}: {str(e).splitlines()[0][:200]})")
        raise
    if left and name in KNOWN_LEFTOVERS:
        pytest.xfail(f"{KNOWN_LEFTOVERS[name]}: {[p.name for p in left]}")
    assert left == [], left


def test_debug_shows_the_traceback(tmp_path):
    bad = CASES["nan"].make(tmp_path)
    args = ["apply", str(identity_transform(tmp_path)), str(bad), "-r", str(good_image(tmp_path)), "-o", str(tmp_path / "o.nii.gz")]
    quiet = CliRunner().invoke(app, args)
    loud = CliRunner().invoke(app, ["--debug"] + args)
    assert quiet.exit_code == loud.exit_code == 2
    assert "Traceback" not in quiet.stderr and "Traceback" in loud.stderr
    assert loud.stderr.rstrip().splitlines()[-1] == quiet.stderr.rstrip()
    from regkit.cli import common

    common.STATE["debug"] = False


# ------------------------------------------ cases that need a whole command (configs, checkpoints, pairs)
# known gaps, reported to their owners: xfail so the test starts passing (and says so) when fixed
COMMAND_GAPS: dict = {}


@pytest.mark.parametrize("case", COMMAND_CASES, ids=lambda c: c.name)
def test_command_case_is_refused_in_one_line(case, tmp_path):
    if not case.available():
        pytest.skip(f"regkit {case.command} {case.requires_option or ''} is not implemented yet")
    run, code, stderr, left = run_command_case(case, tmp_path)
    if run.marker is not None:
        assert not run.marker.exists(), "code inside an untrusted file ran"
    row = command_row(case, code, stderr, tmp_path)
    assert row in DOC.read_text(), f"docs/troubleshooting.md is out of date (python tests/bad_input_corpus.py): {row}"
    try:
        message = _one_error_line(stderr)
        assert str(run.named) in message, message
        assert re.search(case.expect, message), message
        assert code == case.code, (code, message)
    except AssertionError as e:
        if case.name in COMMAND_GAPS:
            pytest.xfail(f"{COMMAND_GAPS[case.name]} (exit {code}: {str(e).splitlines()[0][:200]})")
        raise
    assert left == [], left


def test_existing_output_is_kept_without_force(tmp_path):
    output = tmp_path / "warped.nii.gz"
    output.write_bytes(b"an earlier result")
    args = ["apply", str(identity_transform(tmp_path)), str(good_image(tmp_path)), "-r", str(good_image(tmp_path)), "-o", str(output)]
    result = CliRunner().invoke(app, args)
    message = _one_error_line(result.stderr)
    assert result.exit_code == 2 and message == f"{output}: exists; pass --force to overwrite"
    assert output.read_bytes() == b"an earlier result"
    assert CliRunner().invoke(app, args + ["--force"]).exit_code == 0
    assert output.read_bytes() != b"an earlier result"


def test_checkpoint_of_another_format_version_is_refused(tmp_path):
    from regkit.nn.checkpoint import read_checkpoint, write_checkpoint

    genuine = read_checkpoint(other_model_checkpoint(tmp_path))
    future = write_checkpoint(tmp_path / "future.safetensors", genuine.tensors, {**genuine.metadata, "format_version": "999"})
    try:
        read_checkpoint(future)
    except RegkitError as e:
        assert str(future) in str(e) and "version" in str(e)
        return
    pytest.fail("a checkpoint of a newer format version was read")


def test_manifest_paths_are_relative_to_the_manifest(tmp_path, monkeypatch):
    from regkit.errors import InputError
    from regkit.io.manifests import read_manifest

    data = tmp_path / "data"
    data.mkdir()
    good_image(data, "a.nii.gz")
    good_image(data, "b.nii.gz")
    (data / "pairs.csv").write_text("moving,fixed\na.nii.gz,b.nii.gz\n")
    monkeypatch.chdir(tmp_path)  # a different working folder must not matter
    pairs = read_manifest(data / "pairs.csv")
    assert pairs[0].moving == data / "a.nii.gz" and pairs[0].fixed == data / "b.nii.gz"
    (data / "pairs.csv").write_text("moving,fixed\na.nii.gz,../nowhere/b.nii.gz\n")
    with pytest.raises(InputError, match=r"pairs.csv: pair 1: fixed file .*nowhere/b.nii.gz does not exist"):
        read_manifest(data / "pairs.csv")


# ------------------------------------------------------------------ end to end: the real executable
def _regkit(*args: str, env: Optional[dict] = None, cwd: Optional[Path] = None) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("regkit")
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "regkit.cli"]
    return subprocess.run(command + list(args), capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})}, cwd=cwd)


def test_end_to_end_bad_input_real_exit_code(tmp_path):
    """One corpus case through the installed executable (real process, exit code and stderr)."""
    out = tmp_path / "out"
    out.mkdir()
    case = CASES["truncated_gz"]
    bad = case.make(tmp_path)
    proc = _regkit("apply", str(identity_transform(tmp_path)), str(bad), "-r", str(good_image(tmp_path)),
                   "-o", str(out / "w.nii.gz"))
    assert proc.returncode == case.code, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith(f"regkit: error: {bad}: "), proc.stderr
    assert re.search(case.expect, proc.stderr), proc.stderr
    assert _files_under(out) == []


def test_help_documents_exit_codes():
    proc = _regkit("--help")
    text = " ".join(proc.stdout.split())
    assert proc.returncode == 0
    assert "2 bad input or usage" in text and "3 not enough memory" in text and "130 interrupted" in text


def test_no_code_path_can_unpickle_or_eval():
    """Static guard over regkit's sources: no pickle/marshal/shelve import, torch.load only with
    weights_only=True, numpy loads without allow_pickle, YAML only through safe_load, no eval/exec."""
    import ast

    root = Path(__file__).resolve().parents[1]
    problems = []
    for path in sorted([*(root / "regkit").rglob("*.py"), *(root / "cli").rglob("*.py")]):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            where = f"{path.relative_to(root)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
                if any(n.split(".")[0] in ("pickle", "cPickle", "dill", "marshal", "shelve", "joblib") for n in names):
                    problems.append(f"{where}: imports {names}")
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            owner = func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else ""
            keywords = {k.arg: k.value for k in node.keywords}
            if isinstance(func, ast.Name) and name in ("eval", "exec"):
                problems.append(f"{where}: {name}()")
            if owner == "torch" and name == "load":
                w = keywords.get("weights_only")
                if not (isinstance(w, ast.Constant) and w.value is True):
                    problems.append(f"{where}: torch.load without weights_only=True")
            if owner in ("np", "numpy") and name == "load":
                a = keywords.get("allow_pickle")
                if isinstance(a, ast.Constant) and a.value is True:
                    problems.append(f"{where}: np.load(allow_pickle=True)")
            if owner == "yaml" and name in ("load", "unsafe_load", "full_load", "load_all", "unsafe_load_all"):
                problems.append(f"{where}: yaml.{name} (use yaml.safe_load)")
    assert problems == [], problems


def test_handle_errors_prints_one_line_for_every_failure(capsys):
    """A multi-line RegkitError is folded into one line; a bug is one line with exit code 1 that
    points to --debug; MemoryError is exit 3 with a hint."""
    import typer

    from regkit.cli import common
    from regkit.errors import InputError

    def run(exc):
        @common.handle_errors
        def command():
            raise exc

        with pytest.raises(typer.Exit) as info:
            command()
        return info.value.exit_code, capsys.readouterr().err

    code, err = run(InputError("bad value\n  detail on a second line", "x.yaml"))
    assert (code, err) == (2, "regkit: error: x.yaml: bad value detail on a second line\n")
    code, err = run(ZeroDivisionError("division by zero"))
    assert code == 1 and err.count("\n") == 1
    assert err.startswith("regkit: error: internal error: ZeroDivisionError: division by zero") and "--debug" in err
    code, err = run(MemoryError())
    assert code == 3 and err.count("\n") == 1 and "--config fast" in err


def test_bad_device_and_invert_settings_are_usage_errors(tmp_path):
    """--device gpu was an internal error (exit 1); invert --iterations 0 or --tolerance nan wrote
    the first guess of the inverse with 'residual inf mm' and exit 0."""
    runner = CliRunner()
    image, transform = good_image(tmp_path), identity_transform(tmp_path)
    r = runner.invoke(app, ["register", str(image), str(image), "--out", str(tmp_path / "out"), "--device", "gpu"])
    assert r.exit_code == 2 and "--device must be auto, cpu, cuda or cuda:N, got 'gpu'" in r.output, r.output
    for option in (["--iterations", "0"], ["--tolerance", "nan"], ["--tolerance", "0"]):
        r = runner.invoke(app, ["invert", str(transform), "-o", str(tmp_path / "inv.regkit.safetensors"), *option])
        assert r.exit_code == 2, (option, r.output)
    assert not (tmp_path / "out").exists() and not (tmp_path / "inv.regkit.safetensors").exists()


def test_json_outputs_are_strict_json():
    """HD95 of a label missing from the warped map is NaN: bare NaN is not JSON (jq refuses it)."""
    import json

    from regkit.io.atomic import json_text

    text = json_text({"hd95_mm": float("nan"), "per_label": [1.5, float("inf")], "n": 3})
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c}")) == {
        "hd95_mm": None, "per_label": [1.5, None], "n": 3}


def test_evaluate_and_model_messages_name_the_file(tmp_path):
    """Three messages named no file: a non-field --field without labels, landmark files of
    different lengths, and --model given a folder ('no such checkpoint file')."""
    runner = CliRunner()
    transform = identity_transform(tmp_path)
    r = runner.invoke(app, ["evaluate", "--field", str(transform)])
    assert r.exit_code == 2 and f"{transform}: is not a displacement field" in r.output, r.output
    (tmp_path / "f.csv").write_text("x,y,z\n0,0,0\n1,1,1\n")
    (tmp_path / "m.csv").write_text("x,y,z\n0,0,0\n")
    r = runner.invoke(app, ["evaluate", "--landmarks-fixed", str(tmp_path / "f.csv"), "--landmarks-moving", str(tmp_path / "m.csv")])
    assert r.exit_code == 2 and f"{tmp_path / 'm.csv'}: has 1 landmarks" in r.output, r.output
    image = good_image(tmp_path)
    r = runner.invoke(app, ["register", str(image), str(image), "--out", str(tmp_path / "out"), "--model", str(tmp_path)])
    assert r.exit_code == 2 and f"{tmp_path}: is a folder" in r.output, r.output


def test_a_diverged_checkpoint_or_a_transform_file_as_model_is_named_for_what_it_is(tmp_path):
    """NaN weights surfaced as 'the optimisation diverged ... lower lr_mm' (exit 4) even with
    --refine 0; a transform file given as --model was 'unreadable checkpoint metadata'."""
    import torch

    from regkit.errors import InputError
    from regkit.nn.checkpoint import load_model, read_checkpoint, write_checkpoint

    good = other_model_checkpoint(tmp_path)
    ckpt = read_checkpoint(good)
    tensors = dict(ckpt.tensors)
    name = next(k for k, v in tensors.items() if k.startswith("model/") and v.is_floating_point())
    tensors[name] = tensors[name].clone().fill_(float("nan"))
    diverged = write_checkpoint(tmp_path / "diverged.safetensors", tensors, ckpt.metadata)
    with pytest.raises(InputError, match=r"diverged.safetensors: checkpoint has NaN/Inf weights"):
        load_model(diverged)
    transform = identity_transform(tmp_path)
    with pytest.raises(InputError, match=r"is a regkit transform file, not a trained cascade checkpoint"):
        load_model(transform)
    assert torch.is_tensor(load_model(good).grid_affine)  # the untouched one still loads
