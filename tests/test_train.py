"""Training: the loss falls, resume is exact, signals save a checkpoint, bad inputs are one-line errors."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch
import yaml

from cascade_helpers import keypoint_cascade, tiny_config


def _config(tmp_path, sample_paths, **overrides):
    from regkit.train.config import TrainConfig

    return TrainConfig.model_validate(tiny_config(tmp_path, sample_paths, **overrides))


def test_tiny_training_run_lowers_the_loss_and_validates(tmp_path, sample_paths):
    from regkit.train.loop import train

    manifest = str(tmp_path / "pairs.csv")
    config = _config(tmp_path, sample_paths, both_directions=False, optim={"steps": 8},
                     data={"manifest": manifest, "val_manifest": manifest}, val_every=8,
                     loss={"similarity": "lncc", "reg_weight": 0.1, "dice_weight": 0.5})
    result = train(config, out_dir=tmp_path / "run", progress=False)
    assert result.step == 8
    assert result.losses[-1] < result.losses[0] - 0.02, result.losses
    assert (tmp_path / "run" / "last.safetensors").is_file() and result.best == tmp_path / "run" / "best.safetensors"
    assert 0.0 < result.validation["val_dice"] <= 1.0 and result.validation["val_folding_percent"] < 1.0
    rows = (tmp_path / "run" / "log.csv").read_text().splitlines()
    assert rows[0].startswith("step,") and len(rows) == 9


def test_resume_continues_exactly_where_the_run_stopped(tmp_path, sample_paths):
    from regkit.nn.checkpoint import read_checkpoint
    from regkit.train.loop import train

    config = _config(tmp_path, sample_paths, optim={"steps": 4}, augment={"enabled": True})
    straight = train(config, out_dir=tmp_path / "a", progress=False)
    half = config.model_copy(update={"optim": config.optim.model_copy(update={"steps": 2})})
    first = train(half, out_dir=tmp_path / "b", progress=False)
    assert read_checkpoint(first.last).step == 2
    resumed = train(config, out_dir=tmp_path / "b", resume=first.last, progress=False)
    assert resumed.step == 4 and len(resumed.losses) == 2
    assert resumed.losses == pytest.approx(straight.losses[2:], rel=1e-5)
    a, b = read_checkpoint(straight.last), read_checkpoint(resumed.last)
    assert a.step == b.step == 4
    assert set(a.tensors) == set(b.tensors) and any(k.startswith("optim/") for k in a.tensors)
    for name in a.tensors:
        if name != "rng/torch":
            assert torch.allclose(a.tensors[name], b.tensors[name], atol=1e-6), name
    assert a.metadata["optimizer_param_groups"] == b.metadata["optimizer_param_groups"]


def test_silent_no_ops_are_warned_about(tmp_path, sample_paths, caplog):
    """A resume of a finished run printed only 'step N: last checkpoint' (no step ran, no word
    why); a Dice weight with a manifest without labels was dropped silently. Both warn now."""
    import logging

    from regkit.train.loop import train

    config = _config(tmp_path, sample_paths, optim={"steps": 2})
    first = train(config, out_dir=tmp_path / "run", progress=False)
    with caplog.at_level(logging.WARNING, logger="regkit.train.loop"):
        again = train(config, out_dir=tmp_path / "run", resume=first.last, progress=False)
    assert again.step == 2 and not again.losses
    assert "no step to run; pass --steps N (N > 2)" in caplog.text
    caplog.clear()
    (tmp_path / "nolabels.csv").write_text(f"moving,fixed\n{sample_paths['moving']},{sample_paths['fixed']}\n")
    unlabelled = _config(tmp_path, sample_paths, optim={"steps": 1}, data={"manifest": str(tmp_path / "nolabels.csv")},
                         loss={"similarity": "lncc", "reg_weight": 0.1, "dice_weight": 1.0})
    with caplog.at_level(logging.WARNING, logger="regkit.train.loop"):
        train(unlabelled, out_dir=tmp_path / "run2", progress=False)
    assert "no training pair has labels: the Dice term (loss.dice_weight 1) is off" in caplog.text


def test_sigint_saves_a_checkpoint_and_stops_cleanly(tmp_path, sample_paths):
    from regkit.nn.checkpoint import read_checkpoint
    from regkit.train.loop import train

    def interrupt(step, terms):
        if step == 2:
            os.kill(os.getpid(), signal.SIGINT)

    result = train(_config(tmp_path, sample_paths, optim={"steps": 50}), out_dir=tmp_path / "run", progress=False, callback=interrupt)
    assert result.interrupted == "SIGINT" and result.step == 2
    assert read_checkpoint(result.last).step == 2
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored


def test_resume_with_another_model_config_is_an_input_error(tmp_path, sample_paths):
    from regkit.errors import InputError
    from regkit.train.loop import train

    config = _config(tmp_path, sample_paths, optim={"steps": 1})
    first = train(config, out_dir=tmp_path / "run", progress=False)
    other = config.model_copy(update={"model": config.model.model_copy(update={"grid_spacing_mm": 8.0})})
    with pytest.raises(InputError, match="different model config.*grid_spacing_mm"):
        train(other, out_dir=tmp_path / "run2", resume=first.last, progress=False)


def test_config_and_manifest_errors_name_the_problem(tmp_path, sample_paths):
    from regkit.errors import InputError
    from regkit.train.config import load_train_config
    from regkit.io.manifests import read_manifest

    raw = tiny_config(tmp_path, sample_paths)
    raw["optim"]["learning_rate"] = 0.1
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(InputError, match=r"bad.yaml.*optim.learning_rate"):
        load_train_config(tmp_path / "bad.yaml")
    # YAML 1.1 reads 4e3 (no dot) as text: the error says so instead of "unable to parse string as an integer"
    (tmp_path / "sci.yaml").write_text(yaml.safe_dump(tiny_config(tmp_path, sample_paths)).replace("steps: 4", "steps: 4e3"))
    with pytest.raises(InputError, match=r"sci.yaml: invalid training config at optim.steps: .*YAML reads 4e3 as text"):
        load_train_config(tmp_path / "sci.yaml")
    (tmp_path / "m.csv").write_text("moving,fixed\nnope.nii.gz,also_missing.nii.gz\n")
    with pytest.raises(InputError, match=r"m.csv: pair 1: moving file .*nope.nii.gz does not exist"):
        read_manifest(tmp_path / "m.csv")


def test_relative_manifest_paths_and_subject_folders(tmp_path, sample_paths):
    from regkit.io.manifests import all_ordered_pairs, read_manifest, subjects_in_folder

    folder = tmp_path / "subjects"
    folder.mkdir()
    for name in ("a", "b", "c"):
        (folder / f"{name}.nii.gz").symlink_to(sample_paths["fixed"])
        (folder / f"{name}_labels.nii.gz").symlink_to(sample_paths["fixed_labels"])
    subjects = subjects_in_folder(folder)
    assert [s[0].name for s in subjects] == ["a.nii.gz", "b.nii.gz", "c.nii.gz"]
    assert subjects[0][1].name == "a_labels.nii.gz"
    pairs = all_ordered_pairs(subjects)
    assert len(pairs) == 6 and all(p.moving != p.fixed for p in pairs)
    (folder / "pairs.json").write_text('[{"moving": "a.nii.gz", "fixed": "b.nii.gz"}]')
    assert read_manifest(folder / "pairs.json")[0].fixed == folder / "b.nii.gz"


def test_cli_train_writes_a_run_and_refuses_to_overwrite(tmp_path, sample_paths):
    from typer.testing import CliRunner

    from regkit.cli.main import app

    (tmp_path / "c.yaml").write_text(yaml.safe_dump(tiny_config(tmp_path, sample_paths)))
    args = ["train", "--config", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "run"), "--steps", "1", "--device", "cpu", "--no-progress"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert (tmp_path / "run" / "last.safetensors").is_file() and (tmp_path / "run" / "config.yaml").is_file()
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 2 and "--force" in again.output


def test_cosine_schedule_falls_to_its_floor_and_resumes_exactly(tmp_path, sample_paths):
    """The learning rate follows the cosine from lr to lr × final_lr_factor; a run interrupted
    half-way and resumed with the same recipe takes the same steps as an uninterrupted one."""
    from regkit.train.loop import learning_rate_factor, train

    config = _config(tmp_path, sample_paths, optim={"steps": 4, "lr_schedule": "cosine", "final_lr_factor": 0.1})
    factors = [learning_rate_factor(config.optim, s) for s in range(4)]
    assert factors[0] == pytest.approx(1.0) and factors[-1] == pytest.approx(0.1)
    assert all(a > b for a, b in zip(factors, factors[1:]))
    straight = train(config, out_dir=tmp_path / "a", progress=False)

    def interrupt(step, terms):
        if step == 2:
            os.kill(os.getpid(), signal.SIGINT)

    first = train(config, out_dir=tmp_path / "b", progress=False, callback=interrupt)
    assert first.step == 2
    resumed = train(config, out_dir=tmp_path / "b", resume=first.last, progress=False)
    assert resumed.losses == pytest.approx(straight.losses[2:], rel=1e-5)
    rows = [r.split(",") for r in (tmp_path / "a" / "log.csv").read_text().splitlines()[1:]]
    lr_column = (tmp_path / "a" / "log.csv").read_text().splitlines()[0].split(",").index("lr")
    assert float(rows[-1][lr_column]) == pytest.approx(config.optim.lr * 0.1)


def _blob_batch(shift_voxels: int = 0):
    """Moving and fixed (1, 1, 16, 20, 16): a textured box with two labels; the moving one
    shifted by ``shift_voxels`` along the first axis."""
    g = torch.Generator().manual_seed(5)
    texture = torch.rand(1, 1, 16, 20, 16, generator=g)
    labels = torch.zeros(1, 1, 16, 20, 16, dtype=torch.long)
    labels[:, :, 4:9, 5:15, 4:12], labels[:, :, 9:13, 5:15, 4:12] = 1, 2
    fixed = texture * 0.3 + labels.float() * 0.3
    roll = lambda t: torch.roll(t, shift_voxels, dims=2)  # noqa: E731
    return {"moving": roll(fixed), "fixed": fixed, "moving_labels": roll(labels), "fixed_labels": labels}


def test_affine_stage_loss_scores_the_affine_alone():
    """Deep supervision: ``affine_stage`` is the similarity + Dice of the moving image through
    the affine stage only, added with its weight; an identity affine on an identical pair has a
    perfect stage Dice, a shifted moving image scores worse, and the term's gradient reaches
    the localisation net."""
    from regkit import space
    from regkit.train.config import LossConfig
    from regkit.train.objective import CascadeLoss

    model = keypoint_cascade(heatmap_std=1.0)
    losses = {w: CascadeLoss(LossConfig(dice_weight=1.0, affine_stage_weight=w, affine_stage_stride=2), model.config, num_labels=3) for w in (0.0, 0.5)}

    same = _blob_batch(0)
    with torch.no_grad():
        out = model(same["moving"], same["moving"])  # identical images: the keypoint affine is the identity
    grid = model.grid_affine
    torch.testing.assert_close(out["affine_points"][0], space.world_grid(grid, (16, 20, 16)), atol=1e-4, rtol=0)
    _, terms = losses[0.5](out, {**same, "fixed": same["moving"], "fixed_labels": same["moving_labels"]}, grid)
    perfect = losses[0.5].similarity(same["moving"][:, :, ::2, ::2, ::2], same["moving"][:, :, ::2, ::2, ::2])
    assert terms["affine_stage"] == pytest.approx(float(perfect), abs=1e-3)

    shifted = _blob_batch(3)
    out = model(shifted["moving"], shifted["fixed"])
    total0, terms0 = losses[0.0](out, shifted, grid)
    total, terms = losses[0.5](out, shifted, grid)
    assert "affine_stage" not in terms0 and terms["affine_stage"] > float(perfect) + 0.1
    assert float((total - total0).detach()) == pytest.approx(0.5 * terms["affine_stage"], rel=1e-4)
    (total - total0).backward()
    assert model.affine_net.heatmaps.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["train_brain2mm.yaml", "train_brain2mm_wide3.yaml"])
def test_the_committed_recipe_config_is_valid_and_starts_as_the_identity(name):
    """``configs/train_brain2mm.yaml`` (the benchmark recipe) and its larger GPU variant validate,
    their data paths resolve next to the repository's ``runs/data``, and the untrained cascade
    each builds maps every fixed point by the centres of mass' offset alone (keypoint gain 0, zero SVF heads) on real-sized
    inputs of the sample pair."""
    from regkit.io.images import load_image
    from regkit.nn.cascade import CascadeNet
    from regkit.nn.predict import prepare_pair
    from regkit.train.config import load_train_config

    root = Path(__file__).resolve().parents[1]
    config = load_train_config(root / "configs" / name)
    assert config.data.subjects == (root / "runs" / "data" / "train2mm").resolve()
    assert config.data.val_manifest == (root / "runs" / "data" / "val2mm" / "pairs.csv").resolve()
    assert len(config.model.stages) >= 2 and all(s.field == "svf" for s in config.model.stages)
    assert config.model.affine.head == "keypoints"

    torch.manual_seed(0)
    model = CascadeNet(config.model).eval()
    sample = root / "sample_data"
    moving, fixed = load_image(sample / "moving.nii.gz"), load_image(sample / "fixed.nii.gz")
    mov, fix, centre, moving_centre = prepare_pair(model, moving, fixed)
    assert tuple(mov.shape[2:]) == tuple(config.model.grid_shape)
    with torch.no_grad():  # identity between the boxes: the centres of mass' translation
        transform = model.to_world(model(mov, fix, full_resolution=False), offset_mm=centre, moving_offset_mm=moving_centre)
        points = fixed.center().float() + torch.randn(200, 3) * 40.0
        torch.testing.assert_close(transform(points), points + (moving_centre - centre).float(), atol=1e-3, rtol=0)


def test_a_run_folder_is_not_overwritten_by_resuming_another_run(tmp_path, sample_paths):
    """--resume used to skip the 'holds a previous run' check: run b's checkpoint and config were
    replaced by run a's and b's log.csv mixed the steps of both."""
    from regkit.errors import OutputExistsError
    from regkit.train.loop import train

    config = _config(tmp_path, sample_paths, optim={"steps": 2})
    a = train(config, out_dir=tmp_path / "a", progress=False)
    train(config, out_dir=tmp_path / "b", progress=False)
    before = {name: (tmp_path / "b" / name).read_bytes() for name in ("last.safetensors", "config.yaml", "log.csv")}
    longer = config.model_copy(update={"optim": config.optim.model_copy(update={"steps": 3})})
    with pytest.raises(OutputExistsError, match="holds another run"):
        train(longer, out_dir=tmp_path / "b", resume=a.last, progress=False)
    assert {name: (tmp_path / "b" / name).read_bytes() for name in before} == before
    assert train(longer, out_dir=tmp_path / "a", resume=a.last, progress=False).step == 3  # its own folder: fine


def test_starting_over_drops_the_old_best_and_a_resume_drops_rows_logged_after_the_checkpoint(tmp_path, sample_paths):
    """--force kept the previous run's best.safetensors (a model of another run, reported as this
    run's best; with no validation the CLI then died formatting its missing score). And rows a
    killed run logged after its last checkpoint were logged twice after --resume."""
    from typer.testing import CliRunner

    from regkit.cli.main import app
    from regkit.train.loop import train

    run, manifest = tmp_path / "run", str(tmp_path / "pairs.csv")
    validated = _config(tmp_path, sample_paths, optim={"steps": 2}, val_every=2, data={"manifest": manifest, "val_manifest": manifest})
    assert train(validated, out_dir=run, progress=False).best == run / "best.safetensors"
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(tiny_config(tmp_path, sample_paths, optim={"steps": 2})))
    r = CliRunner().invoke(app, ["train", "--config", str(tmp_path / "c.yaml"), "--out", str(run), "--force", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert not (run / "best.safetensors").exists() and "best" not in r.output.splitlines()[-1]

    rows = (run / "log.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in rows[1:]] == ["1", "2"]
    (run / "log.csv").write_text("\n".join(rows + ["3" + rows[-1][1:]]) + "\n")  # killed at step 3, checkpoint at 2
    train(_config(tmp_path, sample_paths, optim={"steps": 4}), out_dir=run, resume=run / "last.safetensors", progress=False)
    assert [row.split(",")[0] for row in (run / "log.csv").read_text().splitlines()[1:]] == ["1", "2", "3", "4"]


def test_force_never_removes_a_best_model_regkit_did_not_write(tmp_path, sample_paths):
    """train --force unlinked any best.safetensors in the run folder, also one the user put there
    (and without --force too, in a folder without last.safetensors). As register: --force removes
    the previous run's files only when the folder's record lists them unchanged, and a new run
    refuses an output that exists, without --force (exit 2, the file named)."""
    import hashlib

    from typer.testing import CliRunner

    from regkit.cli.main import app
    from regkit.io.atomic import read_record
    from regkit.train.loop import train

    def digest(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()

    manifest = str(tmp_path / "pairs.csv")
    validated = _config(tmp_path, sample_paths, optim={"steps": 2}, val_every=2, data={"manifest": manifest, "val_manifest": manifest})
    (tmp_path / "plain.yaml").write_text(yaml.safe_dump(tiny_config(tmp_path, sample_paths, optim={"steps": 1})))
    (tmp_path / "validated.yaml").write_text(yaml.safe_dump(validated.model_dump(mode="json")))

    def cli(run: Path, recipe: str, *extra: str):
        return CliRunner().invoke(app, ["train", "--config", str(tmp_path / recipe), "--out", str(run), "--no-progress", *extra])

    # 1. regkit's best, then replaced by the user's own model: the user's now, kept by --force
    run = tmp_path / "run"
    train(validated, out_dir=run, progress=False)
    assert {"last.safetensors", "best.safetensors", "log.csv", "config.yaml"} <= set(read_record(run))
    (run / "best.safetensors").write_bytes(b"the user's own best model")
    before = digest(run / "best.safetensors")
    r = cli(run, "plain.yaml", "--force")
    assert r.exit_code == 0, r.output
    assert digest(run / "best.safetensors") == before and "best" not in r.output.splitlines()[-1]
    # 2. a best.safetensors never recorded (copied in beside a run): kept
    other = tmp_path / "other"
    train(_config(tmp_path, sample_paths, optim={"steps": 1}), out_dir=other, progress=False)
    (other / "best.safetensors").write_bytes((run / "last.safetensors").read_bytes())
    before = digest(other / "best.safetensors")
    assert cli(other, "plain.yaml", "--force").exit_code == 0 and digest(other / "best.safetensors") == before
    # 3. a folder holding only the user's best, a run that would write one: refused without --force
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "best.safetensors").write_bytes(b"mine")
    r = cli(fresh, "validated.yaml")
    assert r.exit_code == 2 and r.stderr == f"regkit: error: {fresh / 'best.safetensors'}: exists; pass --force to overwrite\n", r.output
    assert (fresh / "best.safetensors").read_bytes() == b"mine" and sorted(p.name for p in fresh.iterdir()) == ["best.safetensors"]
    # 4. what regkit wrote and recorded is what --force removes: a new run without validation
    regkit_best = tmp_path / "regkit_best"
    train(validated, out_dir=regkit_best, progress=False)
    assert cli(regkit_best, "plain.yaml", "--force").exit_code == 0 and not (regkit_best / "best.safetensors").exists()


def test_dice_with_labels_on_only_some_pairs_is_refused(tmp_path, sample_paths):
    """The dataset keeps labels only when every pair has them: one pair without labels turned the
    Dice term off for the whole run, silently."""
    from regkit.errors import InputError
    from regkit.train.loop import train

    p = sample_paths
    manifest = tmp_path / "mixed.csv"
    manifest.write_text("moving,fixed,moving_labels,fixed_labels\n"
                        f"{p['moving']},{p['fixed']},{p['moving_labels']},{p['fixed_labels']}\n{p['fixed']},{p['moving']},,\n")
    config = _config(tmp_path, sample_paths, data={"manifest": str(manifest)}, loss={"similarity": "lncc", "dice_weight": 1.0})
    with pytest.raises(InputError, match=r"mixed.csv: 1 of 2 training pairs have labels.*has none"):
        train(config, out_dir=tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
    extra = tmp_path / "extra.csv"  # labels under a two-column header were dropped
    extra.write_text(f"moving,fixed\n{p['moving']},{p['fixed']},{p['moving_labels']},{p['fixed_labels']}\n")
    from regkit.io.manifests import read_manifest

    with pytest.raises(InputError, match="more fields than the header"):
        read_manifest(extra)


@pytest.mark.parametrize("section, bad", [
    ("loss", {"similarity": "foo"}), ("loss", {"similarity": "lncc", "similarity_options": {"windoww": 3}}),
    ("augment", {"enabled": True, "gamma": [-1, 2]}), ("model", {"intensity": {"percentiles": [99.5, 0.5]}}),
    ("model", {"intensity": {"mode": "window", "window": [1000, -1000]}})])
def test_recipe_values_that_failed_at_step_one_or_silently_are_refused(tmp_path, sample_paths, section, bad):
    from regkit.train.config import load_train_config

    config = tiny_config(tmp_path, sample_paths)
    config[section] = {**config[section], **bad}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(Exception) as caught:
        load_train_config(tmp_path / "c.yaml")
    assert type(caught.value).__name__ == "InputError" and "c.yaml" in str(caught.value), caught.value


def test_a_grid_too_small_for_the_networks_is_a_config_error(tmp_path, sample_paths):
    """grid_shape [8, 8, 8] with the recipe's networks was an internal error (InstanceNorm) at step
    1 (and in a checkpoint, at prediction); the smallest grid that passes must run."""
    from regkit.nn.cascade import CascadeNet
    from regkit.nn.config import ModelConfig

    recipe = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" / "train_brain2mm.yaml").read_text())["model"]
    with pytest.raises(Exception, match=r"grid_shape \[8, 8, 8\] is too small for the stage 0"):
        ModelConfig.model_validate({**recipe, "grid_shape": [8, 8, 8]})
    with pytest.raises(Exception, match="too small"):
        ModelConfig.model_validate({**recipe, "grid_shape": [32, 32, 32]})  # stage 0's deepest layer: 1 voxel
    net = CascadeNet(ModelConfig.model_validate({**recipe, "grid_shape": [40, 32, 32]}))  # 2 voxels: runs
    with torch.no_grad():
        net(torch.rand(1, 1, 40, 32, 32), torch.rand(1, 1, 40, 32, 32))


def test_training_boxes_are_the_ones_prediction_uses(tmp_path, sample_paths):
    """A pair shown to the network in training must look as it does at inference: each image's
    box on its own centre of mass (``prepare_pair``). Then a moving image that is the fixed one
    moved 40 mm in world space is the same tensor as the fixed one — nothing left to learn."""
    import nibabel as nib
    import numpy as np

    from regkit.io.images import load_image
    from regkit.nn.cascade import CascadeNet
    from regkit.nn.config import ModelConfig
    from regkit.nn.predict import prepare_pair
    from regkit.io.manifests import PairPaths
    from regkit.train.data import PairDataset

    model_config = ModelConfig.model_validate(_config(tmp_path, sample_paths).model.model_dump())
    pair = PairPaths(sample_paths["moving"], sample_paths["fixed"], sample_paths["moving_labels"], sample_paths["fixed_labels"])
    sample = PairDataset([pair], model_config).sample(0)
    mov, fix, _, _ = prepare_pair(CascadeNet(model_config), load_image(sample_paths["moving"]), load_image(sample_paths["fixed"]))
    assert torch.allclose(sample["moving"], mov[0], atol=1e-5) and torch.allclose(sample["fixed"], fix[0], atol=1e-5)

    fixed = nib.load(str(sample_paths["fixed"]))
    shifted = fixed.affine.copy()
    shifted[:3, 3] += [40.0, -25.0, 15.0]
    moved = tmp_path / "moved.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(fixed.dataobj), shifted), str(moved))
    sample = PairDataset([PairPaths(moved, sample_paths["fixed"], None, None)], model_config).sample(0)
    assert sample["fixed"].std() > 0.1
    assert torch.allclose(sample["moving"], sample["fixed"], atol=1e-4)


def test_manifests_as_spreadsheets_write_them(tmp_path, sample_paths):
    """Excel's "CSV UTF-8" (a byte-order mark), spaces after the commas and ';'-separated files;
    a JSON path that is not a string: read, or refused naming what was found (not a TypeError)."""
    from regkit.errors import InputError
    from regkit.io.manifests import read_manifest

    m, f = sample_paths["moving"], sample_paths["fixed"]
    (tmp_path / "bom.csv").write_bytes(f"\ufeffmoving, fixed\n{m}, {f}\n".encode("utf-8"))
    assert read_manifest(tmp_path / "bom.csv")[0].fixed == f
    (tmp_path / "semi.csv").write_text(f"moving;fixed\n{m};{f}\n")
    with pytest.raises(InputError, match=r"found: moving;fixed\); is the file comma-separated"):
        read_manifest(tmp_path / "semi.csv")
    (tmp_path / "num.json").write_text(f'[{{"moving": "{m}", "fixed": 5}}]')
    with pytest.raises(InputError, match=r"pair 1: fixed must be a file path, not int 5"):
        read_manifest(tmp_path / "num.json")


def test_resuming_an_older_checkpoint_of_the_folder_does_not_overwrite_the_newer_one(tmp_path, sample_paths):
    """--resume run/best.safetensors (or any older checkpoint in the run's folder) overwrote the
    newer last.safetensors and cut log.csv, without --force."""
    import shutil

    from regkit.errors import OutputExistsError
    from regkit.nn.checkpoint import read_checkpoint
    from regkit.train.loop import train

    run = tmp_path / "run"
    train(_config(tmp_path, sample_paths, optim={"steps": 2}), out_dir=run, progress=False)
    shutil.copy(run / "last.safetensors", run / "step2.safetensors")
    train(_config(tmp_path, sample_paths, optim={"steps": 3}), out_dir=run, resume=run / "last.safetensors", progress=False)
    with pytest.raises(OutputExistsError, match=r"last.safetensors is at step 3, after step2.safetensors \(step 2\)"):
        train(_config(tmp_path, sample_paths, optim={"steps": 4}), out_dir=run, resume=run / "step2.safetensors", progress=False)
    assert read_checkpoint(run / "last.safetensors").step == 3
    train(_config(tmp_path, sample_paths, optim={"steps": 4}), out_dir=run, resume=run / "step2.safetensors", force=True, progress=False)
    assert read_checkpoint(run / "last.safetensors").step == 4


def test_resuming_another_folders_run_over_an_old_one_keeps_nothing_of_the_old_one(tmp_path, sample_paths):
    """train --force --resume B/last.safetensors --out A (A holds an older run): A's best model
    (reported as this run's) and A's log rows stayed; and a changed optim.weight_decay was
    ignored on resume (the optimizer state's old value won)."""
    from regkit.nn.checkpoint import read_checkpoint
    from regkit.train.loop import train

    manifest = str(tmp_path / "pairs.csv")
    a, b = tmp_path / "A", tmp_path / "B"
    validated = dict(val_every=2, data={"manifest": manifest, "val_manifest": manifest})
    train(_config(tmp_path, sample_paths, optim={"steps": 2}, **validated), out_dir=a, progress=False)
    train(_config(tmp_path, sample_paths, optim={"steps": 2}, **validated), out_dir=b, progress=False)
    resumed = _config(tmp_path, sample_paths, optim={"steps": 4, "weight_decay": 0.5}, **validated)
    result = train(resumed, out_dir=a, resume=b / "last.safetensors", force=True, progress=False)
    assert [row.split(",")[0] for row in (a / "log.csv").read_text().splitlines()[1:]][0] == "3"
    assert result.best == a / "best.safetensors" and read_checkpoint(a / "best.safetensors").step == 4
    groups = read_checkpoint(a / "last.safetensors").metadata["optimizer_param_groups"]
    assert all(g["weight_decay"] == 0.5 for g in groups)


FREESURFER_VALUES = {1: 2, 2: 41, 3: 17, 4: 53, 5: 1024, 6: 2035}  # sample label → an aseg/aparc-like value


def _relabelled(tmp_path, sample_paths) -> dict:
    """The sample pair with its labels 1..6 stored as FreeSurfer-style values up to 2035."""
    import nibabel as nib
    import numpy as np

    paths = dict(sample_paths)
    for key in ("moving_labels", "fixed_labels"):
        img = nib.load(str(sample_paths[key]))
        data = np.asarray(img.dataobj).astype(np.int16)
        out = np.zeros_like(data)
        for old, new in FREESURFER_VALUES.items():
            out[data == old] = new
        paths[key] = tmp_path / f"fs_{key}.nii.gz"
        nib.save(nib.Nifti1Image(out, img.affine, img.header), str(paths[key]))
    return paths


def test_freesurfer_style_label_values_become_few_dice_channels(tmp_path, sample_paths):
    """Labels valued 2..2035 made 2036 one-hot channels (≈ 5 GB at the recipe's grid); now the
    values found are the channels, the same pair gives the same indices up to their order, and
    training gives the same losses as with labels 1..6."""
    from regkit.io.manifests import read_manifest
    from regkit.train.data import PairDataset
    from regkit.train.loop import train

    from cascade_helpers import write_manifest

    fs_paths = _relabelled(tmp_path, sample_paths)
    config = _config(tmp_path, sample_paths)
    plain = PairDataset(read_manifest(write_manifest(tmp_path / "plain.csv", sample_paths)), config.model)
    fs = PairDataset(read_manifest(write_manifest(tmp_path / "fs.csv", fs_paths)), config.model)
    assert plain.num_labels == 7 and fs.num_labels == 7
    assert fs.label_values == [0, 2, 17, 41, 53, 1024, 2035]
    order = torch.tensor([0] + [fs.label_values.index(FREESURFER_VALUES[v]) for v in range(1, 7)])
    a, b = plain.sample(0), fs.sample(0)
    assert torch.equal(order[a["fixed_labels"]], b["fixed_labels"]) and torch.equal(order[a["moving_labels"]], b["moving_labels"])
    assert int(b["fixed_labels"].max()) == 6

    losses = {}
    for name, paths in (("plain", sample_paths), ("fs", fs_paths)):
        manifest = write_manifest(tmp_path / f"{name}.csv", paths)
        cfg = _config(tmp_path, sample_paths, optim={"steps": 2}, data={"manifest": str(manifest)},
                      loss={"similarity": "lncc", "reg_weight": 0.1, "dice_weight": 1.0})
        losses[name] = train(cfg, out_dir=tmp_path / f"run_{name}", progress=False).losses
    assert losses["fs"] == pytest.approx(losses["plain"], rel=1e-4), losses


def test_label_values_above_num_labels_are_refused_and_label_values_pick_channels(tmp_path, sample_paths):
    """An explicit data.num_labels below the files' values silently turned them into background."""
    from typer.testing import CliRunner

    from regkit.cli.main import app
    from regkit.io.manifests import read_manifest
    from regkit.train.data import PairDataset

    from cascade_helpers import write_manifest

    raw = tiny_config(tmp_path, sample_paths)
    raw["data"]["num_labels"] = 4
    raw["loss"]["dice_weight"] = 1.0
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    r = CliRunner().invoke(app, ["train", "--config", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "run"), "--device", "cpu",
                                 "--no-progress"])
    assert r.exit_code == 2, r.output
    assert "holds label value 6, but data.num_labels is 4" in r.output and "labels.nii.gz" in r.output, r.output
    assert not (tmp_path / "run" / "last.safetensors").exists()
    fs_paths = _relabelled(tmp_path, sample_paths)
    chosen = PairDataset(read_manifest(write_manifest(tmp_path / "fs.csv", fs_paths)), _config(tmp_path, sample_paths).model,
                         label_values=[41, 2])
    assert chosen.num_labels == 3 and chosen.label_values == [0, 2, 41]
    fixed = chosen.sample(0)["fixed_labels"]
    assert set(torch.unique(fixed).tolist()) == {0, 1, 2}  # 17, 53, 1024 and 2035 count as background
