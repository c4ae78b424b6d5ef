"""Hostile and unusual input (issue 21): --force never removes an input or a file regkit did not
write; no small file makes regkit do unbounded work; fuzzed transform metadata and points CSVs
end in success or exit 2/3, never exit 1 or a hang.

The bad files themselves are cases of ``tests/bad_input_corpus.py`` (run by test_bad_inputs.py).
"""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Dict

import numpy as np
import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bad_input_corpus import good_image, good_labels  # noqa: E402

from regkit.cli.main import app  # noqa: E402

AFFINE_ONLY = "deformable:\n  enabled: false\naffine:\n  levels:\n    - {spacing_mm: 4, iterations: 5}\n"
DEFORMABLE = ("affine:\n  levels:\n    - {spacing_mm: 4, iterations: 3}\n"
              "deformable:\n  levels:\n    - {spacing_mm: 4, control_spacing_mm: 8, iterations: 2}\n")


def _digests(folder: Path) -> Dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def _invoke(*args) -> "object":
    return CliRunner().invoke(app, [str(a) for a in args])


# ------------------------------------------------------------------------------------ --force
def test_force_never_removes_or_overwrites_an_input(tmp_path):
    """The issue's case: the fixed image is d/warp.nii.gz, --out d --force, affine only: the input
    was deleted. Now refused up front (exit 2, the file named); every file stays byte for byte."""
    d = tmp_path / "d"
    d.mkdir()
    good_image(d, "moving.nii.gz", seed=1)
    good_image(d, "warp.nii.gz")
    good_labels(d, "warped_labels.nii.gz")  # an input too: the moving labels
    config = tmp_path / "affine.yaml"
    config.write_text(AFFINE_ONLY)
    before = _digests(d)
    for labels in ([], ["--moving-labels", d / "warped_labels.nii.gz"]):
        r = _invoke("register", d / "moving.nii.gz", d / "warp.nii.gz", *labels, "--out", d, "--force",
                    "--config", config, "--no-progress")
        assert r.exit_code == 2, r.output
        assert "is an input of this command" in r.output and str(d) in r.output, r.output
        assert _digests(d) == before
    # apply / invert onto their own input, with --force: refused, unchanged
    image = d / "moving.nii.gz"
    identity = tmp_path / "identity.regkit.safetensors"
    from regkit.io.transform_files import write_transform
    from regkit.transforms import AffineTransform

    write_transform(AffineTransform(), identity)
    before = _digests(d) | {"identity": hashlib.sha256(identity.read_bytes()).hexdigest()}
    for args in (["apply", identity, image, "-r", image, "-o", image, "--force"],
                 ["apply", identity, image, "-r", d / "warp.nii.gz", "-o", d / "warp.nii.gz", "--force"],
                 ["invert", identity, "-o", identity, "--force"]):
        r = _invoke(*args)
        assert r.exit_code == 2 and "is an input of this command" in r.output, (args, r.output)
    assert _digests(d) | {"identity": hashlib.sha256(identity.read_bytes()).hexdigest()} == before


