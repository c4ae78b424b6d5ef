"""Hostile and unusual input (issue 21): --force never removes an input or a file regkit did not
write; no small file makes regkit do unbounded work; fuzzed transform metadata and points CSVs
end in success or exit 2/3, never exit 1 or a hang.

The bad files themselves are cases of ``tests/bad_input_corpus.py`` (run by test_bad_inputs.py).
"""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Dict, Optional

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
    was deleted. Inputs named like outputs this run writes are refused up front (exit 2, the file
    named); in every case every input stays byte for byte."""
    from regkit.io.transform_files import write_transform
    from regkit.transforms import AffineTransform

    config = tmp_path / "affine.yaml"
    config.write_text(AFFINE_ONLY)
    runs = {"warp.nii.gz": ["warp.nii.gz"],  # the issue's: not written by an affine-only run
            "warped.nii.gz": ["warped.nii.gz"],  # always an output
            "warped_labels.nii.gz": ["fixed.nii.gz", "--moving-labels", "warped_labels.nii.gz"]}
    for name, args in runs.items():
        d = tmp_path / name.split(".")[0]
        d.mkdir()
        good_image(d, "moving.nii.gz", seed=1)
        good_image(d, args[0])
        if len(args) > 1:
            good_labels(d, args[2])
        before = _digests(d)  # the inputs alone
        r = _invoke("register", d / "moving.nii.gz", *[d / a if a.endswith(".gz") else a for a in args], "--out", d, "--force",
                    "--config", config, "--no-progress")
        if name != "warp.nii.gz" or r.exit_code != 0:
            assert r.exit_code == 2, r.output
            assert f"{d / name}: is an input of this command" in r.output, r.output
        after = _digests(d)
        assert {k: after.get(k) for k in before} == before, name
    # apply / invert onto their own input, with --force: refused, unchanged
    d = tmp_path / "warp"
    image = d / "moving.nii.gz"
    identity = tmp_path / "identity.regkit.safetensors"
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
    and no labels into the same folder: regkit's earlier deformable part / warped_labels.nii.gz / QC
    files go (they would describe another transform), but the user's own files — also ones
    named like regkit outputs, and an output the user replaced since — stay byte for byte."""
    from regkit.io.results import WARP

    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    moving, fixed = good_image(inputs, "moving.nii.gz", seed=1), good_image(inputs, "fixed.nii.gz")
    labels = good_labels(inputs)
    deformable, affine = tmp_path / "deformable.yaml", tmp_path / "affine.yaml"
    deformable.write_text(DEFORMABLE)
    affine.write_text(AFFINE_ONLY)
    r = _invoke("register", moving, fixed, "--out", out, "--moving-labels", labels, "--qc", "--config", deformable, "--no-progress")
    assert r.exit_code == 0, r.output
    assert {WARP, "warped_labels.nii.gz", "qc.png", "qc.json"} <= set(_digests(out))
    (out / "qc.json").write_text('{"edited": "by the user after the run"}')  # now the user's
    (out / "notes.txt").write_text("the user's notes")
    kept = {name: digest for name, digest in _digests(out).items() if name in ("qc.json", "notes.txt")}
    inputs_before = _digests(inputs)
    r = _invoke("register", moving, fixed, "--out", out, "--force", "--config", affine, "--no-progress")
    assert r.exit_code == 0, r.output
    after = _digests(out)
    assert WARP not in after and "warped_labels.nii.gz" not in after and "qc.png" not in after
    assert {name: after[name] for name in kept} == kept
    assert _digests(inputs) == inputs_before
    # a folder regkit never wrote into: files named like its outputs are the user's, kept
    user = tmp_path / "user"
    user.mkdir()
    for name in ("qc.png", "qc.json", "qc.html", "warped_labels.nii.gz", WARP):
        (user / name).write_bytes(f"the user's {name}".encode())
    before = _digests(user)
    r = _invoke("register", moving, fixed, "--out", user, "--force", "--config", affine, "--no-progress")
    assert r.exit_code == 0, r.output
    after = _digests(user)
    assert {name: after.get(name) for name in before} == before


