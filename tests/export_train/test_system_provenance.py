"""The dataset's dt, names and robot travel through training windows and checkpoints into the
exported engine's manifest; each training run has an id that its checkpoints carry."""

from __future__ import annotations

import json

from export.data import make_windows
from export.train.checkpoint import load_checkpoint
from export.train.config import deep_merge
from export.train.registry import resolve_config, train_method
from planner_runtime.config import to_dict
from planner_runtime.dataset import load_dataset

from .conftest import TINY


def _refused_export(data, out, extras, knob, message, capsys):
    """A tiny planner trained on ``data`` (with ``extras`` conditions) whose export with
    ``--knob knob`` exits 2 naming ``message``."""
    from planner_runtime.cli import main

    over = {"steps": 4, "components": ["planner"], **({"cond_extras": extras} if extras else {})}
    train_method("mpdiffuser", resolve_config("mpdiffuser", deep_merge(TINY, over)), data, out, progress=False)
    capsys.readouterr()
    assert main(["export", "--checkpoints", str(out), "--method", "planner", "--knob", knob,
                 "-o", str(out / "x.onnx")]) == 2
    assert message in capsys.readouterr().err


def test_window_data_provenance_has_dt_names_and_extras(linear_data):
    ds = load_dataset(linear_data)
    wd = make_windows(ds, 8, cond_extras=("prev_state", "return"))
    p = wd.provenance()
    assert p["dt"] == 0.1 and p["robot"] == "double_integrator" and p["has_costs"] is True
    assert p["state_names"] == ["pos0", "pos1", "vel0", "vel1"] and p["action_names"] == ["acc0", "acc1"]
    # the condition layout the networks see: the data's, then each extra's columns in order
    assert p["condition_names"] == ["goal0", "goal1", "prev_pos0", "prev_pos1", "prev_vel0", "prev_vel1",
                                    "return_to_go"]
    assert len(p["condition_names"]) == wd.C
    json.dumps(p)  # plain types: it goes into checkpoints (weights_only) and manifests


def test_trained_run_to_engine_keeps_the_system(linear_data, tmp_path, capsys):
    cfg = resolve_config("mpdiffuser", deep_merge(TINY, {"steps": 4, "components": ["planner"]}))
    train_method("mpdiffuser", cfg, linear_data, tmp_path / "run", progress=False)
    ck = load_checkpoint(tmp_path / "run" / "planner.pt")
    run_id = json.loads((tmp_path / "run" / "config.json").read_text())["run_id"]
    assert ck["config"]["run_id"] == run_id and ck["dataset"]["dt"] == 0.1
    assert ck["dataset"]["condition_names"] == ["goal0", "goal1"]
    # a resumed run keeps the id of the run it continues; a new run gets a new one
    train_method("mpdiffuser", cfg, linear_data, tmp_path / "run", progress=False, resume=True)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["run_id"] == run_id
    from planner_runtime.cli import main
    from planner_runtime.engine_file import read_manifest

    out = tmp_path / "di.onnx"
    assert main(["export", "--checkpoints", str(tmp_path / "run"), "--method", "planner",
                 "--graph", "step", "-o", str(out)]) == 0
    m = read_manifest(out).to_dict()
    assert m["control"]["dt"] == 0.1 and m["robot"]["name"] == "double_integrator"
    assert m["observation"]["state_names"] == ["pos0", "pos1", "vel0", "vel1"]
    assert m["provenance"]["checkpoints"]["planner"]["step"] == 4
    assert m["provenance"]["checkpoints"]["planner"]["run_id"] == run_id
    # a new run in the same folder that has not saved yet makes the old planner stale
    (tmp_path / "run" / "config.json").write_text(json.dumps({**to_dict(cfg), "run_id": "another"}))
    capsys.readouterr()
    assert main(["export", "--checkpoints", str(tmp_path / "run"), "--method", "planner",
                 "--graph", "step", "-o", str(out)]) == 2
    assert "older than the run's config.json" in capsys.readouterr().err


