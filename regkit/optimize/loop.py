"""One optimisation loop for every stage: Adam, cosine-decayed step, stop on a loss plateau."""
from __future__ import annotations

import math
import time
from typing import Callable, Dict, List

import torch
from torch import Tensor


def plateaued(history: List[float], window: int, tolerance: float) -> bool:
    """True when the loss improved by less than ``tolerance`` per iteration over the last
    ``window`` iterations (means of the two halves of the window, so noise does not stop early)."""
    if len(history) < 2 * window:
        return False
    recent = sum(history[-window:]) / window
    before = sum(history[-2 * window:-window]) / window
    return (before - recent) / window < tolerance


def run_adam(groups: List[Dict], loss_fn: Callable[[], Tensor], iterations: int, window: int = 10,
             tolerance: float = 1e-4, min_lr_fraction: float = 0.1, progress: bool = False,
             desc: str = "") -> Dict:
    """Minimise ``loss_fn()`` over the parameters of ``groups`` (torch.optim param groups with
    their own ``lr``). The step decays from ``lr`` to ``min_lr_fraction * lr`` on a cosine over
    ``iterations``. Returns a log: ``{"loss": [...], "iterations", "stopped_early", "seconds"}``.
    """
    start = time.perf_counter()
    opt = torch.optim.Adam(groups)
    base = [g["lr"] for g in opt.param_groups]
    history: List[float] = []
    bar = None
    if progress and iterations > 0:
        from tqdm import tqdm

        bar = tqdm(total=iterations, desc=desc, leave=False, dynamic_ncols=True)
    stopped = False
    for it in range(iterations):
        scale = min_lr_fraction + (1 - min_lr_fraction) * 0.5 * (1 + math.cos(math.pi * it / max(1, iterations)))
        for g, lr in zip(opt.param_groups, base):
            g["lr"] = lr * scale
        opt.zero_grad(set_to_none=True)
        loss = loss_fn()
        loss.backward()
        opt.step()
        history.append(float(loss.detach()))
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{history[-1]:.4f}", refresh=False)
        if plateaued(history, window, tolerance):
            stopped = True
            break
    if bar is not None:
        bar.close()
    return {"loss": history, "iterations": len(history), "stopped_early": stopped,
            "seconds": round(time.perf_counter() - start, 3)}
