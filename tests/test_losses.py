"""Similarity losses and regularisers against values computed by hand / with numpy."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

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
