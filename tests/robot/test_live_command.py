"""Live velocity commands (robot/live_command.py): the Go2's wireless remote sticks and a
program over the control endpoint steer the planner, within the range of the commands the
engine was trained on, and lapse to zero when a program stops renewing them.

The limits and the stick mapping are checked directly; the rest with the in-process MuJoCo
Go2, the real planner service (the Go2-sized probe engine, its manifest given a min-max
normalizer so that the service states a command range) and real ZeroMQ on loopback.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import numpy as np
import pytest

from planner_runtime import probe_engine
from robot import wireless_remote
from robot.controller import Controller, ControllerConfig, ServiceLink
from robot.live_command import CommandLimits, LiveCommand
from robot.probe_engine import go2_manifest
from robot.safety import Mode, SafetyConfig

from .conftest import child_env, free_port, start_service, wait_service

FAST = SafetyConfig(passive_s=0.1, stand_up_s=0.5, grace_s=0.5, hold_s=0.5, stand_ramp_s=0.2,
                    stand_timeout_s=1.0, startup_wait_s=5.0)
# the engine's data: vx -0.3..0.8, vy +/-0.2, yaw +/-0.8, then a cost target column
DATA = {"lo": [-0.3, -0.2, -0.8, 0.0], "hi": [0.8, 0.2, 0.8, 15.6]}


def remote(lx=0.0, ly=0.0, rx=0.0, keys=()):
    return wireless_remote.decode(wireless_remote.encode(keys, lx=lx, ly=ly, rx=rx))


def test_limits_come_from_the_engines_data_and_only_narrow():
    lim = CommandLimits.from_condition_range(DATA)
    assert lim is not None and lim.lo.tolist() == [-0.3, -0.2, -0.8] and lim.hi.tolist() == [0.8, 0.2, 0.8]
    user = CommandLimits.from_option([-0.5, 0.5, 0.3, 1.5])  # wider vx backward and yaw: ignored
    both = lim.intersect(user)
    assert both.lo.tolist() == [-0.3, -0.2, -0.8] and both.hi.tolist() == [0.5, 0.2, 0.8]
    assert CommandLimits.from_condition_range(None) is None  # a std normalizer states no range
    assert CommandLimits.from_condition_range({"lo": [0.1, 0, 0], "hi": [0.8, 0, 0]}).lo[0] == 0.0  # standing kept
    with pytest.raises(ValueError, match="contain 0"):
        CommandLimits(np.array([0.1, 0, 0]), np.array([0.5, 0, 0]))
    with pytest.raises(ValueError, match="finite"):
        CommandLimits(np.array([np.nan, 0, 0]), np.array([0.5, 0, 0]))


def test_sticks_map_to_the_limit_on_their_side_past_a_dead_zone():
    live = LiveCommand("remote", CommandLimits.from_condition_range(DATA))
    assert live.from_remote(remote(ly=1.0), 0.0).tolist() == pytest.approx([0.8, 0.0, 0.0])
    assert live.from_remote(remote(ly=-1.0), 0.0).tolist() == pytest.approx([-0.3, 0.0, 0.0])
    # stick right: vy to the right (negative) and turning clockwise (negative yaw)
    assert live.from_remote(remote(lx=1.0, rx=1.0), 0.0).tolist() == pytest.approx([0.0, -0.2, -0.8])
    assert live.from_remote(remote(lx=-1.0, rx=-1.0), 0.0).tolist() == pytest.approx([0.0, 0.2, 0.8])
    assert live.from_remote(remote(ly=0.05, lx=-0.07), 0.0).tolist() == [0.0, 0.0, 0.0]  # dead zone
    half = live.from_remote(remote(ly=0.54), 0.0)[0]  # (0.54 - 0.08) / 0.92 = 0.5 of the way
    assert half == pytest.approx(0.4)
    with pytest.raises(ValueError, match="finite"):
        live.from_remote(remote(ly=float("nan")), 0.1)
    assert live.at(0.1)[0] == pytest.approx(0.4)  # a garbled remote leaves the last command ...
    assert live.at(0.6).tolist() == [0.0, 0.0, 0.0]  # ... until it lapses: states with no remote


def test_a_program_command_is_clamped_and_lapses_to_zero_unless_renewed():
    live = LiveCommand("endpoint", CommandLimits.from_condition_range(DATA), timeout_s=0.5)
    assert live.at(0.0).tolist() == [0.0, 0.0, 0.0]  # nothing asked yet: stand still
    got, clamped = live.set([1.5, 0.0, -2.0], now=10.0)
    assert got.tolist() == [0.8, 0.0, -0.8] and clamped
    assert live.at(10.4).tolist() == [0.8, 0.0, -0.8]
    assert live.at(10.6).tolist() == [0.0, 0.0, 0.0] and live.lapses == 1
    live.set([0.2, 0.1, 0.0], now=11.0)
    assert live.at(11.1).tolist() == [0.2, 0.1, 0.0]
    for bad in ([0.1, float("inf"), 0.0], [0.1, 0.2], "fast", [None, 0, 0]):
        with pytest.raises(ValueError, match="3 finite numbers|3 numbers"):
            live.set(bad, now=11.2)
    assert live.at(11.2).tolist() == [0.2, 0.1, 0.0]  # refused commands change nothing
    s = live.stats()
    assert s["updates"] == 2 and s["clamped"] == 1 and s["lapses"] == 1 and s["source"] == "endpoint"
    with pytest.raises(ValueError, match="source"):
        LiveCommand("joystick", CommandLimits.from_condition_range(DATA))


@pytest.fixture
def minmax_service(tmp_path):
    """The real service on the Go2-sized probe engine whose manifest records a min-max
    normalizer over the command (the probe graph itself does not normalize)."""
    man = go2_manifest()
    shift = [(lo + hi) / 2 for lo, hi in zip(DATA["lo"][:3], DATA["hi"][:3], strict=True)]
    scale = [(hi - lo) / 2 for lo, hi in zip(DATA["lo"][:3], DATA["hi"][:3], strict=True)]
    man["normalizer"] = {**man["normalizer"], "kind": "minmax",
                         "cond": {"kind": "minmax", "shift": shift, "scale": scale}}
    engine = probe_engine.build_probe_engine(tmp_path / "go2_minmax.onnx", man, seed=0, prev_gain=0.1,
                                             noise_gain=1e-3, weight_gain=1e-3, level_gain=0.0)
    ep = f"tcp://127.0.0.1:{free_port()}"
    proc = start_service(engine, ep)
    try:
        yield ep, wait_service(ep)
    finally:
        proc.kill()
        proc.wait(10)


class SticksSim:
    """The in-process Go2 with the operator's wireless remote sticks in its state."""

    def __init__(self):
        from sim.mujoco_harness import MujocoGo2

        self.sim = MujocoGo2()
        self.sim.reset()
        self.sticks: dict = {}

    def __getattr__(self, name):
        return getattr(self.sim, name)

    def read_state(self):
        st = self.sim.read_state()
        st.wireless_remote = wireless_remote.encode((), **self.sticks)
        return st


