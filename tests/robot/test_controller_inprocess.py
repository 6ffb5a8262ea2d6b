"""The controller loop against the in-process MuJoCo Go2 (simulated time, fast).

The planner is the real service (`planner-runtime serve`) in its own process on a Go2-sized
test engine (tests/robot/conftest.py), killed with SIGKILL for the watchdog test. The
chunk-timing rules are also checked with hand-built chunks delivered through a scripted
link: that isolates the controller's rules (skip past actions, refuse expired, stale,
non-finite or unknown chunks) from the service, whose own tests cover it.
"""

from __future__ import annotations

import os
import signal
from dataclasses import replace

import numpy as np
import pytest

from planner_runtime.protocol import ActionChunk
from robot import go2_constants as go2
from robot.actions import LEGGED_GYM
from robot.controller import (
    CommandSchedule,
    Controller,
    ControllerConfig,
    ServiceLink,
    check_planner_metadata,
)
from robot.safety import Mode, SafetyConfig

from .conftest import free_port, start_service, wait_service

pytest.importorskip("mujoco")

FAST = SafetyConfig(passive_s=0.1, stand_up_s=1.0, grace_s=0.2, hold_s=0.5, stand_ramp_s=0.5,
                    stand_timeout_s=1.0, startup_wait_s=5.0)


def make_sim(lying: bool = False):
    from sim.mujoco_harness import MujocoGo2

    sim = MujocoGo2()
    sim.reset(joint_pos=go2.LYING_JOINT_POS if lying else None)
    return sim


def test_stand_up_from_lying_reaches_the_default_pose():
    sim = make_sim(lying=True)
    ctl = Controller(sim, None, config=ControllerConfig(safety=SafetyConfig(
        passive_s=0.2, stand_up_s=2.0, startup_wait_s=1.0)))
    ctl.run(stop_when=lambda c: c.mode is Mode.STAND and c.robot.now() > 3.0)
    st = sim.read_state()
    assert np.max(np.abs(st.q - go2.DEFAULT_JOINT_POS)) < 0.15
    assert sim.data.qpos[2] > 0.25 and not sim.fallen()
    assert [tr.dst.value for tr in ctl.safety.transitions] == ["stand_up", "stand"]


@pytest.fixture
def service(go2_engine):
    ep = f"tcp://127.0.0.1:{free_port()}"
    proc = start_service(go2_engine, ep)
    try:
        meta = wait_service(ep)
        yield proc, ep, meta
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def test_planning_with_the_service_then_watchdog_after_kill9(service):
    proc, ep, meta = service
    check_planner_metadata(meta)
    sim = make_sim()
    link = ServiceLink(ep, timeout=5.0)
    ctl = Controller(sim, link, CommandSchedule.constant(0.3, 0.0, 0.0),
                     ControllerConfig(lockstep=True, lockstep_timeout_s=2.0, replan_every=1,
                                          safety=FAST))
    try:
        ctl.run(stop_when=lambda c: c.mode is Mode.PLANNING and c.robot.now() > 2.5)
        assert ctl.mode is Mode.PLANNING
        assert ctl.counts["chunks_accepted"] > 40 and ctl.counts["actions_executed"] > 40
        assert not ctl.rejected
        # The tiny engine's actions are ~0: the robot stands at the default pose, planning.
        assert not sim.fallen() and sim.data.qpos[2] > 0.25
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        t_kill = sim.now()
        summary = ctl.run(duration=10.0)
    finally:
        link.close()
    after = [tr for tr in summary["transitions"] if tr["t"] >= t_kill]
    assert [tr["to"] for tr in after] == ["hold", "stand", "damping"]
    assert all("watchdog" in tr["reason"] for tr in after)
    t_hold, t_stand, t_damp = (tr["t"] for tr in after)
    assert t_kill < t_hold < t_stand < t_damp
    # Held at the last planner target (not collapsed) and returned to stand before damping.
    assert t_stand - t_hold == pytest.approx(FAST.hold_s, abs=0.01)


def hello_meta(action: dict | None = None, **changes) -> dict:
    """A service's hello reply for a Go2-sized engine: its public manifest (no normalizer)."""
    from robot.probe_engine import go2_manifest

    man = {**go2_manifest(action), "checksums": {"graph_sha256": "0" * 64}, **changes}
    del man["normalizer"]
    return {"state_dim": 30, "action_dim": 12, "cond_dim": 3, "dt": 0.02, "manifest": man}


