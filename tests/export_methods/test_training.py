"""DADP / DMEMM training: registry entries, losses that decrease, DMEMM's reward weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from methods_testlib import quick_fit, task_config, val_loss

from export.train.registry import METHODS, method_spec

torch.set_num_threads(1)


def test_methods_registered_with_their_components():
    import export.train.dadp  # noqa: F401  (registers on import)
    import export.train.dmemm  # noqa: F401

    assert method_spec("dadp_f").components == ("planner", "forward", "value")
    assert method_spec("dadp_i").components == ("planner", "inverse", "value")
    assert method_spec("dmemm").components == ("transition", "reward", "planner")
    assert {"dadp_f", "dadp_i", "dmemm"} <= set(METHODS)


@pytest.mark.parametrize("name", ["planner", "dynamics", "forward", "inverse", "value",
                                  "transition", "reward"])
def test_component_losses_decrease(lin, name):
    """Mean of the last 20 training losses well below the first 20, and the held-out loss
    of the trained model below that of a fresh one."""
    ls = lin.losses[name]
    first, last = np.mean(ls[:20]), np.mean(ls[-20:])
    assert last < first - 0.2 * abs(first), (name, first, last)
    task = lin.tasks[name]
    torch.manual_seed(123)
    fresh = task.build_model().eval()
    assert val_loss(task, lin.models[name]) < val_loss(task, fresh)


def test_dmemm_planner_losses_decrease(lin):
    """L = L_wdiff + lambda_tr L_tr + lambda_rd L_rd decreases; so do its diffusion and
    transition terms (T_hat and R_hat frozen, taken from the trained tasks)."""
    from export.train.dmemm import DMEMMPlannerTask

    cfg = task_config("dmemm", "planner")
    assert (cfg.lambda_tr, cfg.lambda_rd, cfg.reward_weighting) == (0.1, 0.05, True)
    task = DMEMMPlannerTask(cfg, lin.data, lin.tasks["transition"], lin.tasks["reward"])
    T, R = task.env_models()
    assert not any(p.requires_grad for p in list(T.parameters()) + list(R.parameters()))
    before = [p.clone() for p in T.parameters()]
    model, losses = quick_fit(task, 120, batch=32)
    assert np.mean(losses[-20:]) < np.mean(losses[:20]) - 0.2 * abs(np.mean(losses[:20]))
    assert all(torch.equal(a, b) for a, b in zip(before, T.parameters(), strict=True))
    rng = np.random.default_rng(7)
    b = task.batch("train", 256, rng)
    _, m_fresh = task.loss(task.build_model(), b, torch.Generator().manual_seed(0))
    _, m_trained = task.loss(model, b, torch.Generator().manual_seed(0))
    assert m_trained["l_wdiff"] < m_fresh["l_wdiff"]
    assert m_trained["l_tr"] < m_fresh["l_tr"]


def test_dmemm_planner_needs_environment_models(lin):
    from export.train.dmemm import DMEMMPlannerTask

    task = DMEMMPlannerTask(task_config("dmemm", "planner"), lin.data)
    with pytest.raises(ValueError, match="transition"):
        task.env_models()
    off = DMEMMPlannerTask(task_config("dmemm", "planner", lambda_tr=0.0, lambda_rd=0.0,
                                       reward_weighting=False), lin.data)
    loss, extra = off.loss(off.build_model(), off.batch("train", 8, np.random.default_rng(0)),
                           torch.Generator().manual_seed(0))
    assert torch.isfinite(loss) and extra["weight_mean"] == 1.0


def test_reward_weights_in_unit_interval_and_ordered_by_return(lin):
    from export.train.dmemm import reward_weights

    b = lin.data.train.batch(np.arange(0, len(lin.data.train), 3))
    r, v = torch.from_numpy(b["rewards"]), torch.from_numpy(b["valid"])
    rmax = float(lin.data.train_samples["rewards"].max())
    w = reward_weights(r, v, 0.0, rmax)
    assert torch.all(w > 0) and torch.all(w <= 1)
    ret = (r * v).sum(-1)
    order = torch.argsort(ret)
    assert torch.all(torch.diff(w[order]) >= 0)  # monotone in the window's return
    assert w.max() > 0.5 * (ret.max() / (lin.H * rmax))  # the paper's ratio, not rescaled
    torch.testing.assert_close(w[ret > 0], torch.clamp(ret[ret > 0] / (lin.H * rmax), min=1e-3))
    # negative rewards: shifted by r_min, still in (0, 1] and ordered
    neg = reward_weights(r - 2.0, v, -2.0, rmax - 2.0)
    assert torch.all(neg > 0) and torch.all(neg <= 1)
    assert torch.all(torch.diff(neg[order]) >= -1e-7)
    with pytest.raises(ValueError, match="r_max"):
        reward_weights(r, v, 0.0, 0.0)