# ------------------------------------------------------------------- bounded work from small files
def _peak_rss_of(args, env, address_space: Optional[int] = None) -> "tuple[int, str, float, int]":
    """Exit code, stderr, CPU seconds (user + system: a loaded machine's wall clock would test the
    load) and peak RSS (bytes) of ``regkit ARGS`` in its own process; a hang fails at 300 s.
    ``address_space``: a cap (bytes of virtual memory) that keeps a regression from taking the
    machine's memory: it then fails on the bounds or the message instead (hide GPUs with
    ``CUDA_VISIBLE_DEVICES=""``: a CUDA driver reserves more address space than that)."""
    import json
    import os
    import resource
    import subprocess

    exe = Path(sys.executable).with_name("regkit")
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "regkit.cli"]
    probe = ("import json, os, subprocess, sys, time, resource\n"
             "t = time.monotonic()\n"
             "p = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=300)\n"
             "r = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
             "print(json.dumps([p.returncode, p.stderr.decode(), r.ru_utime + r.ru_stime, r.ru_maxrss * 1024]))\n")
    cap = None if address_space is None else (lambda: resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space)))
    out = subprocess.run([sys.executable, "-c", probe] + command + [str(a) for a in args], capture_output=True, text=True,
                         timeout=330, env={**os.environ, **env}, preexec_fn=cap)
    assert out.returncode == 0, out.stderr[-2000:]
    return tuple(json.loads(out.stdout))


def test_no_small_file_makes_regkit_use_2_gb_or_30_s(tmp_path):
    """The issue's three: a velocity file with steps 1e30 (2**steps), a 1 MiB .nii.gz that
    unpacks to 1 GiB, a 1 MiB displacement field that unpacks to 1 GiB (512x512x320x3) — and a
    4 KiB ANTs .mat declaring 200 million values (ITK allocated them: 1.9 GB, 15 s) — each
    refused (exit 2 or 3, the file named) within 30 s and 2 GB of peak memory, under
    REGKIT_MEMORY_LIMIT=2G (the reads alone need more)."""
    from bad_input_corpus import _velocity, gzip_bomb, identity_transform, matlab_bomb

    d = tmp_path
    good = good_image(d)
    cases = {
        "steps": ([_velocity(1e30)(d), good, "-r", good, "-o", d / "o1.nii.gz"], 2),
        "gzip": ([identity_transform(d), gzip_bomb(d / "bomb.nii.gz"), "-r", good, "-o", d / "o2.nii.gz"], 3),
        "field": ([gzip_bomb(d / "bomb1Warp.nii.gz", shape=(512, 512, 320), vector=True), good, "-r", good, "-o", d / "o3.nii.gz"], 3),
        "matlab": ([matlab_bomb(d / "bomb0GenericAffine.mat"), good, "-r", good, "-o", d / "o4.nii.gz"], 2),
    }
    for name, (args, code) in cases.items():
        bad = args[0] if name != "gzip" else args[1]
        assert bad.stat().st_size < 2**20, (name, bad.stat().st_size)
        rc, stderr, seconds, peak = _peak_rss_of(["apply", *args], {"REGKIT_MEMORY_LIMIT": "2G"})
        assert rc == code and stderr.startswith(f"regkit: error: {bad}: ") and stderr.count("\n") == 1, (name, rc, stderr)
        assert seconds < 30 and peak < 2 * 2**30, (name, seconds, peak / 2**20)
    assert not any(d.glob("o*.nii.gz"))