def test_planner_refuses_a_mismatched_engine_profile():
    act = {**LEGGED_GYM.as_dict(), "joint_names": list(reversed(go2.JOINT_NAMES))}
    with pytest.raises(ValueError, match="joint order"):
        check_planner_metadata(hello_meta(act))
    man = hello_meta()["manifest"]
    a8 = {"dims": {**man["dims"], "A": 8},
          "observation": {**man["observation"], "action_names": man["observation"]["action_names"][:8]}}
    with pytest.raises(ValueError, match=r"A \(action_dim\): engine has 8, profile 'go2' has 12"):
        check_planner_metadata(hello_meta(**a8))
    with pytest.raises(ValueError, match=r"control dt: engine 0.04 s != profile 0.02 s"):
        check_planner_metadata(hello_meta(control={"dt": 0.04, "chunk_size": 4}))
    names = {**man["observation"], "state_names": list(reversed(man["observation"]["state_names"]))}
    with pytest.raises(ValueError, match="observation state_names differ"):
        check_planner_metadata(hello_meta(observation=names))
    with pytest.raises(ValueError, match="missing field 'format'"):
        check_planner_metadata({**hello_meta(), "manifest": {}})


def test_engine_action_semantics_are_returned_or_refused():
    contract = check_planner_metadata(hello_meta(LEGGED_GYM.as_dict()))
    sem = contract.semantics
    assert sem.kp == 20.0 and sem.kd == 0.5 and np.allclose(sem.scale, [0.125, 0.25, 0.25] * 4)
    assert contract.condition_names == ("cmd_vx", "cmd_vy", "cmd_yaw_rate")
    old = {k: v for k, v in LEGGED_GYM.as_dict().items() if k not in ("kp", "kd")}
    with pytest.raises(ValueError, match="records no kp.*re-export.*records no kd"):
        check_planner_metadata(hello_meta(old))
    with pytest.raises(ValueError, match="kp 500.0 outside"):
        check_planner_metadata(hello_meta({**LEGGED_GYM.as_dict(), "kp": 500.0}))
    pose = LEGGED_GYM.as_dict()
    pose["default_joint_pos"] = [0.0, 0.8, 1.0] * 4  # calf +1 rad: outside the joint range
    with pytest.raises(ValueError, match="default_joint_pos lies outside the robot's joint limits"):
        check_planner_metadata(hello_meta(pose))
    # the same rule refuses semantics configured for the controller directly
    with pytest.raises(ValueError, match="kp 500.0 outside"):
        ControllerConfig(semantics=replace(LEGGED_GYM, kp=500.0)).validate()


class ScriptedLink:
    """Delivers prepared chunks (stamped relative to each observation) in order."""

    def __init__(self, make_chunk) -> None:
        self.make_chunk = make_chunk
        self.pending: list[ActionChunk] = []
        self.obs = []

    def send_observation(self, obs) -> None:
        self.obs.append(obs)
        ch = self.make_chunk(obs)
        if ch is not None:
            self.pending.append(ch)

    def poll_chunk(self, timeout: float = 0.0):
        return self.pending.pop(0) if self.pending else None

    def close(self) -> None:
        pass


def chunk_for(obs, actions, *, t0_shift=0.0, valid=0.32, seq_shift=0):
    a = np.asarray(actions, np.float32)
    return ActionChunk(plan_id=obs.seq, obs_seq=obs.seq + seq_shift, t0=obs.stamp + t0_shift,
                       dt=0.02, actions=a, states=np.zeros((len(a), 30), np.float32), chunk=4,
                       valid_until=obs.stamp + t0_shift + valid)


def planning_controller(make_chunk, max_actions=4, record=True, safety=FAST, replan_every=1, **kw):
    sim = make_sim()
    link = ScriptedLink(make_chunk)
    ctl = Controller(sim, link, config=ControllerConfig(max_actions=max_actions, record=record,
                                                        safety=safety, replan_every=replan_every, **kw))
    return sim, link, ctl


def test_the_controller_executes_the_engine_semantics():
    """Targets = the engine's default pose + its per-joint scale * action, held with its gains."""
    rows = np.full((16, 12), 0.4)
    sim, link, ctl = planning_controller(lambda o: chunk_for(o, rows), semantics=LEGGED_GYM)
    ctl.run(stop_when=lambda c: c.robot.now() > 2.0)
    plan = [r for r in ctl.trace if r.mode == "planning"]
    assert len(plan) > 50
    want = LEGGED_GYM.default_joint_pos + LEGGED_GYM.scale * 0.4
    np.testing.assert_allclose(plan[-1].q_target, want, atol=1e-9)
    assert plan[-1].kp == 20.0 and ctl.safety.config.planning_kd == 0.5