def test_force_removes_only_what_regkit_wrote(tmp_path):
    """An earlier deformable run with labels and --qc, then --force with an affine-only config
    and no labels into the same folder: regkit's earlier warp.nii.gz / warped_labels.nii.gz / QC
    files go (they would describe another transform), but the user's own files — also ones
    named like regkit outputs, and an output the user replaced since — stay byte for byte."""
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    moving, fixed = good_image(inputs, "moving.nii.gz", seed=1), good_image(inputs, "fixed.nii.gz")
    labels = good_labels(inputs)
    deformable, affine = tmp_path / "deformable.yaml", tmp_path / "affine.yaml"
    deformable.write_text(DEFORMABLE)
    affine.write_text(AFFINE_ONLY)
    r = _invoke("register", moving, fixed, "--out", out, "--moving-labels", labels, "--qc", "--config", deformable, "--no-progress")
    assert r.exit_code == 0, r.output
    assert {"warp.nii.gz", "warped_labels.nii.gz", "qc.png", "qc.json"} <= set(_digests(out))
    (out / "qc.json").write_text('{"edited": "by the user after the run"}')  # now the user's
    (out / "notes.txt").write_text("the user's notes")
    kept = {name: digest for name, digest in _digests(out).items() if name in ("qc.json", "notes.txt")}
    inputs_before = _digests(inputs)
    r = _invoke("register", moving, fixed, "--out", out, "--force", "--config", affine, "--no-progress")
    assert r.exit_code == 0, r.output
    after = _digests(out)
    assert "warp.nii.gz" not in after and "warped_labels.nii.gz" not in after and "qc.png" not in after
    assert {name: after[name] for name in kept} == kept
    assert _digests(inputs) == inputs_before
    # a folder regkit never wrote into: files named like its outputs are the user's, kept
    user = tmp_path / "user"
    user.mkdir()
    for name in ("qc.png", "qc.json", "qc.html", "warped_labels.nii.gz", "warp.nii.gz"):
        (user / name).write_bytes(f"the user's {name}".encode())
    before = _digests(user)
    r = _invoke("register", moving, fixed, "--out", user, "--force", "--config", affine, "--no-progress")
    assert r.exit_code == 0, r.output
    after = _digests(user)
    assert {name: after.get(name) for name in before} == before


# ------------------------------------------------------------------- bounded work from small files
def _peak_rss_of(args, env) -> "tuple[int, str, float, int]":
    """Exit code, stderr, seconds and peak RSS (bytes) of ``regkit ARGS`` in its own process."""
    import json
    import os
    import subprocess

    exe = Path(sys.executable).with_name("regkit")
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "regkit.cli"]
    probe = ("import json, os, subprocess, sys, time, resource\n"
             "t = time.monotonic()\n"
             "p = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)\n"
             "r = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
             "print(json.dumps([p.returncode, p.stderr.decode(), time.monotonic() - t, r.ru_maxrss * 1024]))\n")
    out = subprocess.run([sys.executable, "-c", probe] + command + [str(a) for a in args], capture_output=True, text=True,
                         timeout=90, env={**os.environ, **env})
    assert out.returncode == 0, out.stderr[-2000:]
    return tuple(json.loads(out.stdout))


def test_no_small_file_makes_regkit_use_2_gb_or_30_s(tmp_path):
    """The issue's three: a velocity file with steps 1e30 (2**steps), a 1 MiB .nii.gz that
    unpacks to 1 GiB, a 1 MiB displacement field that unpacks to 1 GiB (512x512x320x3) — each
    refused (exit 2 or 3, the file named) within 30 s and 2 GB of peak memory, under
    REGKIT_MEMORY_LIMIT=2G (the reads alone need more)."""
    from bad_input_corpus import _velocity, gzip_bomb, identity_transform

    d = tmp_path
    good = good_image(d)
    cases = {
        "steps": ([_velocity(1e30)(d), good, "-r", good, "-o", d / "o1.nii.gz"], 2),
        "gzip": ([identity_transform(d), gzip_bomb(d / "bomb.nii.gz"), "-r", good, "-o", d / "o2.nii.gz"], 3),
        "field": ([gzip_bomb(d / "bomb1Warp.nii.gz", shape=(512, 512, 320), vector=True), good, "-r", good, "-o", d / "o3.nii.gz"], 3),
    }
    for name, (args, code) in cases.items():
        bad = args[0] if name != "gzip" else args[1]
        assert bad.stat().st_size < 2**20, (name, bad.stat().st_size)
        rc, stderr, seconds, peak = _peak_rss_of(["apply", *args], {"REGKIT_MEMORY_LIMIT": "2G"})
        assert rc == code and stderr.startswith(f"regkit: error: {bad}: ") and stderr.count("\n") == 1, (name, rc, stderr)
        assert seconds < 30 and peak < 2 * 2**30, (name, seconds, peak / 2**20)
    assert not any(d.glob("o*.nii.gz"))
