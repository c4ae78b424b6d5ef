"""Two CPU processes (gloo) train the tiny cascade with DDP and end with identical weights."""
from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from cascade_helpers import tiny_config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, config: dict, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    from safetensors.torch import save_file

    from regkit.train.config import TrainConfig
    from regkit.train.loop import train

    # different seeds per process would make different initial weights without DDP's broadcast
    torch.manual_seed(rank)
    result = train(TrainConfig.model_validate(config), out_dir=Path(out), progress=False)
    state = {k: v.contiguous() for k, v in result.model.state_dict().items()}
    save_file(state, str(Path(out) / f"rank{rank}.safetensors"), metadata={"step": str(result.step)})


def test_two_process_gloo_ddp_ends_with_identical_weights(tmp_path, sample_paths):
    from safetensors import safe_open
    from safetensors.torch import load_file

    config = tiny_config(tmp_path, sample_paths, optim={"steps": 2}, augment={"enabled": True})
    out = tmp_path / "run"
    mp.spawn(_worker, args=(2, _free_port(), config, str(out)), nprocs=2, join=True)
    w0, w1 = load_file(out / "rank0.safetensors"), load_file(out / "rank1.safetensors")
    for rank in (0, 1):
        with safe_open(str(out / f"rank{rank}.safetensors"), "pt") as f:
            assert f.metadata()["step"] == "2"
    assert set(w0) == set(w1)
    for name in w0:
        assert torch.equal(w0[name], w1[name]), name
    # the weights moved (the ranks agree on a trained model, not on the initial one)
    assert (out / "last.safetensors").is_file()
    assert any(not torch.equal(w0[n], torch.zeros_like(w0[n])) for n in w0 if n.endswith("head.weight"))