@pytest.mark.parametrize("suffix", [".h5", ".tfm", ".mat"])
def test_itk_transform_declaring_a_huge_field_is_refused_from_its_header(tmp_path, suffix):
    """ITK allocates what a transform file declares before it reads a value: an 8 KiB .h5 whose
    compressed dataset declares a 512x512x320 field took 6.2 GB and 22 CPU s, then "out of memory"
    naming no file; a 210-byte .tfm or 420-byte .mat whose fixed parameters declare that grid,
    2.3 GB. Refused from the headers: exit 3, one line naming the file, within 30 CPU s and
    2 GB (under REGKIT_MEMORY_LIMIT=2G)."""
    from bad_input_corpus import itk_field_bomb

    good = good_image(tmp_path)
    bomb = itk_field_bomb(tmp_path / f"bomb{suffix}")
    assert bomb.stat().st_size < 2**20
    rc, stderr, seconds, peak = _peak_rss_of(["apply", bomb, good, "-r", good, "-o", tmp_path / "o.nii.gz"],
                                             {"REGKIT_MEMORY_LIMIT": "2G", "CUDA_VISIBLE_DEVICES": ""}, address_space=8 * 2**30)
    assert rc == 3 and stderr.startswith(f"regkit: error: {bomb}: reading it (") and stderr.count("\n") == 1, (rc, stderr)
    assert "512x512x320 grid) needs about" in stderr, stderr
    assert seconds < 30 and peak < 2 * 2**30, (seconds, peak / 2**20)
    assert not (tmp_path / "o.nii.gz").exists()


def test_itk_transforms_within_the_limit_are_still_read(tmp_path):
    """The header check refuses only what would not fit: a composite .h5 (affine + field), the
    same field as .tfm and .mat, and a B-spline read as before under REGKIT_MEMORY_LIMIT=2G."""
    import SimpleITK as sitk

    from regkit.io.transform_files import read_transform
    from regkit.transforms import Compose, DisplacementField

    def field():  # SimpleITK moves the image into the transform: a new one each time
        image = sitk.Image([6, 5, 4], sitk.sitkVectorFloat64, 3)
        image.SetPixel([1, 2, 3], (1.5, -2.0, 0.5))
        return sitk.DisplacementFieldTransform(image)

    for name, tx in {"composite.h5": sitk.CompositeTransform([sitk.AffineTransform(3), field()]),
                     "field.tfm": field(), "field.mat": field(), "bspline.h5": sitk.BSplineTransform(3)}.items():
        sitk.WriteTransform(tx, str(tmp_path / name))
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("REGKIT_MEMORY_LIMIT", "2G")
            t = read_transform(tmp_path / name)
        fields = [p for p in (t.transforms if isinstance(t, Compose) else [t]) if isinstance(p, DisplacementField)]
        assert len(fields) == 1, name
        if name != "bspline.h5":
            assert tuple(fields[0].displacement.shape[-3:]) == (6, 5, 4), name
            assert float(fields[0].displacement.abs().max()) == pytest.approx(2.0), name


def test_qc_of_a_random_valued_label_map_is_bounded(tmp_path):
    """`regkit qc --labels` drew one contour a label value: a 64³ int32 map of random values took
    39 CPU s and 1.7 GB (11x a 3-label map's QC). Now the outlines are one vectorised pass: the QC
    costs about what a real label map's does (CPU seconds, peak memory); and with
    --moving-labels (a Dice a value) it is refused like `regkit evaluate`, exit 2."""
    import nibabel as nib

    from bad_input_corpus import identity_transform

    x, y, z = np.meshgrid(*[np.linspace(-1, 1, 64)] * 3, indexing="ij")
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    blob = np.exp(-(x ** 2 + 1.5 * y ** 2 + z ** 2) * 3) * 100
    nib.save(nib.Nifti1Image(blob.astype(np.float32), affine), str(tmp_path / "image.nii.gz"))
    few = (blob > 20).astype(np.int32) + (blob > 60)
    noise = np.random.default_rng(0).integers(1, 10**6, few.shape).astype(np.int32)
    for name, labels in {"few": few, "noise": noise}.items():
        nib.save(nib.Nifti1Image(labels, affine), str(tmp_path / f"{name}.nii.gz"))
    common = ["qc", "--fixed", tmp_path / "image.nii.gz", "--moving", tmp_path / "image.nii.gz", "-t", identity_transform(tmp_path)]
    cost = {}
    for name in ("few", "noise"):
        rc, stderr, seconds, peak = _peak_rss_of(common + ["-o", tmp_path / name, "--labels", tmp_path / f"{name}.nii.gz"], {})
        assert rc == 0 and {p.name for p in (tmp_path / name).iterdir()} == {"qc.png", "qc.html", "qc.json"}, (name, stderr)
        cost[name] = (seconds, peak)
    assert cost["noise"][0] < cost["few"][0] + 8 and cost["noise"][0] < 30, cost
    assert cost["noise"][1] < cost["few"][1] + 300 * 2**20, cost
    noise = tmp_path / "noise.nii.gz"
    rc, stderr, seconds, _ = _peak_rss_of(common + ["-o", tmp_path / "dice", "--labels", noise, "--moving-labels", noise], {})
    assert rc == 2 and stderr.startswith(f"regkit: error: {noise}: label map holds ") and stderr.count("\n") == 1, stderr
    assert "at most 5000 are accepted" in stderr and seconds < 30 and not (tmp_path / "dice").exists()