def test_actions_follow_chunk_stamps_and_past_actions_are_skipped():
    # Row i of every chunk has all actions = i / 10; the chunk is stamped 30 ms before the
    # observation (as if it arrived late): row 0 and half of row 1's slot have passed.
    rows = np.repeat(np.arange(16)[:, None] / 10.0, 12, axis=1)
    sim, link, ctl = planning_controller(lambda o: chunk_for(o, rows, t0_shift=-0.03))
    ctl.run(stop_when=lambda c: c.robot.now() > 2.0)
    assert ctl.mode is Mode.PLANNING
    plan = [r for r in ctl.trace if r.mode == "planning"]
    got = np.array([go2.target_to_action(r.q_target)[0] for r in plan])
    # Each observation (every 20 ms) gets a new chunk, so only rows 1 (t in [t0+0.02, t0+0.04))
    # and 2 run; row 0 is always skipped.
    assert set(np.round(got, 6)) <= {0.1, 0.2}
    assert ctl.counts["actions_skipped"] > 0


def test_hold_runs_at_most_max_actions_of_a_chunk_then_holds_the_last():
    rows = np.repeat(np.arange(16)[:, None] / 10.0, 12, axis=1)

    def every_fifth(o):
        return chunk_for(o, rows, valid=0.5) if o.seq % 5 == 0 else None

    sim, link, ctl = planning_controller(every_fifth, max_actions=4, merge="hold")
    ctl.run(stop_when=lambda c: c.robot.now() > 2.0)
    got = np.round([go2.target_to_action(r.q_target)[0] for r in ctl.trace if r.mode == "planning"], 6)
    assert got.max() == pytest.approx(0.3) and set(got) == {0.0, 0.1, 0.2, 0.3}


def test_aligned_keeps_running_a_chunk_while_the_next_is_late():
    """The runtime's default rule for an engine without the prefix inputs: a chunk keeps
    running on its time-aligned rows past the chunk size until the next one arrives, and
    the next observation waits for the previous one's answer."""
    rows = np.repeat(np.arange(16)[:, None] / 10.0, 12, axis=1)

    def answer(o):  # observations every 8 ticks: the chunk of 4 is over long before the next
        return chunk_for(o, rows, valid=0.32)

    sim, link, ctl = planning_controller(answer, max_actions=4, replan_every=8, horizon=16)
    assert ctl.merge == "aligned"
    ctl.run(stop_when=lambda c: c.robot.now() > 2.0)
    got = np.round([go2.target_to_action(r.q_target)[0] for r in ctl.trace if r.mode == "planning"], 6)
    assert got.max() == pytest.approx(0.7) and {0.4, 0.5, 0.6, 0.7} <= set(got)  # past the chunk size


def test_chunking_replans_every_fourth_policy_tick_and_runs_the_chunk_in_order():
    # Appendix O: execute 4 actions of a plan while the next is computed. Row i = i / 10.
    rows = np.repeat(np.arange(16)[:, None] / 10.0, 12, axis=1)
    sim, link, ctl = planning_controller(lambda o: chunk_for(o, rows), replan_every=4)
    ctl.run(stop_when=lambda c: c.robot.now() > 2.0)
    stamps = np.array([o.stamp for o in link.obs])
    gaps = np.round(np.diff(stamps), 4)
    assert set(gaps) == {0.08}, gaps  # one observation per 4 policy ticks (80 ms)
    plan = [r for r in ctl.trace if r.mode == "planning"]
    got = np.round([go2.target_to_action(r.q_target)[0] for r in plan], 6)
    # every action of the chunk runs in order: 0.0, 0.1, 0.2, 0.3, then the next chunk
    assert set(got) == {0.0, 0.1, 0.2, 0.3}
    assert ctl.counts["actions_skipped"] == 0


