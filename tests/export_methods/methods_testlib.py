"""Helpers of the DADP / DMEMM / DyDiff tests (imported by conftest.py and the tests):
the tiny config, a plain training loop over a TrainTask, a held-out loss."""

from __future__ import annotations

import numpy as np
import torch

from export.train.config import ComponentConfig, component_config
from export.train.registry import resolve_config

torch.set_num_threads(1)

H, K = 8, 10
TINY = {"horizon": H, "num_levels": K, "batch_size": 64, "normalizer": "minmax", "seed": 0,
        "val_fraction": 0.15, "model": {"dim": 8, "mults": [1, 2], "hidden": [32, 32]}}


def task_config(method: str, component: str, **extra) -> ComponentConfig:
    cfg = resolve_config(method, {**TINY, **extra})
    return component_config(cfg, component)


def quick_fit(task, steps: int, lr: float = 1e-3, seed: int = 0, batch: int = 64):
    """Plain Adam loop over a TrainTask (the full ``loop.fit`` is the trainer's, tested there).
    Returns (model, [loss per step])."""
    torch.manual_seed(seed)
    model = task.build_model()
    opt = torch.optim.Adam(model.parameters(), lr)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(steps):
        loss, _ = task.loss(model, task.batch("train", batch, rng), gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return model.eval(), losses


def val_loss(task, model, n: int = 4, batch: int = 256) -> float:
    with torch.no_grad():
        out = []
        for j in range(n):
            b = task.batch("val", batch, np.random.default_rng(100 + j))
            out.append(float(task.loss(model, b, torch.Generator().manual_seed(j))[0]))
    return float(np.mean(out))


