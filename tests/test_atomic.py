"""Nothing lost: outputs appear whole or not at all, are never overwritten without --force, and an
interrupted ``regkit register`` leaves no partial output."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from regkit.errors import InputError, OutputExistsError
from regkit.io.atomic import atomic_path, check_outputs, check_writable, write_text


def _listing(folder: Path):
    return sorted(p.name for p in folder.iterdir())


def test_success_renames_the_temporary_file_onto_the_target(tmp_path):
    target = tmp_path / "sub" / "out.nii.gz"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".out.nii.gz.tmp") and tmp.name.endswith(".nii.gz")
        assert not target.exists()  # nothing visible under the real name while writing
        tmp.write_bytes(b"complete")
    assert target.read_bytes() == b"complete"
    assert _listing(target.parent) == ["out.nii.gz"]


@pytest.mark.parametrize("failure", [RuntimeError("writer crashed"), KeyboardInterrupt()])
def test_failure_or_ctrl_c_leaves_old_file_and_no_temporary(tmp_path, failure):
    target = tmp_path / "out.txt"
    target.write_text("old result")
    with pytest.raises(type(failure)):
        with atomic_path(target, force=True) as tmp:
            tmp.write_text("half of the new re")
            raise failure
    assert target.read_text() == "old result"
    assert _listing(tmp_path) == ["out.txt"]


def test_writer_that_writes_nothing_is_an_error(tmp_path):
    with pytest.raises(RuntimeError, match="produced no file"):
        with atomic_path(tmp_path / "out.txt"):
            pass
    assert _listing(tmp_path) == []


def test_existing_output_needs_force(tmp_path):
    target = tmp_path / "out.txt"
    write_text(target, "first")
    with pytest.raises(OutputExistsError, match=r"out.txt: exists; pass --force to overwrite"):
        write_text(target, "second")
    assert target.read_text() == "first"
    write_text(target, "second", force=True)
    assert target.read_text() == "second"
    assert check_writable(tmp_path / "new.txt") == tmp_path / "new.txt"


def test_check_outputs_checks_all_before_work(tmp_path):
    (tmp_path / "b.nii.gz").write_text("x")
    (tmp_path / "c.json").write_text("x")
    outs = [tmp_path / "a.nii.gz", None, tmp_path / "b.nii.gz", tmp_path / "c.json"]
    with pytest.raises(OutputExistsError) as info:
        check_outputs(outs)
    msg = str(info.value)
    assert msg.startswith(f"{tmp_path / 'b.nii.gz'}: exists (and 1 more: {tmp_path / 'c.json'})"), msg
    assert check_outputs(outs, force=True) == [tmp_path / "a.nii.gz", tmp_path / "b.nii.gz", tmp_path / "c.json"]
    (tmp_path / "folder").mkdir()
    with pytest.raises(InputError, match="is a directory"):
        check_outputs([tmp_path / "folder"], force=True)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into read-only folders")
def test_check_outputs_refuses_unwritable_folder(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(InputError, match="not a writable folder"):
            check_outputs([locked / "out.nii.gz"])
    finally:
        locked.chmod(0o700)


def test_save_image_is_atomic_and_refuses_overwrite(tmp_path):
    from regkit.image import Image
    from regkit.io.images import load_image, save_image

    image = Image.from_numpy(np.arange(24, dtype=np.float32).reshape(2, 3, 4), np.diag([1.0, 2.0, 3.0, 1.0]))
    path = save_image(image, tmp_path / "img.nii.gz")
    with pytest.raises(OutputExistsError):
        save_image(image, path)
    assert np.array_equal(load_image(path).numpy(), image.numpy())
    assert _listing(tmp_path) == ["img.nii.gz"]


def _regkit_process(*args: str) -> subprocess.Popen:
    exe = Path(sys.executable).with_name("regkit")
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "regkit.cli"]
    return subprocess.Popen(command + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_stderr(proc: subprocess.Popen, needle: str, timeout: float) -> str:
    """Read stderr until ``needle`` appears (progress bars end lines with \\r, so read chars)."""
    seen = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ch = proc.stderr.read(1)
        if not ch:
            break
        seen += ch
        if needle in seen:
            return seen
    return seen


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_register_leaves_no_partial_output(tmp_path, sample_paths, sig):
    """Ctrl-C, or SIGTERM (a scheduler's kill), once the optimiser runs: exit 130 with one line,
    and the output folder holds no file (no partial or temporary output). Sent as soon as the
    first progress bar appears, so the test costs little more than the start-up."""
    stage = "affine"
    from typer.testing import CliRunner

    from regkit.cli.main import app

    if "not implemented yet" in CliRunner().invoke(app, ["register", "--help"]).output:
        pytest.skip("regkit register is not implemented yet")
    out = tmp_path / "result"
    proc = _regkit_process("register", str(sample_paths["moving"]), str(sample_paths["fixed"]), "--out", str(out),
                           "--config", "fast", "--device", "cpu")
    try:
        seen = _wait_for_stderr(proc, stage, timeout=120)
        assert stage in seen, f"register did not reach the {stage} stage: {seen[-500:]}"
        proc.send_signal(sig)
        _, rest = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stderr = seen + rest
    assert proc.returncode == 130, stderr[-800:]
    assert "Traceback" not in stderr and "regkit: interrupted; no partial output was kept" in stderr
    left = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) if out.exists() else []
    assert left == [], left