class Recording(ServiceLink):
    """The service link, keeping the condition of every observation sent."""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.conds: list[np.ndarray] = []

    def send_observation(self, obs):
        self.conds.append(np.asarray(obs.cond, np.float64).copy())
        return super().send_observation(obs)


def test_the_remote_steers_the_planner_within_the_range_the_service_states(minmax_service):
    pytest.importorskip("mujoco")
    ep, meta = minmax_service
    lim = CommandLimits.from_condition_range(meta["condition_range"])
    assert lim is not None and np.allclose(lim.hi, [0.8, 0.2, 0.8]) and np.allclose(lim.lo, [-0.3, -0.2, -0.8])
    robot = SticksSim()
    link = Recording(ep, timeout=5.0)
    ctl = Controller(robot, link, LiveCommand("remote", lim),
                     ControllerConfig(lockstep=True, lockstep_timeout_s=2.0, replan_every=1, safety=FAST))
    try:
        ctl.run(stop_when=lambda c: c.mode is Mode.PLANNING)
        robot.sticks = {"ly": 1.0, "rx": -0.54}  # full ahead, turning left at half
        n0 = len(link.conds)
        ctl.run(duration=0.3)
        ahead = link.conds[n0 + 1:]
        robot.sticks = {}  # released
        n1 = len(link.conds)
        summary = ctl.run(duration=0.3)
        released = link.conds[n1 + 1:]
    finally:
        link.close()
    assert len(ahead) > 5 and len(released) > 5
    assert np.allclose(ahead, [0.8, 0.0, 0.4], atol=1e-6)  # vx at the data's top, yaw half of 0.8
    assert np.allclose(released, 0.0)
    assert summary["command"]["source"] == "remote" and summary["command"]["updates"] > 100


