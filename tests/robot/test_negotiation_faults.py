"""One owner, negotiation before motion, latched faults and operator resume, in process.

The controller runs against the in-process MuJoCo Go2 (simulated time) and the real
planner service (`planner-runtime serve`, its own process, on loopback) on Go2-sized probe
engines (robot/probe_engine.py): another seed is another engine identity, other action
semantics are an engine this controller must refuse.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from planner_runtime.client import PlannerClient
from robot import go2_constants as go2
from robot import wireless_remote
from robot.actions import PROJECT
from robot.controller import Controller, ControllerConfig, ServiceLink, go2_profile
from robot.probe_engine import build_probe_engine
from robot.safety import Mode, SafetyConfig

from .conftest import child_env, free_port, start_service, wait_service

pytest.importorskip("mujoco")

FAST = SafetyConfig(passive_s=0.1, stand_up_s=0.5, grace_s=0.2, hold_s=0.3, stand_ramp_s=0.3,
                    stand_timeout_s=0.6, startup_wait_s=3.0)


def make_sim():
    from sim.mujoco_harness import MujocoGo2

    sim = MujocoGo2()
    sim.reset()
    return sim


@pytest.fixture
def services():
    procs: list[subprocess.Popen] = []

    def start(engine: Path, ep: str | None = None, *extra: str) -> tuple[subprocess.Popen, str]:
        ep = ep or f"tcp://127.0.0.1:{free_port()}"
        procs.append(start_service(engine, ep, *extra))
        wait_service(ep)
        return procs[-1], ep

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(10)


@pytest.fixture(scope="module")
def other_engines(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("engines")
    stiff = {**PROJECT.as_dict(), "kp": 150.0}  # outside what this controller executes
    flipped = {**PROJECT.as_dict(), "joint_names": list(reversed(go2.JOINT_NAMES))}
    return {"seed1": build_probe_engine(d / "seed1.onnx", seed=1),
            "stiff": build_probe_engine(d / "stiff.onnx", action=stiff),
            "flipped": build_probe_engine(d / "flipped.onnx", action=flipped)}


def controller(link, **kw) -> Controller:
    cfg = ControllerConfig(lockstep=True, lockstep_timeout_s=2.0, replan_every=1, safety=FAST, **kw)
    return Controller(make_sim(), link, config=cfg)


def test_a_second_controller_never_plans_while_the_first_owns_the_planner(go2_engine, services):
    _, ep = services(go2_engine, None, "--owner-timeout", "30")
    a = ServiceLink(ep, timeout=5.0, profile=go2_profile())
    b = ServiceLink(ep, timeout=5.0, profile=go2_profile())
    try:
        na, nb = a.negotiate(), b.negotiate()
        assert na.ok and na.owner == "owner" and na.identity["graph_sha256"]
        assert nb.ok and nb.owner == "busy"  # the engine fits, but the planner is taken
        ca = controller(a)
        cb = Controller(make_sim(), b, config=ControllerConfig(  # b waits long for a planner
            lockstep=True, lockstep_timeout_s=2.0, replan_every=1,
            safety=SafetyConfig(passive_s=0.1, stand_up_s=0.5, startup_wait_s=600.0)))
        # the two control loops tick side by side, each on its own simulated Go2
        while ca.robot.now() < 3.0:
            ca.step()
            cb.step()
        assert ca.mode is Mode.PLANNING and ca.counts["chunks_accepted"] > 50
        assert "planning" not in [tr.dst.value for tr in cb.safety.transitions]
        assert cb.counts["chunks_accepted"] == 0 and cb.counts["obs_sent"] == 0
        assert b.stats["busy"] >= 2 and b.client.session is None
        with PlannerClient(ep) as probe:
            own = probe.ping()["ownership"]
        assert own["owner"]["explicit"] and own["busy_replies"] >= 2
        # the first releases the planner (its link closes): the second takes it and plans
        a.close()
        deadline = time.monotonic() + 10.0  # b claims again every 0.5 s (wall clock)
        while cb.mode is not Mode.PLANNING and time.monotonic() < deadline:
            cb.step()
        assert cb.mode is Mode.PLANNING and cb.counts["chunks_accepted"] > 0
        assert cb.summary()["planner"]["owner"] is True
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("which", ["stiff", "flipped"])
def test_a_mismatched_engine_keeps_the_robot_out_of_planning(other_engines, services, which):
    proc, ep = services(other_engines[which])
    link = ServiceLink(ep, timeout=5.0, profile=go2_profile())
    try:
        neg = link.negotiate()
        assert not neg.ok and link.refused and neg.owner == "unclaimed"
        want = "kp 150.0 outside" if which == "stiff" else "joint order"
        assert any(want in p and p.startswith("service:") for p in neg.problems), neg.problems
        assert any(p.startswith("controller:") for p in neg.problems), neg.problems
        ctl = controller(link)
        summary = ctl.run(duration=5.0)
        assert [tr["to"] for tr in summary["transitions"]] == ["stand_up", "stand", "damping"]
        assert summary["counts"]["obs_sent"] == 0 and summary["planner"]["negotiation"]["ok"] is False
        with PlannerClient(ep) as probe:
            h = probe.ping()
        assert h["received"] == 0 and h["ownership"]["owner"] is None  # nothing reached the planner
    finally:
        link.close()


def test_a_different_engine_after_a_restart_is_never_planned_with(go2_engine, other_engines, services):
    import os
    import signal

    proc, ep = services(go2_engine)
    link = ServiceLink(ep, timeout=5.0, profile=go2_profile())
    try:
        assert link.negotiate().ok
        ctl = controller(link)
        ctl.run(stop_when=lambda c: c.mode is Mode.PLANNING and c.robot.now() > 1.5)
        first = link.expected_identity
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        services(other_engines["seed1"], ep)  # same endpoint, another engine
        t_swap = ctl.robot.now()
        # lockstep waits up to 2 s of wall time per observation while the service is down;
        # ownership is re-claimed once it answers
        summary = ctl.run(duration=6.0)
        after = [tr for tr in summary["transitions"] if tr["t"] >= t_swap]
        assert "planning" not in [tr["to"] for tr in after], after
        assert [tr["to"] for tr in after][-1] == "damping"
        assert link.refused and "engine identity changed" in link.refused
        assert summary["planner"]["identity"] == first
    finally:
        link.close()


class RemoteSim:
    """The in-process Go2 with the operator's wireless remote in its state."""

    def __init__(self):
        self.sim = make_sim()
        self.keys: tuple[str, ...] = ()

    def __getattr__(self, name):
        return getattr(self.sim, name)

    def read_state(self):
        st = self.sim.read_state()
        st.wireless_remote = wireless_remote.encode(self.keys)
        return st


