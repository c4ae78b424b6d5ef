"""Micro-benchmarks behind benchmarks/README.md, "A body CT at 1 mm" (2 threads, one 367×303×290
grid, the 1 mm CT's): the ITK field layout (x fastest) by one permute of all three components vs
one transposed product per component; the world grid in float64 as a whole vs by slabs of x; and,
for the moving image at 0.56 M points, a 1-channel grid_sample forward + backward vs a 4-channel
forward (image + 3 derivatives, the "gradient image" alternative). Best of 3, milliseconds."""
import time

import torch
import torch.nn.functional as F

from regkit import space

torch.set_num_threads(2)
torch.manual_seed(0)
shape = (367, 303, 290)


def best(f, n=3):
    times = []
    for _ in range(n):
        t = time.perf_counter(); f(); times.append(time.perf_counter() - t)
    return round(min(times) * 1000)


u = torch.randn(3, *shape)
flip = torch.tensor([-1.0, -1.0, 1.0])


def permute_all():
    return (u * flip.view(3, 1, 1, 1)).permute(0, 3, 2, 1).contiguous()


def per_component():
    out = torch.empty((3, *shape[::-1]))
    for c in range(3):
        torch.mul(u[c].permute(2, 1, 0), float(flip[c]), out=out[c])
    return out


assert torch.equal(permute_all(), per_component())
print("field layout: permute all", best(permute_all), "ms; per component", best(per_component), "ms")
del u

m = torch.tensor([[0.98, 0.1, 0.05, -183.3], [-0.1, 0.97, 0.2, -150.7], [0.03, -0.2, 1.02, -140.1], [0, 0, 0, 1]], dtype=torch.float64)


def grid_whole():
    x, y, z = (torch.arange(n, dtype=torch.float64)[:, None] * m[:3, a] for a, n in enumerate(shape))
    xy = (x[:, None, :] + m[:3, 3]) + y[None, :, :]
    return (xy[:, :, None, :] + z[None, None, :, :]).to(torch.float32)


assert torch.equal(grid_whole(), space.world_grid(m, shape))
print("world grid: float64 whole", best(grid_whole), "ms; by slabs (regkit.space)", best(lambda: space.world_grid(m, shape)), "ms")

img1, img4 = torch.randn(1, 1, 93, 77, 69), torch.randn(1, 4, 93, 77, 69)
g = (torch.rand(1, 92, 77, 79, 3) * 2 - 1) * 0.9


def one_channel_fwd_bwd():
    gg = g.clone().requires_grad_(True)
    space.sample(img1, gg).sum().backward()


def four_channel_fwd():
    with torch.no_grad():
        space.sample(img4, g)


print("moving image at 0.56 M points: 1 channel forward + backward", best(one_channel_fwd_bwd),
      "ms; 4 channels forward", best(four_channel_fwd), "ms")
