"""The cascade model: identity at start, world-coordinate bookkeeping, checkpoints, no pickle."""
from __future__ import annotations

import math
import pickle
from pathlib import Path

import pytest
import torch

from cascade_helpers import TINY_MODEL, keypoint_cascade


@pytest.fixture(scope="module")
def pair(sample_paths):
    from regkit.io.images import load_image

    return load_image(sample_paths["moving"]), load_image(sample_paths["fixed"])


def _model(seed: int = 0, perturb: bool = False):
    from regkit.nn.cascade import CascadeNet
    from regkit.nn.config import ModelConfig

    torch.manual_seed(seed)
    model = CascadeNet(ModelConfig.model_validate(TINY_MODEL))
    if perturb:  # non-zero heads so every stage predicts a real deformation
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "head" in name:
                    p.normal_(0, 0.05 if "affine" in name else 0.3)
    return model.eval()


def test_untrained_cascade_is_the_identity():
    from regkit import space

    model = _model()
    moving, fixed = torch.rand(2, 1, 1, 16, 20, 16).unbind(0)
    out = model(moving, fixed)
    grid = space.world_grid(model.grid_affine, (16, 20, 16))
    assert torch.allclose(out["points"][0], grid, atol=1e-4)
    assert torch.allclose(out["warped"], moving, atol=1e-5)
    assert torch.equal(out["affine_matrix"][0], torch.eye(3))


def test_world_transform_maps_the_grid_like_the_network(pair):
    """to_world(x) must equal network points shifted by the fixed image's centre, for a model
    whose affine and both field stages are far from identity."""
    from regkit import space
    from regkit.nn.predict import prepare_pair

    moving, fixed = pair
    model = _model(perturb=True)
    mov, fix, centre, moving_centre = prepare_pair(model, moving, fixed)
    assert (moving_centre - centre).norm() > 1.0  # the sample pair's centres of mass differ: the offset is tested
    with torch.no_grad():
        out = model(mov, fix)
        transform = model.to_world(out, offset_mm=centre, moving_offset_mm=moving_centre)
        world = space.world_grid(model.grid_affine, (16, 20, 16)) + centre.float()
        mapped = transform(world)
    shift = (out["points"][0] - space.world_grid(model.grid_affine, (16, 20, 16))).norm(dim=-1)
    assert shift.max() > 2.0  # the check below is not about an identity map
    assert torch.allclose(mapped, out["points"][0] + moving_centre.float(), atol=1e-3)


def test_affine_output_is_about_the_fixed_centre_in_world_mm(pair):
    """A localisation net that outputs a known matrix M and translation t must give
    y = M (x - c) + c_m + t in world mm, c and c_m the fixed and moving images' centres of mass
    (where the network boxes are placed)."""
    from regkit.intensity import normalize_intensity
    from regkit.nn.predict import predict
    from regkit.intensity import center_of_mass

    moving, fixed = pair
    model = _model()
    angle = math.radians(10)
    m = torch.tensor([[math.cos(angle), -math.sin(angle), 0], [math.sin(angle), math.cos(angle), 0], [0, 0, 1.0]])
    t = torch.tensor([4.0, -6.0, 2.5])
    with torch.no_grad():
        model.affine_net.head.bias[:9] = (m - torch.eye(3)).reshape(-1)
        model.affine_net.head.bias[9:] = t / model.config.affine.translation_scale_mm
    transform = predict(model, moving, fixed)
    c, c_m = (center_of_mass(normalize_intensity(im.float(), model.config.intensity).data[None], im.affine).float()
              for im in (fixed, moving))
    x = torch.tensor([[0.0, 0.0, 0.0], [30.0, -20.0, 10.0], [-50.0, 40.0, -25.0]])
    expected = (x - c) @ m.T + c_m + t
    assert torch.allclose(transform(x), expected, atol=1e-3)


