"""regkit.space: world ↔ voxel ↔ grid_sample conversions, size-1 axes included."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from regkit import space
from regkit.image import Image
from regkit.io.images import image_to_sitk, sitk_to_image
from regkit.resample import resample, warp


def _affine(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
    a = torch.eye(4, dtype=torch.float64)
    a[:3, :3] = q * (0.5 + 2.0 * torch.rand(3, generator=g, dtype=torch.float64))
    a[:3, 3] = 50.0 * torch.randn(3, generator=g, dtype=torch.float64)
    return a


@pytest.mark.parametrize("seed", range(3))
def test_world_voxel_round_trip(seed):
    a = _affine(seed)
    ijk = torch.tensor([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0], [-0.5, 7.25, 2.0]], dtype=torch.float64)
    world = space.voxel_to_world(ijk, a)
    np.testing.assert_allclose(world[1].numpy(), (a[:3, :3] @ ijk[1] + a[:3, 3]).numpy())
    np.testing.assert_allclose(space.world_to_voxel(world, a).numpy(), ijk.numpy(), atol=1e-10)
    np.testing.assert_allclose(space.spacing(a).numpy(), torch.linalg.norm(a[:3, :3], dim=0).numpy())


@pytest.mark.parametrize("shape", [(5, 4, 3), (6, 1, 4), (1, 1, 7)])
def test_normalized_coordinates_reverse_axes_and_hit_corners(shape):
    a = _affine(1)
    last = [s - 1 for s in shape]
    corner = space.voxel_to_world(torch.tensor(last, dtype=torch.float64), a)
    n = space.world_to_normalized(corner, a, shape)
    # component 0 indexes the LAST spatial axis; the last voxel of an axis is +1 (0 on a size-1 axis)
    expected = [1.0 if s > 1 else 0.0 for s in shape][::-1]
    np.testing.assert_allclose(n.numpy(), expected, atol=1e-9)
    origin = space.world_to_normalized(a[:3, 3], a, shape)
    np.testing.assert_allclose(origin.numpy(), [-1.0 if s > 1 else 0.0 for s in shape][::-1], atol=1e-9)


@pytest.mark.parametrize("shape", [(5, 4, 3), (6, 1, 4), (4, 5, 1)])
def test_identity_grid_samples_the_volume_itself(shape):
    vol = torch.rand(1, 2, *shape, dtype=torch.float64)
    grid = space.normalized_identity(shape, dtype=torch.float64)[None]
    assert torch.allclose(space.sample(vol, grid), vol, atol=1e-12)
    a = _affine(2)
    world_grid = space.world_to_normalized(space.world_grid(a, shape, dtype=torch.float64), a, shape)
    assert torch.allclose(world_grid, grid[0], atol=1e-9)


def test_vectors_convert_like_point_differences():
    a, shape = _affine(3), (7, 5, 6)
    x = 10.0 * torch.randn(20, 3, dtype=torch.float64)
    v = torch.randn(20, 3, dtype=torch.float64)
    nv = space.world_vectors_to_normalized(v, a, shape)
    diff = space.world_to_normalized(x + v, a, shape) - space.world_to_normalized(x, a, shape)
    assert torch.allclose(nv, diff, atol=1e-10)
    assert torch.allclose(space.normalized_vectors_to_world(nv, a, shape), v, atol=1e-10)
    field = v.T.reshape(3, 4, 5, 1)  # channel-first layout
    assert torch.allclose(space.world_vectors_to_normalized(field, a, shape, channel_dim=0).reshape(3, 20).T, nv, atol=1e-12)


@pytest.mark.parametrize("shape", [(5, 4, 3), (5, 4, 1), (1, 6, 1)])
def test_inside_mask_is_half_a_voxel_beyond_the_centres(shape):
    a = _affine(4)
    inside, outside = [], []
    for axis in range(3):
        for sign, edge in ((-1, 0), (1, shape[axis] - 1)):
            ijk = torch.tensor([(s - 1) / 2.0 for s in shape], dtype=torch.float64)
            ijk_in, ijk_out = ijk.clone(), ijk.clone()
            ijk_in[axis], ijk_out[axis] = edge + sign * 0.49, edge + sign * 0.51
            inside.append(space.voxel_to_world(ijk_in, a))
            outside.append(space.voxel_to_world(ijk_out, a))
    mask_in = space.inside_mask(space.world_to_normalized(torch.stack(inside), a, shape), shape)
    mask_out = space.inside_mask(space.world_to_normalized(torch.stack(outside), a, shape), shape)
    assert mask_in.all() and not mask_out.any()


def test_size_one_axis_resampling_equals_simpleitk():
    """A single-slice image (Z = 1) resampled through a shift: ITK keeps points within half a
    slice and zeros the rest; so must regkit."""
    a = torch.diag(torch.tensor([1.2, 0.9, 3.0, 1.0], dtype=torch.float64))
    moving = Image(torch.rand(1, 6, 5, 1), a)
    ref_affine = a.clone()
    ref_affine[:3, 3] = torch.tensor([0.3, -0.2, 0.0], dtype=torch.float64)
    reference = Image(torch.zeros(1, 6, 5, 3), ref_affine)  # slices at z = 0, 3, 6 mm (+ shift); the moving slice covers |z| <= 1.5
    for z_shift, nonzero_slices in ((0.0, [0]), (1.4, [0]), (1.6, []), (-1.6, [1])):
        ref = Image(reference.data, ref_affine.clone())
        ref.affine[2, 3] = z_shift
        ours = resample(moving, None, ref).numpy()
        theirs = sitk_to_image(sitk.Resample(image_to_sitk(moving), image_to_sitk(ref), sitk.Transform(), sitk.sitkLinear, 0.0)).numpy()
        np.testing.assert_allclose(ours, theirs, atol=1e-5)
        assert [k for k in range(3) if np.abs(ours[..., k]).max() > 0] == nonzero_slices


def test_warp_is_one_sampling_at_world_points():
    a = _affine(5)
    vol = torch.rand(1, 1, 4, 5, 6, dtype=torch.float64)
    pts = space.voxel_to_world(torch.tensor([[[[1.0, 2.0, 3.0], [3.0, 4.0, 5.0]]]], dtype=torch.float64), a)
    out = warp(vol, a, pts)
    assert out.shape == (1, 1, 1, 1, 2)
    assert torch.allclose(out[0, 0, 0, 0], torch.stack([vol[0, 0, 1, 2, 3], vol[0, 0, 3, 4, 5]]))


@pytest.mark.parametrize("mode,padding", [("bilinear", "zeros"), ("bilinear", "border"), ("nearest", "zeros")])
@pytest.mark.parametrize("channels", [1, 3])
def test_sample_split_over_threads_equals_one_grid_sample(mode, padding, channels):
    """On a CPU with 2+ threads ``space.sample`` splits one volume's points into batch items (PyTorch
    runs each 3-D item on one thread); every value and the gradient to the points must be those of
    one ``grid_sample``, and the volume's gradient the same sum; a point count that does not
    divide evenly included."""
    threads = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        g = torch.Generator().manual_seed(channels)
        volume = torch.randn(1, channels, 23, 19, 17, generator=g).requires_grad_(True)
        points = (2.4 * torch.rand(1, 61, 37, 29, 3, generator=g) - 1.2).requires_grad_(True)  # some outside
        assert space._cpu_chunks(volume, points) == 3
        split = space.sample(volume, points, mode=mode, padding_mode=padding)
        whole = torch.nn.functional.grid_sample(volume, points, mode=mode, padding_mode=padding, align_corners=True)
        assert torch.equal(split, whole)
        weights = torch.randn(whole.shape, generator=g)
        g_split = torch.autograd.grad((split * weights).sum(), [volume, points])
        g_whole = torch.autograd.grad((whole * weights).sum(), [volume, points])
        assert torch.equal(g_split[1], g_whole[1])
        torch.testing.assert_close(g_split[0], g_whole[0], atol=1e-5, rtol=1e-5)
    finally:
        torch.set_num_threads(threads)


def test_sample_stays_one_call_for_batches_small_grids_and_one_thread():
    volume = torch.zeros(1, 1, 8, 8, 8)
    big = torch.zeros(1, 64, 64, 64, 3)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert space._cpu_chunks(volume, big) == 2
        assert space._cpu_chunks(volume, torch.zeros(1, 8, 8, 8, 3)) == 1          # too few points to pay
        assert space._cpu_chunks(volume.expand(2, 1, 8, 8, 8), big.expand(2, -1, -1, -1, -1)) == 1  # a batch already
        torch.set_num_threads(1)
        assert space._cpu_chunks(volume, big) == 1
    finally:
        torch.set_num_threads(threads)
