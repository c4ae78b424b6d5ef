"""Every code block of README.md runs as written, on the sample pair: each block in a fresh folder
holding the sample images under the names the README uses (moving.nii.gz, fixed.nii.gz, their
labels, sample_data/) and this checkout's .venv, scripts and configs."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_data"
#: blocks that cannot run inside the test suite, and why (everything else must run)
NOT_HERE = {"bash scripts/test.sh": "it is this test suite itself (CI runs it as written)"}


def _blocks():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return [(lang, body.strip()) for lang, body in re.findall(r"```(bash|python|sh)\n(.*?)```", text, flags=re.S)]


BLOCKS = _blocks()


def _folder(tmp_path: Path) -> Path:
    """A folder laid out like the checkout, with the sample pair also under the README's plain names;
    scripts/setup.sh is replaced by a no-op (it installs from the network; .venv exists already)."""
    work = tmp_path / "work"
    work.mkdir()
    for name in ("moving", "fixed", "moving_labels", "fixed_labels"):
        shutil.copy(SAMPLE / f"{name}.nii.gz", work / f"{name}.nii.gz")
    (work / "sample_data").symlink_to(SAMPLE)
    venv = Path(sys.prefix)
    (work / ".venv").symlink_to(venv)
    (work / "scripts").mkdir()
    for script in (ROOT / "scripts").glob("*.sh"):
        shutil.copy(script, work / "scripts" / script.name)
    (work / "scripts" / "setup.sh").write_text("#!/usr/bin/env bash\n# the test's .venv is set up already\n")
    return work


def test_readme_has_blocks():
    assert len(BLOCKS) >= 4 and any(lang == "python" for lang, _ in BLOCKS)


@pytest.mark.parametrize("lang, body", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_block_runs_as_written(lang, body, tmp_path):
    if body in NOT_HERE:
        pytest.skip(NOT_HERE[body])
    work = _folder(tmp_path)
    # one thread: the README's commands on a shared machine (as the suite's own processes run) do not stall
    env = {**os.environ, "PATH": f"{Path(sys.prefix) / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}", "OMP_NUM_THREADS": "1"}
    if lang == "python":
        cmd = [sys.executable, "-c", body]
    else:
        cmd = ["bash", "-euo", "pipefail", "-c", body]
    p = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=1800)
    assert p.returncode == 0, f"README block failed:\n{body}\n--- stderr:\n{p.stderr[-3000:]}"
