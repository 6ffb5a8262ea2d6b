"""Fixtures for the DADP / DMEMM / DyDiff tests: a small linear system with known dynamics,
a briefly trained planner and dynamics diffusion model, and the auxiliary models, trained
once per session (a few seconds on one thread)."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # methods_testlib (importlib import mode)

from methods_testlib import TINY, H, K, quick_fit, task_config  # noqa: E402

from export import synthetic  # noqa: E402
from export.train.registry import make_data, resolve_config  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def lin(tmp_path_factory):
    """Dataset, windows and trained tiny models of the linear system."""
    import export.train.dadp as tdadp
    import export.train.dmemm as tdmemm
    from export.train.mpdiffuser import DynamicsTask

    path = synthetic.write_planar_dataset(tmp_path_factory.mktemp("lin") / "lin.h5")
    data = make_data(resolve_config("dadp_f", TINY), path)
    models, losses, tasks = {}, {}, {}
    specs = {
        "planner": (tdadp.PlannerTask, "dadp_f", 250, 32),
        "dynamics": (DynamicsTask, "mpdiffuser", 150, 32),
        "forward": (tdadp.ForwardTask, "dadp_f", 400, 64),
        "inverse": (tdadp.InverseTask, "dadp_i", 400, 64),
        "value": (tdadp.ValueTask, "dadp_f", 200, 64),
        "transition": (tdmemm.TransitionTask, "dmemm", 400, 64),
        "reward": (tdmemm.RewardTask, "dmemm", 200, 64),
    }
    for name, (cls, method, steps, batch) in specs.items():
        task = cls(task_config(method, name), data)
        models[name], losses[name] = quick_fit(task, steps, batch=batch)
        tasks[name] = task
    return SimpleNamespace(path=path, data=data, models=models, losses=losses, tasks=tasks,
                           S=data.S, A=data.A, C=data.C, H=H, K=K, sys=synthetic.planar_system())
