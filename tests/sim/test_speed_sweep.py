"""The speed sweep (sim/speed_sweep.py): its cells are constant straight-ahead commands with
the run's methods and physics; the table and "walks from" on a hand-made report; and one
real sweep, end to end (eval subprocesses, real MuJoCo, the PPO policy from the wheel)."""

from __future__ import annotations

import json

import pytest

from planner_runtime.config import ConfigError
from sim import speed_sweep
from sim.eval_config import EvalConfig
from sim.eval_matrix import cell_base


def test_a_cell_is_the_run_at_a_constant_straight_command():
    run = EvalConfig(speed_sweep="out", engine=("a=x.onnx",), reference=("ppo",), model="menagerie-fitted",
                     friction=(0.4, 0.5), episodes=2, duration=10.0, seed=30000, cfg_w=1.0, jobs=1)
    cell = speed_sweep.cell_config(cell_base(run, speed_sweep.FORWARDED, "speed sweep"), 0.3)
    assert speed_sweep.physics_label(run) == "foot friction 0.4-0.5"
    assert speed_sweep.physics_label(EvalConfig(randomize=True, actuator_lag=15.0)) == "randomized physics, actuator lag 15 ms"
    assert cell == EvalConfig(engine=("a=x.onnx",), reference=("ppo",), model="menagerie-fitted",
                              friction=(0.4, 0.5), episodes=2, duration=10.0, seed=30000, cfg_w=1.0,
                              command=(0.3, 0.0, 0.0), json=True, no_progress=True)
    # a command of its own, or a latency, would not reach the cells: refused
    for bad in ({"command": (0.5, 0.0, 0.0)}, {"latency": (40.0,)}):
        with pytest.raises(ConfigError, match="would not reach the cells"):
            cell_base(EvalConfig(speed_sweep="out", **bad), speed_sweep.FORWARDED, "speed sweep")


def _cell(v, **reached):
    return {"speed": v, "results": {m: {"mean_vx_settled": x, "falls": 1 if m == "e" and v == 0.8 else 0}
                                    for m, x in reached.items()}}


def test_walks_from_is_the_slowest_command_it_and_every_faster_one_reach_half_of():
    speeds = [0.1, 0.2, 0.3, 0.5, 0.8]
    assert speed_sweep.walks_from(speeds, [0.1, 0.2, 0.3, 0.5, 0.8]) == 0.1
    # stands at 0.1-0.3 (below half), walks from 0.5
    assert speed_sweep.walks_from(speeds, [0.0, 0.01, 0.1, 0.52, 0.9]) == 0.5
    # exactly half counts; a slow command it walks at does not count below a faster one it does not
    assert speed_sweep.walks_from(speeds, [0.05, 0.0, 0.15, 0.3, 0.7]) == 0.3
    assert speed_sweep.walks_from(speeds, [0.1, 0.2, 0.3, 0.5, 0.3]) is None  # not even the fastest
    assert speed_sweep.walks_from(speeds, [0.1, 0.2, None, 0.5, 0.8]) == 0.5  # a failed cell stops it


def test_table_has_a_row_per_speed_with_falls_errors_and_walks_from():
    report = {"cells": [_cell(0.2, ppo=0.201, e=0.004), {"speed": 0.5, "error": "boom"},
                        _cell(0.8, ppo=0.82, e=0.95)]}
    report["walks_from"] = {m: speed_sweep.walks_from([0.2, 0.5, 0.8], vx)
                            for m, vx in speed_sweep.reached(report).items()}
    assert speed_sweep.reached(report) == {"ppo": [0.201, None, 0.82], "e": [0.004, None, 0.95]}
    lines = speed_sweep.table(report).strip().splitlines()
    assert lines[0] == "| command vx (m/s) | ppo | e |"
    assert lines[2] == "| 0.2 | 0.201 | 0.004 |"
    assert lines[3] == "| 0.5 | error | error |"
    assert lines[4] == "| 0.8 | 0.820 | 0.950 (1 falls) |"
    assert lines[5] == "| walks from | 0.8 | 0.8 |"


def test_a_sweep_refuses_non_positive_speeds(tmp_path, capsys):
    cfg = EvalConfig(speed_sweep=str(tmp_path / "s"), sweep_speeds=(0.2, 0.0))
    assert speed_sweep.run_sweep(cfg) == 2
    assert "must be positive" in capsys.readouterr().err and not (tmp_path / "s").exists()


def test_the_ppo_policy_reaches_each_commanded_speed(tmp_path, capsys):
    """Two real cells (eval subprocesses on the project model, the PPO policy beside the
    embedded engine): the PPO policy walks at each commanded speed from a stand, so it walks
    from the slowest."""
    from planner_runtime.cli import main

    pytest.importorskip("onnxruntime")
    from sim.ppo_policy import policy_path

    try:
        policy_path()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    out = tmp_path / "sweep"
    rc = main(["eval", "--speed-sweep", str(out), "--sweep-speeds", "0.5", "0.25", "--reference",
               "ppo", "--episodes", "1", "--duration", "4", "--jobs", "2"])
    assert rc == 0
    report = json.loads((out / "sweep.json").read_text())
    assert report["speeds"] == [0.25, 0.5]
    got = speed_sweep.reached(report)["ppo"]
    assert abs(got[0] - 0.25) < 0.1 and abs(got[1] - 0.5) < 0.12 and got[1] > got[0] + 0.1
    assert report["walks_from"]["ppo"] == 0.25 and set(report["walks_from"]) == {"ppo", "default (go2.onnx)"}
    assert (out / "sweep.png").stat().st_size > 0 and (out / "sweep.md").read_text().count("\n") == 5
    assert sorted(p.name for p in (out / "cells").iterdir()) == ["0.25_m_s.json", "0.5_m_s.json"]
    assert "ppo: walks from 0.25 m/s" in capsys.readouterr().out