@pytest.mark.parametrize("bad", ["expired", "nan", "unknown_seq", "shape"])
def test_bad_chunks_are_rejected_and_never_reach_the_motors(bad):
    def make(o):
        if bad == "expired":
            return chunk_for(o, np.zeros((8, 12)), t0_shift=-0.5, valid=0.3)
        if bad == "nan":
            a = np.zeros((8, 12))
            a[0, 3] = np.nan
            return chunk_for(o, a)
        if bad == "unknown_seq":
            return chunk_for(o, np.zeros((8, 12)), seq_shift=5)
        return chunk_for(o, np.zeros((8, 7)))

    from dataclasses import replace

    sim, link, ctl = planning_controller(make, safety=replace(FAST, startup_wait_s=1.0))
    written = []
    orig = sim.write_command
    sim.write_command = lambda cmd: (written.append(cmd.is_finite()), orig(cmd))[1]
    summary = ctl.run(duration=2.5)
    assert ctl.counts["chunks_accepted"] == 0
    assert sum(ctl.rejected.values()) > 10
    assert summary["mode"] == "damping"  # never planned: startup wait ran out
    assert "planning" not in [tr["to"] for tr in summary["transitions"]]
    assert all(written)


def test_command_schedule_parsing():
    s = CommandSchedule.parse("0:0.5,0,0; 5:0,0,0.5")
    np.testing.assert_allclose(s(4.9), [0.5, 0, 0])
    np.testing.assert_allclose(s(5.0), [0, 0, 0.5])
    with pytest.raises(ValueError, match="T:vx,vy,yaw"):
        CommandSchedule.parse("0:0.5,0")


def test_cli_controller_sim_without_planner_stands_then_damps(tmp_path):
    import json
    import os
    import subprocess
    import sys

    from .conftest import child_env

    cmd = [sys.executable, "-m", "planner_runtime.cli", "controller", "--sim", "--passive", "0.1",
           "--stand-up", "0.5", "--startup-wait", "0.3", "--json"]
    cpu = max(os.sched_getaffinity(0))
    res = subprocess.run(cmd + ["--on-fault", "exit", "--cpus", str(cpu)], capture_output=True, text=True,
                         timeout=120, env=child_env())
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["cpus"] == [cpu]  # --cpus: the controller ran pinned
    assert [tr["to"] for tr in out["transitions"]] == ["stand_up", "stand", "damping"]
    assert "no planner" in out["transitions"][-1]["reason"]
    assert out["filter"]["nonfinite"] == 0 and out["ticks"] > 400
    # the default latches: the controller stays in damping (no resume by itself) until --duration
    res = subprocess.run(cmd + ["--duration", "2.5", "--timing-out", str(tmp_path / "t.npz")],
                         capture_output=True, text=True, timeout=120, env=child_env())
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert [tr["to"] for tr in out["transitions"]] == ["stand_up", "stand", "damping"]
    assert out["mode"] == "damping" and "no planner" in out["fault"]["latched"] and out["fault"]["resumable"]
    assert out["cpus"] is None  # not pinned unless asked
    assert out["ticks"] > 1000  # 2.5 s at 500 Hz: it kept damping after 0.9 s instead of exiting
    with np.load(tmp_path / "t.npz") as z:  # --timing-out: every loop period, no plan, never planned
        assert z["period_s"].size == out["ticks"] - 1 and int(z["period_tick0"]) == 1
        assert abs(float(np.median(z["period_s"])) - 0.002) < 5e-4
        assert z["turnaround_s"].size == 0 and int(z["planning_tick"]) == -1
    nowhere = subprocess.run(cmd + ["--timing-out", str(tmp_path / "no" / "t.npz")], capture_output=True,
                             text=True, timeout=120, env=child_env())
    assert nowhere.returncode == 2 and "--timing-out" in nowhere.stderr
    for bad_prio in ("0", "100"):  # refused with the reason (0 was silently ignored, 100 a traceback)
        refused = subprocess.run(cmd + ["--rt-priority", bad_prio], capture_output=True, text=True, timeout=120,
                                 env=child_env())
        assert refused.returncode == 2 and "--rt-priority" in refused.stderr and "Traceback" not in refused.stderr
    for bad_cpus in (str(max(os.sched_getaffinity(0)) + 1000), "one"):
        refused = subprocess.run(cmd + ["--cpus", bad_cpus], capture_output=True, text=True, timeout=120,
                                 env=child_env())
        assert refused.returncode == 2 and "--cpus" in refused.stderr and "Traceback" not in refused.stderr
    bad = subprocess.run(cmd[:5] + ["--command", "0.5", "0", "0", "--schedule", "0:0.5,0,0"],
                         capture_output=True, text=True, timeout=120, env=child_env())
    assert bad.returncode == 2 and "not both" in bad.stderr
