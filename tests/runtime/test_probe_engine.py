"""The probe engines (planner_runtime.probe_engine): the documented formulas, bit for bit
through ONNX Runtime, and seeds that give other weights (another engine identity)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from planner_runtime.probe_engine import build_probe_engine, probe_manifest

S, A, C, H, K, N = 3, 2, 2, 5, 10, 4


def _session(path):
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(path))
    meta = json.loads({p.key: p.value for p in model.metadata_props}["planner_runtime.manifest"])
    weights = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]), meta, weights


def _inputs(rng):
    D = S + A
    return {"x0": rng.standard_normal((1, S)).astype(np.float32),
            "cond": rng.standard_normal((1, C)).astype(np.float32),
            "prev_plan": rng.standard_normal((1, H, D)).astype(np.float32),
            "noise": rng.standard_normal((1, H, D)).astype(np.float32),
            "cfg_w": np.array([1.5], np.float32)}


def test_fused_probe_follows_its_formula(tmp_path):
    m = probe_manifest(S, A, C, H, K=K, n_steps=N)
    sess, meta, w = _session(build_probe_engine(tmp_path / "p.onnx", m, prev_gain=0.25, noise_gain=0.5,
                                                weight_gain=0.1, level_gain=2.0))
    assert meta["dims"] == {"S": S, "A": A, "C": C, "H": H, "B": 1} and meta["graph"]["kind"] == "fused"
    feeds = {**_inputs(np.random.default_rng(0)), "levels": np.array(meta["diffusion"]["cold_levels"], np.int64)}
    plan, score, best = sess.run(None, feeds)
    bias = feeds["x0"] @ w["Wx"] + feeds["cond"] @ w["Wc"] + 2.0 * np.float32(max(feeds["levels"]) / K)
    want = 0.25 * feeds["prev_plan"] + 0.5 * 1.5 * feeds["noise"] + bias[:, None]
    np.testing.assert_allclose(plan, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(score, plan.mean((1, 2)), rtol=1e-5)
    assert best.tolist() == [0]
    assert np.all(np.abs(w["Wx"]) < 0.1 * 6)  # weight_gain scales the standard normal draws


def test_step_probe_follows_its_formula_and_seeds_differ(tmp_path):
    m = probe_manifest(S, A, C, H, K=K, n_steps=N)
    sess, meta, w = _session(build_probe_engine(tmp_path / "s.onnx", m, graph="step", seed=1))
    assert meta["graph"]["kind"] == "step" and meta["method"]["name"] == "toy-step"
    rng = np.random.default_rng(1)
    base = {**_inputs(rng), "tau": rng.standard_normal((1, H, S + A)).astype(np.float32),
            "level": np.array([5]), "next_level": np.array([3])}
    for start in (0, 1):
        tau_next, plan = sess.run(None, {**base, "start": np.array([start])})
        it = base["prev_plan"] + base["noise"] if start else base["tau"]
        want = 0.9 * it + (base["x0"] @ w["Wx"])[:, None] + np.float32(3 / K)
        np.testing.assert_allclose(tau_next, want, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(plan, tau_next)
    _, _, w0 = _session(build_probe_engine(tmp_path / "s0.onnx", m, graph="step", seed=0))
    assert not np.array_equal(w0["Wx"], w["Wx"])
    with pytest.raises(ValueError, match="graph"):
        build_probe_engine(tmp_path / "x.onnx", m, graph="loop")
