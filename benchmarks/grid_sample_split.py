"""Forward + backward of one CPU grid_sample through 512 k random points: a single call vs
``regkit.space.sample``, which splits one volume's points into one batch item per thread."""
import time, torch
from regkit import space
torch.set_num_threads(2); torch.manual_seed(0)
vol = torch.rand(1, 1, 120, 100, 110); grid = (torch.rand(1, 80, 80, 80, 3) * 2 - 1)  # 512 k points
def step(split):
    g = grid.clone().requires_grad_(True)
    out = space.sample(vol, g) if split else torch.nn.functional.grid_sample(vol, g, align_corners=space.ALIGN_CORNERS)
    out.sum().backward()
for split in (False, True, False, True):
    step(split); t = time.perf_counter()
    for _ in range(20): step(split)
    print("split" if split else "one call", round((time.perf_counter() - t) / 20 * 1000, 1), "ms forward + backward")
