"""Recording a controller's run as a dataset (``controller --record``, robot/recording.py):
the stretch rules on synthetic samples, then the real service on the embedded engine driving
the in-process MuJoCo Go2 over real ZeroMQ, its run written and read back through the
dataset format. The DDS path (the demo's simulated robot, the velocity estimator's
rewards) is in tests/e2e/test_default_engine.py::test_demo_steered_live_over_the_control_endpoint."""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from planner_runtime.dataset import load_dataset
from robot.observation import CONDITION_NAMES, STATE_DIM, STATE_NAMES, state_reward_cost
from robot.recording import MIN_STRETCH, ClosedLoopRecorder

from .conftest import child_env, free_port, start_service, wait_service

EMBEDDED = __import__("pathlib").Path(__file__).resolve().parents[2] / "planner_runtime" / "engines" / "go2.onnx"


def _feed(rec: ClosedLoopRecorder, ticks: list[int], acted: set[int], fallen: set[int] = frozenset()) -> None:
    """Samples at the given policy tick numbers (t = 1000 + 0.02 k), with an executed action at
    the ticks in ``acted``."""
    for k in ticks:
        t = 1000.0 + 0.02 * k
        x = np.full(STATE_DIM, 0.01 * k)
        x[STATE_NAMES.index("gravity_z")] = -1.0
        rec.sample(t, x, np.array([0.5, 0.0, 0.0]), np.array([0.4, 0.0, 0.0]), fallen=k in fallen, tick=k)
        if k in acted:
            rec.executed([SimpleNamespace(t=t, action=np.full(12, k, np.float64))])


def test_stretches_end_at_a_missing_tick_a_tick_without_action_and_a_fall():
    rec = ClosedLoopRecorder(time_origin=1000.0)
    # ticks 0-19 acted; tick 20 never sampled (no state); 21-40 acted; 41 sampled after a fall
    # stopped planning (no action); 42-45 acted (too short a stretch)
    ticks = [*range(0, 20), *range(21, 42), *range(42, 46)]
    acted = {*range(0, 20), *range(21, 41), *range(42, 46)}
    _feed(rec, ticks, acted, fallen={41})
    eps = rec.episodes(fell=False)
    # tick 19's outcome (tick 20) was never sampled: its row is left out, the stretch ends at 18
    assert [len(e) for e in eps] == [19, 20] and [e.terminal for e in eps] == [False, True]
    first, second = eps
    np.testing.assert_allclose(first.actions[:, 0], np.arange(19))  # the action executed at each row's tick
    np.testing.assert_allclose(second.actions[:, 0], np.arange(21, 41))
    np.testing.assert_allclose(second.raw["time"], 0.02 * np.arange(21, 41), atol=1e-5)  # from the origin
    # each row's reward and cost are those of the state its tick led to
    r, c = state_reward_cost(second.observations[1], np.array([0.4, 0.0, 0.0]), np.array([0.5, 0.0, 0.0]))
    assert second.rewards[0] == pytest.approx(r) and second.costs[0] == pytest.approx(c)
    np.testing.assert_allclose(rec.intervals(), 0.02, atol=1e-9)  # consecutive ticks only
    assert len(rec.intervals()) == len(ticks) - 2  # the pair around the missing tick is not one
    assert MIN_STRETCH > 4  # the last 4-tick stretch holds no training window and is not written


