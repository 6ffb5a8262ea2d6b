"""Committed-prefix inpainting (real-time chunking) in the torch reference and the ONNX graphs.

For every method, fused and step graph: the engine holds the committed actions of rows
t < n_prefix exactly, agrees with the torch reference to 1e-4 with a prefix (warm start),
n_prefix = 0 equals the plain sampler bit for bit, and the free rows react to the prefix.
An engine exported before the prefix inputs existed still loads and plans, says it cannot
inpaint, and refuses a prefix with an error that says what to do.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from planner_runtime.backends import load_engine  # noqa: E402
from planner_runtime.engine import EngineError  # noqa: E402

from .conftest import A, H, S  # noqa: E402

METHODS = ("mpdiffuser", "planner", "dadp_f", "dadp_i", "dmemm")
TOL = 1e-4


def committed(seed: int = 5, B: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(B, H, A)).astype(np.float32)


def reference(sampler, inp: dict, prefix: np.ndarray, n: int, cfg_w: float = 2.0) -> np.ndarray:
    from export.sampling.base import FusedSampler

    args = [torch.as_tensor(inp[k]) for k in ("x0", "cond", "prev_plan", "noise", "levels")]
    with torch.no_grad():
        plan, _, _ = FusedSampler(sampler)(*args, torch.tensor([cfg_w]), torch.as_tensor(prefix),
                                           torch.tensor([n], dtype=torch.int64))
    return plan.numpy()


@pytest.mark.parametrize("graph", ["fused", "step"])
@pytest.mark.parametrize("method", METHODS)
def test_prefix_held_and_parity(engines, plan_inputs_fn, method, graph):
    path, sampler = engines.get(method, graph)
    eng = load_engine(path, threads=1)
    assert eng.inpaints
    inp = plan_inputs_fn(1, cold=False)
    pre = committed()
    plain = eng.plan(**inp, cfg_w=2.0).plan
    for n in (1, 3):
        out = eng.plan(**inp, cfg_w=2.0, prefix=pre[0], n_prefix=n).plan
        # the committed rows are exactly the committed actions (the states are free)
        assert np.array_equal(out[0, :n, S:], pre[0, :n])
        assert np.abs(out[0, n:, S:] - pre[0, n:]).min() > 0  # rows past n_prefix ignore prefix
        if graph == "fused":
            ref = reference(sampler, inp, pre, n)
            assert np.abs(out - ref).max() <= TOL, (method, n)
        # holding other actions changes the free part of the plan (the graph uses them)
        assert np.abs(out[0, n:] - plain[0, n:]).max() > 1e-4
    # n_prefix = 0 is the plain sampler, whatever the prefix holds
    zero = eng.plan(**inp, cfg_w=2.0, prefix=pre[0], n_prefix=0).plan
    assert np.array_equal(zero, plain)


@pytest.mark.parametrize("method", ["mpdiffuser", "dadp_f"])
def test_step_and_fused_agree_with_prefix(engines, plan_inputs_fn, method):
    fused = load_engine(engines.get(method, "fused")[0], threads=1)
    step = load_engine(engines.get(method, "step")[0], threads=1)
    inp = plan_inputs_fn(1, cold=False)
    pre = committed(seed=9)
    a = fused.plan(**inp, prefix=pre[0], n_prefix=2).plan
    b = step.plan(**inp, prefix=pre[0], n_prefix=2).plan
    assert np.abs(a - b).max() <= TOL


def test_torch_reference_without_prefix_is_unchanged(plan_inputs_fn):
    """The reference sampler called without the prefix (training-time evaluation) equals
    n_prefix = 0."""
    from export.sampling.base import FusedSampler

    from .conftest import make_sampler

    s = make_sampler("mpdiffuser")
    inp = plan_inputs_fn(1)
    args = [torch.as_tensor(inp[k]) for k in ("x0", "cond", "prev_plan", "noise", "levels")]
    with torch.no_grad():
        a = FusedSampler(s)(*args, torch.tensor([2.0]))[0]
        b = FusedSampler(s)(*args, torch.tensor([2.0]), torch.as_tensor(committed()),
                            torch.tensor([0], dtype=torch.int64))[0]
    assert torch.equal(a, b)


def test_bad_prefix_is_refused(engines, plan_inputs_fn):
    eng = load_engine(engines.get("planner", "fused")[0], threads=1)
    inp = plan_inputs_fn(1)
    with pytest.raises(ValueError, match="n_prefix must be in"):
        eng.plan(**inp, prefix=committed()[0], n_prefix=H + 1)
    with pytest.raises(ValueError, match="at least n_prefix"):
        eng.plan(**inp, prefix=committed()[0, :2], n_prefix=3)
    bad = committed()[0]
    bad[1, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        eng.plan(**inp, prefix=bad, n_prefix=2)


def _strip_prefix_inputs(path, out):
    """An engine as exported before the prefix inputs existed: the two inputs become
    constants (zeros, n_prefix 0) and the manifest lists the old inputs."""
    import onnx
    from onnx import helper, numpy_helper

    from planner_runtime.engine import FUSED_INPUTS_V1
    from planner_runtime.engine_file import attach_manifest, load_onnx

    model, manifest = load_onnx(path)
    keep = [i for i in model.graph.input if i.name not in ("prefix", "n_prefix")]
    del model.graph.input[:]
    model.graph.input.extend(keep)
    model.graph.initializer.extend([
        numpy_helper.from_array(np.zeros((1, H, A), np.float32), "prefix"),
        numpy_helper.from_array(np.zeros(1, np.int64), "n_prefix")])
    old = manifest.to_dict()
    old["graph"] = {**old["graph"], "inputs": list(FUSED_INPUTS_V1)}
    attach_manifest(model, old)
    onnx.checker.check_model(model)
    onnx.save_model(model, out)
    del helper


def test_engine_without_prefix_inputs_loads_and_refuses_a_prefix(engines, plan_inputs_fn, tmp_path):
    path, _ = engines.get("planner", "fused")
    old = tmp_path / "old.onnx"
    _strip_prefix_inputs(path, old)
    new = load_engine(path, threads=1)
    eng = load_engine(old, threads=1)
    assert not eng.inpaints and new.inpaints
    inp = plan_inputs_fn(1)
    assert np.array_equal(eng.plan(**inp).plan, new.plan(**inp).plan)
    with pytest.raises(EngineError, match="re-export"):
        eng.plan(**inp, prefix=committed()[0], n_prefix=2)
    with pytest.raises(EngineError, match="re-export"):
        eng.plan_trusted(inp["x0"], inp["cond"], inp["prev_plan"], inp["noise"], inp["levels"], 1.0,
                         committed()[0], 2)


# ---- committed prefix by forecasting (a forecaster attached) ---------------------------

def forecasting_sampler(method: str = "mpdiffuser", states=None):
    from export.models.forecaster import ForecasterNet

    from .conftest import make_sampler

    s = make_sampler(method)
    torch.manual_seed(7)
    s.set_forecaster(ForecasterNet(S, A, [0.3] * S, hidden=(16,)).eval(), states)
    for p in s.parameters():
        p.requires_grad_(False)
    return s


@pytest.fixture(scope="module")
def forecast_engines(tmp_path_factory):
    from export.onnx_export import export_engine, generic_meta

    from .conftest import WARM

    root = tmp_path_factory.mktemp("forecast")
    out = {}
    s = forecasting_sampler(states=[0, 1, 2])
    for g in ("fused", "step"):
        export_engine(s, root / f"{g}.onnx", graph=g, meta=generic_meta(S, A, 2, warm_level=WARM, control_dt=0.1))
        out[g] = root / f"{g}.onnx"
    return s, out


@pytest.mark.parametrize("graph", ["fused", "step"])
def test_forecast_engine_holds_the_prefix_and_matches_torch(forecast_engines, plan_inputs_fn, graph):
    s, paths = forecast_engines
    eng = load_engine(paths[graph], threads=1)
    assert eng.manifest.method.knobs["prefix"] == "forecast"
    assert eng.manifest.method.knobs["forecast_states"] == (0, 1, 2)
    inp = plan_inputs_fn(1)
    pre = committed(11)
    plain = eng.plan(**inp, cfg_w=2.0).plan
    for n in (1, 3):
        out = eng.plan(**inp, cfg_w=2.0, prefix=pre[0], n_prefix=n).plan
        assert np.array_equal(out[0, :n, S:], pre[0, :n])
        if graph == "fused":
            assert np.abs(out - reference(s, inp, pre, n)).max() <= TOL
        assert np.abs(out[0, n:] - plain[0, n:]).max() > 1e-4
    assert np.array_equal(eng.plan(**inp, cfg_w=2.0, prefix=pre[0], n_prefix=0).plan, plain)


def test_forecast_plans_from_the_forecast_state_and_shifts_the_plan(plan_inputs_fn):
    """The rows after the prefix are exactly the plan the method samples from x_0 with the
    forecast dimensions replaced by the forecaster's rollout, warm-started from the previous
    plan shifted by the prefix; the committed rows carry the rollout's states."""
    s = forecasting_sampler(states=[0, 1, 2])
    inp = plan_inputs_fn(1)
    pre, n = committed(12), 2
    T = {k: torch.as_tensor(v) for k, v in inp.items()}
    w = torch.tensor([2.0])
    with torch.no_grad():
        got = s(T["x0"], T["cond"], T["prev_plan"], T["noise"], T["levels"], w, torch.as_tensor(pre),
                torch.tensor([n]))[0]
        x = s.norm_x0(T["x0"])
        un = (torch.as_tensor(pre) - s.norm_traj.shift[S:]) / s.norm_traj.scale[S:]
        states = []
        for t in range(n):
            x = s.forecaster(x, un[:, t])
            states.append(x)
        x0f = s.norm_x0(T["x0"]).clone()
        x0f[:, :3] = x[:, :3]
        x0_raw = s.norm_x0.inverse(x0f)
        prev = torch.cat([T["prev_plan"][:, n:], T["prev_plan"][:, -1:].expand(1, n, S + A)], 1)
        inner = s(x0_raw, T["cond"], prev, T["noise"], T["levels"], w)[0]
        xs = torch.stack(states, 1) * s.norm_traj.scale[:S] + s.norm_traj.shift[:S]
    assert torch.allclose(got[:, n:], inner[:, : H - n], atol=1e-5)
    assert torch.allclose(got[:, :n, :S], xs, atol=1e-5)
    assert torch.equal(got[:, :n, S:], torch.as_tensor(pre)[:, :n])