def test_cost_condition_is_fixed_in_the_exported_graph(linear_data, tmp_path, capsys):
    """Networks trained with the cost_to_go condition export with the target fixed in the graph
    (default 0, knob ``cost_to_go``): the engine's cond input lacks that column, its manifest
    records the target and the data's other condition names; the graph plans exactly what the
    networks do with the target inserted, and the target reaches them. Knobs the networks were
    not trained for, history columns and non-finite targets are refused."""
    import numpy as np
    import pytest
    import torch

    from export.sampling.registry import build_sampler
    from planner_runtime.backends import load_engine
    from planner_runtime.cli import main
    from planner_runtime.engine_file import read_manifest
    from planner_runtime.schedule import warm_levels

    cfg = resolve_config("mpdiffuser", deep_merge(TINY, {"steps": 4, "cond_extras": ["cost_to_go"],
                                                         "components": ["planner", "dynamics"]}))
    train_method("mpdiffuser", cfg, linear_data, tmp_path / "run", progress=False)
    s = build_sampler(tmp_path / "run", "mpdiffuser", graph="sampler")
    assert s.C == 3 and s.C_in == 2 and s.knobs()["condition_targets"] == {"cost_to_go": 0.0}
    hot = build_sampler(tmp_path / "run", "mpdiffuser", graph="sampler", cost_to_go=4.0)
    rng = np.random.default_rng(0)
    x0, cond = (torch.as_tensor(rng.normal(size=(1, n)), dtype=torch.float32) for n in (s.S, 2))
    prev, noise = (torch.as_tensor(rng.normal(size=(1, s.H, s.D)), dtype=torch.float32) for _ in range(2))
    levels, w = torch.as_tensor(warm_levels(5)), torch.tensor([2.0])

    def full(value):  # the networks' condition: the data's two goal columns, then the target
        return torch.cat([cond, torch.full((1, 1), value)], dim=1)

    with torch.no_grad():
        fixed = s(x0, cond, prev, noise, levels, w)[0]
        hot_plan = hot(x0, cond, prev, noise, levels, w)[0]
        s.targets = {}  # the same networks fed the whole condition
        np.testing.assert_array_equal(fixed, s(x0, full(0.0), prev, noise, levels, w)[0])
        np.testing.assert_array_equal(hot_plan, s(x0, full(4.0), prev, noise, levels, w)[0])
    assert (fixed - hot_plan).abs().max() > 1e-4  # the target is live

    out = tmp_path / "cost.onnx"
    assert main(["export", "--checkpoints", str(tmp_path / "run"), "--method", "mpdiffuser", "--graph", "fused",
                 "--warm-level", "5", "--knob", "cost_to_go=4.0", "-o", str(out)]) == 0
    m = read_manifest(out).to_dict()
    assert m["dims"]["C"] == 2 and m["observation"]["condition_names"] == ["goal0", "goal1"]
    assert m["method"]["knobs"]["condition_targets"] == {"cost_to_go": 4.0}
    eng = load_engine(out, threads=1)
    got = eng.plan(x0=x0.numpy(), cond=cond.numpy(), prev_plan=prev.numpy(), noise=noise.numpy(),
                   levels=levels.numpy(), cfg_w=2.0).plan
    assert np.abs(got - hot_plan.numpy()).max() <= 1e-4

    _refused_export(linear_data, tmp_path / "plain", None, "cost_to_go=0", "trained without that condition", capsys)
    with pytest.raises(ValueError, match="not scalar target extras"):
        s.set_targets(["cost_to_go", "prev_action"], {"prev_action": 0.0})
    with pytest.raises(ValueError, match="finite"):
        s.set_targets(["cost_to_go"], {"cost_to_go": float("nan")})


