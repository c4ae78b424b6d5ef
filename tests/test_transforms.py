"""Transforms: composition, SVF exponentials and inverses, displacement inversion, gradients."""
from __future__ import annotations

import pytest
import torch
from torch.func import functional_call

from regkit import space
from regkit.image import Image
from regkit.resample import resample, warp
from regkit.transforms import (AffineTransform, Compose, DisplacementField, VelocityField,
                               to_displacement_field)

GRID = torch.tensor([[1.5, 0.0, 0.0, -12.0], [0.0, 0.0, -1.2, 10.0], [0.0, 1.8, 0.0, -14.0], [0.0, 0.0, 0.0, 1.0]], dtype=torch.float64)
SHAPE = (16, 16, 16)


def _smooth(amplitude_mm: float, phase: float = 0.0) -> torch.Tensor:
    """A smooth vector field (3, X, Y, Z) in mm on GRID."""
    x = space.world_grid(GRID, SHAPE, dtype=torch.float64)
    return amplitude_mm * torch.stack([torch.sin(x[..., 1] / 5.0 + phase), torch.cos(x[..., 2] / 6.0), torch.sin(x[..., 0] / 4.0 - phase)], 0)


def _affine(seed: int = 0) -> AffineTransform:
    g = torch.Generator().manual_seed(seed)
    m = torch.eye(3, dtype=torch.float64) + 0.1 * torch.randn(3, 3, generator=g, dtype=torch.float64)
    return AffineTransform(m, torch.randn(3, generator=g, dtype=torch.float64), torch.tensor([1.0, 2.0, -1.0], dtype=torch.float64))


def _interior(margin: int = 4) -> torch.Tensor:
    return space.world_grid(GRID, SHAPE, dtype=torch.float64)[margin:-margin, margin:-margin, margin:-margin].reshape(-1, 3)


def test_compose_equals_sequential_application():
    a, d, v = _affine(1), DisplacementField(_smooth(2.0), GRID), VelocityField(_smooth(1.5, 0.5), GRID)
    x = _interior(2)
    chain = Compose(d, a, v)
    assert (chain(x) - v(a(d(x)))).abs().max() < 1e-4
    assert (Compose(Compose(d, a), v)(x) - chain(x)).abs().max() < 1e-12  # nested chains flatten
    # ordering matters: the reversed chain is a different mapping
    assert (Compose(v, a, d)(x) - chain(x)).abs().max() > 0.5


def test_compose_collapses_into_one_field_and_one_affine():
    a1, a2 = _affine(1), _affine(2)
    img = Image(torch.rand(1, 12, 13, 11), GRID)
    ref = Image(torch.zeros(1, 10, 9, 8), GRID)
    single = AffineTransform.from_homogeneous(a2.homogeneous().detach() @ a1.homogeneous().detach())
    with torch.no_grad():
        by_chain = resample(img, Compose(a1, a2), ref).data
        by_single = resample(img, single, ref).data
        field = to_displacement_field(Compose(a1, DisplacementField(_smooth(1.0), GRID), a2), ref.affine, ref.shape, dtype=torch.float64)
        by_field = resample(img, field, ref).data
        by_chain3 = resample(img, Compose(a1, DisplacementField(_smooth(1.0), GRID), a2), ref).data
    assert (by_chain - by_single).abs().max() < 1e-4
    assert (by_field - by_chain3).abs().max() < 1e-4  # a field at the reference voxels is exact there
    assert (by_chain - img.data[:, :10, :9, :8]).abs().max() > 0.1


def test_exp_v_composed_with_exp_minus_v_is_identity():
    v = VelocityField(_smooth(3.0), GRID, steps=7)
    x = _interior(3)
    with torch.no_grad():
        there_and_back = Compose(v, v.inverse())(x)
        moved = v(x)
    err_vox = space.world_to_voxel(there_and_back, GRID) - space.world_to_voxel(x, GRID)
    assert err_vox.norm(dim=-1).mean() < 0.05
    assert (space.world_to_voxel(moved, GRID) - space.world_to_voxel(x, GRID)).norm(dim=-1).mean() > 1.0


