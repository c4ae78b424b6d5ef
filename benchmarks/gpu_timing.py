"""The optimiser on a GPU: ``register_seconds`` of one pair, called several times (the first call
warms CUDA up), for each preset given.

usage: python benchmarks/gpu_timing.py MOVING FIXED [--preset default ...] [--repeat 3]
"""
from __future__ import annotations

import argparse
import json
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("moving")
    ap.add_argument("fixed")
    ap.add_argument("--preset", action="append", default=None, help="preset name or YAML (repeatable)")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    import regkit
    from regkit.optimize.register import register

    print("torch", torch.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA")
    moving, fixed = regkit.load(a.moving), regkit.load(a.fixed)
    for preset in a.preset or ["default"]:
        for _ in range(a.repeat):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            result = register(moving, fixed, config=preset, device="cuda", seed=0)
            torch.cuda.synchronize()
            levels = " ".join(f"{lv['stage'][0]}{lv['spacing_mm']:g}:{lv['iterations']}/{lv['seconds']:.2f}s"
                              for lv in result.log["levels"])
            print(json.dumps({"preset": preset, "register_seconds": result.log["register_seconds"],
                              "total_seconds": result.log["total_seconds"],
                              "call_s": round(time.perf_counter() - t0, 3), "levels": levels}), flush=True)


if __name__ == "__main__":
    main()
