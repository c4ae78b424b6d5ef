"""Training from label maps alone (regkit.train.synth): random contrasts, skull stripping, a run."""
from __future__ import annotations

import shutil

import pytest
import torch

from cascade_helpers import TINY_MODEL


def _dataset(tmp_path, sample_paths, **synth):
    from regkit.nn.config import ModelConfig
    from regkit.train.config import AugmentConfig, SynthConfig
    from regkit.train.synth import LabelMapDataset, labelmaps_in_folder

    folder = tmp_path / "maps"
    folder.mkdir(exist_ok=True)
    for role in ("moving", "fixed"):  # two "subjects": the sample pair's label maps (1-3 left, 4-6 right)
        shutil.copy(sample_paths[f"{role}_labels"], folder / f"{role}.nii.gz")
    model = ModelConfig.model_validate({**TINY_MODEL, "grid_shape": [32, 40, 32], "grid_spacing_mm": 5.0})
    return LabelMapDataset(labelmaps_in_folder(folder), model, AugmentConfig(noise_std=0.0, bias=0.0, gamma=(1.0, 1.0)),
                           SynthConfig(**synth), label_values=[1, 2, 3, 4, 5, 6])


def test_one_label_map_gives_images_of_different_contrasts(tmp_path, sample_paths):
    """Grey matter (2) brighter than white matter (3) in some draws, darker in others: any contrast."""
    data = _dataset(tmp_path, sample_paths, texture_std=0.0)
    brighter = []
    for seed in range(12):
        s = data.sample(0, torch.Generator().manual_seed(seed))
        image, labels = s["moving"][0], s["moving_labels"][0]
        assert s["moving"].shape == (1, 32, 40, 32) and 0 <= float(image.min()) and float(image.max()) <= 1
        grey, white = image[labels == 2].mean(), image[labels == 3].mean()
        brighter.append(bool(grey > white))
    assert any(brighter) and not all(brighter), brighter


def test_tied_labels_share_an_intensity_and_skull_stripping_blanks_the_rest(tmp_path, sample_paths):
    data = _dataset(tmp_path, sample_paths, texture_std=0.0, blur_voxels=(0.0, 0.0), brain_labels=(1, 3),
                    tie_labels={4: 1, 5: 2, 6: 3})
    s = data.sample(0, torch.Generator().manual_seed(1))
    image, labels = s["moving"][0], s["moving_labels"][0]
    assert float(image[labels >= 4].abs().max()) == 0.0  # 4-6 are not brain here: stripped
    assert float(image[labels == 3].std()) < 1e-4  # no texture, no blur: one value per label
    tied = _dataset(tmp_path, sample_paths, texture_std=0.0, blur_voxels=(0.0, 0.0), tie_labels={5: 2})
    s = tied.sample(0, torch.Generator().manual_seed(2))
    image, labels = s["moving"][0], s["moving_labels"][0]
    assert float(image[labels == 5].median()) == pytest.approx(float(image[labels == 2].median()), abs=1e-5)


def test_validation_pairs_are_the_same_every_time(tmp_path, sample_paths):
    data = _dataset(tmp_path, sample_paths)
    a, b = data.sample(1), data.sample(1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(data.sample(1, torch.Generator().manual_seed(5))["fixed"], a["fixed"])


def test_a_few_training_steps_from_label_maps(tmp_path, sample_paths):
    """CI's run of the recipe's path: regkit train --data on a folder of label maps only."""
    from typer.testing import CliRunner

    from regkit.cli.main import app

    _dataset(tmp_path, sample_paths)  # writes tmp_path/maps
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "model: {grid_shape: [16, 20, 16], grid_spacing_mm: 10.0, affine: {scale: 2, channels: [4, 8]},\n"
        "        stages: [{scale: 1, channels: [4, 8], head_channels: 4}]}\n"
        "data: {labelmaps: nowhere, label_values: [1, 2, 3, 4, 5, 6]}\n"
        "loss: {similarity_weight: 0.0, dice_weight: 1.0, reg_weight: 0.1}\n"
        "optim: {steps: 3, lr: 0.003}\nval_every: 3\nval_pairs: 2\nlog_every: 1\n")
    result = CliRunner().invoke(app, ["train", "--config", str(recipe), "--data", str(tmp_path / "maps"),
                                      "--out", str(tmp_path / "run"), "--no-progress", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    rows = (tmp_path / "run" / "log.csv").read_text().splitlines()
    assert len(rows) == 4 and rows[-1].split(",")[10]  # 3 steps, the last with its validation Dice
    assert (tmp_path / "run" / "best.safetensors").is_file()


def test_a_missing_label_map_folder_is_one_line(tmp_path):
    from regkit.errors import InputError
    from regkit.train.synth import labelmaps_in_folder

    with pytest.raises(InputError, match="no such label-map folder"):
        labelmaps_in_folder(tmp_path / "nope")
    (tmp_path / "one.nii.gz").write_bytes(b"")
    with pytest.raises(InputError, match="at least 2 label maps"):
        labelmaps_in_folder(tmp_path)
