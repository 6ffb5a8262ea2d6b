"""Closed-form MLP / guidance-model gradients equal torch.autograd (the engine cannot use autograd)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from export.models.guidance import (
    ForwardDynamics,
    GaussianTransition,
    InverseDynamicsVAE,
    ReturnModel,
    RewardModel,
)
from export.models.mlp_grad import ACTIVATIONS, GradMLP, mlp_forward_vjp

torch.set_num_threads(1)


def _autograd_vjp(fn, x, v):
    x = x.clone().requires_grad_(True)
    y = fn(x)
    (g,) = torch.autograd.grad(y, x, grad_outputs=v)
    return y.detach(), g


@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
def test_gradmlp_vjp_matches_autograd(act):
    torch.manual_seed(0)
    m = GradMLP(7, 3, (16, 16), act).double()
    x = torch.randn(4, 5, 7, dtype=torch.float64)
    v = torch.randn(4, 5, 3, dtype=torch.float64)
    y, g = m.forward_vjp(x, v)
    y_ref, g_ref = _autograd_vjp(m, x, v)
    assert torch.allclose(y, y_ref, atol=1e-10)
    assert torch.allclose(g, g_ref, atol=1e-5)
    # float32 too (what the engine runs)
    m32 = m.float()
    y, g = m32.forward_vjp(x.float(), v.float())
    _, g_ref = _autograd_vjp(m32, x.float(), v.float())
    assert torch.allclose(g, g_ref, atol=1e-5, rtol=1e-4)


def test_layer_stack_vjp_tanh_gelu_and_refusals():
    torch.manual_seed(0)
    layers = [nn.Linear(4, 8), nn.GELU(approximate="tanh"), nn.Linear(8, 8), nn.ELU(), nn.Linear(8, 2)]
    x, v = torch.randn(3, 4), torch.randn(3, 2)
    _, g = mlp_forward_vjp(layers, x, v)
    _, g_ref = _autograd_vjp(nn.Sequential(*layers), x, v)
    assert torch.allclose(g, g_ref, atol=1e-5)
    with pytest.raises(ValueError, match="LayerNorm"):
        mlp_forward_vjp([nn.Linear(4, 4), nn.LayerNorm(4)], x, torch.randn(3, 4))
    with pytest.raises(ValueError, match="cotangent"):
        GradMLP(4, 2, (8,)).forward_vjp(x, torch.randn(3, 5))


def _plan(B=3, H=5, S=4, A=2):
    torch.manual_seed(1)
    return torch.randn(B, S, dtype=torch.float64), torch.randn(B, H, S + A, dtype=torch.float64)


@pytest.mark.parametrize("name", ["forward", "inverse", "return", "reward", "transition"])
def test_guidance_model_gradients_match_autograd(name):
    S, A = 4, 2
    torch.manual_seed(2)
    model, fn = {
        "forward": (ForwardDynamics(S, A, (16, 16)), "energy_grad"),
        "inverse": (InverseDynamicsVAE(S, A, 8, (16, 16)), "energy_grad"),
        "return": (ReturnModel(S, A, (16, 16), gamma=0.9), "value_grad"),
        "reward": (RewardModel(S, A, (16, 16)), "value_grad"),
        "transition": (GaussianTransition(S, A, (16, 16), ensemble=2, min_logstd=-1.0,
                                          max_logstd=0.3), "logprob_grad"),
    }[name]
    model = model.double()
    x0, tau = _plan(S=S, A=A)
    val, g = getattr(model, fn)(x0, tau)
    t = tau.clone().requires_grad_(True)
    val_ref, _ = getattr(model, fn)(x0, t)
    # reference value from the plain forward path, gradient from autograd on it
    if name == "forward":
        xp = torch.cat([x0[:, None], t[:, :-1, :S]], 1)
        ref = ((t[..., :S] - model(xp, t[..., S:])) ** 2).sum((1, 2))
    elif name == "inverse":
        xp = torch.cat([x0[:, None], t[:, :-1, :S]], 1)
        ref = ((t[..., S:] - model(xp, t[..., :S])) ** 2).sum((1, 2))
    elif name in ("return", "reward"):
        ref = model.plan_value(x0, t)
    else:
        xp = torch.cat([x0[:, None], t[:, :-1, :S]], 1)
        ref = model.log_prob(xp, t[..., S:], t[..., :S]).sum(1)
    assert torch.allclose(val, ref.detach(), atol=1e-8)
    (g_ref,) = torch.autograd.grad(ref.sum(), t)
    assert torch.allclose(g, g_ref, atol=1e-5)


def test_guided_step_is_the_ddim_eps_correction():
    """One variance-scaled guide step: eps <- eps - sqrt(1 - ab_k) g; capped and masked."""
    from export.sampling.common import Schedule
    from export.sampling.guided import guided_ddim_step

    sched = Schedule(10)
    torch.manual_seed(0)
    tau, eps, g = torch.randn(2, 4, 3), torch.randn(2, 4, 3), torch.randn(2, 4, 3)
    x0 = torch.zeros(2, 1)
    for k in (1, 3, 5):
        lv, nx = torch.tensor([k]), torch.tensor([k - 1])
        _, _, eps_g = guided_ddim_step(sched, tau, eps, lv, nx, x0, lambda a, b: g, max_step=None)
        torch.testing.assert_close(eps_g, eps - sched.sqrt_1mab[k] * g)
        _, _, off = guided_ddim_step(sched, tau, eps, lv, nx, x0, lambda a, b: g, stop_level=k)
        torch.testing.assert_close(off, eps)
    # at the top level the x0_hat step (1 - ab)/sqrt(ab) ~ 204 is capped at max_step
    lv, nx = torch.tensor([10]), torch.tensor([9])
    a, s = sched.sqrt_ab[10], sched.sqrt_1mab[10]
    _, _, capped = guided_ddim_step(sched, tau, eps, lv, nx, x0, lambda a_, b_: g, max_step=1.0)
    torch.testing.assert_close(capped, eps - (a / s) * g)
