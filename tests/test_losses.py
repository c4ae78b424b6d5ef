"""Similarity losses and regularisers against values computed by hand / with numpy."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from regkit.losses import regularization as reg
from regkit.losses import similarity as sim


def smooth_volume(shape=(20, 22, 18), seed=0, channels=1) -> torch.Tensor:
    """Smooth random volume (N=1): noise box-blurred twice, so windows have real structure."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, channels, *[s + 8 for s in shape], generator=g, dtype=torch.float64)
    x = sim.box_sum(sim.box_sum(x, 3), 3)[:, :, :shape[0], :shape[1], :shape[2]]
    return x.contiguous()


def grid_mm(shape, spacing):
    """World-like coordinates x_d = index_d * spacing_d, (3, X, Y, Z) float64."""
    axes = [torch.arange(s, dtype=torch.float64) * h for s, h in zip(shape, spacing)]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"))


# ----------------------------------------------------------------------------- box sum
@pytest.mark.parametrize("window", [(1, 2, 3), (5, 5, 5), (7, 4, 6)])
def test_box_sum_equals_convolution_with_ones_and_its_gradient_is_the_adjoint(window):
    ones = torch.ones(1, 1, *window, dtype=torch.float64)
    x = torch.randn(2, 3, 9, 8, 10, dtype=torch.float64, requires_grad=True)
    out = sim.box_sum(x, window)
    ref = torch.nn.functional.conv3d(x.detach().reshape(6, 1, 9, 8, 10), ones)
    assert torch.allclose(out, ref.reshape(out.shape), atol=1e-12)
    upstream = torch.randn_like(out)
    (out * upstream).sum().backward()
    adjoint = torch.nn.functional.conv_transpose3d(upstream.reshape(6, 1, *out.shape[2:]), ones)
    assert torch.allclose(x.grad, adjoint.reshape(x.shape), atol=1e-12)


# ----------------------------------------------------------------------------- LNCC
def test_lncc_is_zero_for_identical_and_affinely_remapped_images():
    f = smooth_volume()
    assert sim.lncc(f, f).item() == pytest.approx(0.0, abs=1e-4)
    assert sim.lncc(f, -3.0 * f + 100.0).item() == pytest.approx(0.0, abs=1e-4)
    assert sim.lncc(f.float() * 1000.0, f.float() * 2000.0 - 1024.0).item() == pytest.approx(0.0, abs=1e-3)


def test_lncc_of_independent_noise_is_close_to_one():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(2, 1, 1, 30, 30, 30, generator=g, dtype=torch.float64)
    # E[r²] of n independent Gaussian pairs is 1 / (n − 1); n = 125 voxels per 5³ window
    mean_r2 = 1.0 - sim.lncc(a, b, window=5).item()
    assert mean_r2 == pytest.approx(1.0 / 124.0, rel=0.15)


def test_lncc_with_the_whole_image_as_window_is_one_minus_pearson_squared():
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(2, 1, 1, 3, 4, 5, generator=g, dtype=torch.float64)
    r = np.corrcoef(a.numpy().ravel(), b.numpy().ravel())[0, 1]
    assert sim.lncc(a, b, window=(3, 4, 5), eps=0.0).item() == pytest.approx(1.0 - r * r, rel=1e-10)
    # a window larger than the image is clipped to it
    assert sim.lncc(a, b, window=9, eps=0.0).item() == pytest.approx(1.0 - r * r, rel=1e-10)