def test_displacement_inverse_by_fixed_point_iteration():
    d = DisplacementField(_smooth(2.0), GRID)
    inv = d.inverse()
    assert inv.inverse_residual_mm < 0.05
    x = _interior(3)
    err = (Compose(inv, d)(x) - x).norm(dim=-1)
    assert err.max() < 0.05 and (d(x) - x).norm(dim=-1).mean() > 1.0


def test_affine_inverse_and_homogeneous():
    a = _affine(3)
    x = 20.0 * torch.randn(50, 3, dtype=torch.float64)
    h = a.homogeneous().detach()
    assert torch.allclose(a(x), x @ h[:3, :3].T + h[:3, 3], atol=1e-12)
    assert torch.allclose(a.inverse()(a(x)), x, atol=1e-9)
    b = AffineTransform.from_homogeneous(h, center=torch.tensor([5.0, -3.0, 2.0], dtype=torch.float64))
    assert torch.allclose(b(x), a(x), atol=1e-9)


def _tiny():
    """A 4×5×4 float64 volume, a differently placed reference grid and its world points."""
    g = torch.Generator().manual_seed(0)
    vol = torch.rand(1, 1, 4, 5, 4, generator=g, dtype=torch.float64)
    vol_affine = torch.diag(torch.tensor([2.0, 1.5, 2.5, 1.0], dtype=torch.float64))
    ref_affine = vol_affine.clone()
    ref_affine[:3, 3] = torch.tensor([0.37, 0.41, 0.29], dtype=torch.float64)
    x = space.world_grid(ref_affine, (3, 4, 3), dtype=torch.float64)
    return vol, vol_affine, ref_affine, x


def test_gradients_reach_affine_parameters():
    vol, vol_affine, _, x = _tiny()
    t = AffineTransform(center=torch.tensor([3.0, 3.0, 3.0], dtype=torch.float64).float()).double()

    def f(matrix, translation):
        y = functional_call(t, {"matrix": matrix, "translation": translation}, (x,))
        return warp(vol, vol_affine, y, padding_mode="border")

    m = (torch.eye(3, dtype=torch.float64) + 0.03 * torch.tensor([[0.3, -0.5, 0.2], [0.1, 0.4, -0.3], [0.2, 0.1, -0.2]], dtype=torch.float64)).requires_grad_()
    tr = torch.tensor([0.11, -0.23, 0.17], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(f, (m, tr), eps=1e-6, atol=1e-5)
    f(m, tr).sum().backward()
    assert m.grad.abs().sum() > 0 and tr.grad.abs().sum() > 0


def test_gradients_reach_displacement_values():
    vol, vol_affine, ref_affine, x = _tiny()
    g = torch.Generator().manual_seed(1)
    u = (0.3 * torch.randn(1, 3, 3, 4, 3, generator=g, dtype=torch.float64)).requires_grad_()
    t = DisplacementField(u.detach().clone(), ref_affine, requires_grad=True)

    def f(displacement):
        y = functional_call(t, {"displacement": displacement}, (x,))
        return warp(vol, vol_affine, y, padding_mode="border")

    assert torch.autograd.gradcheck(f, (u,), eps=1e-6, atol=1e-5)


def test_gradients_reach_velocity_values():
    vol, vol_affine, ref_affine, x = _tiny()
    g = torch.Generator().manual_seed(2)
    v = (0.2 * torch.randn(1, 3, 3, 4, 3, generator=g, dtype=torch.float64)).requires_grad_()
    t = VelocityField(v.detach().clone(), ref_affine, steps=3, requires_grad=True)
    y = functional_call(t, {"velocity": v}, (x,))
    warp(vol, vol_affine, y, padding_mode="border").sum().backward()
    assert v.grad is not None and v.grad.abs().sum() > 0


@pytest.mark.parametrize("batch", [1, 2])
def test_batched_displacement_on_keeps_items_apart(batch):
    a = AffineTransform(batch_size=batch).double()
    shifts = torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]], dtype=torch.float64)[:batch]
    with torch.no_grad():
        a.translation += shifts
    d = a.displacement_on(GRID, (3, 4, 5), dtype=torch.float64)
    assert tuple(d.shape) == (batch, 3, 3, 4, 5)
    assert torch.allclose(d, shifts[:, :, None, None, None].expand_as(d))
    field = DisplacementField(d, GRID)
    assert torch.allclose(Compose(a, field).displacement_on(GRID, (3, 4, 5), dtype=torch.float64), 2 * d)
    if batch > 1:
        with pytest.raises(ValueError, match="needs points"):
            a(torch.zeros(3, 4, 5, 3, dtype=torch.float64))