# ------------------------------------------------------------------- property tests (hypothesis)
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

ODD_NUMBERS = st.one_of(st.integers(-10**40, 10**40), st.floats(allow_nan=True, allow_infinity=True),
                        st.sampled_from([0, 1, 6, 30, 31, -1, 1e30, 1e6, 2.5]))
ODD_VALUES = st.one_of(ODD_NUMBERS, st.none(), st.booleans(), st.text(max_size=6), st.lists(st.integers(0, 3), max_size=3))
GRID = [[2.0, 0.0, 0.0, -8.0], [0.0, 2.0, 0.0, -8.0], [0.0, 0.0, 2.0, -8.0], [0.0, 0.0, 0.0, 1.0]]
HYPOTHESIS = dict(max_examples=60, deadline=20_000, derandomize=True,
                  suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large])


@st.composite
def _tensor(draw, channels_first: bool):
    import torch

    shape = draw(st.sampled_from([(3, 3), (2, 2), (1, 3, 3), (2, 3, 3), (3,), (2,), (3, 4, 4, 4), (1, 3, 4, 5, 3),
                                  (2, 4, 4, 4), (3, 1, 1, 1), (0, 3)] if channels_first else [(3, 3), (3,), (1, 3, 3)]))
    dtype = draw(st.sampled_from([torch.float32, torch.float64, torch.int32, torch.float16]))
    fill = draw(st.one_of(st.floats(-1e3, 1e3), st.sampled_from([float("nan"), float("inf"), 1e30, 0.0])))
    t = torch.randn(shape, generator=torch.Generator().manual_seed(draw(st.integers(0, 9)))) if shape and 0 not in shape else torch.zeros(shape)
    if draw(st.booleans()):
        t.view(-1)[:1] = fill
    return t.to(dtype)


