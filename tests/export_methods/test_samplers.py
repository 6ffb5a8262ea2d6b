"""DADP-F / DADP-I / DMEMM reference samplers: guidance reduces dynamics error on a system
with known dynamics, determinism, x_0 handling, step/fused agreement, ONNX parity."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from export.sampling.base import FusedSampler, StepSampler
from export.sampling.dadp import DADPFSampler, DADPISampler
from export.sampling.dmemm import DMEMMSampler
from planner_runtime.schedule import ddim_levels

torch.set_num_threads(1)


def _inputs(lin, B=32, seed=1):
    """Raw x0 from held-out windows, zero condition, cold start over all K levels."""
    vb = lin.data.val.batch(np.arange(len(lin.data.val))[:: max(1, len(lin.data.val) // B)][:B])
    x0 = torch.from_numpy(lin.data.norms.traj.slice(0, lin.S).unnormalize(vb["x0"]))
    B = x0.shape[0]
    g = torch.Generator().manual_seed(seed)
    D = lin.S + lin.A
    return dict(x0=x0, cond=torch.zeros(B, lin.C), prev_plan=torch.zeros(B, lin.H, D),
                noise=torch.randn(B, lin.H, D, generator=g),
                levels=torch.from_numpy(ddim_levels(lin.K, lin.K)), cfg_w=torch.tensor([1.0]))


def _dadp(lin, cls, **knobs):
    model = lin.models["forward" if cls is DADPFSampler else "inverse"]
    return cls(lin.models["planner"], model, lin.data.norms, lin.S, lin.A, lin.C, lin.H, lin.K,
               **knobs).eval()


def _plan(sampler, inp):
    with torch.no_grad():
        plan, score, best = sampler(**inp)
    return plan


def _errors(lin, sampler, inp):
    p = _plan(sampler, inp)
    x0 = inp["x0"].numpy()
    return (lin.sys.forward_error(x0, p.numpy()).mean(),
            lin.sys.inverse_error(x0, p.numpy()).mean(),
            float(sampler.dynamics_error(inp["x0"], p).mean().detach()))


def test_dadp_f_guidance_reduces_forward_dynamics_error(lin):
    """Same noise, same planner: with forward-model guidance the plans' true dynamics error
    ||x_{t+1} - f(x_t, u_t)||^2 and the forward model's own energy drop below 0.7x."""
    inp = _inputs(lin)
    f0, _, e0 = _errors(lin, _dadp(lin, DADPFSampler, lam=0.0), inp)
    f1, _, e1 = _errors(lin, _dadp(lin, DADPFSampler, lam=0.25, var_scaling=False), inp)
    assert np.isfinite(f1) and f1 < 0.7 * f0, (f0, f1)
    assert e1 < 0.7 * e0, (e0, e1)
    f2, _, _ = _errors(lin, _dadp(lin, DADPFSampler, lam=0.25), inp)  # variance-scaled form
    assert f2 < f0, (f0, f2)


def test_dadp_i_guidance_reduces_inverse_model_error(lin):
    """With inverse-model guidance the inverse model's error sum ||u_t - g_psi(x_t, x_{t+1})||^2
    drops below 0.7x and the true inverse error ||u_t - B^-1 (x_{t+1} - A x_t)||^2 drops.
    (DADP-I moves actions only: where the planner's states are infeasible, the exact
    inverse action lies outside the action range, so the true error cannot reach 0.)"""
    inp = _inputs(lin)
    _, i0, e0 = _errors(lin, _dadp(lin, DADPISampler, lam=0.0), inp)
    _, i1, e1 = _errors(lin, _dadp(lin, DADPISampler, lam=0.25, var_scaling=False), inp)
    assert np.isfinite(e1) and e1 < 0.7 * e0, (e0, e1)
    assert i1 < i0, (i0, i1)


def test_dadp_return_guidance_raises_predicted_return(lin):
    inp = _inputs(lin)
    J = lin.models["value"]
    s0 = _dadp(lin, DADPFSampler, lam=0.0)
    s1 = _dadp(lin, DADPFSampler, lam=0.0, s_J=0.5, return_model=J, dyn_channels="all")
    with torch.no_grad():
        v0 = J.plan_value(s0.norm_x0(inp["x0"]), s0.norm_traj(_plan(s0, inp))).mean()
        v1 = J.plan_value(s1.norm_x0(inp["x0"]), s1.norm_traj(_plan(s1, inp))).mean()
    assert v1 > v0
    with pytest.raises(ValueError, match="return model"):
        _dadp(lin, DADPFSampler, s_J=1.0)


