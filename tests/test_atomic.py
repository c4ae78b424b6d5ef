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
from regkit.io.atomic import RECORD, atomic_path, check_outputs, check_writable, write_text


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


def test_outputs_get_normal_permissions_whatever_the_writer_used(tmp_path, monkeypatch):
    # safetensors creates 0o600 files: a checkpoint or transform a colleague cannot read
    from regkit.io import atomic
    from regkit.io.transform_files import write_transform
    from regkit.transforms import AffineTransform

    monkeypatch.setattr(atomic, "_UMASK", 0o022)  # the process umask, read once at import
    out = write_transform(AffineTransform(), tmp_path / "t.regkit.safetensors")
    assert out.stat().st_mode & 0o777 == 0o644
    with atomic_path(tmp_path / "private.txt") as tmp:
        tmp.write_text("x")
        os.chmod(tmp, 0o600)
    assert (tmp_path / "private.txt").stat().st_mode & 0o777 == 0o644
    # overwriting (--force) keeps the permissions the user gave the old file
    os.chmod(out, 0o640)
    write_transform(AffineTransform(), out, force=True)
    assert out.stat().st_mode & 0o777 == 0o640


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


def test_outputs_under_a_file_or_onto_a_folder_are_refused_with_what_is_wrong(tmp_path):
    from regkit.io.atomic import check_folder

    notes = tmp_path / "notes"
    notes.write_text("keep me")
    with pytest.raises(InputError, match=r"notes: is a file, not a folder"):
        check_folder(notes)
    with pytest.raises(InputError, match=r"run: cannot be made: .*notes is a file, not a folder"):
        check_folder(notes / "run")
    with pytest.raises(InputError, match=r"notes: is a file, not a folder"):
        check_writable(notes / "x.nii.gz")  # its folder is a file
    with pytest.raises(InputError, match=r"is a directory; give a file name"):
        check_writable(tmp_path, force=True)  # --force never replaces a folder by a file
    assert check_folder(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"  # can be made
    assert notes.read_text() == "keep me" and not (tmp_path / "new").exists()


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


def test_sigterm_unwinds_like_ctrl_c_and_removes_the_temporary(tmp_path):
    """Under ``handle_errors`` SIGTERM (kill, a scheduler's time limit) raises KeyboardInterrupt
    in the command, so ``atomic_path`` removes its temporary and the exit code is 130."""
    import typer

    from regkit.cli.common import handle_errors

    target = tmp_path / "out.nii.gz"

    @handle_errors
    def command() -> None:
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the signal arrives first
            tmp.write_bytes(b"whole")

    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(typer.Exit) as info:
        command()
    assert info.value.exit_code == 130
    assert _listing(tmp_path) == []
    assert signal.getsignal(signal.SIGTERM) is previous  # handler restored after the command


def test_interrupted_register_leaves_no_partial_output(tmp_path, sample_paths):
    """Ctrl-C once the optimiser runs: exit 130 with one line, and the output folder holds no
    file (no partial or temporary output). Sent as soon as the first progress bar appears, so the
    test costs little more than the start-up."""
    sig, stage = signal.SIGINT, "affine"
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


def test_training_killed_with_sigkill_resumes_to_the_same_step_count(tmp_path, sample_paths):
    """``kill -9`` gives no chance to save: the last periodic checkpoint must be whole (written
    atomically) and ``--resume`` must carry the run on to the requested step count."""
    import yaml
    from cascade_helpers import tiny_config
    from typer.testing import CliRunner

    from regkit.cli.main import app
    from regkit.nn.checkpoint import read_checkpoint

    recipe = tmp_path / "train.yaml"
    recipe.write_text(yaml.safe_dump(tiny_config(tmp_path, sample_paths, optim={"steps": 10_000}, checkpoint_every=1)))
    run = tmp_path / "run"
    last = run / "last.safetensors"
    proc = _regkit_process("train", "--config", str(recipe), "--out", str(run), "--device", "cpu", "--no-progress")
    try:
        deadline = time.monotonic() + 120
        while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert last.exists(), proc.stderr.read() if proc.poll() is not None else "no checkpoint within 120 s"
        time.sleep(0.2)  # let it go on training (and maybe be mid-way through the next checkpoint)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    stopped_at = read_checkpoint(last).step  # a whole checkpoint, whatever the moment of the kill
    assert stopped_at >= 1
    target = stopped_at + 1
    result = CliRunner().invoke(app, ["train", "--config", str(recipe), "--out", str(run), "--device", "cpu",
                                      "--resume", str(last), "--steps", str(target), "--no-progress"])
    assert result.exit_code == 0, result.stderr
    assert read_checkpoint(last).step == target
    assert f"step {target}:" in result.stdout


def test_register_outputs_written_in_parallel_keep_order_and_raise_the_first_error(tmp_path):
    from regkit.io.results import _run_writes

    def fail(path, force=False):
        raise OSError(f"{path}: no space left on device")

    jobs = [(write_text, (tmp_path / f"f{i}.txt", str(i))) for i in range(5)]
    assert _run_writes(jobs, force=False) == [tmp_path / f"f{i}.txt" for i in range(5)]
    assert [(tmp_path / f"f{i}.txt").read_text() for i in range(5)] == ["0", "1", "2", "3", "4"]
    with pytest.raises(OutputExistsError):  # the force flag reaches every writer
        _run_writes(jobs[:1], force=False)
    with pytest.raises(OSError, match="no space left"):
        _run_writes([(fail, (tmp_path / "g.txt",)), (write_text, (tmp_path / "h.txt", "h"))], force=False)
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temporary left behind


@pytest.mark.parametrize("failure", [OSError("disk full"), KeyboardInterrupt()])
def test_a_failed_write_phase_leaves_no_output_and_keeps_the_old_ones(tmp_path, failure):
    """register writes ~8 files; Ctrl-C (or an error) after some of them are done used to leave
    those, so the folder held half a result and the rerun needed --force. Now: none of them, a
    folder made for them is removed, and outputs being replaced (--force) stay whole."""
    from regkit.io.atomic import atomic_group
    from regkit.io.results import _run_writes

    def fail(path, force=False):
        time.sleep(0.2)  # the other writes finish first
        raise failure

    out = tmp_path / "result"
    jobs = [(write_text, (out / f"f{i}.txt", str(i))) for i in range(4)] + [(fail, (out / "last.txt",))]
    with pytest.raises(type(failure)):
        with atomic_group(out):
            out.mkdir()
            _run_writes(jobs, force=False)
    assert not out.exists()

    out.mkdir()
    (out / "f0.txt").write_text("old")
    with pytest.raises(type(failure)):
        with atomic_group(out):
            _run_writes(jobs, force=True)
    assert sorted(p.name for p in out.iterdir()) == ["f0.txt"] and (out / "f0.txt").read_text() == "old"

    with atomic_group(out):  # success: all appear, in place of the old
        _run_writes(jobs[:4], force=True)
    assert [(out / f"f{i}.txt").read_text() for i in range(4)] == ["0", "1", "2", "3"]
    assert not any(p.name.startswith(".") and p.name != RECORD for p in out.iterdir())  # RECORD: what regkit wrote
