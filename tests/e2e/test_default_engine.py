"""The shipped default engine, end to end: it loads torch-free, matches the Go2 profile, and
walks the simulated Go2 through the unchanged controller.

``test_eval_*`` runs the controller in-process in lockstep with the planner on the simulated
clock (deterministic, independent of this machine's load); ``test_demo_*`` runs the real
three-process stack (planner service, MuJoCo Go2 on loopback DDS, controller) in real time.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from export.default_engine import COST_GATE, FINAL_WARM_LEVEL, GAINS, PLANNER_DIM, STEPS
from planner_runtime.engines import default_engine_path

ENGINE = default_engine_path()


def _cli(*args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "planner_runtime.cli", *args], capture_output=True,
                          text=True, timeout=timeout)


def test_default_engine_manifest_matches_the_go2_profile():
    out = _cli("info", str(ENGINE), "--json", timeout=120)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["checksums_ok"] is True
    m = info["manifest"]
    assert (m["dims"]["S"], m["dims"]["A"], m["dims"]["C"], m["dims"]["H"]) == (30, 12, 3, 16)
    # the paper's Go2 setting: MPDiffuser's dynamics/planner alternation, 4 actions per plan
    assert m["method"]["name"] == "mpdiffuser" and m["method"]["knobs"]["alternation"] is True
    assert m["control"]["chunk_size"] == 4 and m["control"]["dt"] == 0.02
    assert set(m["provenance"]["checkpoints"]) == {"planner", "dynamics", "forecaster"}
    assert m["diffusion"]["K"] == 10 and m["diffusion"]["warm_levels"][0] == FINAL_WARM_LEVEL == 7
    # the recipe's planner width (PLANNER_DIM); the dynamics network keeps the training default
    models = {c: m["provenance"]["checkpoints"][c]["model_config"]["dim"] for c in ("planner", "dynamics")}
    assert models == {"planner": PLANNER_DIM, "dynamics": 32} and PLANNER_DIM == 32
    # provenance: the sha256 of the dataset it was trained on (the base dataset plus the
    # recovery rounds' branches), and that data's action semantics
    prov = json.loads((ENGINE.parent / "PROVENANCE.json").read_text())
    assert m["provenance"]["dataset_sha256"] == prov["recovery_dataset_sha256"] != prov["dataset_sha256"]
    assert m["action"]["name"] == "legged-gym" and m["action"]["source"] == "training dataset"
    # executed at the gains its data was collected at (the recipe's GAINS), not set at export
    gains = dict(zip(GAINS[::2], GAINS[1::2], strict=True))
    assert (m["action"]["kp"], m["action"]["kd"]) == (float(gains["--kp"]), float(gains["--kd"])) == (24.0, 0.6)
    assert m["overrides"] == {}
    # real-time chunking: it takes the committed prefix and plans from the forecast state (every
    # dimension), by a forecaster fine-tuned on the engine's own episodes under latency
    assert m["graph"]["inputs"][-2:] == ["prefix", "n_prefix"]
    knobs = m["method"]["knobs"]
    assert knobs["prefix"] == "forecast"
    assert knobs["forecast_states"] == list(range(30))
    fc = m["provenance"]["checkpoints"]["forecaster"]
    assert fc["dataset_sha256"] == prov["onpolicy_dataset_sha256"] != prov["dataset_sha256"]
    for c in ("planner", "dynamics"):  # fine-tuned from the base networks on the recovery dataset
        assert m["provenance"]["checkpoints"][c]["dataset_sha256"] == prov["recovery_dataset_sha256"]
    assert m["provenance"]["training_config"]["init_from"]["step"] == STEPS["planner"]  # the base training
    # conditioned on the tilt cost over the plan, fixed in the graph at 0 and, from a tilted
    # start state, at the recipe's COST_GATE (recorded in its provenance): the controller still
    # sends the command alone
    assert m["provenance"]["training_config"]["cond_extras"] == ["cost_to_go"] and prov["cost"] is True
    assert knobs["condition_targets"] == {"cost_to_go": 0.0} and prov["cost_gate"] == COST_GATE
    assert knobs["condition_target_gate"] == {"tilt_deg": COST_GATE["tilt_gate_deg"],
                                              "targets": {"cost_to_go": COST_GATE["cost_to_go_tilted"]}}
    assert m["observation"]["condition_names"] == ["cmd_vx", "cmd_vy", "cmd_yaw_rate"]


def test_default_engine_states_the_command_range_its_data_covered():
    """What live commands are clamped to (controller --command-source remote|endpoint): the
    range of the commands in its training data, which the collection drew from sim.commands'
    ranges (within 1%: the recovery branches replay commands from that range too)."""
    from planner_runtime.engine_file import load_onnx
    from planner_runtime.manifest import condition_range
    from robot.live_command import CommandLimits
    from sim.commands import VX_RANGE, VY_RANGE, YAW_RANGE

    _, man = load_onnx(ENGINE)
    lim = CommandLimits.from_condition_range(condition_range(man))
    assert lim is not None
    want_lo = [VX_RANGE[0], VY_RANGE[0], YAW_RANGE[0]]
    want_hi = [VX_RANGE[1], VY_RANGE[1], YAW_RANGE[1]]
    assert lim.lo.tolist() == pytest.approx(want_lo, abs=0.01) and lim.hi.tolist() == pytest.approx(want_hi, abs=0.01)


def test_eval_default_engine_walks_forward_without_falling():
    out = _cli("eval", "--no-expert", "--episodes", "1", "--duration", "6", "--command", "0.5", "0", "0",
               "--no-progress", "--json", timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    r = next(iter(json.loads(out.stdout)["results"].values()))
    assert r["falls"] == 0, r
    assert 0.35 < r["mean_vx_settled"] < 0.65, r  # tracks the commanded 0.5 m/s
    assert abs(r["mean_vy_settled"]) < 0.15, r
    assert abs(r["mean_yaw_rate_settled"]) < 0.3, r


def test_eval_default_engine_walks_on_the_real_robot_fitted_model_beside_ppo(tmp_path):
    """The model with physics fitted to real Go2 runs (heavier legs, low joint damping, 15 ms
    actuator lag), through the matrix runner: the engine and the PPO policy on the same
    episodes, both walk."""
    out = _cli("eval", "--matrix", str(tmp_path), "--matrix-models", "menagerie-fitted",
               "--matrix-conditions", "nominal", "--reference", "ppo", "--engine", f"default={ENGINE}",
               "--episodes", "1", "--duration", "6", "--jobs", "1", timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    rep = json.loads((tmp_path / "matrix.json").read_text())
    (cell,) = rep["cells"]
    assert cell["model"] == "menagerie-fitted" and cell["conditions"]["physics_ranges"] == {}
    assert set(cell["results"]) == {"ppo", "default"}
    assert cell["results"]["ppo"]["falls"] == 0 and cell["results"]["default"]["falls"] == 0
    assert cell["results"]["default"]["tracking_rmse_xy"] < 0.3
    assert (tmp_path / "matrix.png").stat().st_size > 10_000 and "menagerie-fitted" in (tmp_path / "matrix.md").read_text()


@pytest.mark.slow
@pytest.mark.dds
def test_demo_three_real_processes_plan_and_drive_the_dds_robot(tmp_path):
    """The real-time stack: service, stand-in DDS robot and controller as separate processes
    on loopback ZeroMQ and DDS. The robot stands up, plans, does not fall and walks in the
    commanded direction (0.5 m/s forward; real time, so a looser bound than in lockstep)."""
    out = _cli("demo", "--duration", "6", "--schedule", "0:0.5,0,0", "--out", str(tmp_path), "--json",
               timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]  # 1 = the robot fell
    rep = json.loads(out.stdout)
    modes = [t["to"] for t in rep["controller"]["transitions"]]
    assert modes[:3] == ["stand_up", "stand", "planning"], modes
    assert "damping" not in modes[:-1], modes
    m = rep["metrics"]
    assert not m["fell"], m
    assert m["mean_vx_settled"] > 0.15, m  # forward, as commanded
    assert abs(m["mean_vy_settled"]) < 0.2, m
    assert rep["controller"]["counts"]["chunks_accepted"] > 20
    assert rep["controller"]["chunks_rejected"] == {}
    assert rep["planning_s"] > 1.0
    assert (tmp_path / "demo_tracking.png").stat().st_size > 10_000
    # the run's timing, for `eval --timing-trace`: one turnaround per accepted chunk
    from sim.timing_replay import load_timing_trace

    timing = load_timing_trace(tmp_path)
    assert timing.turnarounds.size == rep["controller"]["counts"]["chunks_accepted"]
    assert timing.periods.size > 1000  # 500 Hz loop iterations after planning began
    assert rep["controller"]["robot"]["state_delay_ms"]["median"] < 50.0  # the newest state, read in time


@pytest.mark.slow
@pytest.mark.dds
def test_demo_steered_live_over_the_control_endpoint(tmp_path):
    """The same stack steered as a navigation program would: the demo sends the schedule to
    the controller's control endpoint 20 times a second (controller --command-source
    endpoint); the robot walks forward, then turns when the commands say so. The controller
    records the run (demo --record: controller --record over DDS, rewards from the velocity
    estimator, as on a robot without a velocity sensor)."""
    out = _cli("demo", "--duration", "6", "--schedule", "0:0.5,0,0;3:0.5,0,0.5", "--steer", "endpoint",
               "--record", "--out", str(tmp_path), "--json", timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    rep = json.loads(out.stdout)
    assert rep["steer"] == "endpoint" and rep["command"]["source"] == "endpoint"
    sent = rep["steering_sent"]
    assert sent["sent"] > 60 and sent["refused"] == 0, sent  # ~20 a second over 6 s of planning
    assert rep["command"]["updates"] == sent["sent"] and rep["command"]["lapses"] == 0
    assert rep["command"]["clamped"] == 0  # 0.5 m/s and 0.5 rad/s lie inside the engine's data
    m = rep["metrics"]
    assert not m["fell"] and m["mean_vx_settled"] > 0.15, m
    # the turn arrived: over the schedule's second half the robot turned left
    import numpy as np

    with np.load(tmp_path / "timing.npz") as z:
        assert z["turnaround_s"].size == rep["controller"]["counts"]["chunks_accepted"]
    assert m["mean_yaw_rate_settled"] > 0.15, m  # 0.5 rad/s over the last 5 s of 8: about 0.3; no turn: 0
    # the recorded run: the live commands as conditions, rewards from the estimated velocity
    from planner_runtime.dataset import load_dataset

    rec = rep["record"]
    assert rec["base_velocity"].startswith("estimated (velocity estimator") and rec["falls"] == 0
    ds = load_dataset(tmp_path / "run.h5")
    assert not (tmp_path / "run.h5.journal").exists()  # the crash journal, removed once the run is written
    assert len(ds.observations) == rec["samples"] > 150  # of about 450 policy ticks while planning
    assert ds.provenance["robot"] == "DDS on lo" and ds.provenance["base_velocity"] == rec["base_velocity"]
    assert set(np.round(ds.conditions[:, 2], 3)) <= {0.0, 0.5} and np.any(ds.conditions[:, 2] == 0.5)
    assert rec["policy_tick_interval"]["median_ms"] > 19.0  # the loop's real policy period, reported
    assert 0.1 < float(np.mean(ds.raw["base_lin_vel"][:, 0])) < 1.0  # the estimator's forward speed