def test_dmemm_dual_guidance_raises_transition_likelihood(lin):
    inp = _inputs(lin)
    T, R = lin.models["transition"], lin.models["reward"]

    def make(alpha):
        return DMEMMSampler(lin.models["planner"], R, T, lin.data.norms, lin.S, lin.A, lin.C,
                            lin.H, lin.K, alpha=alpha, lam=1.0).eval()

    p0, p1 = _plan(make(0.0), inp), _plan(make(1e-3), inp)  # the paper's alpha
    s = make(0.0)
    with torch.no_grad():
        lp0 = T.logprob_grad(s.norm_x0(inp["x0"]), s.norm_traj(p0))[0].mean()
        lp1 = T.logprob_grad(s.norm_x0(inp["x0"]), s.norm_traj(p1))[0].mean()
    assert lp1 > lp0
    e0 = lin.sys.forward_error(inp["x0"].numpy(), p0.numpy()).mean()
    e1 = lin.sys.forward_error(inp["x0"].numpy(), p1.numpy()).mean()
    assert e1 < e0


def _all_samplers(lin):
    T, R = lin.models["transition"], lin.models["reward"]
    return [
        _dadp(lin, DADPFSampler, lam=0.25, guide_steps=2, s_J=0.1, return_model=lin.models["value"]),
        _dadp(lin, DADPISampler, lam=0.25, stop_level=1),
        DMEMMSampler(lin.models["planner"], R, T, lin.data.norms, lin.S, lin.A, lin.C, lin.H,
                     lin.K, alpha=1e-3).eval(),
    ]


def test_samplers_deterministic_and_use_x0(lin):
    inp = _inputs(lin, B=4)
    for s in _all_samplers(lin):
        a, b = _plan(s, inp), _plan(s, inp)
        assert torch.equal(a, b), s.method
        other = dict(inp, noise=torch.randn_like(inp["noise"]))
        assert not torch.allclose(_plan(s, other), a), s.method
        # x_0 is conditioning and the start of the first transition: moving it moves the plan
        moved = dict(inp, x0=inp["x0"] + 0.5)
        assert not torch.allclose(_plan(s, moved), a), s.method
        # the first transition starts at the observed x_0: the guidance energy of row 0
        # changes with x_0 only through that transition
        x0n, taun = s.norm_x0(inp["x0"]), s.norm_traj(a)
        g = s.guidance(x0n, taun)
        g_moved = s.guidance(x0n + 0.3, taun)
        assert not torch.allclose(g[:, 0], g_moved[:, 0]), s.method
        torch.testing.assert_close(g[:, 2:], g_moved[:, 2:])


def test_step_graph_loop_equals_fused(lin):
    """Looping the step graph over the levels reproduces the fused plan (warm start)."""
    inp = _inputs(lin, B=3)
    inp["prev_plan"] = _plan(_all_samplers(lin)[0], inp)
    inp["levels"] = torch.arange(6, -1, -1)
    for s in _all_samplers(lin):
        fused = _plan(s, inp)
        tau = torch.zeros_like(inp["noise"])
        lv = inp["levels"]
        with torch.no_grad():
            for i in range(lv.shape[0] - 1):
                tau, plan = StepSampler(s)(inp["x0"], inp["cond"], inp["prev_plan"], inp["noise"],
                                           tau, lv[i:i + 1], lv[i + 1:i + 2],
                                           torch.tensor([int(i == 0)]), inp["cfg_w"])
        torch.testing.assert_close(plan, fused, atol=1e-5, rtol=1e-5)


def test_guidance_off_above_stop_level_and_knob_validation(lin):
    """With stop_level >= the first level, DADP equals the unguided sampler."""
    inp = _inputs(lin, B=4)
    inp["levels"] = torch.tensor([3, 2, 0])
    a = _plan(_dadp(lin, DADPFSampler, lam=0.0), inp)
    b = _plan(_dadp(lin, DADPFSampler, lam=1.0, stop_level=3), inp)
    c = _plan(_dadp(lin, DADPFSampler, lam=1.0, stop_level=2), inp)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)
    with pytest.raises(ValueError, match="dyn_channels"):
        _dadp(lin, DADPFSampler, dyn_channels="joints")
    with pytest.raises(ValueError, match="ForwardDynamics"):
        DADPFSampler(lin.models["planner"], lin.models["inverse"], lin.data.norms, lin.S, lin.A,
                     lin.C, lin.H, lin.K)


def test_fused_graph_onnx_matches_torch(lin, tmp_path):
    """DADP-F's fused graph (closed-form guidance inside) exports and ORT matches torch."""
    import onnxruntime as ort

    s = _all_samplers(lin)[0]
    inp = _inputs(lin, B=1)
    inp["levels"] = torch.tensor([3, 1, 0])
    names = ["x0", "cond", "prev_plan", "noise", "levels", "cfg_w"]
    path = tmp_path / "dadp_f.onnx"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(FusedSampler(s), tuple(inp[n] for n in names), str(path),
                          input_names=names, output_names=["plan", "score", "best"],
                          dynamo=False, opset_version=17)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = sess.run(["plan"], {n: inp[n].numpy() for n in names})[0]
    ref = _plan(s, inp).numpy()
    assert np.max(np.abs(out - ref)) <= 1e-4