@st.composite
def _native_file(draw):
    """(chain, tensors, metadata) of a .regkit.safetensors file: each value valid, or (one time
    in ``odds``) a hostile one, so both outcomes are reached."""
    import torch

    odds = draw(st.sampled_from([0, 3, 8]))  # 0: every value valid

    def odd() -> bool:
        return odds > 0 and draw(st.integers(0, odds - 1)) == odds - 1  # hypothesis favours 0: 0 is "valid"

    n = draw(st.integers(1, 3)) if not odd() else draw(st.integers(0, 70))
    chain, tensors = [], {}
    for i in range(n):
        kind = draw(st.sampled_from(["affine", "displacement", "velocity"])) if not odd() else draw(st.sampled_from(["spline", 3, None]))
        step = {"type": kind}
        if kind in ("displacement", "velocity"):
            step["grid_affine"] = GRID if not odd() else draw(st.one_of(
                st.lists(st.lists(ODD_NUMBERS, min_size=4, max_size=4), min_size=3, max_size=4), ODD_VALUES))
            tensors[f"{i}.{kind}"] = torch.randn(3, 4, 4, 4) if not odd() else draw(_tensor(True))
            if kind == "velocity":
                step["steps"] = draw(st.integers(0, 8)) if not odd() else draw(ODD_VALUES)
        elif kind == "affine":
            tensors[f"{i}.matrix"] = (torch.eye(3, dtype=torch.float64) + 0.1 * torch.randn(3, 3, dtype=torch.float64)
                                      if not odd() else draw(_tensor(True)))
            tensors[f"{i}.translation"] = torch.randn(3, dtype=torch.float64) * 10 if not odd() else draw(_tensor(False))
            if not odd():
                tensors[f"{i}.center"] = torch.zeros(3, dtype=torch.float64) if not odd() else draw(_tensor(False))
        chain.append(step if not odd() else draw(ODD_VALUES))
    if odd():
        depth = draw(st.integers(1, 5000))
        chain = "[" * depth + "]" * depth
    metadata = {"version": "1" if not odd() else draw(st.one_of(st.sampled_from(["0", "2", "abc", "-1", "1e3", ""]), st.text(max_size=4)))}
    if odd():
        metadata["format"] = draw(st.text(max_size=8))
    if not tensors:
        tensors["unused"] = torch.zeros(1)
    return chain, tensors, metadata


@settings(**HYPOTHESIS)
@given(_native_file())
def test_fuzzed_native_transform_is_applied_or_refused_with_exit_2(tmp_path_factory, spec):
    """Any metadata/tensors in a .regkit.safetensors file: `apply --points` succeeds with finite
    points or exits 2/3 with one line naming the file — never exit 1 or a hang."""
    import math

    from bad_input_corpus import native_transform

    d = tmp_path_factory.mktemp("native")
    chain, tensors, metadata = spec
    path = native_transform(d / "t.regkit.safetensors", chain, tensors, **metadata)
    (d / "p.csv").write_text("x,y,z\n1,2,3\n-4.5,0,7\n")
    r = CliRunner().invoke(app, ["apply", str(path), "--points", str(d / "p.csv"), "--points-out", str(d / "o.csv")])
    assert r.exit_code in (0, 2, 3), (r.exit_code, r.output, chain, metadata)
    if r.exit_code == 0:
        rows = (d / "o.csv").read_text().splitlines()[1:]
        assert len(rows) == 2 and all(math.isfinite(float(v)) for row in rows for v in row.split(",")), rows
    else:
        assert r.stderr.count("\n") == 1 and r.stderr.startswith(f"regkit: error: {path}: "), r.stderr


CELLS = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr), st.integers(-10**6, 10**6).map(str),
                  st.sampled_from(["", " 1.5", "1,5", "abc", '"2"', "1e400", "-0", "#", "nan"]), st.text(max_size=5))


@st.composite
def _points_csv(draw):
    """(bytes, header, rows): a points CSV as spreadsheets and scripts write them; each cell a
    number, or (one time in ``odds``) an odd one."""
    import csv
    import io

    odds = draw(st.sampled_from([0, 4, 12]))

    def odd() -> bool:
        return odds > 0 and draw(st.integers(0, odds - 1)) == odds - 1  # hypothesis favours 0: 0 is "valid"

    header = draw(st.sampled_from([None, ["x", "y", "z"], ["label", "x", "y", "z"], [" X", "Y ", "z", "t"], ["z", "y", "x"]]))
    width = len(header) if header else 3
    number = st.one_of(st.floats(-1e5, 1e5).map(repr), st.integers(-10**5, 10**5).map(str))
    rows = [[draw(CELLS) if odd() else draw(number) for _ in range(width)] for _ in range(draw(st.integers(1, 5)))]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator=draw(st.sampled_from(["\n", "\r\n"])))
    if header:
        writer.writerow(header)
    writer.writerows(rows)
    data = buf.getvalue().encode("utf-8")
    if draw(st.booleans()):
        data = b"\xef\xbb\xbf" + data  # Excel's "CSV UTF-8"
    if odd():
        data += draw(st.binary(min_size=1, max_size=8))
    return data, header, rows