def test_lncc_windows_per_axis_and_mask_weight_the_window_centres():
    f = torch.tensor([0.0, 1.0, 3.0, 2.0, 5.0, 4.0], dtype=torch.float64)
    w = torch.tensor([1.0, 0.0, 2.0, 2.5, 1.0, 7.0], dtype=torch.float64)
    r2 = np.array([np.corrcoef(f[i:i + 3], w[i:i + 3])[0, 1] ** 2 for i in range(4)])
    shape = (1, 1, 6, 1, 1)
    loss = sim.lncc(f.reshape(shape), w.reshape(shape), window=(3, 1, 1), eps=0.0)
    assert loss.item() == pytest.approx(1.0 - r2.mean(), rel=1e-10)
    weights = torch.tensor([9.0, 1.0, 0.0, 2.0, 1.0, 9.0], dtype=torch.float64)  # centres are voxels 1..4
    masked = sim.lncc(f.reshape(shape), w.reshape(shape), window=(3, 1, 1), mask=weights.reshape(shape), eps=0.0)
    expected = 1.0 - (r2 * np.array([1.0, 0.0, 2.0, 1.0])).sum() / 4.0
    assert masked.item() == pytest.approx(expected, rel=1e-10)


def test_lncc_treats_each_channel_and_batch_item_separately():
    f = smooth_volume(channels=2)
    w = smooth_volume(seed=5, channels=2)
    both = sim.lncc(torch.cat([f, f]), torch.cat([f, w]), window=3)
    expected = (sim.lncc(f, f, window=3) + sim.lncc(f, w, window=3)) / 2
    assert both.item() == pytest.approx(expected.item(), rel=1e-9)


def test_lncc_gradient_flows_and_matches_finite_differences():
    f = smooth_volume((6, 5, 7))
    w = smooth_volume((6, 5, 7), seed=3).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: sim.lncc(f, t, window=3), (w,))
    loss = sim.lncc(f.float(), w.detach().float().requires_grad_())
    assert loss.requires_grad


# ----------------------------------------------------------------------------- MSE
def test_mse_exact_with_and_without_mask():
    f = torch.tensor([0.0, 1.0, 2.0, 3.0]).reshape(1, 1, 4, 1, 1)
    w = torch.ones_like(f)
    assert sim.mse(f, w).item() == pytest.approx(1.5)
    assert sim.mse(f, w, mask=torch.tensor([1.0, 1.0, 0.0, 0.0]).reshape(1, 1, 4, 1, 1)).item() == pytest.approx(0.5)
    assert sim.mse(f, w, mask=torch.tensor([0.0, 0.0, 1.0, 3.0]).reshape(1, 1, 4, 1, 1)).item() == pytest.approx(13.0 / 4.0)


def test_get_similarity_binds_arguments_and_rejects_unknown_names():
    f, w = smooth_volume(), smooth_volume(seed=4)
    assert sim.get_similarity("LNCC", window=3)(f, w).item() == sim.lncc(f, w, window=3).item()
    assert sim.get_similarity("mse")(f, w).item() == sim.mse(f, w).item()
    with pytest.raises(ValueError, match="unknown similarity"):
        sim.get_similarity("ssim")


def test_similarities_reject_mismatched_shapes():
    with pytest.raises(ValueError, match="same shape"):
        sim.lncc(torch.zeros(1, 1, 4, 4, 4), torch.zeros(1, 1, 4, 4, 5))


# ----------------------------------------------------------------------------- regularisers
SHAPE, SPACING = (5, 6, 7), (2.0, 1.0, 0.5)


def test_diffusion_of_a_linear_field_is_the_squared_frobenius_norm():
    a = torch.tensor([[0.1, -0.2, 0.3], [0.0, 0.5, 0.05], [-0.4, 0.2, 0.1]], dtype=torch.float64)
    x = grid_mm(SHAPE, SPACING)
    u = torch.einsum("cd,dxyz->cxyz", a, x)[None] + torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64).reshape(1, 3, 1, 1, 1)
    assert reg.diffusion(u, SPACING).item() == pytest.approx((a**2).sum().item(), rel=1e-12)
    assert reg.diffusion(torch.zeros(2, 3, *SHAPE), torch.tensor(SPACING)).item() == 0.0