def test_cost_target_gated_on_the_start_states_tilt(linear_data, tmp_path, capsys):
    """Knob ``cost_to_go_tilted``: the fixed cost target takes that value while the start state
    tilts at least ``tilt_gate_deg`` (its ``gravity_z`` state at or above -cos(angle)), the
    other value otherwise; the graph plans exactly what the networks do with that value
    inserted, on both sides of the angle, in torch and in ONNX Runtime. Refused: data without
    a gravity_z state, a gate without the cost condition, an angle alone or out of range."""
    import math
    import shutil

    import h5py
    import numpy as np
    import pytest
    import torch

    from export.sampling.registry import build_sampler
    from planner_runtime.backends import load_engine
    from planner_runtime.cli import main
    from planner_runtime.engine_file import read_manifest
    from planner_runtime.schedule import warm_levels

    data = tmp_path / "tilt.h5"  # the double integrator with its last state named gravity_z
    shutil.copyfile(linear_data, data)
    with h5py.File(data, "r+") as f:
        f.attrs["state_names"] = json.dumps(["pos0", "pos1", "vel0", "gravity_z"])
    cfg = resolve_config("mpdiffuser", deep_merge(TINY, {"steps": 4, "cond_extras": ["cost_to_go"],
                                                         "components": ["planner", "dynamics"]}))
    train_method("mpdiffuser", cfg, data, tmp_path / "run", progress=False)
    s = build_sampler(tmp_path / "run", "mpdiffuser", graph="sampler", cost_to_go_tilted=-3.0, tilt_gate_deg=30)
    assert s.knobs()["condition_targets"] == {"cost_to_go": 0.0}
    assert s.knobs()["condition_target_gate"] == {"tilt_deg": 30.0, "targets": {"cost_to_go": -3.0}}
    rng = np.random.default_rng(1)
    cond = torch.as_tensor(rng.normal(size=(1, 2)), dtype=torch.float32)
    prev, noise = (torch.as_tensor(rng.normal(size=(1, s.H, s.D)), dtype=torch.float32) for _ in range(2))
    levels, w = torch.as_tensor(warm_levels(5)), torch.tensor([2.0])
    edge = -math.cos(math.radians(30.0))

    def x0(gz):
        x = torch.as_tensor(rng.normal(size=(1, s.S)), dtype=torch.float32)
        x[0, 3] = gz
        return x

    starts = {"upright": (x0(-1.0), 0.0), "just under": (x0(edge - 1e-3), 0.0),
              "just over": (x0(edge + 1e-3), -3.0), "tipped": (x0(-0.3), -3.0)}
    with torch.no_grad():
        gated = {k: s(x, cond, prev, noise, levels, w)[0] for k, (x, _) in starts.items()}
        s.targets, s.gate = {}, {}  # the same networks fed the whole condition
        for k, (x, value) in starts.items():
            full = torch.cat([cond, torch.full((1, 1), value)], dim=1)
            np.testing.assert_array_equal(gated[k], s(x, full, prev, noise, levels, w)[0], err_msg=k)
        ungated = s(starts["tipped"][0], torch.cat([cond, torch.zeros(1, 1)], dim=1), prev, noise, levels, w)[0]
    assert (gated["tipped"] - ungated).abs().max() > 1e-4  # the gate is live

    out = tmp_path / "gate.onnx"
    assert main(["export", "--checkpoints", str(tmp_path / "run"), "--method", "mpdiffuser", "--graph", "fused",
                 "--warm-level", "5", "--knob", "cost_to_go_tilted=-3", "--knob", "tilt_gate_deg=30",
                 "-o", str(out)]) == 0
    m = read_manifest(out).to_dict()
    assert m["dims"]["C"] == 2
    assert m["method"]["knobs"]["condition_target_gate"] == {"tilt_deg": 30.0, "targets": {"cost_to_go": -3.0}}
    eng = load_engine(out, threads=1)
    for k, (x, _) in starts.items():
        got = eng.plan(x0=x.numpy(), cond=cond.numpy(), prev_plan=prev.numpy(), noise=noise.numpy(),
                       levels=levels.numpy(), cfg_w=2.0).plan
        assert np.abs(got - gated[k].numpy()).max() <= 1e-4, k

    _refused_export(linear_data, tmp_path / "notilt", ["cost_to_go"], "cost_to_go_tilted=-3", "'gravity_z' state",
                    capsys)
    _refused_export(data, tmp_path / "plain", None, "cost_to_go_tilted=-3", "trained without that condition", capsys)
    with pytest.raises(ValueError, match="needs a gated target"):
        build_sampler(tmp_path / "run", "mpdiffuser", graph="sampler", tilt_gate_deg=10)
    with pytest.raises(ValueError, match=r"in \(0, 90\) degrees"):
        build_sampler(tmp_path / "run", "mpdiffuser", graph="sampler", cost_to_go_tilted=-3.0, tilt_gate_deg=95)
