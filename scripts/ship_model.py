"""Turn a training checkpoint into a shipped model: regkit/models/NAME.safetensors.

Keeps the weights, the model config and the recipe (no optimizer or RNG state: a few MB), and
records where it came from (``trained``: commit, steps, validation Dice, data) and ``check``: the
model's prediction on sample_data summarised (:func:`regkit.nn.shipped.prediction_fingerprint`),
which tests/test_shipped_model.py recomputes, so a file that no longer predicts what it did at
export fails the tests.

    python scripts/ship_model.py runs/brain_synth/best.safetensors --name brain \
        --data "SynthSeg training label maps 01-14 (Apache-2.0)" --commit $(git rev-parse --short HEAD)
"""
from __future__ import annotations

import argparse
import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--name", required=True)
    ap.add_argument("--data", required=True, help="what the model was trained on (one line)")
    ap.add_argument("--commit", required=True, help="the commit whose code trained it")
    ap.add_argument("--out", type=Path, default=None, help="default: regkit/models/NAME.safetensors")
    a = ap.parse_args()

    import torch

    from regkit.io.images import load_image
    from regkit.nn.checkpoint import load_model, model_tensors, read_checkpoint, write_checkpoint
    from regkit.nn.shipped import prediction_fingerprint

    torch.set_num_threads(2)
    ckpt = read_checkpoint(a.checkpoint)
    model = load_model(a.checkpoint)
    moving, fixed = (load_image(REPO / "sample_data" / f"{role}.nii.gz") for role in ("moving", "fixed"))
    check = prediction_fingerprint(model, moving, fixed)
    trained = {"commit": a.commit, "steps": ckpt.step, "best_validation_dice": ckpt.metadata.get("best_metric"),
               "data": a.data, "exported": datetime.date.today().isoformat(), "from": a.checkpoint.name}
    recipe = dict(ckpt.metadata.get("train_config") or {})
    if isinstance(recipe.get("data"), dict):  # no paths of the machine that trained it
        recipe["data"] = {k: (Path(v).name if k in ("manifest", "subjects", "labelmaps", "val_manifest") and v else v)
                          for k, v in recipe["data"].items()}
    recipe.pop("out_dir", None)
    metadata = {"model_config": ckpt.metadata["model_config"], "train_config": recipe,
                "step": ckpt.step, "trained": trained, "check": check}
    out = a.out or REPO / "regkit" / "models" / f"{a.name}.safetensors"
    write_checkpoint(out, model_tensors(model), metadata)
    print(f"{out}: {out.stat().st_size / 1e6:.2f} MB, step {ckpt.step}, check {check}")


if __name__ == "__main__":
    main()