def test_bending_energy_of_linear_is_zero_and_of_quadratics_known():
    x = grid_mm(SHAPE, SPACING)
    linear = torch.stack([0.3 * x[0] - x[1], x[2], 0.2 * x[0]])[None]
    assert reg.bending_energy(linear, SPACING).item() == pytest.approx(0.0, abs=1e-12)
    a, b = 0.3, -0.7
    quadratic = torch.stack([a * x[0] ** 2, b * x[0] * x[2], torch.zeros_like(x[0])])[None]
    assert reg.bending_energy(quadratic, SPACING).item() == pytest.approx(4 * a * a + 2 * b * b, rel=1e-10)


def test_regularizer_gradients_flow():
    u = torch.randn(1, 3, 3, 4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: reg.diffusion(t, SPACING), (u,))
    assert torch.autograd.gradcheck(lambda t: reg.bending_energy(t, SPACING), (u,))


def test_get_regularizer_by_name():
    assert reg.get_regularizer("bending") is reg.bending_energy
    assert reg.get_regularizer("Diffusion") is reg.diffusion
    with pytest.raises(ValueError, match="unknown regularizer"):
        reg.get_regularizer("elastic")


# ----------------------------------------------------------------------------- MI
def four_level_image():
    """64 voxels with levels 0..3 in counts 8, 16, 24, 16 (shuffled), and their entropy (nats)."""
    levels = torch.tensor([0.0] * 8 + [1.0] * 16 + [2.0] * 24 + [3.0] * 16, dtype=torch.float64)
    image = levels[torch.randperm(64, generator=torch.Generator().manual_seed(0))].reshape(1, 1, 4, 4, 4)
    p = np.array([8, 16, 24, 16]) / 64.0
    return image, float(-(p * np.log(p)).sum())


@pytest.mark.parametrize("kernel", ["bspline", "linear"])
def test_mi_of_an_image_with_itself_and_monotone_or_inverted_remaps_is_its_entropy(kernel):
    # the levels land >= 4 bins apart, so the Parzen windows of different levels never overlap
    # and the joint histogram is a relabelled diagonal: MI = H(fixed) exactly
    f, entropy = four_level_image()
    for warped in (f, f.sqrt(), 3.0 - f, 10.0 * f + 5.0):
        assert -sim.mutual_information(f, warped, kernel=kernel).item() == pytest.approx(entropy, rel=1e-9)
    # with 7 bins the 4 levels sit exactly on bins 0, 2, 4, 6: a linear window does not spread
    # them, so H(F, W) = H(F) = H(W) and NMI = 2
    nmi = -sim.mutual_information(f, 10.0 * f + 5.0, bins=7, kernel="linear", normalized=True).item()
    assert nmi == pytest.approx(2.0, rel=1e-9)


def test_mi_of_independent_images_is_near_zero_and_mask_selects_voxels():
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(2, 1, 1, 30, 30, 30, generator=g, dtype=torch.float64)
    assert abs(sim.mutual_information(a, b, bins=16).item()) < 0.01
    assert sim.mutual_information(a, a, bins=16).item() < -1.0
    # where the mask is zero the warped image may be anything
    f, entropy = four_level_image()
    w = f.clone()
    w[0, 0, 0] = torch.rand(4, 4, dtype=torch.float64, generator=g) * 3.0  # noise within the range
    mask = torch.ones_like(f)
    mask[0, 0, 0] = 0
    kept = f[0, 0, 1:].flatten().numpy().astype(int)
    p = np.bincount(kept) / kept.size
    h_kept = float(-(p[p > 0] * np.log(p[p > 0])).sum())
    assert -sim.mutual_information(f, w, mask=mask).item() == pytest.approx(h_kept, rel=1e-9)
    assert -sim.mutual_information(f, w).item() < h_kept - 0.05


