"""The torch reference samplers: x_0 conditioning, CFG batching, determinism, warm start,
fused == step loop, ranking (Alg. 2), and the U-Net's conditioning paths."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from export.data import Normalizer, Normalizers
from export.models.unet import TemporalUnet, count_params
from export.sampling.base import StepSampler
from export.sampling.common import Schedule, cfg_eps, q_sample, shift_plan
from export.sampling.mpdiffuser import (
    BudgetRanker,
    MPDiffuserSampler,
    PlannerOnlySampler,
    RankerNet,
)

S, A, C, H, K = 4, 2, 2, 8, 10
D = S + A


def norms(kind="minmax"):
    rng = np.random.default_rng(0)
    return Normalizers(Normalizer.fit(rng.normal(1, 2, (200, D)), kind),
                       Normalizer.fit(rng.normal(0, 1, (200, C)), "std"))


def nets(seed=0):
    torch.manual_seed(seed)
    pl = TemporalUnet(H, D, D, S, C, dim=16, mults=(1, 2))
    dy = TemporalUnet(H, D, S, S, C, dim=16, mults=(1, 2))
    return pl.eval(), dy.eval()


def inputs(B=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, S, generator=g), torch.randn(B, C, generator=g),
            torch.randn(B, H, D, generator=g), torch.randn(B, H, D, generator=g))


class Recorder(torch.nn.Module):
    """Wraps a denoiser and records every call's inputs."""

    def __init__(self, net):
        super().__init__()
        self.net, self.calls = net, []

    def forward(self, tau, k, x0, y, y_drop):
        self.calls.append((tau.clone(), k.clone(), x0.clone(), y.clone(), y_drop.clone()))
        return self.net(tau, k, x0, y, y_drop)


def test_unet_shapes_null_token_and_x0_path():
    pl, dy = nets()
    tau, k = torch.randn(2, H, D), torch.tensor([3.0, 7.0])
    x0, y = torch.randn(2, S), torch.randn(2, C)
    assert pl(tau, k, x0, y, torch.zeros(2)).shape == (2, H, D)
    assert dy(tau, k, x0, y, torch.zeros(2)).shape == (2, H, S)
    with torch.no_grad():
        pl.y_null.normal_()
        drop = torch.ones(2)
        # dropped y: output does not depend on y, still depends on x0
        a = pl(tau, k, x0, y, drop)
        torch.testing.assert_close(a, pl(tau, k, x0, y + 5.0, drop))
        assert (a - pl(tau, k, x0 + 1.0, y, drop)).abs().max() > 1e-4
        assert (pl(tau, k, x0, y, torch.zeros(2)) - pl(tau, k, x0, y + 5.0, torch.zeros(2))).abs().max() > 1e-4
    assert 10_000 < count_params(pl) < 1_000_000
    with pytest.raises(ValueError, match="divisible"):
        TemporalUnet(10, D, D, S, C, dim=16, mults=(1, 2, 4))


