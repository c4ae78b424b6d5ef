"""Shared fixtures: the bundled sample pair and small synthetic volumes."""
from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_data"


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    return SAMPLE


@pytest.fixture(scope="session")
def sample_paths() -> dict:
    return {
        "moving": SAMPLE / "moving.nii.gz",
        "fixed": SAMPLE / "fixed.nii.gz",
        "moving_labels": SAMPLE / "moving_labels.nii.gz",
        "fixed_labels": SAMPLE / "fixed_labels.nii.gz",
    }


@pytest.fixture(autouse=True)
def _torch_threads():
    # the suite runs on 2 cores; keep torch from oversubscribing when pytest-xdist is used
    import torch

    torch.manual_seed(0)
    yield