def test_controller_records_its_run_and_the_dataset_reads_back(tmp_path, capsys):
    """`controller --sim --planner EP --record OUT.h5` against the real service on the embedded
    engine: the file carries the controller's layout and the engine's action semantics, one
    row per policy tick while planning, the command as the condition, rewards and costs as
    collection labels them; and the simulated Go2's clock is not mixed with the client's (a
    chunk's receipt used to be stamped on the monotonic clock, which stopped every `--sim
    --planner` run at once as "planner too slow": a turnaround of hours)."""
    pytest.importorskip("mujoco")
    pytest.importorskip("h5py")
    from planner_runtime.engine_file import load_onnx

    ep = f"tcp://127.0.0.1:{free_port()}"
    proc = start_service(EMBEDDED, ep)
    out = tmp_path / "run.h5"
    try:
        wait_service(ep)
        cmd = [sys.executable, "-m", "planner_runtime.cli", "controller", "--sim", "--planner", ep,
               "--passive", "0.1", "--stand-up", "0.5", "--schedule", "0:0.5,0,0;2:0.5,0,0.4",
               "--duration", "5.0", "--on-fault", "exit", "--json", "--record", str(out)]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=child_env())
        assert res.returncode == 0, res.stderr[-3000:]
        again = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=child_env())
    finally:
        proc.kill()
        proc.wait(10)
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert [t["to"] for t in summary["transitions"]] == ["stand_up", "stand", "planning"], summary["transitions"]
    assert summary["plan_age_ms"]["median"] < 200  # the simulator's clock on both sides of a turnaround
    rec = summary["record"]
    assert rec["episodes"] == 1 and rec["falls"] == 0 and rec["base_velocity"].startswith("ground truth")
    # the refusal of an existing file comes before anything moves
    assert again.returncode == 2 and "exists" in again.stderr and "--record" in again.stderr

    ds = load_dataset(out)
    man = load_onnx(EMBEDDED)[1]
    assert list(ds.state_names) == list(STATE_NAMES) and list(ds.condition_names) == list(CONDITION_NAMES)
    assert ds.dt == pytest.approx(0.02) and ds.action_semantics["kp"] == man.action.kp
    assert ds.action_semantics["default_joint_pos"] == pytest.approx(list(man.action.default_joint_pos))
    prov = ds.provenance
    assert prov["engine"]["graph_sha256"] == man.checksums.graph_sha256 and prov["planner"] == ep
    # planning began about 0.6 s in and the run lasted 5 s: about 4.4 s of policy ticks
    n = len(ds.observations)
    assert n == rec["samples"] and 180 <= n <= 225
    t = ds.raw["time"]
    assert np.median(np.diff(t)) == pytest.approx(0.02, abs=2e-3)
    # the command is the condition, switching at 2 s of planning
    turning = ds.conditions[:, 2] > 0.2
    np.testing.assert_allclose(ds.conditions[~turning], [[0.5, 0.0, 0.0]] * int((~turning).sum()))
    assert abs((t[turning][0] - t[0]) - 2.0) < 0.05
    # rewards and costs as collection labels them: at the state each tick led to
    v = ds.raw["base_lin_vel"]
    for k in (10, 100, n - 2):
        r, c = state_reward_cost(ds.observations[k + 1], v[k + 1], ds.conditions[k])
        assert ds.rewards[k] == pytest.approx(r, abs=1e-5) and ds.costs[k] == pytest.approx(c, abs=1e-5)
    # the robot walked: the ground truth speed under the 0.5 m/s command
    assert 0.2 < float(np.mean(v[50:100, 0])) < 0.9
    assert np.all(np.isfinite(ds.actions)) and np.ptp(ds.actions[:, 2]) > 0.1  # executed, not a held pose
    # `dataset info` says where a run came from
    from planner_runtime.cli import main

    assert main(["dataset", "info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "collector: planner-runtime controller --record" in text and "base_velocity: ground truth" in text
    assert main(["dataset", "info", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["provenance"]["policy_tick_interval"] == rec["policy_tick_interval"]


def test_a_run_that_never_planned_writes_nothing_and_says_so(tmp_path):
    """Without a planner the controller stands, then damps: no stretch of planning, no file,
    exit 4 with the reason in the summary (a run's data is never silently missing)."""
    pytest.importorskip("mujoco")
    pytest.importorskip("h5py")
    out = tmp_path / "none.h5"
    res = subprocess.run([sys.executable, "-m", "planner_runtime.cli", "controller", "--sim", "--passive", "0.1",
                          "--stand-up", "0.3", "--startup-wait", "0.3", "--on-fault", "exit", "--duration", "2",
                          "--json", "--record", str(out)], capture_output=True, text=True, timeout=120, env=child_env())
    assert res.returncode == 4, res.stderr[-2000:]
    rec = json.loads(res.stdout.strip().splitlines()[-1])["record"]
    assert "no stretch of planning" in rec["error"] and not out.exists()
    missing = subprocess.run([sys.executable, "-m", "planner_runtime.cli", "controller", "--sim", "--duration", "1",
                              "--record", str(tmp_path / "no" / "run.h5")], capture_output=True, text=True,
                             timeout=120, env=child_env())
    assert missing.returncode == 2 and "its folder does not exist" in missing.stderr
    dry = subprocess.run([sys.executable, "-m", "planner_runtime.cli", "controller", "--dry-run", "--duration", "1",
                          "--record", str(tmp_path / "dry.h5")], capture_output=True, text=True, timeout=120,
                         env=child_env())
    assert dry.returncode == 2 and "a dry run executes none" in dry.stderr and not (tmp_path / "dry.h5").exists()
