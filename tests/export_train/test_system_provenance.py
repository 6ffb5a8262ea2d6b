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