def test_remote_stop_latches_and_only_the_remote_resume_leaves_damping():
    robot = RemoteSim()
    ctl = Controller(robot, None, config=ControllerConfig(safety=FAST))
    ctl.run(stop_when=lambda c: c.mode is Mode.STAND)
    robot.keys = ("L2", "B")
    ctl.run(stop_when=lambda c: c.mode is Mode.DAMPING)
    robot.keys = ("L2", "A", "B")  # both combinations: the stop wins, no resume
    summary = ctl.run(duration=0.5, damping_linger_s=None)
    assert summary["mode"] == "damping" and "L2+B" in summary["fault"]["latched"]
    robot.keys = ("L2", "A")  # the resume combination while it was not pressed before
    ctl.run(stop_when=lambda c: c.mode is Mode.STAND_UP)
    robot.keys = ("L2", "A")  # held: one press, one resume
    summary = ctl.run(stop_when=lambda c: c.mode is Mode.STAND)
    names = [tr["to"] for tr in summary["transitions"]]
    assert names == ["stand_up", "stand", "damping", "stand_up", "stand"], names
    assert "operator resume (wireless remote L2+A)" in summary["transitions"][-2]["reason"]
    assert [r["accepted"] for r in summary["fault"]["resumes"]] == [True]
    assert summary["fault"]["latched"] is None


def test_control_endpoint_resumes_after_a_watchdog_fault(tmp_path):
    from robot.control_endpoint import ControlEndpoint, send

    ep = f"ipc://{tmp_path}/ctl.sock"
    ctl = Controller(make_sim(), None, config=ControllerConfig(safety=FAST))
    ctl.control = ControlEndpoint(ep)
    replies: list = []

    def ask(cmd: str) -> dict:
        t = threading.Thread(target=lambda: replies.append(send(ep, cmd, timeout=10.0)))
        t.start()
        while t.is_alive():  # the loop answers: it polls the endpoint every tick
            ctl.step()
        return replies[-1]

    try:
        assert ask("resume") == {"ok": False, "mode": "passive",
                                 "refused": "nothing to resume: the robot is in passive, not damping"}
        # no planner: the startup wait runs out -> damping (a fault), latched
        ctl.run(stop_when=lambda c: c.mode is Mode.DAMPING)
        ctl.run(duration=1.0, damping_linger_s=None)
        st = ask("status")
        assert st["mode"] == "damping" and "no planner" in st["fault"] and st["resumable"]
        got = ask("resume")
        assert got["ok"] and got["mode"] == "stand_up" and "no planner" in got["after"]
        assert ctl.mode is Mode.STAND_UP
        assert ask("stop") == {"ok": True, "mode": "damping"} and ctl.mode is Mode.DAMPING
        bad = ask("teleport")
        assert not bad["ok"] and "unknown cmd" in bad["error"]
    finally:
        ctl.control.close()
    with pytest.raises(ValueError, match="loopback"):
        ControlEndpoint("tcp://0.0.0.0:5999")


def test_cli_negotiation_failure_exits_3_and_logs_why(other_engines, services):
    _, ep = services(other_engines["stiff"])
    cmd = [sys.executable, "-m", "planner_runtime.cli", "controller", "--sim", "--planner", ep,
           "--passive", "0.1", "--stand-up", "0.5", "--startup-wait", "0.5", "--on-fault", "exit", "--json"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=child_env())
    assert res.returncode == 3, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert [tr["to"] for tr in out["transitions"]] == ["stand_up", "stand", "damping"]
    assert out["planner"]["negotiation"]["ok"] is False and "kp 150.0" in out["planner"]["refused"]
    assert out["planner"]["identity"]["graph_sha256"] and "will not be used" in res.stderr
    assert "planner engine identity: method toy-fused, graph sha256" in res.stderr


def test_cli_logs_and_reports_the_engine_identity(go2_engine, services):
    _, ep = services(go2_engine)
    cmd = [sys.executable, "-m", "planner_runtime.cli", "controller", "--sim", "--planner", ep,
           "--passive", "0.1", "--stand-up", "0.5", "--duration", "2.0", "--json"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=child_env())
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    from planner_runtime.engine_file import read_manifest

    assert out["planner"]["identity"]["graph_sha256"] == read_manifest(go2_engine).checksums.graph_sha256
    assert out["planner"]["negotiation"] == {"ok": True, "problems": [], "owner_at_start": "owner"}
    assert "planning" in [tr["to"] for tr in out["transitions"]]
    # the claim made before motion was held through passive and stand-up (renewed, never lost)
    assert out["planner"]["renewals"] >= 1 and out["planner"]["session_lost"] == 0
    assert out["planner"]["claims_granted"] == 1 and not out["chunks_rejected"]