@settings(**HYPOTHESIS)
@given(_points_csv())
def test_fuzzed_points_csv_maps_every_row_or_is_refused(tmp_path_factory, spec):
    """Any points CSV through a translation by (1, 2, 3): exit 2 with one line naming the file,
    or exit 0 with every data row's x, y, z moved by exactly that and its other cells kept
    (a byte-order mark shifted every row by one)."""
    import csv
    import io

    import torch

    from regkit.io.transform_files import write_transform
    from regkit.transforms import AffineTransform

    d = tmp_path_factory.mktemp("points")
    data, header, rows = spec
    transform = write_transform(AffineTransform(torch.eye(3, dtype=torch.float64),
                                                torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64), requires_grad=False),
                                d / "t.regkit.safetensors")
    (d / "p.csv").write_bytes(data)
    r = CliRunner().invoke(app, ["apply", str(transform), "--points", str(d / "p.csv"), "--points-out", str(d / "o.csv")])
    assert r.exit_code in (0, 2), (r.exit_code, r.output, data)
    if r.exit_code != 0:
        assert r.stderr.count("\n") == 1 and str(d / "p.csv") in r.stderr, r.stderr
        assert not (d / "o.csv").exists()
        return
    out = list(csv.reader(io.StringIO((d / "o.csv").read_text())))
    kept = [row for row in rows if any(c.strip() for c in row) and not row[0].lstrip().startswith("#")]
    names = [c.strip().lower() for c in header] if header else None
    if names is not None and {"x", "y", "z"} <= set(names):
        cols, body = [names.index(a) for a in "xyz"], out[1:]
        assert [c.strip() for c in out[0]] == [c.strip() for c in header]
    else:
        cols, body = [0, 1, 2], out
        if header:  # a header without x, y, z is no header: its cells must have been numbers
            kept = [header] + kept
    assert len(body) == len(kept), (out, kept)
    for got, row in zip(body, kept):
        for c, shift in zip(cols, (1.0, 2.0, 3.0)):
            assert float(got[c]) == pytest.approx(float(row[c]) + shift, rel=1e-9, abs=1e-9), (got, row)
        assert [got[i] for i in range(len(row)) if i not in cols] == [row[i] for i in range(len(row)) if i not in cols]


# ------------------------------------------------------------------------------ single cases
def test_bom_points_csv_keeps_each_label_with_its_point(tmp_path):
    """The issue's case: a "CSV UTF-8" file (byte-order mark) gave each labelled row the NEXT
    point's coordinates, overwrote the header and lost the last point (exit 0)."""
    import torch

    from regkit.io.transform_files import write_transform
    from regkit.transforms import AffineTransform

    transform = write_transform(AffineTransform(torch.eye(3, dtype=torch.float64), torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64),
                                                requires_grad=False), tmp_path / "t.regkit.safetensors")
    (tmp_path / "p.csv").write_bytes("\ufefflabel,x,y,z\nnose,0,0,0\near,10,20,30\n".encode("utf-8"))
    r = _invoke("apply", transform, "--points", tmp_path / "p.csv", "--points-out", tmp_path / "m.csv")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "m.csv").read_text() == "label,x,y,z\nnose,1.0,2.0,3.0\near,11.0,22.0,33.0\n"


def test_default_value_must_be_finite(tmp_path):
    """--default-value nan wrote NaN voxels that regkit then refuses to read."""
    from bad_input_corpus import identity_transform

    image = good_image(tmp_path)
    for value in ("nan", "inf", "-inf"):
        r = _invoke("apply", identity_transform(tmp_path), image, "-r", image, "-o", tmp_path / "w.nii.gz", "--default-value", value)
        assert r.exit_code == 2 and "--default-value must be a finite number" in r.output, r.output
        r = _invoke("register", image, image, "--out", tmp_path / "out", "--default-value", value, "--no-progress")
        assert r.exit_code == 2 and "--default-value must be a finite number" in r.output, r.output
    assert not (tmp_path / "w.nii.gz").exists() and not (tmp_path / "out").exists()


