"""`planner-runtime export`, `info` and `build-engine` through the real CLI entry point."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")

from planner_runtime.backends import load_engine  # noqa: E402
from planner_runtime.cli import main  # noqa: E402
from planner_runtime.manifest import Dims  # noqa: E402


def test_export_cli_writes_go2_engine(go2_step_engine):
    from robot.controller import go2_profile

    eng = load_engine(go2_step_engine, profile=go2_profile())
    m = eng.manifest
    assert m.robot.name == "go2" and m.dims == Dims(S=30, A=12, C=3, H=16, B=1)
    assert m.action.scale == (0.25,) * 12 and m.control.dt == 0.02 and m.control.chunk_size == 4
    # the test checkpoints recorded no dt: the Go2 profile's, and the manifest says so
    assert m.control.dt_source is not None and m.control.dt_source.startswith("go2 profile") and m.overrides == {}
    # the test data recorded no semantics: the trot expert's, and the manifest says so
    assert (m.action.kp, m.action.kd) == (30.0, 0.7) and "recorded none" in (m.action.source or "")
    assert m.diffusion.warm_levels == (7, 6, 5, 4, 3, 2, 1, 0)
    assert m.provenance["dataset_sha256"] == "ab" * 32
    assert set(m.provenance["checkpoints"]) == {"planner", "dynamics"}
    assert m.normalizer is not None and m.normalizer["kind"] == "minmax" and m.diffusion.clip == (-1.0, 1.0)
    rng = np.random.default_rng(0)
    out = eng.plan(rng.normal(size=(1, 30)), np.array([[0.5, 0, 0]]), np.zeros((1, 16, 42)),
                   rng.normal(size=(1, 16, 42)), eng.default_levels(warm=False))
    assert out.plan.shape == (1, 16, 42) and np.all(np.isfinite(out.plan))


def test_info_json_and_profile_check(go2_step_engine, tmp_path, capsys):
    assert main(["info", str(go2_step_engine), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["checksums_ok"] is True
    assert rep["compatibility"] == {"profile": "go2", "source": "stored in the engine", "ok": True,
                                    "message": "compatible"}
    other = dict(rep["manifest"]["robot"]["profile"], action_dim=10, name="go2")
    prof = tmp_path / "p.json"
    prof.write_text(json.dumps(other))
    assert main(["info", str(go2_step_engine), "--profile", str(prof)]) == 3
    assert "A (action_dim): engine has 12, profile 'go2' has 10" in capsys.readouterr().out


def test_info_refuses_corrupt(go2_step_engine, tmp_path, capsys):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(go2_step_engine.read_bytes()[:1000])
    assert main(["info", str(bad), "--json"]) == 2
    rep = json.loads(capsys.readouterr().out)
    assert rep["checksums_ok"] is False and "error" in rep


def test_export_cli_bad_input(tmp_path, capsys):
    assert main(["export", "--checkpoints", str(tmp_path), "--method", "mpdiffuser",
                 "-o", str(tmp_path / "x.onnx")]) == 2
    assert "no *.pt checkpoints" in capsys.readouterr().err


def test_build_engine_without_tensorrt(go2_step_engine, tmp_path, capsys):
    try:
        import tensorrt  # noqa: F401
        pytest.skip("tensorrt present: see test_tensorrt.py")
    except ImportError:
        pass
    assert main(["build-engine", str(go2_step_engine), "-o", str(tmp_path / "x.plan")]) == 2
    assert "TensorRT Python package is not installed" in capsys.readouterr().err
    assert not (tmp_path / "x.plan").exists()


def test_export_cli_other_method_with_knobs(tmp_path, capsys, write_checkpoints_fn):
    """A guided method through the sampler registry, knobs from the command line."""
    from export.models.guidance import InverseDynamicsVAE

    inv = InverseDynamicsVAE(5, 2, latent=4, hidden=(8,))
    d = write_checkpoints_fn(tmp_path, 5, 2, 1, 8, extra={"inverse": inv})
    out = tmp_path / "dadp.onnx"
    assert main(["export", "--checkpoints", str(d), "--method", "dadp_i", "--graph", "step",
                 "--knob", "lambda=0.5", "--knob", "guide_steps=2", "-o", str(out), "--json"]) == 2
    assert "recorded no control dt" in capsys.readouterr().err  # and no Go2 default for it
    assert main(["export", "--checkpoints", str(d), "--method", "dadp_i", "--graph", "step", "--dt", "0.05",
                 "--knob", "lambda=0.5", "--knob", "guide_steps=2", "-o", str(out), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    m = rep["engines"][str(out)]
    assert m["method"]["name"] == "dadp_i" and m["robot"]["name"] == "generic"
    assert m["method"]["knobs"]["lambda"] == 0.5 and m["method"]["knobs"]["guide_steps"] == 2
    assert m["control"]["dt"] == 0.05 and m["overrides"]["control.dt"] == {"value": 0.05, "data": None,
                                                                          "by": "--dt 0.05"}
    # exactly the components dadp_i uses: its planner and inverse model, not the dynamics
    assert set(m["provenance"]["checkpoints"]) == {"planner", "inverse"}
    assert m["provenance"]["ignored"] == ["dynamics.pt"]
    eng = load_engine(out)
    assert eng.plan(np.zeros((1, 5)), np.zeros((1, 1)), np.zeros((1, 8, 7)), np.ones((1, 8, 7)),
                    np.array([4, 2, 0])).plan.shape == (1, 8, 7)
