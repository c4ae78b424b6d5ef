"""One optimisation loop for every stage: Adam, cosine-decayed step (optionally ramped up over
the first iterations), stop on a loss plateau.

Adam is the textbook update written out here (:class:`Adam`) instead of ``torch.optim.Adam``:
constructing any ``torch.optim`` optimiser imports ``torch._dynamo``, measured at 2.5-7.4 s per
process on the 2-core benchmark machine — as long as a whole 2 mm registration.
"""
from __future__ import annotations

import logging
import math
import sys
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


class Adam:
    """Adam (Kingma & Ba) on a list of param groups ``{"params": [tensors], "lr": float}``."""

    def __init__(self, groups: List[Dict], betas=(0.9, 0.999), eps: float = 1e-8):
        self.param_groups = [dict(g, params=list(g["params"])) for g in groups]
        self.beta1, self.beta2, self.eps = betas[0], betas[1], eps
        self.state = {id(p): (torch.zeros_like(p), torch.zeros_like(p)) for g in self.param_groups for p in g["params"]}
        self.t = 0

    def zero_grad(self) -> None:
        for g in self.param_groups:
            for p in g["params"]:
                p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        c1 = 1 - self.beta1 ** self.t
        c2 = 1 - self.beta2 ** self.t
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is None:
                    continue
                m, v = self.state[id(p)]
                m.mul_(self.beta1).add_(p.grad, alpha=1 - self.beta1)
                v.mul_(self.beta2).addcmul_(p.grad, p.grad, value=1 - self.beta2)
                denom = (v / c2).sqrt_().add_(self.eps)
                p.addcdiv_(m, denom, value=-g["lr"] / c1)


def run_adam(groups: List[Dict], loss_fn: Callable[[], Tensor], iterations: int, window: int = 10,
             tolerance: float = 1e-4, min_lr_fraction: float = 0.1, progress: bool = False,
             desc: str = "", warmup: int = 0) -> Dict:
    """Minimise ``loss_fn()`` over the parameters of ``groups`` (torch.optim param groups with
    their own ``lr``). The step decays from ``lr`` to ``min_lr_fraction * lr`` on a cosine over
    ``iterations``; with ``warmup`` > 0 it is also scaled by ``(it + 1) / warmup`` over the first
    ``warmup`` iterations (for a start that is already near the optimum: Adam's first steps move
    every parameter by about ``lr`` whatever its gradient).
    Returns a log: ``{"loss": [...], "iterations", "stopped_early", "seconds"}``.
    """
    start = time.perf_counter()
    opt = Adam(groups)
    base = [g["lr"] for g in opt.param_groups]
    history: List[float] = []
    bar = None
    lines = progress and iterations > 0 and not _is_terminal(sys.stderr)  # a log file: a line per level, no \r frames
    if progress and iterations > 0 and not lines:
        from tqdm import tqdm

        bar = tqdm(total=iterations, desc=desc, leave=False, dynamic_ncols=True)
    stopped = False
    for it in range(iterations):
        scale = min_lr_fraction + (1 - min_lr_fraction) * 0.5 * (1 + math.cos(math.pi * it / max(1, iterations)))
        if it < warmup:
            scale *= (it + 1) / warmup
        for g, lr in zip(opt.param_groups, base):
            g["lr"] = lr * scale
        opt.zero_grad()
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
    seconds = round(time.perf_counter() - start, 3)
    if lines and history:
        logging.getLogger("regkit").info("%s: %d it%s, loss %.4f -> %.4f, %.1f s", desc, len(history),
                                         " (plateau)" if stopped else "", history[0], history[-1], seconds)
    return {"loss": history, "iterations": len(history), "stopped_early": stopped, "seconds": seconds}


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