def test_disk_full_is_exit_3_naming_the_file_and_leaves_nothing(tmp_path, monkeypatch):
    """ENOSPC while writing was an internal error naming no file."""
    import errno

    from bad_input_corpus import identity_transform

    from regkit.io import atomic

    def full(*args, **kwargs):  # the data reaches the disk at fsync: a full disk says so there at the latest
        raise OSError(errno.ENOSPC, "No space left on device")

    image, transform = good_image(tmp_path), identity_transform(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setattr(atomic, "_fsync", full)
    r = _invoke("apply", transform, image, "-r", image, "-o", out / "w.nii.gz")
    assert r.exit_code == 3, r.output
    assert r.stderr.startswith(f"regkit: error: {out / 'w.nii.gz'}: no space left on the device") and r.stderr.count("\n") == 1
    assert list(out.iterdir()) == []
    monkeypatch.setattr(atomic, "_fsync", lambda path: (_ for _ in ()).throw(OSError(errno.EROFS, "Read-only file system")))
    r = _invoke("apply", transform, image, "-r", image, "-o", out / "w.nii.gz")
    assert r.exit_code == 2 and r.stderr == f"regkit: error: {out / 'w.nii.gz'}: is on a read-only file system (writing it)\n"


def test_closed_stdout_still_writes_the_json_and_exits_0(tmp_path):
    """`regkit evaluate ... --json s.json | head -1`: BrokenPipeError (exit 1) and s.json maybe
    never written."""
    import os
    import subprocess

    labels = good_labels(tmp_path)
    exe = Path(sys.executable).with_name("regkit")
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "regkit.cli"]
    proc = subprocess.Popen(command + ["evaluate", "--fixed-labels", str(labels), "--warped-labels", str(labels),
                                       "--json", str(tmp_path / "s.json")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ))
    proc.stdout.close()  # the reader is gone before regkit prints
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0, stderr
    assert stderr == "" and (tmp_path / "s.json").is_file()


def test_garbage_h5_gives_regkit_line_alone_on_stderr(tmp_path):
    """HDF5 printed its 40-line stack (straight to file descriptor 2) before regkit's line."""
    import os
    import subprocess

    bad = tmp_path / "garbage.h5"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + np.random.default_rng(0).bytes(4000))
    image = good_image(tmp_path)
    exe = Path(sys.executable).with_name("regkit")
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "regkit.cli"]
    proc = subprocess.run(command + ["apply", str(bad), str(image), "-r", str(image), "-o", str(tmp_path / "w.nii.gz")],
                          capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and proc.stderr.startswith(f"regkit: error: {bad}: "), proc.stderr


@pytest.mark.parametrize("units,scale", [(1, 1000.0), (3, 0.001), (2, 1.0), (0, 1.0)], ids=["m", "um", "mm", "unknown"])
@pytest.mark.parametrize("qform_only", [False, True], ids=["sform", "qform"])
def test_nifti_units_and_geometry_as_simpleitk_reads_them(tmp_path, units, scale, qform_only):
    """xyzt_units in metres or micrometres was ignored (ITK scales); the affine now equals the
    one SimpleITK reads, in mm."""
    import SimpleITK as sitk

    from bad_input_corpus import AFFINE, _volume, write_raw_nifti

    from regkit.io.geometry import sitk_affine
    from regkit.io.images import load_image

    fields = {"xyzt_units": units}
    if qform_only:
        fields["sform_code"] = 0
    path = write_raw_nifti(tmp_path / "units.nii", _volume(), **fields)
    affine = load_image(path).affine.numpy()
    assert np.allclose(affine, sitk_affine(sitk.ReadImage(str(path))), atol=1e-6 * scale)
    assert np.allclose(affine[:3, :3], AFFINE[:3, :3] * scale)