def test_saved_and_loaded_model_predicts_the_same_field(tmp_path, pair):
    from regkit.nn.checkpoint import model_tensors, write_checkpoint
    from regkit.nn.predict import predict

    moving, fixed = pair
    model = _model(perturb=True)
    path = write_checkpoint(tmp_path / "m.safetensors", model_tensors(model), {"model_config": model.config.model_dump(mode="json")})
    before = predict(model, moving, fixed).displacement_on(fixed.affine, fixed.shape)
    after = predict(path, moving, fixed).displacement_on(fixed.affine, fixed.shape)
    assert before.abs().max() > 1.0
    assert torch.equal(before, after)
    other = _model(seed=1, perturb=True)
    assert not torch.allclose(predict(other, moving, fixed).displacement_on(fixed.affine, fixed.shape), before)
    # the prediction is an ordinary regkit transform: resample works on the fixed grid
    from regkit.resample import resample

    warped = resample(moving, predict(path, moving, fixed), fixed)
    assert warped.shape == fixed.shape and warped.data.abs().sum() > 0


class _Payload:
    """Unpickling this would create the marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickled_checkpoint_is_refused_and_nothing_runs(tmp_path):
    from regkit.errors import InputError
    from regkit.nn.checkpoint import load_model, read_checkpoint

    marker = tmp_path / "executed"
    evil = tmp_path / "evil.safetensors"
    evil.write_bytes(pickle.dumps({"model/x": _Payload(marker)}))
    torch_saved = tmp_path / "torch.pt"
    torch.save({"model/head.weight": torch.zeros(2), "payload": _Payload(marker)}, torch_saved)
    for path in (evil, torch_saved):
        with pytest.raises(InputError, match="not a regkit checkpoint"):
            read_checkpoint(path)
        with pytest.raises(InputError):
            load_model(path)
    assert not marker.exists()


@pytest.mark.parametrize("keep", [5, 100, 3000])
def test_truncated_checkpoint_and_transform_files_say_truncated(tmp_path, pair, keep):
    """A copy cut short was reported as 'not a safetensors file; pickled checkpoints are refused'
    (checkpoints) or 'header too large' (transforms)."""
    from regkit.errors import InputError
    from regkit.io.transform_files import read_transform, write_transform
    from regkit.nn.checkpoint import model_tensors, read_checkpoint, write_checkpoint
    from regkit.nn.predict import predict

    model = _model(perturb=True)
    whole = write_checkpoint(tmp_path / "m.safetensors", model_tensors(model), {"model_config": model.config.model_dump(mode="json")})
    transform = write_transform(predict(model, *pair), tmp_path / "t.regkit.safetensors")
    for path, reader in ((whole, read_checkpoint), (transform, read_transform)):
        cut = tmp_path / f"cut_{path.name}"
        cut.write_bytes(path.read_bytes()[:keep])
        expected = "not a regkit checkpoint" if keep < 9 and reader is read_checkpoint else "is truncated: "
        if keep < 9 and reader is read_transform:
            expected = "cannot be read as a regkit transform"
        with pytest.raises(InputError, match=expected):
            reader(cut)
        reader(path)  # the whole file still reads
    assert "is truncated" not in str(pytest.raises(InputError, read_checkpoint, tmp_path / "t.regkit.safetensors").value)


def test_checkpoint_of_another_architecture_is_an_input_error(tmp_path):
    from regkit.errors import InputError
    from regkit.nn.cascade import CascadeNet
    from regkit.nn.checkpoint import load_model_state, model_tensors, read_checkpoint, write_checkpoint
    from regkit.nn.config import ModelConfig

    small = _model()
    path = write_checkpoint(tmp_path / "m.safetensors", model_tensors(small), {"model_config": small.config.model_dump(mode="json")})
    wider = CascadeNet(ModelConfig.model_validate({**TINY_MODEL, "affine": {"scale": 2, "channels": [4, 16]}}))
    with pytest.raises(InputError, match="another model config"):
        load_model_state(wider, read_checkpoint(path), path)
    # a model_config the code cannot build: the message names the key (it printed pydantic's header)
    from regkit.nn.checkpoint import load_model

    broken = small.config.model_dump(mode="json")
    broken["grid_spacing_mm"] = -2.0
    bad = write_checkpoint(tmp_path / "bad.safetensors", model_tensors(small), {"model_config": broken})
    with pytest.raises(InputError, match=r"bad.safetensors: checkpoint's model_config is invalid at grid_spacing_mm: Input should be greater than 0"):
        load_model(bad)


def test_prediction_exports_like_any_transform(tmp_path, pair):
    """The predicted chain (velocity + displacement stages + affine) round-trips through regkit's
    own transform file and the ITK displacement-field export, giving the same mapping."""
    from regkit.io.transform_files import read_transform, write_transform
    from regkit.nn.predict import predict

    moving, fixed = pair
    transform = predict(_model(perturb=True), moving, fixed)
    expected = transform.displacement_on(fixed.affine, fixed.shape)
    native = read_transform(write_transform(transform, tmp_path / "t.regkit.safetensors"))
    assert torch.allclose(native.displacement_on(fixed.affine, fixed.shape), expected, atol=1e-4)
    field = read_transform(write_transform(transform, tmp_path / "t_field.nii.gz", reference=fixed))
    assert torch.allclose(field.displacement_on(fixed.affine, fixed.shape).float(), expected, atol=1e-3)


def test_model_registration_and_refinement_give_optimiser_results(tmp_path, pair):
    from regkit.nn.predict import predict
    from regkit.workflows.predict_and_refine import register_with_model

    moving, fixed = pair
    model = _model(perturb=True)
    plain = register_with_model(moving, fixed, model)
    expected = predict(model, moving, fixed).displacement_on(fixed.affine, fixed.shape)
    assert torch.allclose(plain.transform.displacement_on(fixed.affine, fixed.shape), expected, atol=1e-4)
    assert plain.warped.shape == fixed.shape and plain.transform.transforms[-1] is plain.affine
    assert plain.log["refine"] == 0 and plain.log["predict_seconds"] > 0
    coarse = {"deformable": {"levels": [{"spacing_mm": 5.0, "control_spacing_mm": 10.0, "iterations": 1}]}}
    refined = register_with_model(moving, fixed, model, refine=4, config=coarse)
    loss = refined.log["levels"][-1]["loss"]
    assert len(loss) >= 2 and loss[-1] < loss[0]
    assert refined.transform.transforms[-1] is refined.affine
    assert not torch.allclose(refined.transform.displacement_on(fixed.affine, fixed.shape), expected, atol=1e-2)
    # the logs list the settings that ran: the prediction replaced the affine stage
    from regkit.io.results import log_text

    assert refined.log["config"]["affine"]["enabled"] is False and not any(lv["stage"] == "affine" for lv in refined.log["levels"])
    assert "start: Compose" in log_text(refined.log)


@pytest.mark.parametrize("steps", [1, 2, 3, 7, 20, 40, 41])
def test_refine_n_runs_exactly_n_iterations(steps):
    """--refine 1/2/3 ran 2/3/3 iterations (each level got at least one, shares were rounded
    apart); now the default preset's levels (30 @4 mm + 15 @2 mm + 6 @1 mm) share exactly N by
    largest remainders (levels left with none are dropped)."""
    from regkit.workflows.predict_and_refine import refine_config

    levels = refine_config("default", steps).deformable.levels
    counts = [level.iterations for level in levels]
    assert sum(counts) == steps and all(n > 0 for n in counts)
    expected = {1: [1], 2: [1, 1], 3: [2, 1], 7: [4, 2, 1], 20: [12, 6, 2], 40: [23, 12, 5]}
    if steps in expected:
        assert counts == expected[steps], counts
    assert refine_config("default", 0).deformable.enabled is False


def test_refinement_log_counts_the_iterations_asked_for(pair):
    from regkit.workflows.predict_and_refine import register_with_model

    moving, fixed = pair
    two_levels = {"deformable": {"levels": [{"spacing_mm": 8.0, "control_spacing_mm": 16.0, "iterations": 3},
                                            {"spacing_mm": 5.0, "control_spacing_mm": 10.0, "iterations": 1}]}}
    result = register_with_model(moving, fixed, _model(perturb=True), refine=2, config=two_levels)
    ran = [lv["iterations"] for lv in result.log["levels"] if lv["stage"] != "affine"]
    assert ran == [2], result.log["levels"]  # was [2, 1]: 3 iterations for --refine 2


def test_cohort_writes_each_pair_and_ranks_split_the_pairs(tmp_path, sample_paths):
    from regkit.nn.checkpoint import model_tensors, write_checkpoint
    from regkit.workflows.cohort import rank_share, register_cohort

    from cascade_helpers import write_manifest

    assert rank_share(list(range(5)), rank=1, world_size=2) == [1, 3]
    assert rank_share(list(range(5)), rank=0, world_size=1) == list(range(5))
    model = _model(perturb=True)
    ckpt = write_checkpoint(tmp_path / "m.safetensors", model_tensors(model), {"model_config": model.config.model_dump(mode="json")})
    manifest = write_manifest(tmp_path / "pairs.csv", sample_paths, both_directions=False)
    rows = register_cohort(manifest, tmp_path / "out", ckpt)
    assert [r["pair"] for r in rows] == [1]
    for n in (1,):
        for name in ("warped.nii.gz", "warped_labels.nii.gz", "field.nii.gz", "transform.regkit.safetensors", "0GenericAffine.mat", "1Warp.nii.gz", "1InverseWarp.nii.gz"):
            assert (tmp_path / "out" / f"pair00{n}" / name).is_file(), name
    assert (tmp_path / "out" / "cohort_rank0.csv").read_text().startswith("pair,moving,fixed,seconds")
    # each pair's log names the checkpoint and the grids (it said "in-memory" and "None")
    log = (tmp_path / "out" / "pair001" / "log.txt").read_text()
    assert f"model: {ckpt}" in log and "grid None" not in log and "registration None" not in log, log
    from regkit.errors import OutputExistsError

    with pytest.raises(OutputExistsError):
        register_cohort(manifest, tmp_path / "out", ckpt)


def test_cli_register_with_model_and_cohort(tmp_path, sample_paths):
    from typer.testing import CliRunner

    from cascade_helpers import write_manifest
    from regkit.cli.main import app
    from regkit.io.transform_files import read_transform
    from regkit.nn.checkpoint import model_tensors, write_checkpoint
    from regkit.nn.predict import predict
    from regkit.io.images import load_image

    model = _model(perturb=True)
    ckpt = write_checkpoint(tmp_path / "m.safetensors", model_tensors(model), {"model_config": model.config.model_dump(mode="json")})
    s = {k: str(v) for k, v in sample_paths.items()}
    result = CliRunner().invoke(app, ["register", s["moving"], s["fixed"], "--out", str(tmp_path / "one"), "--model", str(ckpt),
                                      "--device", "cpu", "--no-progress", "--moving-labels", s["moving_labels"]])
    assert result.exit_code == 0, result.output
    fixed = load_image(sample_paths["fixed"])
    written = read_transform(tmp_path / "one" / "transform.regkit.safetensors").displacement_on(fixed.affine, fixed.shape)
    expected = predict(model, load_image(sample_paths["moving"]), fixed).displacement_on(fixed.affine, fixed.shape)
    assert torch.allclose(written.float(), expected, atol=1e-4)
    for name in ("warped.nii.gz", "warped_labels.nii.gz", "field.nii.gz", "0GenericAffine.mat", "1Warp.nii.gz", "1InverseWarp.nii.gz", "inverse_field.nii.gz"):
        assert (tmp_path / "one" / name).is_file(), name
    import json
    logged = json.loads((tmp_path / "one" / "log.json").read_text())
    assert logged["predict_seconds"] > 0  # timed apart from the optimiser
    # ... and counted in the total, as register_cohort's CSV does (it was left out)
    assert logged["total_seconds"] >= logged["predict_seconds"] + logged["register_seconds"] - 1e-3, logged
    assert "prediction" in result.output
    bad = CliRunner().invoke(app, ["register", s["moving"], s["fixed"], "--out", str(tmp_path / "two"), "--refine", "3"])
    assert bad.exit_code == 2 and "--refine needs --model" in bad.output
    manifest = write_manifest(tmp_path / "pairs.csv", sample_paths, both_directions=False)
    cohort = CliRunner().invoke(app, ["register", "--pairs", str(manifest), "--model", str(ckpt), "--out", str(tmp_path / "c"), "--device", "cpu"])
    assert cohort.exit_code == 0, cohort.output
    assert (tmp_path / "c" / "pair001" / "field.nii.gz").is_file()


def test_cohort_goes_on_past_a_bad_pair_and_lists_it(tmp_path, sample_paths):
    """One unreadable image stopped the whole cohort with no CSV; now the other pairs are
    registered, the CSV says which failed and why, and the exit code is not 0."""
    import csv

    from typer.testing import CliRunner

    from regkit.cli.main import app
    from regkit.nn.checkpoint import model_tensors, write_checkpoint

    model = _model(perturb=True)
    ckpt = write_checkpoint(tmp_path / "m.safetensors", model_tensors(model), {"model_config": model.config.model_dump(mode="json")})
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"not an image at all" * 10)
    s = {k: str(v) for k, v in sample_paths.items()}
    (tmp_path / "pairs.csv").write_text("moving,fixed\n" + f"{s['moving']},{s['fixed']}\n" + f"{broken},{s['fixed']}\n"
                                        + f"{s['fixed']},{s['moving']}\n")
    out = tmp_path / "c"
    r = CliRunner().invoke(app, ["register", "--pairs", str(tmp_path / "pairs.csv"), "--model", str(ckpt), "--out", str(out),
                                 "--device", "cpu"])
    assert r.exit_code == 2, r.output
    assert "1 of 3 pairs failed" in r.output and "broken.nii.gz" in r.output and "Traceback" not in r.output, r.output
    assert (out / "pair001" / "field.nii.gz").is_file() and (out / "pair003" / "field.nii.gz").is_file()
    assert not (out / "pair002").exists()
    rows = list(csv.DictReader((out / "cohort_rank0.csv").open()))
    assert [r["status"] for r in rows] == ["ok", "failed", "ok"]
    assert "broken.nii.gz" in rows[1]["error"] and rows[1]["seconds"] == "" and float(rows[0]["seconds"]) > 0


def _keypoint_net(seed: int = 0):
    from regkit.nn.networks import KeypointAffineNet

    torch.manual_seed(seed)
    net = KeypointAffineNet(1, [4, 8, 8], keypoints=16)
    with torch.no_grad():  # trained-like, peaked heat maps instead of the flat start
        net.heatmaps.weight.normal_(0, 3.0)
        net.gain.fill_(1.0)
    return net.eval()


def _blob_volume(shape=(40, 40, 40), seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    v = torch.zeros(1, 1, *shape)
    v[..., 10:30, 10:30, 10:30] = torch.rand(1, 1, 20, 20, 20, generator=g)
    return v


def test_keypoint_affine_is_the_identity_for_identical_images_and_at_the_start():
    from regkit.nn.grid import canonical_grid_affine
    from regkit.nn.networks import KeypointAffineNet

    grid = canonical_grid_affine((40, 40, 40), 4.0)
    fixed = _blob_volume()
    matrix, translation = _keypoint_net()(fixed, fixed, grid)
    assert torch.allclose(matrix[0], torch.eye(3), atol=1e-5) and translation.abs().max() < 1e-4
    untrained = KeypointAffineNet(1, [4, 8, 8], keypoints=16)
    matrix, translation = untrained(torch.roll(fixed, 4, dims=2), fixed, grid)  # flat heat maps (gain 0)
    assert torch.equal(matrix[0], torch.eye(3)) and translation.abs().max() < 1e-5


def test_keypoint_affine_recovers_a_shift_of_the_moving_image_in_mm():
    """Shifting the moving image by whole encoder strides shifts every keypoint by the same mm
    (convolutions are shift-equivariant away from the border), so the least-squares fit is that
    pure translation: moving point = fixed point + shift."""
    from regkit.nn.grid import canonical_grid_affine

    spacing = 4.0
    grid = canonical_grid_affine((40, 40, 40), spacing)
    net = _keypoint_net()
    fixed = _blob_volume()
    moving = torch.roll(fixed, shifts=(4, -2), dims=(2, 4))   # +4 voxels along x, -2 along z (stride 2)
    matrix, translation = net(moving, fixed, grid)
    assert torch.allclose(matrix[0], torch.eye(3), atol=2e-3), matrix
    assert torch.allclose(translation[0], torch.tensor([4 * spacing, 0.0, -2 * spacing]), atol=0.05), translation


def test_cascade_with_keypoint_head_trains_saves_and_loads(tmp_path, pair):
    from regkit.nn.checkpoint import model_tensors, write_checkpoint
    from regkit.nn.predict import predict

    moving, fixed = pair
    model = keypoint_cascade(heatmap_std=3.0).eval()
    path = write_checkpoint(tmp_path / "kp.safetensors", model_tensors(model), {"model_config": model.config.model_dump(mode="json")})
    before = predict(model, moving, fixed).displacement_on(fixed.affine, fixed.shape)
    after = predict(path, moving, fixed).displacement_on(fixed.affine, fixed.shape)
    assert before.abs().max() > 0.5 and torch.equal(before, after)


def test_keypoint_heads_learn_distinct_keypoints():
    """The untrained head is the identity, but its K heat maps must not be copies of one
    another: a few optimisation steps must spread the keypoints (a zero-initialised heat-map
    layer gives every channel the same gradient forever, i.e. one keypoint K times and a
    translation-only affine)."""
    from regkit.nn.grid import canonical_grid_affine
    from regkit.nn.networks import KeypointAffineNet

    grid = canonical_grid_affine((40, 40, 40), 4.0)
    torch.manual_seed(0)
    net = KeypointAffineNet(1, [4, 8, 8], keypoints=8)
    fixed = _blob_volume()
    moving = torch.roll(fixed, 4, dims=2)
    assert net.keypoints(fixed, grid)[0].std(0).max() == 0  # the identity start: all at the centre
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(5):
        _, translation = net(moving, fixed, grid)
        loss = (translation[0] - torch.tensor([16.0, 0.0, 0.0])).square().sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        assert net.keypoints(fixed, grid)[0].std(0).min() > 0.01


def test_checkpoint_from_before_the_heatmap_gain_loads_with_gain_one(tmp_path):
    from regkit.nn.checkpoint import load_model, model_tensors, write_checkpoint

    model = keypoint_cascade()
    tensors = model_tensors(model)
    del tensors["model/affine_net.gain"]
    path = write_checkpoint(tmp_path / "old.safetensors", tensors, {"model_config": model.config.model_dump(mode="json")})
    assert float(load_model(path).affine_net.gain.detach()) == 1.0


def test_prediction_does_not_depend_on_field_of_view_or_position(pair):
    """The network boxes sit on the images' centres of mass: padding the fixed image with
    background, or moving the moving image 50 mm in world space, must change the prediction by
    exactly that (they used to move the anatomy within the box: dev2mm Dice 0.82 -> 0.65 / 0.59)."""
    from regkit.image import Image
    from regkit.nn.predict import predict

    moving, fixed = pair
    model = _model(perturb=True)
    x = fixed.world_grid(dtype=torch.float32).reshape(-1, 3)[::37]
    with torch.no_grad():
        base = predict(model, moving, fixed)(x)
        big = fixed.data.new_zeros(fixed.channels, *(n + 12 for n in fixed.shape))
        big[:, 4:4 + fixed.shape[0], 8:8 + fixed.shape[1], :fixed.shape[2]] = fixed.data  # background on 5 sides
        a = fixed.affine.clone()
        a[:3, 3] -= a[:3, :3] @ torch.tensor([4.0, 8.0, 0.0], dtype=a.dtype)
        padded = predict(model, moving, Image(big, a))(x)
        t = torch.tensor([40.0, -20.0, 30.0], dtype=torch.float64)
        b = moving.affine.clone()
        b[:3, 3] += t
        moved = predict(model, Image(moving.data, b), fixed)(x)
    assert (base - x).norm(dim=-1).max() > 2.0  # not an identity map
    torch.testing.assert_close(padded, base, atol=2e-3, rtol=0)
    torch.testing.assert_close(moved, base + t.float(), atol=2e-3, rtol=0)


def test_a_checkpoint_too_large_for_memory_is_exit_3_before_any_work(tmp_path, sample_paths):
    """A checkpoint whose network grid cannot fit (here [4000]^3: terabytes for its points alone)
    was 'internal error: RuntimeError ... can't allocate memory', exit 1. Now exit 3 naming the
    checkpoint, before the images are read; and a failed torch allocation anywhere is exit 3."""
    from typer.testing import CliRunner

    from regkit.cli.main import app
    from regkit.nn.checkpoint import model_tensors, write_checkpoint
    from regkit.resources import is_out_of_memory

    model = _model()
    config = {**model.config.model_dump(mode="json"), "grid_shape": [4000, 4000, 4000]}
    ckpt = write_checkpoint(tmp_path / "huge.safetensors", model_tensors(model), {"model_config": config})
    r = CliRunner().invoke(app, ["register", str(sample_paths["moving"]), str(sample_paths["fixed"]),
                                 "--out", str(tmp_path / "out"), "--model", str(ckpt)])
    assert r.exit_code == 3 and str(ckpt) in r.output and "[4000, 4000, 4000]" in r.output, r.output
    assert not (tmp_path / "out").exists()
    with pytest.raises(RuntimeError) as info:
        torch.empty(10**15)  # 4 PB: more than any address space, so it fails whatever the overcommit setting
    assert is_out_of_memory(info.value) and not is_out_of_memory(RuntimeError("shape mismatch"))