def test_mi_gradient_reaches_the_warped_image_and_matches_finite_differences():
    f = smooth_volume((5, 4, 6))
    w = smooth_volume((5, 4, 6), seed=7) + 0.5 * f
    # the bin range (min, max of warped) is held constant by design: perturb the other voxels
    inner = ((w > w.min()) & (w < w.max())).flatten().nonzero()[:, 0]

    def loss(values):
        warped = w.flatten().index_put((inner,), values).reshape(w.shape)
        return sim.mutual_information(f, warped, bins=8)

    assert torch.autograd.gradcheck(loss, (w.flatten()[inner].clone().requires_grad_(),))


# ----------------------------------------------------------------------------- MIND
def test_mind_is_zero_for_identical_and_intensity_inverted_images_and_positive_otherwise():
    f = smooth_volume((12, 11, 10), channels=2)
    descriptor = sim.mind_ssc(f)
    assert descriptor.shape == (1, 24, 12, 11, 10)
    assert 0.0 < descriptor.min().item() and descriptor.max().item() == pytest.approx(1.0)
    assert sim.mind(f, f).item() == 0.0
    assert sim.mind(f, 50.0 - 4.0 * f).item() == pytest.approx(0.0, abs=1e-12)
    other = smooth_volume((12, 11, 10), seed=9, channels=2)
    assert sim.mind(f, other).item() > 0.01


def test_mind_ssc_of_a_point_compares_the_right_neighbours():
    # a single bright voxel, no patch smoothing (radius 0), dilation 1: at the voxel before it
    # along X, the pairs that include neighbour +X see the bright voxel, the others do not
    image = torch.zeros(1, 1, 5, 5, 5, dtype=torch.float64)
    image[0, 0, 2, 2, 2] = 1.0
    d = sim.mind_ssc(image, radius=0, dilation=1)[0, :, 1, 2, 2]
    plus_x = [(1, 0, 0) in pair for pair in sim._neighbour_pairs()]
    assert len(plus_x) == 12 and sum(plus_x) == 4  # +X pairs with ±Y, ±Z
    assert torch.all(d[torch.tensor(plus_x)] < 1.0) and torch.all(d[~torch.tensor(plus_x)] == 1.0)


def test_mind_gradient_flows():
    f = smooth_volume((6, 6, 6))
    w = smooth_volume((6, 6, 6), seed=2).requires_grad_()
    sim.mind(f, w).backward()
    assert torch.isfinite(w.grad).all() and w.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- Jacobian
def oblique_affine():
    angle = 0.4
    rot = torch.tensor([[math.cos(angle), -math.sin(angle), 0.0], [math.sin(angle), math.cos(angle), 0.0], [0.0, 0.0, 1.0]])
    a = torch.eye(4, dtype=torch.float64)
    a[:3, :3] = rot.double() @ torch.diag(torch.tensor([1.5, 2.0, 0.7], dtype=torch.float64))
    a[:3, 3] = torch.tensor([-30.0, 12.0, 5.0])
    return a


GRIDS = {
    "flipped": torch.tensor([[-2.0, 0, 0, 40], [0, 1.0, 0, -3], [0, 0, -1.5, 7], [0, 0, 0, 1]], dtype=torch.float64),
    "permuted": torch.tensor([[0, 0, 1.0, 0], [2.0, 0, 0, 0], [0, -1.2, 0, 9], [0, 0, 0, 1]], dtype=torch.float64),
    "oblique": oblique_affine(),
}


@pytest.mark.parametrize("grid", sorted(GRIDS))
def test_jacobian_determinant_of_an_affine_displacement_is_det_m_on_any_grid(grid):
    from regkit import space

    affine = GRIDS[grid]
    m = torch.tensor([[1.1, 0.2, -0.1], [0.05, 0.9, 0.3], [-0.2, 0.1, 1.3]], dtype=torch.float64)
    x = space.world_grid(affine, (5, 4, 6), dtype=torch.float64)  # (X, Y, Z, 3) mm
    u = (x @ (m - torch.eye(3, dtype=torch.float64)).T + torch.tensor([3.0, -1.0, 2.0], dtype=torch.float64))
    u = u.permute(3, 0, 1, 2)[None]
    det = reg.jacobian_determinant(u, affine)
    assert det.shape == (1, 5, 4, 6)
    assert torch.allclose(det, torch.det(m).expand_as(det), atol=1e-10)


