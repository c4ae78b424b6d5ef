"""The model shipped inside the package (regkit/models/brain.safetensors): safe loading, the same
prediction as at export, found by name, not loaded by ``import regkit``."""
from __future__ import annotations

import json
import struct
import subprocess
import sys

import pytest


def _brain():
    from regkit.nn.shipped import shipped_path

    return shipped_path("brain")


def test_the_shipped_file_is_weights_only_safetensors_of_a_few_mb():
    path = _brain()
    assert path.stat().st_size < 8e6
    with path.open("rb") as f:  # safetensors: 8-byte header length, then a JSON header; nothing to unpickle
        header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
    names = [k for k in header if k != "__metadata__"]
    assert names and all(k.startswith("model/") for k in names)  # no optimizer or RNG state shipped
    meta = header["__metadata__"]
    assert {"model_config", "trained", "check"} <= set(meta)
    assert json.loads(meta["trained"])["commit"]


def test_the_shipped_model_predicts_what_it_predicted_at_export(sample_paths):
    """sample_data's pair through the shipped file: the summary stored at export (scripts/ship_model.py)."""
    from regkit.io.images import load_image
    from regkit.nn.checkpoint import load_model
    from regkit.nn.shipped import model_metadata, prediction_fingerprint

    path = _brain()
    stored = model_metadata(path)["check"]
    now = prediction_fingerprint(load_model(path), load_image(sample_paths["moving"]), load_image(sample_paths["fixed"]))
    assert now["mean_displacement_mm"] == pytest.approx(stored["mean_displacement_mm"], abs=2e-3)
    for a, b in zip(now["probe_points_mm"], stored["probe_points_mm"]):
        assert a == pytest.approx(b, abs=5e-3)
    assert now["mean_displacement_mm"] > 1.0  # a real prediction, not the identity


def test_model_names_resolve_and_an_unknown_name_is_one_line(tmp_path):
    from regkit.errors import InputError
    from regkit.nn.shipped import resolve_model

    assert resolve_model("brain") == _brain()
    own = tmp_path / "best.safetensors"
    assert resolve_model(own) == own  # a path stays a path (read_checkpoint reports it if missing)
    with pytest.raises(InputError, match="neither a checkpoint file nor a shipped model .shipped: brain"):
        resolve_model("brian")


def test_import_regkit_does_not_load_the_model():
    code = "import sys, regkit; print(any(m.startswith(('regkit.nn', 'safetensors')) for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_regkit_models_lists_the_brain_model():
    from typer.testing import CliRunner

    from regkit.cli.main import app

    result = CliRunner().invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("brain\t") and "docs/models/brain.md" in result.output