def test_the_endpoint_takes_velocity_commands_only_when_it_is_the_source(minmax_service, tmp_path):
    pytest.importorskip("mujoco")
    from robot.control_endpoint import ControlEndpoint, send
    from sim.mujoco_harness import MujocoGo2

    ep, meta = minmax_service
    lim = CommandLimits.from_condition_range(meta["condition_range"])
    sim = MujocoGo2()
    sim.reset()
    link = Recording(ep, timeout=5.0)
    ctl = Controller(sim, link, LiveCommand("endpoint", lim, timeout_s=0.2),
                     ControllerConfig(lockstep=True, lockstep_timeout_s=2.0, replan_every=1, safety=FAST))
    cep = f"ipc://{tmp_path}/ctl.sock"
    ctl.control = ControlEndpoint(cep)
    replies: list = []

    def ask(cmd: str, **fields) -> dict:
        t = threading.Thread(target=lambda: replies.append(send(cep, cmd, timeout=10.0, **fields)))
        t.start()
        while t.is_alive():  # the loop answers: it polls the endpoint every tick
            ctl.step()
        return replies[-1]

    try:
        before = ask("status")
        assert before["mode"] != "planning" and before["planning_s"] is None
        ctl.run(stop_when=lambda c: c.mode is Mode.PLANNING)
        ctl.run(duration=0.2)
        # how long it has planned, by its own clock: what a steering program aligns a schedule to
        assert ask("status")["planning_s"] == pytest.approx(0.2, abs=0.03)
        got = ask("velocity", vx=2.0, vy=0.1, yaw=0.0)
        assert got == {"ok": True, "command": [0.8, 0.1, 0.0], "clamped": True, "timeout_s": 0.2}
        n0 = len(link.conds)
        ctl.run(duration=0.1)
        assert np.allclose(link.conds[n0 + 1:], [0.8, 0.1, 0.0])
        ctl.run(duration=0.3)  # not renewed: lapsed to zero
        n1 = len(link.conds)
        ctl.run(duration=0.1)
        assert np.allclose(link.conds[n1:], 0.0)
        bad = ask("velocity", vx="fast")
        assert not bad["ok"] and "3 numbers" in bad["refused"]
        assert ctl.mode is Mode.PLANNING  # a bad command changes nothing
        assert ctl.summary()["command"]["lapses"] == 1  # the one above
        # from a shell: `python -m robot.control_endpoint velocity EP --vx .. --for S` keeps renewing it
        from robot.control_endpoint import main as endpoint_cli

        n_updates = ctl.command.updates
        rc: list = []
        t = threading.Thread(target=lambda: rc.append(endpoint_cli(
            ["velocity", cep, "--vx", "0.3", "--yaw", "-0.2", "--for", "0.5", "--rate", "20"])))
        t.start()
        while t.is_alive():
            ctl.step()
        # (the in-process robot's clock runs faster than the wall clock the CLI paces on)
        assert rc == [0] and ctl.command.updates - n_updates >= 8  # ~11 in 0.5 s at 20 Hz
        assert ctl.command.at(ctl.robot.now()).tolist() == pytest.approx([0.3, 0.0, -0.2])
    finally:
        ctl.control.close()
        link.close()
    # a controller steered otherwise refuses velocity commands (the endpoint answers so)
    for other in (None, LiveCommand("remote", lim)):
        with pytest.raises(ValueError, match="command source is '(schedule|remote)'.*--command-source endpoint"):
            Controller(sim, None, other).set_velocity([0.1, 0.0, 0.0])


def test_cli_refuses_live_sources_it_cannot_bound_or_mixes(tmp_path):
    cmd = [sys.executable, "-m", "planner_runtime.cli", "controller", "--sim", "--passive", "0.1",
           "--stand-up", "0.3", "--startup-wait", "0.2", "--on-fault", "exit", "--json"]
    cases = [
        (["--command-source", "remote"], "--command-limits"),  # no planner, so no range
        (["--command-source", "endpoint", "--command-limits", "-0.3", "0.8", "0.2", "0.8"], "--control"),
        (["--command-source", "remote", "--command", "0.5", "0", "0"], "give no --command"),
        (["--command-limits", "-0.3", "0.8", "0.2", "0.8"], "applies to live commands"),
    ]
    for extra, why in cases:
        res = subprocess.run(cmd + extra, capture_output=True, text=True, timeout=120, env=child_env())
        assert res.returncode == 2 and why in res.stderr, (extra, res.stderr[-1000:])
    ok = subprocess.run(cmd + ["--command-source", "remote", "--command-limits", "-0.2", "0.5", "0.1", "0.6"],
                        capture_output=True, text=True, timeout=120, env=child_env())
    assert ok.returncode == 0, ok.stderr[-2000:]
    out = json.loads(ok.stdout.strip().splitlines()[-1])
    assert out["command"]["source"] == "remote"
    assert out["command"]["limits"]["lo"] == [-0.2, -0.1, -0.6] and out["command"]["limits"]["hi"] == [0.5, 0.1, 0.6]


def test_a_fixed_command_outside_the_engines_data_is_named_at_startup(minmax_service):
    ep, _ = minmax_service
    cmd = [sys.executable, "-m", "planner_runtime.cli", "controller", "--sim", "--planner", ep, "--passive", "0.1",
           "--stand-up", "0.3", "--duration", "1.0", "--json"]
    far = subprocess.run(cmd + ["--schedule", "0:0.5,0,0;1:1.2,0,0"], capture_output=True, text=True,
                         timeout=120, env=child_env())
    assert far.returncode == 0, far.stderr[-2000:]
    assert "asks for [[1.2, 0.0, 0.0]], outside the commands the engine was trained on" in far.stderr
    near = subprocess.run(cmd + ["--command", "0.5", "0", "0"], capture_output=True, text=True, timeout=120,
                          env=child_env())
    assert near.returncode == 0 and "outside the commands" not in near.stderr