def test_folding_penalty_is_zero_for_identity_and_known_for_a_reflection():
    affine = GRIDS["oblique"]
    from regkit import space

    x = space.world_grid(affine, (4, 4, 4), dtype=torch.float64).permute(3, 0, 1, 2)[None]
    assert reg.folding_penalty(torch.zeros_like(x), affine).item() == 0.0
    # u = (M − I) x with M a reflection through the plane x = 0: det J = −1 everywhere
    reflect = torch.zeros_like(x)
    reflect[:, 0] = -2.0 * x[:, 0]
    assert reg.folding_penalty(reflect, affine, eps=0.01).item() == pytest.approx(1.01, rel=1e-10)
    # folded in the first X slab only: det = −1 on the 2 first slices (one-sided/central diffs)
    partial = reflect.clone()
    partial[:, :, 2:] = 0.0
    det = reg.jacobian_determinant(partial, affine)
    assert (det < 0).any() and (det[:, 3:] == 1.0).all()
    assert reg.folding_penalty(partial, affine, eps=0.0).item() == pytest.approx(torch.relu(-det).mean().item())


def test_jacobian_gradient_flows():
    u = (0.1 * torch.randn(1, 3, 3, 4, 3, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: reg.jacobian_determinant(t, GRIDS["oblique"]).square().sum(), (u,), fast_mode=True)


# ----------------------------------------------------------------------------- affine
def test_affine_l2_is_the_squared_distance_from_identity():
    eye = torch.eye(3)
    assert reg.affine_l2(eye, torch.zeros(3)).item() == 0.0
    m = eye.clone()
    m[0, 1] = 0.5
    assert reg.affine_l2(m, torch.tensor([3.0, 0.0, 4.0])).item() == pytest.approx(0.25 + 25.0)
    assert reg.affine_l2(m, torch.tensor([3.0, 0.0, 4.0]), translation_scale_mm=5.0).item() == pytest.approx(1.25)
    batch = reg.affine_l2(torch.stack([eye, m]), torch.zeros(2, 3))
    assert batch.item() == pytest.approx(0.125)
    assert reg.get_regularizer("affine_l2") is reg.affine_l2
    assert reg.get_regularizer("folding") is reg.folding_penalty


def test_lncc_hand_written_gradient_matches_finite_differences_for_both_images():
    f = smooth_volume((7, 6, 5), seed=11, channels=2).requires_grad_()
    w = (smooth_volume((7, 6, 5), seed=12, channels=2) + 0.3 * f.detach()).requires_grad_()
    weights = torch.rand(2, 2, 5, 5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert torch.autograd.gradcheck(lambda a, b: (weights * sim.local_ncc_squared(a, b, window=(3, 2, 4))).sum(), (f, w), fast_mode=True)
    assert torch.autograd.gradcheck(lambda a: sim.lncc(a, w.detach(), window=3), (f,), fast_mode=True)


def test_bending_energy_on_a_coarse_grid_uses_the_derivatives_that_exist():
    # 2 voxels along Z: no u_zz, but u_xz still exists
    x = grid_mm((4, 5, 2), SPACING)
    b = 0.4
    field = torch.stack([b * x[0] * x[2], torch.zeros_like(x[0]), torch.zeros_like(x[0])])[None]
    assert reg.bending_energy(field, SPACING).item() == pytest.approx(2 * b * b, rel=1e-10)
    assert reg.diffusion(torch.zeros(1, 3, 2, 1, 2), SPACING).item() == 0.0


def test_lncc_reuses_fixed_statistics_only_for_the_same_unchanged_tensor():
    f = smooth_volume((9, 8, 7))
    w = smooth_volume((9, 8, 7), seed=5)
    first = sim.lncc(f, w, window=3).item()
    assert sim.lncc(f, w, window=3).item() == first  # cached statistics: same value
    f.mul_(-1.0).add_(w)  # changed in place: the version counter moves, statistics recomputed
    assert sim.lncc(f, w, window=3).item() == pytest.approx(sim.lncc(f.clone(), w, window=3).item(), abs=1e-14)
    assert sim.lncc(f, w, window=3).item() != pytest.approx(first)
    assert sim.lncc(f, w, window=5).item() == pytest.approx(sim.lncc(f.clone(), w, window=5).item(), abs=1e-14)


def test_mind_reuses_the_fixed_descriptor_only_for_the_same_unchanged_tensor():
    f = smooth_volume((9, 8, 7))
    w = smooth_volume((9, 8, 7), seed=6)
    first = sim.mind(f, w).item()
    assert sim.mind(f, w).item() == first
    f.add_(w)
    assert sim.mind(f, w).item() == pytest.approx(sim.mind(f.clone(), w).item(), abs=1e-14)
    assert sim.mind(f, w, radius=1).item() == pytest.approx(sim.mind(f.clone(), w, radius=1).item(), abs=1e-14)


# ----------------------------------------------------------------------------- on the sample MRI
@pytest.mark.parametrize("name", ["lncc", "mse", "mi", "mind"])
def test_every_similarity_is_lowest_at_the_true_alignment_of_the_sample_brain(name, sample_paths):
    """The sample fixed brain against a shifted crop of itself (the contrast remapped
    non-linearly and inverted for the multi-modal metrics): the loss is lowest at zero shift."""
    from regkit.io.images import load_image

    volume = load_image(sample_paths["fixed"]).data[None, :, ::2, ::2, ::2].float()  # (1, 1, 31, 39, 33), 5 mm
    other = volume if name in ("lncc", "mse") else 1100.0 - 30.0 * volume.clamp_min(0).sqrt()
    loss = sim.get_similarity(name)
    m = 2  # margin, voxels
    fixed = volume[..., m:-m, m:-m, m:-m]

    def at(shift):
        sl = [slice(m + s, volume.shape[2 + a] - m + s) for a, s in enumerate(shift)]
        return loss(fixed, other[..., sl[0], sl[1], sl[2]]).item()

    aligned = at((0, 0, 0))
    shifted = [at(tuple(s if a == axis else 0 for a in range(3))) for axis in range(3) for s in (-1, 1)]
    assert aligned < min(shifted)


# ----------------------------------------------------------------------------- properties
@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    scale=st.floats(0.01, 100.0).flatmap(lambda s: st.sampled_from([s, -s])),
    offset=st.floats(-1000.0, 1000.0),
)
def test_lncc_is_symmetric_and_blind_to_affine_intensity_changes_of_either_image(seed, scale, offset):
    f = smooth_volume((8, 7, 9), seed=seed)
    w = smooth_volume((8, 7, 9), seed=seed + 1) + 0.5 * f
    base = sim.lncc(f, w, window=3).item()
    assert sim.lncc(w, f, window=3).item() == pytest.approx(base, abs=1e-9)
    assert sim.lncc(f, scale * w + offset, window=3).item() == pytest.approx(base, abs=1e-6)
    assert sim.lncc(scale * f + offset, w, window=3).item() == pytest.approx(base, abs=1e-6)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), bins=st.integers(4, 40))