@pytest.mark.parametrize("target", [
    # a finer grid nested in GRID's axes (permuted and flipped like GRID), reaching past its border
    torch.tensor([[0.75, 0.0, 0.0, -14.0], [0.0, 0.0, -0.6, 11.5], [0.0, 0.9, 0.0, -15.0], [0.0, 0.0, 0.0, 1.0]], dtype=torch.float64),
    # a coarser, shifted one with the first axis reversed
    torch.tensor([[-3.0, 0.0, 0.0, 14.0], [0.0, 0.0, -2.4, 9.0], [0.0, 3.6, 0.0, -13.0], [0.0, 0.0, 0.0, 1.0]], dtype=torch.float64),
])
def test_field_on_an_axis_parallel_grid_takes_the_separable_path_with_the_same_values(target):
    """``DisplacementField.grid_points``/``displacement_on`` on a grid whose axes are parallel
    to the field's are three matrix products, and must equal grid_sample at every voxel,
    border extension included; their gradient too."""
    from regkit.transforms.field import sample_field, sample_field_on_grid

    u = _smooth(3.0).float()[None].requires_grad_(True)
    shape = (37, 29, 31)
    fast = sample_field_on_grid(u, GRID, target, shape)
    assert fast is not None
    slow = sample_field(u, GRID, space.world_grid(target, shape)).movedim(-1, 0)[None]
    torch.testing.assert_close(fast, slow, atol=1e-4, rtol=1e-4)
    weights = torch.randn(fast.shape)
    g_fast, = torch.autograd.grad((fast * weights).sum(), u)
    g_slow, = torch.autograd.grad((slow * weights).sum(), u)
    torch.testing.assert_close(g_fast, g_slow, atol=1e-3, rtol=1e-3)
    field = DisplacementField(u.detach()[0], GRID)
    points = field.grid_points(target, shape)
    torch.testing.assert_close(points, space.world_grid(target, shape) + slow[0].detach().movedim(0, -1), atol=1e-4, rtol=1e-4)
    chained = Compose(field, _affine()).grid_points(target, shape)
    torch.testing.assert_close(chained, _affine()(points), atol=1e-4, rtol=1e-4)


def test_velocity_field_on_a_parallel_grid_equals_sampling_its_exp_at_the_points():
    """``VelocityField.displacement_on`` integrates once on its own grid and samples there by
    matrix products: equal to mapping every voxel's world point through ``exp(v)``."""
    target = torch.tensor([[-1.5, 0.0, 0.0, 14.0], [0.0, 0.0, -1.2, 9.0], [0.0, 1.8, 0.0, -13.0], [0.0, 0.0, 0.0, 1.0]],
                          dtype=torch.float64)
    shape = (21, 17, 19)
    field = VelocityField(_smooth(3.0).float(), GRID, steps=5)
    x = space.world_grid(target, shape)
    expected = (field(x) - x).movedim(-1, 0)
    torch.testing.assert_close(field.displacement_on(target, shape), expected, atol=1e-4, rtol=1e-4)
    whole = Compose(field, _affine())
    torch.testing.assert_close(whole.displacement_on(target, shape), (whole(x) - x).movedim(-1, 0), atol=1e-4, rtol=1e-4)


