"""regkit.resources: the memory budget, the estimates with known answers, and the calibration of
the per-voxel cost against a measured optimiser step."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from regkit import resources
from regkit.errors import InputError, ResourceError

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("text,expected", [("8G", 8 * 2**30), ("512 MiB", 512 * 2**20), ("1.5GB", int(1.5 * 2**30)),
                                           ("1000", 1000), ("64k", 64 * 2**10)])
def test_parse_bytes(text, expected):
    assert resources.parse_bytes(text) == expected


@pytest.mark.parametrize("text", ["lots", "8X", "", "-1G"])
def test_parse_bytes_refuses_nonsense(text):
    with pytest.raises(InputError, match="REGKIT_MEMORY_LIMIT"):
        resources.parse_bytes(text)


def test_memory_limit_from_env_and_check(monkeypatch):
    monkeypatch.setenv("REGKIT_MEMORY_LIMIT", "100M")
    assert resources.memory_limit() == 100 * 2**20
    resources.check_memory(100 * 2**20, "a job")  # exactly the limit fits
    with pytest.raises(ResourceError) as info:
        resources.check_memory(150 * 2**20, "registering on a 10x10x10 grid", path="ct.nii.gz")
    msg = str(info.value)
    assert info.value.exit_code == 3
    assert msg.startswith("ct.nii.gz: registering on a 10x10x10 grid needs about 150.0 MiB of memory but 100.0 MiB is available")
    assert "--config fast" in msg and "REGKIT_MEMORY_LIMIT" in msg


def test_memory_limit_detected_without_env(monkeypatch):
    monkeypatch.delenv("REGKIT_MEMORY_LIMIT", raising=False)
    meminfo = Path("/proc/meminfo")
    if not meminfo.exists():
        pytest.skip("no /proc/meminfo")
    available = int(next(l for l in meminfo.read_text().splitlines() if l.startswith("MemAvailable:")).split()[1]) * 1024
    limit = resources.memory_limit()
    assert 0 < limit <= available * 1.1  # never more than the kernel says is available (±churn)


def test_estimate_registration_known_answer():
    est = resources.estimate_registration((100, 100, 100), (50, 50, 50), level_shapes=[(50, 50, 50), (100, 100, 100)],
                                          control_shapes=[(25, 25, 25), (50, 50, 50)], metric="lncc")
    images = 4 * (10**6 + 125_000) + 8 * (125_000 + 10**6)
    step = resources.WORKING_OVERHEAD_BYTES + 10**6 * resources.working_bytes_per_voxel("lncc")
    control = 125_000 * resources.CONTROL_BYTES_PER_VOXEL
    assert est.parts == {"images": images, "control grid": control, "finest level": step}
    assert est.total == images + step + control
    assert est.describe().startswith("finest level 277.6 MiB + ")


def test_estimate_counts_final_resampling_when_it_dominates():
    # optimisation on a 4x coarser grid: the full-resolution resampling at the end is the peak
    est = resources.estimate_registration((200, 200, 200), (200, 200, 200), level_shapes=[(50, 50, 50)])
    assert "finest level" not in est.parts
    assert est.parts["final resampling"] == 8 * 10**6 * resources.RESAMPLE_BYTES_PER_VOXEL
    chunked = resources.estimate_registration((200, 200, 200), (200, 200, 200), level_shapes=[(50, 50, 50)],
                                              resample_chunk_voxels=10**6)
    assert chunked.total < est.total


def test_mi_costs_more_per_bin():
    assert resources.working_bytes_per_voxel("mi", 64) > resources.working_bytes_per_voxel("mi", 32) > resources.working_bytes_per_voxel("lncc")
    with pytest.raises(ValueError):
        resources.working_bytes_per_voxel("ssd")


def test_ct_512x512x300_fits_in_8_gib():
    """A 512x512x300 CT pair (0.7x0.7x1 mm) registered with a finest working grid of 2 mm (control
    grid 4 mm) — the shape of regkit's presets — is estimated under 8 GiB on CPU."""
    ct = (512, 512, 300)
    fov_mm = (512 * 0.7, 512 * 0.7, 300 * 1.0)
    level = lambda s: tuple(int(f / s) + 1 for f in fov_mm)  # noqa: E731
    est = resources.estimate_registration(ct, ct, [level(4), level(2)], [level(8), level(4)], metric="lncc")
    assert est.total < 8 * 2**30, est.describe()
    # ... while optimising at full resolution would not fit: the estimate tells the user so
    full = resources.estimate_registration(ct, ct, [ct], [level(2)], metric="lncc")
    assert full.total > 8 * 2**30


def test_resample_estimate():
    assert resources.estimate_resample((10, 10, 10)) == 1000 * resources.RESAMPLE_BYTES_PER_VOXEL
    assert resources.estimate_resample((10, 10, 10), channels=3) == 1000 * (resources.RESAMPLE_BYTES_PER_VOXEL + 8)


def test_image_read_estimate():
    fixed = resources.READ_OVERHEAD_BYTES
    assert resources.estimate_image_read((10, 10, 10), 2) == fixed + 8000  # int16 twice + float32
    assert resources.estimate_image_read((10, 10, 10), 8) == fixed + 24000  # float64 twice + a float64-sized result


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="peak RSS reset needs Linux /proc")
def test_calibration_step_stays_under_the_estimate():
    """The measured peak of one representative optimiser step (benchmarks/memory_calibration.py,
    80³ working grid, fresh process) is below the estimate and not far below it."""
    n = 80
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "memory_calibration.py"), str(n), "lncc"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    measured = float(proc.stdout.split("+")[1].split()[0]) * 2**20
    estimate = resources.working_step_bytes(n ** 3, "lncc")
    assert 0.4 * estimate < measured <= estimate, proc.stdout