def test_mi_depends_only_on_the_joint_intensities_not_on_where_the_voxels_are(seed, bins):
    g = torch.Generator().manual_seed(seed)
    f = torch.randn(1, 1, 6, 5, 4, generator=g, dtype=torch.float64)
    w = f.square() + 0.3 * torch.randn(1, 1, 6, 5, 4, generator=g, dtype=torch.float64)
    order = torch.randperm(120, generator=g)
    shuffle = lambda t: t.flatten()[order].reshape(t.shape)  # noqa: E731 - same permutation for both
    base = sim.mutual_information(f, w, bins=bins)
    assert sim.mutual_information(shuffle(f), shuffle(w), bins=bins).item() == pytest.approx(base.item(), abs=1e-12)
    assert -base.item() >= -1e-12  # MI >= 0


def test_local_ncc_squared_equals_monai_away_from_its_zero_padded_border():
    monai_losses = pytest.importorskip("monai.losses")
    g = torch.Generator().manual_seed(8)
    f = torch.randn(2, 1, 12, 13, 14, generator=g, dtype=torch.float64)
    w = torch.randn(2, 1, 12, 13, 14, generator=g, dtype=torch.float64) + 0.5 * f
    monai_lncc = monai_losses.LocalNormalizedCrossCorrelationLoss(spatial_dims=3, kernel_size=5, kernel_type="rectangular", reduction="none")
    theirs = -monai_lncc(w, f)[..., 2:-2, 2:-2, 2:-2]  # MONAI returns −NCC² per voxel, windows zero-padded
    assert torch.allclose(sim.local_ncc_squared(f, w, 5, eps=0.0), theirs, atol=1e-9)