def test_cfg_is_one_batched_call_keeping_x0():
    pl, _ = nets()
    rec = Recorder(pl)
    tau, x0, y = torch.randn(3, H, D), torch.randn(3, S), torch.randn(3, C)
    with torch.no_grad():
        e = cfg_eps(rec, tau, torch.tensor([4]), x0, y, torch.tensor([2.0]))
        ec = pl(tau, torch.full((3,), 4.0), x0, y, torch.zeros(3))
        eu = pl(tau, torch.full((3,), 4.0), x0, y, torch.ones(3))
    assert len(rec.calls) == 1
    t, k, xx, yy, drop = rec.calls[0]
    assert t.shape[0] == 6
    torch.testing.assert_close(xx, torch.cat([x0, x0]))  # x0 kept in the unconditional half
    torch.testing.assert_close(drop, torch.tensor([0.0, 0, 0, 1, 1, 1]))  # only y dropped
    torch.testing.assert_close(e, eu + 2.0 * (ec - eu), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cls", ["mpdiffuser", "planner"])
def test_deterministic_x0_conditioned_and_fused_equals_step(cls):
    pl, dy = nets()
    s = (MPDiffuserSampler(pl, dy, norms(), S, A, C, H, K) if cls == "mpdiffuser"
         else PlannerOnlySampler(pl, norms(), S, A, C, H, K)).eval()
    x0, y, prev, z = inputs()
    lv, w = torch.arange(7, -1, -1), torch.tensor([2.0])
    with torch.no_grad():
        p1, sc, best = s(x0, y, prev, z, lv, w)
        p2, _, _ = s(x0, y, prev, z, lv, w)
        p3, _, _ = s(x0 + 0.5, y, prev, z, lv, w)
        p4, _, _ = s(x0, y, prev, torch.randn(z.shape), lv, w)
    assert p1.shape == (3, H, D) and sc.shape == (3,) and best.dtype == torch.int64
    torch.testing.assert_close(p1, p2, atol=0, rtol=0)  # same noise -> same plan
    assert (p1 - p3).abs().max() > 1e-4  # x0 conditions the plan
    assert (p1 - p4).abs().max() > 1e-4
    assert torch.all(sc == 0) and int(best) == 0  # N = 1: no ranker
    step = StepSampler(s)
    tau = torch.full((3, H, D), float("nan"))  # ignored at start = 1 (Where, no NaN leak)
    with torch.no_grad():
        for i in range(7):
            tau, plan = step(x0, y, prev, z, tau, lv[i:i + 1], lv[i + 1:i + 2],
                             torch.tensor([int(i == 0)]), w)
    torch.testing.assert_close(plan, p1, atol=1e-5, rtol=1e-5)


def test_graph_shift_is_the_runtime_shift():
    # one warm-start rule on both sides: the graph's torch shift (int or tensor steps) and the
    # runtime's numpy shift give the same rows for every step count, and refuse the same ones
    from planner_runtime.async_planner import shift_plan as np_shift_plan

    plan = np.random.default_rng(3).standard_normal((2, 6, 3)).astype(np.float32)
    for s in range(7):
        want = np_shift_plan(plan, s)
        for steps in (s, torch.tensor([s])):
            np.testing.assert_array_equal(shift_plan(torch.from_numpy(plan), steps).numpy(), want)
    for bad in (-1, 7):
        with pytest.raises(ValueError, match="shift steps"):
            shift_plan(torch.from_numpy(plan), bad)
        with pytest.raises(ValueError, match="shift steps"):
            np_shift_plan(plan, bad)


def test_warm_start_shifts_and_renoises():
    plan = torch.arange(2 * 5 * 3, dtype=torch.float32).reshape(2, 5, 3)
    sh = shift_plan(plan, 2)
    torch.testing.assert_close(sh[:, :3], plan[:, 2:])
    torch.testing.assert_close(sh[:, 3:], plan[:, 4:5].expand(2, 2, 3))  # pad: last row
    torch.testing.assert_close(shift_plan(plan, 0), plan)
    with pytest.raises(ValueError, match="shift steps"):
        shift_plan(plan, 6)
    # the sampler's first iterate is q_sample(normalize(prev), noise, k_w)
    pl, dy = nets()
    s = MPDiffuserSampler(pl, dy, norms(), S, A, C, H, K).eval()
    seen = []
    orig = s.denoise_step

    def spy(tau, level, next_level, x0n, yn, w):
        seen.append((tau.clone(), int(level), int(next_level)))
        return orig(tau, level, next_level, x0n, yn, w)

    s.denoise_step = spy
    x0, y, prev, z = inputs()
    with torch.no_grad():
        s(x0, y, prev, z, torch.arange(7, -1, -1), torch.tensor([1.0]))
    sched = Schedule(K)
    want = q_sample(sched, s.norm_traj(prev), z, torch.tensor([7]))
    torch.testing.assert_close(seen[0][0], want)
    assert [(a, b) for _, a, b in seen] == [(k, k - 1) for k in range(7, 0, -1)]
    ab = float(sched.alpha_bar[7])
    expect = np.sqrt(ab) * ((prev - s.norm_traj.shift) / s.norm_traj.scale) + np.sqrt(1 - ab) * z
    torch.testing.assert_close(seen[0][0], expect, atol=1e-5, rtol=1e-5)


def test_alternation_calls_dynamics_then_planner_on_updated_states():
    pl, dy = nets()
    rp, rd = Recorder(pl), Recorder(dy)
    s = MPDiffuserSampler(rp, rd, norms(), S, A, C, H, K).eval()
    x0, y, prev, z = inputs(B=2)
    with torch.no_grad():
        s(x0, y, prev, z, torch.tensor([3, 2, 0]), torch.tensor([2.0]))
    assert len(rd.calls) == 2 and len(rp.calls) == 2  # one CFG-batched call each per step
    tau_d, k_d = rd.calls[0][0], rd.calls[0][1]
    tau_p, k_p = rp.calls[0][0], rp.calls[0][1]
    assert torch.all(k_d == 3) and torch.all(k_p == 3)  # both at the step's level k
    torch.testing.assert_close(tau_p[..., S:], tau_d[..., S:])  # actions untouched by dynamics
    assert (tau_p[..., :S] - tau_d[..., :S]).abs().max() > 1e-5  # states updated first


def test_ranker_picks_best_feasible_else_least_cost():
    n = norms("identity")
    net = RankerNet(S, A, C, hidden=(8,))

    class Fixed(torch.nn.Module):  # reward = first state dim, cost = second
        def forward(self, xn, un, yn):
            return xn[..., 0], xn[..., 1]

    r = BudgetRanker(net, n, S, H, gamma=1.0, budget=1.0)
    r.net = Fixed()
    x0 = torch.zeros(3, S)
    plan = torch.zeros(3, H, D)
    plan[0, :, 0], plan[0, :, 1] = 5.0, 1.0  # high return, cost (H-1)*1 > budget
    plan[1, :, 0], plan[1, :, 1] = 2.0, 0.0  # feasible
    plan[2, :, 0], plan[2, :, 1] = 1.0, 0.0  # feasible, lower return
    J, best = r(plan, x0, torch.zeros(3, C))
    assert int(best) == 1
    torch.testing.assert_close(J, torch.tensor([5.0 * (H - 1), 2.0 * (H - 1), 1.0 * (H - 1)]))
    r.set_budget(-1.0)  # nothing feasible -> least cost (candidate 1 or 2 tie at 0; argmin first)
    _, best = r(plan, x0, torch.zeros(3, C))
    assert int(best) == 1
    plan[1, :, 1] = 0.5
    _, best = r(plan, x0, torch.zeros(3, C))
    assert int(best) == 2
