"""regkit.register on the sample pair and on known transforms (small grids, few iterations)."""
from __future__ import annotations

import pytest
import torch

from known_transforms import known_affine, smooth_velocity
from regkit import metrics
from regkit.errors import InputError
from regkit.image import Image
from regkit.io.images import load_image, load_label
from regkit.optimize import RegistrationConfig, load_config, preset_names, register
from regkit.pyramid import gaussian_smooth, resized_grid
from regkit.resample import resample
from regkit.transforms import AffineTransform, Compose, VelocityField

AFFINE_ONLY = {"deformable": {"enabled": False},
               "affine": {"levels": [{"spacing_mm": 5, "iterations": 40}, {"spacing_mm": 2.5, "iterations": 30}]}}


@pytest.fixture(scope="module")
def pair(sample_paths):
    return {k: (load_label(p) if "labels" in k else load_image(p)) for k, p in sample_paths.items()}


def mean_dice(fixed_labels: Image, warped_labels: Image) -> float:
    return metrics.summarize(metrics.dice(fixed_labels, warped_labels))


# ----------------------------------------------------------------------------- config
def test_presets_load_and_validate():
    names = preset_names()
    for name in ("fast", "default", "accurate", "ct", "mri"):
        assert name in names
        assert isinstance(load_config(name), RegistrationConfig)
    assert load_config("default", metric="mi").metric == "mi"


@pytest.mark.parametrize("bad, key", [
    ({"metirc": "lncc"}, "metirc"),
    ({"deformable": {"levels": [{"spacing_mm": 2, "control_spacing_mm": 4, "iters": 5}]}}, "deformable.levels.0.iters"),
    ({"metric": "ncc"}, "metric"),
    ({"affine": {"lr_matrix": -1}}, "affine.lr_matrix"),
])
def test_config_errors_name_the_key(bad, key):
    with pytest.raises(InputError, match=f"'{key}'"):
        load_config(bad)


