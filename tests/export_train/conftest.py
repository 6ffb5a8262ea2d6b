"""Fixtures for the training-side tests: tiny synthetic datasets written with DatasetWriter."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from planner_runtime.dataset import DatasetWriter, Episode


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # CI has 2 cores shared by the whole suite


def write_random_dataset(path, S=3, A=2, C=2, episodes=(7, 5, 9, 6), seed=0, terminal=()):
    """Episodes of given lengths with sample-index-coded values (for layout checks)."""
    rng = np.random.default_rng(seed)
    names = [f"s{i}" for i in range(S)], [f"a{i}" for i in range(A)], [f"c{i}" for i in range(C)]
    with DatasetWriter(path, *names, dt=0.1, robot="test") as w:
        n = 0
        for e, T in enumerate(episodes):
            idx = np.arange(n, n + T, dtype=np.float32)
            obs = idx[:, None] + 0.01 * np.arange(S)[None] + rng.normal(0, 1e-3, (T, S)).astype(np.float32)
            act = -idx[:, None] - 0.01 * np.arange(A)[None]
            cond = np.repeat(rng.normal(0, 1, (1, C)), T, 0)
            w.append(Episode(obs.astype(np.float32), act.astype(np.float32), cond.astype(np.float32),
                             np.ones(T, np.float32), np.zeros(T, np.float32), terminal=e in terminal))
            n += T
    return path


@pytest.fixture(scope="session")
def linear_data(tmp_path_factory):
    """A small double-integrator dataset (MPDiffuser App. E stochastic expert)."""
    from export.synthetic import write_linear_dataset

    path = tmp_path_factory.mktemp("lin") / "di.h5"
    write_linear_dataset(path, n_episodes=60, T=40, p_noise=0.8, seed=0)
    return path


TINY = {"horizon": 8, "model": {"dim": 16, "mults": [1, 2]}, "batch_size": 32,
        "log_every": 10, "val_every": 20, "val_batches": 2, "ckpt_every": 20, "ema_start": 10,
        "ranker": {"model": {"hidden": [32, 32]}, "batch_size": 64}}