def test_field_on_an_oblique_grid_falls_back_to_grid_sample():
    from regkit.transforms.field import sample_field_on_grid

    oblique = GRID.clone()
    oblique[:3, :3] = GRID[:3, :3] @ torch.linalg.matrix_exp(torch.tensor([[0.0, -0.3, 0.0], [0.3, 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64))
    u = _smooth(2.0).float()
    assert sample_field_on_grid(u[None], GRID, oblique, (8, 8, 8)) is None
    field = DisplacementField(u, GRID)
    x = space.world_grid(oblique, (8, 8, 8))
    torch.testing.assert_close(field.grid_points(oblique, (8, 8, 8)), field(x))


@pytest.mark.parametrize("top_id", [614454277, -16777219])
def test_nearest_resampling_keeps_label_ids_beyond_float32_exactly(top_id):
    """Atlas ids above 2^24 (Allen: ~6e8) do not survive a float32 grid_sample; they must come
    back exact, and voxels mapped outside the image must be background (0), not the lowest id."""
    g = torch.Generator().manual_seed(0)
    ids = torch.tensor([0, 16777217, top_id, 7], dtype=torch.int32)
    data = ids[torch.randint(0, 4, (1, 9, 8, 7), generator=g)]
    labels = Image(data, torch.diag(torch.tensor([2.0, 2.0, 2.0, 1.0], dtype=torch.float64)), is_label=True)
    # two voxels along x: the first 2 x-planes of the reference map inside, the last 2 outside
    shift = AffineTransform(translation=torch.tensor([4.0, 0.0, 0.0]), requires_grad=False)
    out = resample(labels, shift, labels)
    assert out.data.dtype == torch.int32
    assert torch.equal(out.data[:, :7], data[:, 2:])
    assert torch.all(out.data[:, 7:] == 0)


def test_affine_grid_points_in_one_pass_equal_mapping_every_world_point():
    """Without a gradient an affine maps a grid through the product of its matrix and the grid's
    (float64); the points must be those of mapping each voxel's world point, also on an oblique,
    flipped grid; with a gradient needed it keeps the differentiable path."""
    oblique = GRID.clone()
    oblique[:3, :3] = GRID[:3, :3] @ torch.linalg.matrix_exp(torch.tensor([[0.0, -0.3, 0.1], [0.3, 0.0, 0.0], [-0.1, 0.0, 0.0]], dtype=torch.float64))
    oblique[0, :3] *= -1
    shape = (13, 9, 11)
    a = _affine()
    x = space.world_grid(oblique, shape, dtype=torch.float64)
    with torch.no_grad():
        fast = a.grid_points(oblique, shape, dtype=torch.float64)
    torch.testing.assert_close(fast, a.double()(x), atol=1e-9, rtol=0)
    trainable = AffineTransform(a.matrix.detach().clone(), a.translation.detach().clone(), a.center, requires_grad=True)
    points = trainable.grid_points(oblique, shape)
    assert points.requires_grad
    torch.testing.assert_close(points, fast.float(), atol=1e-4, rtol=0)


def test_field_on_its_own_grid_or_a_slab_of_it_is_a_selection_of_its_values():
    """Sampling a field at its own voxels (the same grid, or a slab of it, as resampling through
    the dense result does) selects the stored vectors exactly, without matrix products."""
    from regkit.transforms.field import separable_weights

    u = _smooth(3.0).float()
    field = DisplacementField(u, GRID)
    weights = separable_weights(GRID, u.shape[1:], GRID, u.shape[1:])
    assert all(w.dtype == torch.long for w in weights)
    assert torch.equal(field.displacement_on(GRID, u.shape[1:]), u)
    slab = GRID.clone()
    slab[:3, 3] = GRID[:3, :3] @ torch.tensor([2.0, 0.0, 0.0], dtype=torch.float64) + GRID[:3, 3]  # from voxel row 2
    shape = (5, *u.shape[2:])
    assert torch.equal(field.displacement_on(slab, shape), u[:, 2:7])
    torch.testing.assert_close(field.grid_points(slab, shape), space.world_grid(slab, shape) + u[:, 2:7].movedim(0, -1))