def test_config_yaml_file_and_unknown_preset(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text("metric: mse\nlncc_window: 7\n")
    cfg = load_config(str(f))
    assert (cfg.metric, cfg.lncc_window) == ("mse", 7)
    f.write_text("deformable: {modle: svf}\n")
    with pytest.raises(InputError, match="deformable.modle"):
        load_config(str(f))
    with pytest.raises(InputError, match="unknown preset 'fastest'"):
        load_config("fastest")


# ----------------------------------------------------------------------------- pyramid
def test_a_folder_named_like_a_preset_does_not_hide_it(tmp_path, monkeypatch):
    """--config ct run in a folder holding a 'ct/' directory said 'ct: no such config file'."""
    (tmp_path / "ct").mkdir()
    monkeypatch.chdir(tmp_path)
    assert load_config("ct") != load_config("default")  # the preset, read (it raised InputError)


def test_gaussian_smooth_preserves_mean_and_matches_variance():
    x = torch.zeros(1, 1, 41, 41, 41)
    x[0, 0, 20, 20, 20] = 1.0
    y = gaussian_smooth(x, [2.0, 2.0, 2.0])
    assert float(y.sum()) == pytest.approx(1.0, abs=1e-4)
    r = torch.arange(41.0) - 20
    profile = y[0, 0, :, 20, 20] / y[0, 0, :, 20, 20].sum()
    assert float((profile * r * r).sum()) == pytest.approx(4.0, rel=0.02)  # variance = sigma²


def test_gaussian_smooth_equals_a_replicate_padded_convolution():
    """The shifted-sum smoothing gives conv3d's numbers, borders (replicate) and anisotropic sigmas included."""
    import torch.nn.functional as F
    from regkit.pyramid import gaussian_kernel1d

    x = torch.rand(2, 1, 17, 12, 9, generator=torch.Generator().manual_seed(0))
    sigmas = [1.3, 0.1, 2.2]  # the middle axis is below 0.2 voxel: left alone
    y = gaussian_smooth(x, sigmas)
    ref = x.reshape(2, 1, 17, 12, 9)
    for axis, sigma in enumerate(sigmas):
        if sigma < 0.2:
            continue
        k = gaussian_kernel1d(sigma)
        r = k.numel() // 2
        size, pad = [1, 1, 1], [0] * 6
        size[axis] = k.numel()
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = r
        ref = F.conv3d(F.pad(ref, pad, mode="replicate"), k.reshape(1, 1, *size))
    assert torch.allclose(y, ref, atol=1e-6)
    assert not torch.allclose(y, x, atol=1e-3)


def test_resized_grid_keeps_centre_and_direction(pair):
    fixed = pair["moving"]  # oblique, anisotropic grid
    g = resized_grid(fixed.affine, fixed.shape, 4.0)
    assert torch.allclose(g.spacing, torch.full((3,), 4.0, dtype=torch.float64))
    centre = g.affine[:3, :3] @ ((torch.tensor(g.shape, dtype=torch.float64) - 1) / 2) + g.affine[:3, 3]
    assert torch.allclose(centre, fixed.center(), atol=1e-6)
    d_old = fixed.affine[:3, :3] / torch.tensor(fixed.spacing, dtype=torch.float64)
    assert torch.allclose(g.affine[:3, :3] / 4.0, d_old, atol=1e-6)


# ----------------------------------------------------------------------------- affine recovery
def test_known_affine_recovered_to_half_a_millimetre(pair):
    fixed = pair["fixed"]
    truth = known_affine(fixed)
    # the "moving" image lives on another (coarser, rotated) grid: moving(T(x)) = fixed(x)
    grid = resized_grid(pair["moving"].affine, pair["moving"].shape, 2.0)
    moving = resample(fixed, truth.inverse(), Image(torch.zeros(1, *grid.shape), grid.affine))
    result = register(moving, fixed, config=AFFINE_ONLY, seed=0)
    brain = pair["fixed_labels"].data[0] > 0
    x = fixed.world_grid(dtype=torch.float64)[brain]
    with torch.no_grad():
        err = (result.transform.double()(x) - truth.double()(x)).norm(dim=-1)
    assert float(err.mean()) < 0.5, float(err.mean())
    assert float(err.max()) < 1.5, float(err.max())


# ----------------------------------------------------------------------------- deformable
SMALL = {"affine": {"levels": [{"spacing_mm": 6, "iterations": 30}]},
         "deformable": {"levels": [{"spacing_mm": 5, "control_spacing_mm": 10, "iterations": 25},
                                   {"spacing_mm": 3, "control_spacing_mm": 6, "iterations": 12}]}}


def test_sample_pair_dice_rises_over_affine_without_folding(pair):
    result = register(pair["moving"], pair["fixed"], config=SMALL, seed=0)
    assert isinstance(result.transform, Compose) and isinstance(result.transform.transforms[-1], AffineTransform)
    assert isinstance(result.transform.transforms[0], VelocityField)
    affine_only = mean_dice(pair["fixed_labels"], resample(pair["moving_labels"], result.affine, pair["fixed"]))
    full = mean_dice(pair["fixed_labels"], result.apply(pair["moving_labels"]))
    assert full > affine_only + 0.02, (affine_only, full)
    fixed = pair["fixed"]
    with torch.no_grad():
        u = result.transform.displacement_on(fixed.affine, fixed.shape)[None]
    det = metrics.jacobian_determinant(u, fixed.affine)
    assert float((det <= 0).float().mean()) < 1e-4
    assert result.warped.same_grid(fixed)
    assert [lv["stage"] for lv in result.log["levels"]] == ["affine", "deformable", "deformable"]


def test_known_warp_recovered(pair):
    """moving(truth(x)) = fixed(x) for a known SVF: the registration finds most of it."""
    fixed = pair["fixed"]
    truth = smooth_velocity(fixed, amplitude_mm=4.0)
    moving = resample(fixed, truth.inverse(), fixed)
    cfg = {"affine": {"enabled": False, "init": "none"},
           "deformable": {"levels": [{"spacing_mm": 2.5, "control_spacing_mm": 5, "iterations": 25}],
                          "regularization_weight": 0.1}}
    result = register(moving, fixed, config=cfg, seed=0)
    brain = pair["fixed_labels"].data[0] > 0
    x = fixed.world_grid()[brain]
    with torch.no_grad():
        before = (truth(x) - x).norm(dim=-1).mean()
        after = (result.transform(x) - truth(x)).norm(dim=-1).mean()
    assert float(after) < 0.45 * float(before), (float(before), float(after))


def test_initial_transform_is_refined_in_front(pair):
    """A non-affine start (a learned cascade's prediction) stays the outer part of the map."""
    fixed = pair["fixed"]
    start = Compose(AffineTransform.from_homogeneous(torch.eye(4)))  # not an AffineTransform itself
    cfg = {"deformable": {"levels": [{"spacing_mm": 5, "control_spacing_mm": 10, "iterations": 3}]}}
    result = register(pair["moving"], fixed, config=cfg, initial_transform=start)
    # the start's trailing affine is reported as the affine part (written as affine.mat)
    assert result.affine is start.transforms[0]
    assert result.transform.transforms[-1] is start.transforms[0]
    assert isinstance(result.transform.transforms[0], VelocityField)
    assert result.log["initial_transform"] == "Compose"


def test_no_overlap_is_a_registration_error(pair):
    from regkit.errors import RegistrationError

    far = pair["moving"].affine.clone()
    far[:3, 3] += 2000.0
    moving = Image(pair["moving"].data, far)
    with pytest.raises(RegistrationError):
        register(moving, pair["fixed"], config={"affine": {"init": "none", "levels": [{"spacing_mm": 6, "iterations": 1}]}})


def test_masks_restrict_the_similarity(pair):
    fixed = pair["fixed"]
    mask = Image((pair["fixed_labels"].data > 0).int(), fixed.affine, is_label=True)
    cfg = {"affine": {"levels": [{"spacing_mm": 6, "iterations": 5}]},
           "deformable": {"levels": [{"spacing_mm": 5, "control_spacing_mm": 10, "iterations": 5}]}}
    a = register(pair["moving"], fixed, config=cfg, fixed_mask=mask)
    b = register(pair["moving"], fixed, config=cfg)
    assert a.log["levels"][0]["loss"][0] != pytest.approx(b.log["levels"][0]["loss"][0], abs=1e-6)


def test_non_finite_settings_are_refused_and_a_diverged_result_is_not_returned(pair):
    """`.inf` in a YAML used to pass; 1e39 overflows float32: both wrote all-NaN fields, exit 0."""
    from regkit.errors import RegistrationError

    with pytest.raises(InputError):
        load_config({"deformable": {"regularization_weight": float("inf")}})
    cfg = {"affine": {"levels": [{"spacing_mm": 6, "iterations": 2}]}, "deformable": {
        "regularization_weight": 1e39, "levels": [{"spacing_mm": 6, "control_spacing_mm": 12, "iterations": 2}]}}
    with pytest.raises(RegistrationError, match="diverged.*deformable level 0"):
        register(pair["moving"], pair["fixed"], config=cfg)
    for lr in (1e6, 50.0):  # finite but runaway: exit 0 with 1e5 mm displacements / Dice 0.59 before
        cfg = {"affine": {"levels": [{"spacing_mm": 6, "iterations": 5}]}, "deformable": {
            "lr_mm": lr, "levels": [{"spacing_mm": 5, "control_spacing_mm": 10, "iterations": 3}]}}
        with pytest.raises(RegistrationError, match=r"diverged \(deformable level 0 @5mm ended at loss .*above its start"):
            register(pair["moving"], pair["fixed"], config=cfg)


def test_truncated_moving_field_of_view_does_not_pull_the_field(pair):
    """A moving image whose field of view stops inside the fixed one (a truncated CT): its zero
    padding was compared with anatomy, and the field within ~10 mm of the moving edge was off
    by 3.4 mm on average (0.45 mm elsewhere) for a pure translation. Now points outside the
    moving image (and a 3-voxel rim) are left out of the similarity: < 1.6 mm there."""
    from regkit import space

    fixed = pair["fixed"]
    shift = torch.tensor([4.0, -3.0, 6.0], dtype=torch.float64)
    nz = int(fixed.shape[2] * 0.55)  # the moving image covers only the lower 55 % of z
    grid_affine = fixed.affine.clone()
    grid_affine[:3, 3] += shift
    with torch.no_grad():  # moving(x + shift) = fixed(x)
        moving = resample(fixed, AffineTransform(torch.eye(3), -shift.float()),
                          Image(torch.zeros(1, fixed.shape[0], fixed.shape[1], nz), grid_affine))
    cfg = {"affine": {"init": "none", "levels": [{"spacing_mm": 5, "iterations": 30}]},
           "deformable": {"levels": [{"spacing_mm": 5, "control_spacing_mm": 10, "iterations": 20}]}}
    result = register(moving, fixed, config=cfg, seed=0)
    x = space.world_grid(fixed.affine, fixed.shape, dtype=torch.float32)
    with torch.no_grad():
        error = (result.transform(x) - (x + shift.float())).norm(dim=-1)
    k = torch.arange(fixed.shape[2])
    brain = fixed.data[0] > 0.2 * fixed.data.max()
    near_edge = brain & ((k >= nz - 5) & (k < nz - 1))[None, None, :]  # 2.5-12.5 mm inside the moving edge
    far = brain & (k < nz - 10)[None, None, :]
    assert near_edge.sum() > 1000 and far.sum() > 1000
    assert float(error[far].mean()) < 0.8
    assert float(error[near_edge].mean()) < 1.6, float(error[near_edge].mean())


def test_moving_mask_is_placed_in_world_space_whatever_its_grid(pair):
    """A moving mask stored on an x-flipped copy of the moving grid covers the same world voxels:
    the level must see the same mask (it used to lay the voxel array over the moving grid, mirrored)."""
    from regkit.optimize.levels import foreground_box, make_level

    moving, fixed = pair["moving"], pair["fixed"]
    half = torch.zeros(moving.shape, dtype=torch.int32)
    half[: moving.shape[0] // 3] = 1  # one side only: a mirror image would differ
    mask = Image(half, moving.affine, is_label=True)
    flip = moving.affine.clone()
    flip[:3, 0] = -flip[:3, 0]
    flip[:3, 3] = moving.affine[:3, 3] + moving.affine[:3, 0] * (moving.shape[0] - 1)
    flipped = Image(half.flip(0), flip, is_label=True)
    box = foreground_box(fixed, 12.0)
    on_grid = make_level(fixed, moving, box, 4.0, moving_mask=mask).moving_mask
    elsewhere = make_level(fixed, moving, box, 4.0, moving_mask=flipped).moving_mask
    assert 0.2 < on_grid.mean() < 0.5
    assert (on_grid != elsewhere).float().mean() < 0.02  # border voxels may round differently


def test_adam_matches_torch_optim():
    from regkit.optimize.loop import Adam

    p1 = torch.randn(7, requires_grad=True)
    p2 = p1.detach().clone().requires_grad_(True)
    ours, theirs = Adam([{"params": [p1], "lr": 0.05}]), torch.optim.Adam([p2], lr=0.05)
    for _ in range(6):
        for p, opt in ((p1, ours), (p2, theirs)):
            opt.zero_grad()
            (p ** 3 - p).sum().backward()
            opt.step()
    assert torch.allclose(p1, p2, atol=1e-6)
    assert not torch.allclose(p1, torch.zeros(7))


def test_dense_outer_is_evaluated_once_and_maps_points_like_the_chain(pair):
    """Refining a cascade's prediction: the per-level first-order map of a dense outer transform
    at x + u(x) must give the moving-grid coordinates of outer(x + u(x)) computed through the
    chain (exactly at u = 0; else to first order in u, a 1.5 mm displacement on a
    60 mm-wavelength warp)."""
    from known_transforms import smooth_velocity
    from regkit.optimize.deformable import _points_through_dense_outer
    from regkit.optimize.levels import foreground_box, make_level
    from regkit.transforms import AffineTransform, Compose

    fixed, moving = pair["fixed"], pair["moving"]
    level = make_level(fixed, moving, foreground_box(fixed, 10.0), 4.0)
    outer = Compose(smooth_velocity(fixed, 4.0).exp(), known_affine(fixed))
    mapped = _points_through_dense_outer(outer, level, upsample=lambda u: u)  # u given at the level's voxels
    to_norm = level.world_to_moving_normalized().float()
    half_voxels = torch.tensor(level.moving.shape[2:][::-1], dtype=torch.float32) / 2  # grid_sample xyz order
    u = 1.5 * torch.sin(level.world.movedim(-1, 1) / 7.0)          # a smooth displacement, mm
    for disp, max_error, mean_error in ((torch.zeros_like(u), 1e-3, 1e-4), (u, 0.15, 0.04)):
        exact = outer(level.world + disp.movedim(1, -1)) @ to_norm[:3, :3].T + to_norm[:3, 3]
        inside = exact.abs().amax(-1) < 0.95
        error_voxels = ((mapped(disp) - exact).abs() * half_voxels).amax(-1)[inside]
        assert float(error_voxels.max()) < max_error and float(error_voxels.mean()) < mean_error, (float(error_voxels.max()), float(error_voxels.mean()))


def test_velocity_chain_start_warm_starts_the_optimisers_own_svf(pair):
    """A start made of SVFs then an affine (a learned cascade's SVF prediction) becomes the
    optimiser's own model: its affine held as the outer part and the summed velocities (on the
    first field's grid) as the starting SVF, which the refinement brings closer to the truth."""
    from known_transforms import coarse_grid
    from regkit import space
    from regkit.optimize.register import velocity_start
    from regkit.transforms import DisplacementField

    fixed = pair["fixed"]
    v = smooth_velocity(fixed, amplitude_mm=4.0)
    truth = Compose(v, known_affine(fixed))
    moving = resample(fixed, truth.inverse(), fixed)
    coarse_affine, coarse_shape = coarse_grid(fixed, 4)
    part = DisplacementField(v.velocity, v.affine).displacement_on(coarse_affine, coarse_shape)
    start = Compose(VelocityField(0.3 * v.velocity, v.affine), VelocityField(0.3 * part, coarse_affine), known_affine(fixed))
    (velocity, grid), affine = velocity_start(start)
    assert grid is start.transforms[0].affine and affine is start.transforms[-1]
    from regkit.transforms import sample_field
    coarse_on_fine = sample_field(part[None], coarse_affine, space.world_grid(v.affine, v.shape)).movedim(-1, 0)[None]
    torch.testing.assert_close(velocity, 0.3 * v.velocity + 0.3 * coarse_on_fine, atol=1e-4, rtol=1e-4)
    assert velocity_start(Compose(v.exp(), known_affine(fixed))) is None            # a displacement: no SVF to start from
    assert velocity_start(Compose(v, v)) is None                                     # no affine last

    cfg = {"deformable": {"levels": [{"spacing_mm": 2.5, "control_spacing_mm": 5, "iterations": 25}], "regularization_weight": 0.1}}
    result = register(moving, fixed, config=cfg, initial_transform=start, seed=0)
    assert result.log["initial_transform"] == "Compose (velocity warm start)"
    assert isinstance(result.transform.transforms[0], VelocityField) and len(result.transform) == 2
    torch.testing.assert_close(result.affine.homogeneous(), known_affine(fixed).homogeneous().float())
    # the same iterations from zero velocity (same affine): the warm start must end closer
    cold = Compose(VelocityField(0 * v.velocity, v.affine), known_affine(fixed))
    cold_result = register(moving, fixed, config=cfg, initial_transform=cold, seed=0)
    brain = pair["fixed_labels"].data[0] > 0
    x = fixed.world_grid()[brain]
    with torch.no_grad():
        error = {name: float((t(x) - truth(x)).norm(dim=-1).mean()) for name, t in
                 (("start", start), ("warm", result.transform), ("cold", cold_result.transform))}
    assert error["start"] > 1.0 and error["warm"] < 0.75 * error["start"] and error["warm"] < 0.9 * error["cold"], error


def test_adam_warmup_ramps_the_first_steps():
    """Adam's first step moves every parameter by about lr whatever its gradient; with a warm-up
    of 3 the first three steps are lr/3, 2lr/3, lr (times the cosine decay)."""
    from regkit.optimize.loop import run_adam

    for warmup, first_fraction in ((0, 1.0), (3, 1 / 3)):
        p = torch.zeros(5, requires_grad=True)
        target = torch.tensor([1e-3, 2.0, -3.0, 0.5, -1e-2])
        steps = []

        def loss_fn():
            steps.append(p.detach().clone())
            return ((p - target) ** 2).sum()

        run_adam([{"params": [p], "lr": 0.1}], loss_fn, iterations=100, window=50, warmup=warmup)
        first = (steps[1] - steps[0]).abs()
        torch.testing.assert_close(first, torch.full((5,), 0.1 * first_fraction), atol=1e-5, rtol=1e-4)
        assert float((p.detach() - target).abs().max()) < 0.05       # and it still converges


def test_a_level_started_from_the_coarser_field_does_not_lose_it_on_its_first_step(pair):
    """A 2.5 mm level (sample pair) that starts from the 4 mm level's converged field: its first
    step must lower the loss (without the warm-up, Adam's first sign-like step of lr_mm on every
    control point raised it, 0.4528 -> 0.4629). The schedule of the default preset before the
    1 mm level (4 mm / 8 mm control grid, then 4 mm control grid, diffusion 0.3), where it showed."""
    cfg = load_config("default").model_dump()
    cfg["affine"]["rotation_search_deg"] = []
    cfg["deformable"].update(squaring_steps=4, regularization_weight=0.3, levels=[
        {"spacing_mm": 4, "control_spacing_mm": 8, "iterations": 30}, {"spacing_mm": 2, "control_spacing_mm": 4, "iterations": 10}])
    result = register(pair["moving"], pair["fixed"], config=cfg)
    second = [lv for lv in result.log["levels"] if lv["stage"] == "deformable"][1]
    assert second["loss"][1] < second["loss"][0], second["loss"][:3]
    cfg["deformable"]["warmup_iterations"] = 0
    plain = register(pair["moving"], pair["fixed"], config=cfg)
    plain_second = [lv for lv in plain.log["levels"] if lv["stage"] == "deformable"][1]
    assert plain_second["loss"][1] > plain_second["loss"][0]                   # what the warm-up is for
    assert second["loss"][-1] <= plain_second["loss"][-1] + 1e-3


def test_small_anatomy_is_registered_like_the_same_anatomy_at_human_size(pair):
    """The sample pair with every voxel size divided by 10 (a 16 mm brain, like a mouse's): the
    preset's mm lengths scale with the anatomy, so the result matches the human-size one (before:
    3-5 voxel grids and mm-sized steps, Dice 0.45 against 0.92)."""
    def shrunk(image: Image) -> Image:
        affine = image.affine.clone()
        affine[:3, :] = affine[:3, :] * 0.1
        return Image(image.data, affine, image.is_label)

    human = register(pair["moving"], pair["fixed"], config="fast")
    small = register(shrunk(pair["moving"]), shrunk(pair["fixed"]), config="fast")
    assert "length_scale" not in human.log
    assert 0.08 < small.log["length_scale"] < 0.12, small.log["length_scale"]
    d_human = mean_dice(pair["fixed_labels"], resample(pair["moving_labels"], human.transform, pair["fixed"]))
    fixed_small, labels_small = shrunk(pair["fixed"]), shrunk(pair["moving_labels"])
    d_small = mean_dice(shrunk(pair["fixed_labels"]), resample(labels_small, small.transform, fixed_small))
    assert d_small > d_human - 0.02, (d_small, d_human)


def test_force_removes_an_earlier_runs_outputs_that_this_run_does_not_write(pair, tmp_path):
    """--force into a folder of an earlier run with labels and a deformable stage: its
    warped_labels.nii.gz and warp.nii.gz stayed next to the new result (describing another
    transform). Only what regkit recorded writing goes: files the user put there (or replaced
    since) with the same names are kept byte for byte (issue 21: --force deleted a user's qc.png)."""
    import torch

    from regkit.io.atomic import RECORD
    from regkit.io.results import WARP, write_result
    from regkit.transforms import DisplacementField

    earlier = register(pair["moving"], pair["fixed"], config=AFFINE_ONLY)
    earlier.field = None  # also write a deformable part, as a deformable run does
    ref = earlier.reference
    earlier.transform = Compose(DisplacementField(torch.zeros((3, *ref.shape)), ref.affine), earlier.affine)
    first = {p.name for p in write_result(earlier, tmp_path, moving_labels=pair["moving_labels"])}
    assert {WARP, "warped_labels.nii.gz"} <= first
    (tmp_path / "qc.png").write_bytes(b"the user's own picture")        # never written by regkit
    (tmp_path / "notes.txt").write_bytes(b"notes")
    result = register(pair["moving"], pair["fixed"], config=AFFINE_ONLY)
    written = {p.name for p in write_result(result, tmp_path, force=True)}
    assert "warped.nii.gz" in written and WARP not in written          # affine only: no warp
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(written | {"notes.txt", "qc.png", RECORD})
    assert (tmp_path / "qc.png").read_bytes() == b"the user's own picture"
    # a recorded output the user replaced since is theirs now: kept
    labelled = write_result(result, tmp_path, moving_labels=pair["moving_labels"], force=True)
    (tmp_path / "warped_labels.nii.gz").write_bytes(b"edited by hand")
    write_result(result, tmp_path, force=True)
    assert (tmp_path / "warped_labels.nii.gz").read_bytes() == b"edited by hand" and len(labelled) == len(written) + 1


def test_rotation_search_finds_a_start_the_centre_of_mass_start_misses(pair):
    """Heads pitched 35 deg apart: from the centre-of-mass start the affine stage settles in a
    wrong optimum (measured: 19 mm mean error); the rotation search starts it near the right one."""
    import math

    from regkit.intensity import center_of_mass

    fixed = pair["fixed"]
    centre = center_of_mass(fixed.data[None].float(), fixed.affine).float()
    a = math.radians(35.0)
    pitch = torch.tensor([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    truth = AffineTransform(pitch, torch.tensor([2.0, -3.0, 1.0]), centre)
    grid = resized_grid(fixed.affine, fixed.shape, 2.5)
    moving = resample(fixed, truth.inverse(), Image(torch.zeros(1, *grid.shape), grid.affine))
    x = fixed.world_grid(dtype=torch.float64)[pair["fixed_labels"].data[0] > 0]
    errors = {}
    for search in ([], [30]):
        config = {"deformable": {"enabled": False},
                  "affine": {"rotation_search_deg": search,
                             "levels": [{"spacing_mm": 7, "iterations": 40}, {"spacing_mm": 3.5, "iterations": 30}]}}
        result = register(moving, fixed, config=config, seed=0)
        with torch.no_grad():
            errors[len(search)] = float((result.transform.double()(x) - truth.double()(x)).norm(dim=-1).mean())
    assert errors[0] > 5.0, errors  # the plain start fails: the search is what finds it
    assert errors[1] < 1.0, errors
    assert result.log["rotation_search"]["chosen_axis"] == 0 and result.log["rotation_search"]["candidates"] == 7


def test_control_grid_upsampling_by_matrix_products_equals_trilinear_interpolation(pair):
    """The optimiser upsamples its control-grid field to a level's voxels by three matrix
    products: the values (and the gradient) must be ``F.interpolate``'s trilinear ones with
    aligned corners, which is what the saved VelocityField evaluates."""
    import torch.nn.functional as F

    from regkit.optimize.deformable import _upsampler, control_grid
    from regkit.optimize.levels import foreground_box, make_level

    level = make_level(pair["fixed"], pair["moving"], foreground_box(pair["fixed"], 10.0), 2.0)
    grid = control_grid(level, 5.0)
    u = torch.randn(1, 3, *grid.shape, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    fast = _upsampler(grid, level)(u)
    slow = F.interpolate(u, size=level.grid.shape, mode="trilinear", align_corners=True)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)
    w = torch.randn(slow.shape)
    torch.testing.assert_close(torch.autograd.grad((fast * w).sum(), u)[0], torch.autograd.grad((slow * w).sum(), u)[0],
                               atol=1e-3, rtol=1e-4)