def test_jacobian_determinant_of_a_nonlinear_field_matches_numpy_on_an_oblique_grid():
    from regkit import space

    affine = GRIDS["oblique"]
    x = space.world_grid(affine, (6, 5, 7), dtype=torch.float64).numpy()  # (X, Y, Z, 3) mm
    u = np.stack([0.01 * x[..., 1] ** 2, np.sin(0.1 * x[..., 0]) * x[..., 2] * 0.2, 0.05 * x[..., 0] * x[..., 1]], axis=0)
    grads = np.stack(np.gradient(u, axis=(1, 2, 3)), axis=-1)  # (3 comps, X, Y, Z, 3 index axes)
    jac = np.eye(3) + np.einsum("cxyze,ed->xyzcd", grads, np.linalg.inv(affine.numpy()[:3, :3]))
    expected = np.linalg.det(jac)
    got = reg.jacobian_determinant(torch.from_numpy(u)[None], affine)[0].numpy()
    assert np.abs(expected - 1.0).max() > 0.05  # the field really is non-trivial
    np.testing.assert_allclose(got, expected, atol=1e-12)


@pytest.mark.parametrize("name", ["lncc", "mi", "mind"])
def test_half_precision_images_are_scored_in_float32(name):
    f = smooth_volume((10, 9, 8)).float()
    w = (smooth_volume((10, 9, 8), seed=3).float() + 0.5 * f)
    loss = sim.get_similarity(name)
    reference = loss(f.bfloat16().float(), w.bfloat16().float())
    w_half = w.bfloat16().requires_grad_()
    value = loss(f.bfloat16(), w_half)
    assert value.dtype == torch.float32 and value.item() == pytest.approx(reference.item(), rel=1e-5, abs=1e-6)
    value.backward()
    assert w_half.grad.dtype == torch.bfloat16 and torch.isfinite(w_half.grad.float()).all()


@pytest.mark.parametrize("size", [2, 3, 6])
def test_central_difference_equals_torch_gradient_and_its_backward_is_the_adjoint(size):
    u = torch.randn(2, 3, size, 4, 5, dtype=torch.float64, requires_grad=True)
    for dim in (2, 3, 4):
        (expected,) = torch.gradient(u.detach(), dim=dim)
        assert torch.allclose(reg._CentralDifference.apply(u, dim), expected, atol=1e-14)
    assert torch.autograd.gradcheck(lambda t: reg._CentralDifference.apply(t, 2), (u,))


@pytest.mark.parametrize("size", [2, 3, 6])
def test_forward_difference_backward_is_the_adjoint(size):
    u = torch.randn(2, 3, size, 4, 5, dtype=torch.float64, requires_grad=True)
    for dim in (2, 3, 4):
        assert torch.autograd.gradcheck(lambda t: reg._ForwardDifferenceVoxels.apply(t, dim), (u,))