def test_forecast_states_by_name_and_refusals():
    from export.sampling.mpdiffuser import attach_forecaster

    from .conftest import make_sampler

    Cks = dict

    s = make_sampler("planner")
    fc = {"model_class": "ForecasterNet", "model_config": {"S": S, "A": A, "step_scale": [1.0] * S, "hidden": [8]},
          "dataset": {"state_names": ["q_a", "q_b", "v_a", "v_b", "w", "g"]}}
    from export.models.forecaster import ForecasterNet

    fc["ema"] = ForecasterNet(S, A, [1.0] * S, hidden=(8,)).state_dict()
    fc["model"] = fc["ema"]
    attach_forecaster(s, Cks(forecaster=fc), "q_,w")
    assert s.forecast_states == [0, 1, 4] and s.knobs()["prefix"] == "forecast"
    s2 = make_sampler("planner")
    attach_forecaster(s2, Cks(forecaster=fc), "none")
    assert s2.forecaster is None and s2.knobs()["prefix"] == "inpaint"
    with pytest.raises(ValueError, match="matches no state"):
        attach_forecaster(make_sampler("planner"), Cks(forecaster=fc), "zz_")


def test_forecast_moves_the_history_condition_to_the_forecast_time():
    """With history blocks in the condition (built at observation time), a forecast plan is
    conditioned at the forecast's time: the previous action is the last committed one, the
    previous state the forecast one tick before (x_0 itself after one committed action) in the
    forecast dimensions and the measured one elsewhere; the command and n_prefix = 0 untouched.
    In the exported graph too."""
    from export.data import Normalizer, Normalizers
    from export.models.forecaster import ForecasterNet
    from export.models.unet import TemporalUnet
    from export.onnx_export import export_engine, generic_meta
    from export.sampling.mpdiffuser import PlannerOnlySampler

    from .conftest import WARM

    Cx = 1 + S + A  # [command, prev_state, prev_action]
    rng = np.random.default_rng(3)
    norms = Normalizers(Normalizer.fit(rng.normal(size=(64, S + A)), "std"),
                        Normalizer.fit(rng.normal(size=(64, Cx)), "std"))
    seen = []

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = TemporalUnet(H, S + A, S + A, S, Cx, dim=16, mults=(1, 2))

        def forward(self, tau, k, x0, y, y_drop):
            seen.append(y[:1].detach().clone())
            return self.net(tau, k, x0, y, y_drop)

    torch.manual_seed(0)
    s = PlannerOnlySampler(Net().eval(), norms=norms, S=S, A=A, C=Cx, H=H, num_levels=10, clip=1.0)
    s.set_forecaster(ForecasterNet(S, A, [0.3] * S, hidden=(16,)).eval(), [0, 1, 2])
    s.set_history(["prev_state", "prev_action"])
    assert s.history == {"prev_state": 1, "prev_action": 1 + S}
    g = torch.Generator().manual_seed(4)
    x0, cond = torch.randn(1, S, generator=g), torch.randn(1, Cx, generator=g)
    prev, noise = torch.randn(1, H, S + A, generator=g), torch.randn(1, H, S + A, generator=g)
    levels, w = torch.tensor([WARM, 2, 1, 0]), torch.tensor([1.5])
    pre = torch.as_tensor(committed(13))
    for n in (0, 1, 3):
        seen.clear()
        with torch.no_grad():
            plan = s(x0, cond, prev, noise, levels, w, pre, torch.tensor([n]))[0]
        got = s.norm_cond.inverse(seen[-1])[0]
        want = cond[0].clone()
        if n > 0:
            want[1 + S:] = pre[0, n - 1]
            want[1:4] = x0[0, :3] if n == 1 else plan[0, n - 2, :3]
        assert torch.allclose(got, want, atol=1e-5), (n, got, want)

    root = Path(tempfile.mkdtemp())
    for p in s.parameters():
        p.requires_grad_(False)
    export_engine(s, root / "h.onnx", graph="fused", meta=generic_meta(S, A, Cx, warm_level=WARM, control_dt=0.1))
    eng = load_engine(root / "h.onnx", threads=1)
    inp = {"x0": x0.numpy(), "cond": cond.numpy(), "prev_plan": prev.numpy(), "noise": noise.numpy(),
           "levels": levels.numpy()}
    with torch.no_grad():
        ref = s(x0, cond, prev, noise, levels, w, pre, torch.tensor([3]))[0].numpy()
    out = eng.plan(**inp, cfg_w=1.5, prefix=pre[0].numpy(), n_prefix=3).plan
    assert np.abs(out - ref).max() <= TOL

    with pytest.raises(ValueError, match="unknown condition extras"):
        s.set_history(["prev_stat"])
    with pytest.raises(ValueError, match="wider"):
        s.set_history(["prev_state", "prev_action", "prev_action"])


def test_attach_forecaster_reads_the_history_from_the_planner_checkpoint():
    """An exported forecasting engine learns where the history blocks sit from the planner
    checkpoint's cond_extras (none: no history to move)."""
    from export.models.forecaster import ForecasterNet
    from export.sampling.mpdiffuser import attach_forecaster

    from .conftest import C, make_sampler

    net = ForecasterNet(S, A, [1.0] * S, hidden=(8,))
    fc = {"model_class": "ForecasterNet", "model_config": {"S": S, "A": A, "step_scale": [1.0] * S, "hidden": [8]},
          "ema": net.state_dict(), "model": net.state_dict()}
    s = make_sampler("planner")
    s.C = C + A + 1  # a planner conditioned on [command, return, prev_action]
    attach_forecaster(s, {"planner": {"config": {"cond_extras": ["return", "prev_action"]}}, "forecaster": fc}, "all")
    assert s.history == {"prev_action": C + 1}
    s2 = make_sampler("planner")
    attach_forecaster(s2, {"planner": {"config": {"cond_extras": []}}, "forecaster": fc}, "all")
    assert s2.history == {} and s2.forecaster is not None
