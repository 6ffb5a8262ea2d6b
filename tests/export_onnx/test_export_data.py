"""`planner-runtime export` takes the system from the data and exactly the components it uses.

- control dt, names and robot come from the checkpoints' dataset block; a contradicting
  ``--dt`` is refused unless ``--force``, then recorded as an override; ``info`` shows them.
- provenance lists the components the method's sampler is built from, each with its step
  and sha256; an unfinished or stale checkpoint is refused unless ``--force``.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

pytest.importorskip("torch")

from planner_runtime.async_planner import PlannerSpec  # noqa: E402
from planner_runtime.cli import main  # noqa: E402
from planner_runtime.engine_file import read_manifest  # noqa: E402

DI = {"dt": 0.1, "robot": "double_integrator", "state_names": ["px", "py", "vx", "vy"],
      "action_names": ["ax", "ay"], "condition_names": ["gx", "gy", "gvx", "gvy"]}


def _export(d, out, *extra: str) -> int:
    return main(["export", "--checkpoints", str(d), "--method", "mpdiffuser", "--graph", "step",
                 "-o", str(out), *extra])


def test_dt_and_names_from_the_data_and_dt_override(tmp_path, capsys, write_checkpoints_fn):
    d = write_checkpoints_fn(tmp_path / "ck", 4, 2, 4, 8, data=DI)
    out = tmp_path / "di.onnx"
    assert _export(d, out) == 0
    m = read_manifest(out).to_dict()
    assert m["control"]["dt"] == 0.1 and m["control"]["dt_source"] == "dataset" and m["overrides"] == {}
    assert m["robot"]["name"] == "double_integrator" and m["robot"]["profile"] is None
    obs = m["observation"]
    assert obs["state_names"] == DI["state_names"] and obs["action_names"] == DI["action_names"]
    assert obs["condition_names"] == DI["condition_names"] and obs["names_source"] == "dataset"
    assert m["action"]["joint_names"] == ["ax", "ay"]
    assert PlannerSpec.from_manifest(read_manifest(out)).dt == 0.1  # what the warm start shifts by
    # a --dt that contradicts the data is refused, and nothing is written
    capsys.readouterr()
    bad = tmp_path / "bad.onnx"
    assert _export(d, bad, "--dt", "0.02") == 2
    err = capsys.readouterr().err
    assert "--dt 0.02 contradicts the training data's control dt 0.1" in err and "--force" in err
    assert not bad.exists()
    # the same dt is no contradiction
    assert _export(d, bad, "--dt", "0.1") == 0 and read_manifest(bad).overrides == {}
    # forced, it is recorded as an override next to what the data said
    assert _export(d, bad, "--dt", "0.02", "--force") == 0
    mb = read_manifest(bad).to_dict()
    assert mb["control"]["dt"] == 0.02 and "override" in mb["control"]["dt_source"]
    assert mb["overrides"] == {"control.dt": {"value": 0.02, "data": 0.1, "by": "--dt 0.02 --force"}}
    # info shows the dt, its source, the names and the override
    capsys.readouterr()
    assert main(["info", str(bad)]) == 0
    text = capsys.readouterr().out
    assert "dt=0.02 s" in text and "overrides   control.dt = 0.02 (the data said 0.1; by --dt 0.02 --force)" in text
    assert "states      px, py, vx, vy" in text and "actions     ax, ay" in text
    assert "conditions  gx, gy, gvx, gvy" in text


def test_go2_data_names_are_checked(tmp_path, capsys, write_checkpoints_fn):
    from robot.observation import ACTION_NAMES, CONDITION_NAMES, STATE_NAMES

    go2 = {"dt": 0.02, "robot": "go2", "state_names": list(STATE_NAMES),
           "action_names": list(ACTION_NAMES), "condition_names": list(CONDITION_NAMES)}
    d = write_checkpoints_fn(tmp_path / "ok", 30, 12, 3, 16, data=go2)
    assert _export(d, tmp_path / "go2.onnx") == 0
    m = read_manifest(tmp_path / "go2.onnx").to_dict()
    assert m["robot"]["name"] == "go2" and m["control"]["dt_source"] == "dataset"
    assert m["observation"]["state_names"] == list(STATE_NAMES)
    # data that calls itself go2 but whose state layout is another: refused, then forced
    wrong = dict(go2, state_names=list(reversed(STATE_NAMES)))
    d2 = write_checkpoints_fn(tmp_path / "bad", 30, 12, 3, 16, data=wrong)
    capsys.readouterr()
    assert _export(d2, tmp_path / "x.onnx") == 2
    assert "state_names differ from the Go2 observation builder's" in capsys.readouterr().err
    assert _export(d2, tmp_path / "x.onnx", "--force") == 0
    assert any("state_names" in p for p in read_manifest(tmp_path / "x.onnx").provenance["forced"])
    # a 30/12/3 system whose data names another robot is not taken for a Go2
    other = dict(go2, robot="quadruped_x")
    d3 = write_checkpoints_fn(tmp_path / "other", 30, 12, 3, 16, data=other)
    assert _export(d3, tmp_path / "o.onnx") == 0
    assert read_manifest(tmp_path / "o.onnx").robot.name == "quadruped_x"


def test_unfinished_checkpoints_are_refused_unless_forced(tmp_path, capsys, write_checkpoints_fn):
    d = write_checkpoints_fn(tmp_path / "ck", 4, 2, 4, 8, data=DI, step=1000, config={"steps": 12000})
    out = tmp_path / "e.onnx"
    assert _export(d, out) == 2
    err = capsys.readouterr().err
    assert "planner: step 1000 of 12000" in err and "dynamics: step 1000 of 12000" in err
    assert not out.exists()
    assert _export(d, out, "--force") == 0
    m = read_manifest(out).to_dict()
    ck = m["provenance"]["checkpoints"]
    assert set(ck) == {"planner", "dynamics"}
    assert ck["planner"]["step"] == 1000 and ck["planner"]["total_steps"] == 12000
    assert ck["dynamics"]["sha256"] == hashlib.sha256((d / "dynamics.pt").read_bytes()).hexdigest()
    assert len(m["provenance"]["forced"]) == 2


def test_stale_checkpoints_and_exact_components(tmp_path, capsys, write_checkpoints_fn):
    from export.sampling.mpdiffuser import RankerNet

    d = write_checkpoints_fn(tmp_path / "ck", 4, 2, 4, 8, data=DI, step=50,
                             config={"steps": 50, "run_id": "run-a"},
                             extra={"ranker": RankerNet(4, 2, 4, hidden=(8,))})
    out = tmp_path / "e.onnx"
    # N = 1: the ranker in the folder is not part of the engine
    assert _export(d, out, "--json") == 0
    m = json.loads(capsys.readouterr().out)["engines"][str(out)]
    assert set(m["provenance"]["checkpoints"]) == {"planner", "dynamics"}
    assert m["provenance"]["ignored"] == ["ranker.pt"]
    # N = 2: it is
    assert _export(d, out, "--n-samples", "2", "--json") == 0
    m = json.loads(capsys.readouterr().out)["engines"][str(out)]
    assert set(m["provenance"]["checkpoints"]) == {"planner", "dynamics", "ranker"}
    assert m["provenance"]["ignored"] == [] and m["dims"]["B"] == 2
    # a new run (another run_id in config.json) that has not saved the planner yet
    (d / "config.json").write_text(json.dumps({"run_id": "run-b", "steps": 50, "components": None}))
    assert _export(d, out) == 2
    assert "older than the run's config.json (run run-b)" in capsys.readouterr().err
    # ... unless that run trains only the dynamics model: the planner-only engine is fine
    (d / "config.json").write_text(json.dumps({"run_id": "run-b", "steps": 50, "components": "dynamics"}))
    assert main(["export", "--checkpoints", str(d), "--method", "planner", "--graph", "step",
                 "-o", str(out)]) == 0
    assert set(read_manifest(out).provenance["checkpoints"]) == {"planner"}
    # the run's config asks for more steps than the checkpoint has (a resumed, extended run)
    (d / "config.json").write_text(json.dumps({"run_id": "run-a", "steps": 80, "components": None}))
    assert _export(d, out) == 2
    assert "step 50 of the run's 80" in capsys.readouterr().err


def test_execution_gains_are_the_datas_unless_set_and_then_recorded(tmp_path, capsys, write_checkpoints_fn):
    """`export --kp/--kd`: the engine's PD gains replace the data's, recorded as overrides
    (info shows them), and the Go2 controller executes the new ones; gains it could not
    execute, or gains for data without semantics or for another robot, are refused."""
    from robot.actions import LEGGED_GYM
    from robot.controller import check_engine
    from robot.observation import ACTION_NAMES, CONDITION_NAMES, STATE_NAMES

    go2 = {"dt": 0.02, "robot": "go2", "state_names": list(STATE_NAMES), "action_names": list(ACTION_NAMES),
           "condition_names": list(CONDITION_NAMES)}
    data_sem = {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in LEGGED_GYM.as_dict().items()}
    d = write_checkpoints_fn(tmp_path / "ck", 30, 12, 3, 16, data={**go2, "action_semantics": data_sem})
    plain = tmp_path / "plain.onnx"
    assert _export(d, plain) == 0
    mp = read_manifest(plain)
    assert (mp.action.kp, mp.action.kd) == (20.0, 0.5) and mp.overrides == {}
    assert mp.action.source == "training dataset"
    # the data's own gain is no override
    assert _export(d, tmp_path / "same.onnx", "--kp", "20") == 0
    assert read_manifest(tmp_path / "same.onnx").overrides == {}

    stiff = tmp_path / "stiff.onnx"
    assert _export(d, stiff, "--kp", "24", "--kd", "0.6") == 0
    m = read_manifest(stiff)
    assert (m.action.kp, m.action.kd) == (24.0, 0.6) and "set at export" in m.action.source
    assert m.overrides == {"action.kp": {"value": 24.0, "data": 20.0, "by": "--kp 24"},
                           "action.kd": {"value": 0.6, "data": 0.5, "by": "--kd 0.6"}}
    assert m.checksums.graph_sha256 == mp.checksums.graph_sha256  # the same networks
    sem = check_engine(m.to_dict()).semantics  # what the controller, eval and the demo execute
    assert (sem.kp, sem.kd) == (24.0, 0.6)
    np.testing.assert_allclose(sem.scale, LEGGED_GYM.scale)
    capsys.readouterr()
    assert main(["info", str(stiff)]) == 0
    text = capsys.readouterr().out
    assert "kp 24.0 kd 0.6" in text and "overrides   action.kp = 24.0 (the data said 20.0; by --kp 24)" in text

    for bad, why in ((["--kp", "200"], "kp 200.0 outside the robot's range"),
                     (["--kd", "nan"], "non-finite"), (["--kd", "0.01"], "kd 0.01 outside")):
        out = tmp_path / "bad.onnx"
        assert _export(d, out, *bad) == 2
        assert why in capsys.readouterr().err and not out.exists()
    # data that recorded no action semantics has no gains to replace
    d0 = write_checkpoints_fn(tmp_path / "ck0", 30, 12, 3, 16, data=go2)
    assert _export(d0, tmp_path / "x.onnx", "--kp", "24") == 2
    assert "recorded no action semantics" in capsys.readouterr().err
    # a system without a Go2 profile has no PD gains
    dg = write_checkpoints_fn(tmp_path / "ckg", 4, 2, 4, 16, data={"dt": 0.1})
    assert _export(dg, tmp_path / "g.onnx", "--kp", "24") == 2
    assert "robot profile is 'generic'" in capsys.readouterr().err
