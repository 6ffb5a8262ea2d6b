"""The unchanged controller binary against the MuJoCo Go2 standing in for the robot on
real cyclonedds (loopback interface "lo", a random domain id), as it runs on the robot.

Processes: the stand-in robot (`python -m sim.dds_robot`), the planner service
(`planner-runtime serve` on the Go2-sized test engine) and the controller
(`planner-runtime controller --json`). Wall-clock timings under the machine's load vary,
so the tests assert order and causes, not durations; the durations are measured by
`robot.bench_loop` instead.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from .conftest import child_env, free_port, start_service, wait_service  # noqa: F401

pytestmark = [pytest.mark.dds, pytest.mark.timeout(180)]
pytest.importorskip("unitree_sdk2py")
pytest.importorskip("mujoco")

# Generous state timeout: on a loaded CI machine the stand-in may stall for tens of ms.
SAFE_FAST = ["--passive", "0.3", "--stand-up", "1.0", "--state-timeout", "2.0", "--grace", "0.5"]


class ControllerProc:
    def __init__(self, domain: int, *args: str) -> None:
        cmd = [sys.executable, "-m", "planner_runtime.cli", "controller", "--iface", "lo",
               "--domain-id", str(domain), "--json", *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=child_env())
        self.lines: list[str] = []
        self.events: dict[str, threading.Event] = {}
        self._t = threading.Thread(target=self._read_err, daemon=True)
        self._t.start()

    def _read_err(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line)
            for key, ev in list(self.events.items()):
                if key in line:
                    ev.set()

    def wait_for(self, text: str, timeout: float) -> bool:
        ev = self.events.setdefault(text, threading.Event())
        if any(text in ln for ln in self.lines):
            return True
        return ev.wait(timeout)

    def result(self, timeout: float = 60.0) -> dict:
        out, _ = self.proc.communicate(timeout=timeout)
        self._t.join(5)
        assert self.proc.returncode == 0, "".join(self.lines[-30:])
        return json.loads(out.strip().splitlines()[-1])


def served_plans(endpoint: str, at_least: int, timeout: float) -> int:
    """Poll the service's health (a second client on the same socket) until it has planned
    `at_least` times or `timeout` passes; return the last count."""
    from planner_runtime.client import PlannerClient

    deadline = time.monotonic() + timeout
    plans = -1
    with PlannerClient(endpoint, timeout=5.0) as c:
        while time.monotonic() < deadline:
            plans = int(c.ping(5.0)["plans"])
            if plans >= at_least:
                break
            time.sleep(0.1)
    return plans


def modes_after(summary: dict, t: float) -> list[str]:
    return [tr["to"] for tr in summary["transitions"] if tr["t"] >= t]


@pytest.fixture
def service(go2_engine):
    ep = f"tcp://127.0.0.1:{free_port()}"
    proc = start_service(go2_engine, ep)
    try:
        wait_service(ep)
        yield proc, ep
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def test_sim_in_the_loop_then_planner_kill9_hold_stand_damping(dds_domain, stand_in_factory, service):
    srv, ep = service
    robot = stand_in_factory("--dds-start-pose", "lying")
    ctl = ControllerProc(dds_domain, "--planner", ep, "--command", "0.3", "0", "0",
                         "--stand-timeout", "1.5", "--duration", "60", "--on-fault", "exit", *SAFE_FAST)
    assert ctl.wait_for("-> planning", 60), "".join(ctl.lines[-20:])
    time.sleep(2.0)  # plan for a while: the height check below looks at the last 1.5 s
    # ... and until the service has planned 40 times (a count, not a duration: a loaded CI
    # machine once accepted exactly 20 chunks in the 2 s)
    plans = served_plans(ep, at_least=40, timeout=60.0)
    assert plans >= 40, plans
    t_kill = time.monotonic()  # the controller's clock over DDS is this machine's monotonic clock
    os.kill(srv.pid, signal.SIGKILL)
    srv.wait(10)
    summary = ctl.result(timeout=60)
    stats = robot.stop()
    # Sim in the loop: stood up from lying, planned, commands with a valid CRC were applied.
    names = [tr["to"] for tr in summary["transitions"]]
    assert names[:3] == ["stand_up", "stand", "planning"]
    assert summary["counts"]["chunks_accepted"] > 20, (summary["counts"], summary.get("chunks_rejected"))
    assert summary["robot"]["commands_published"] > 500 and summary["robot"]["states_bad_crc"] == 0
    assert stats["cmds_applied"] > 100 and stats["bad_crc"] == 0 and stats["non_finite"] == 0
    heights = [h for (t, h, _g) in stats["trace"] if t_kill - 1.5 < t < t_kill]
    assert heights and min(heights) > 0.22, heights  # standing while planning
    # Watchdog after kill -9: hold -> stand -> damping, in this order, each after the kill.
    after = [tr for tr in summary["transitions"] if tr["t"] >= t_kill]
    assert [tr["to"] for tr in after] == ["hold", "stand", "damping"], summary["transitions"]
    assert all("watchdog" in tr["reason"] for tr in after)
    ts = [tr["t"] for tr in after]
    assert t_kill < ts[0] < ts[1] < ts[2]
    # motors driven at normal priority: the controller says so (on the robot: --rt-priority)
    assert any("runs at normal priority" in ln for ln in ctl.lines), "".join(ctl.lines[-20:])
    # it read the newest state each time: how late, by the robot's tick
    assert summary["robot"]["state_delay_ms"]["n"] == summary["robot"]["states_received"]


def test_dry_run_publishes_nothing_and_remote_stop_goes_to_damping(dds_domain, stand_in_factory):
    robot = stand_in_factory("--dds-start-pose", "stand", "--dds-remote-stop-at", "3.0")
    ctl = ControllerProc(dds_domain, "--dry-run", "--duration", "30", "--on-fault", "exit", *SAFE_FAST)
    summary = ctl.result(timeout=60)
    stats = robot.stop()
    assert summary["robot"]["dry_run"] is True
    assert not any("runs at normal priority" in ln for ln in ctl.lines)  # no motors: no warning
    assert summary["robot"]["commands_published"] == 0 and summary["robot"]["commands_dry_run"] > 0
    assert summary["robot"]["states_received"] > 0
    assert stats["cmds_received"] == 0 and stats["cmds_applied"] == 0
    assert summary["mode"] == "damping"
    assert "L2+B" in summary["transitions"][-1]["reason"]


def test_bad_crc_and_nan_commands_never_reach_the_motors(dds_domain, stand_in_factory):
    robot = stand_in_factory("--dds-start-pose", "stand")
    n = 50
    script = Path(__file__).with_name("_bad_publisher.py")
    res = subprocess.run([sys.executable, str(script), str(dds_domain), str(n)], capture_output=True,
                         text=True, timeout=60, env=child_env())
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["matched"] and out["bridge_refused_nan"]
    stats = robot.stop()
    assert stats["bad_crc"] >= n // 2 and stats["non_finite"] >= n // 2
    assert stats["cmds_applied"] == 0
    assert stats["max_abs_tau_ff_applied"] == 0.0 and stats["max_kp_applied"] == 0.0


def _child(*args: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=child_env())
    lines = []
    for _ in range(10):  # the SDK prints a few lines of its own first
        lines.append(proc.stdout.readline())
        if '"ready"' in lines[-1]:
            return proc
        if not lines[-1]:
            break
    proc.kill()
    raise RuntimeError(f"{args[0]} did not start: {lines!r} {proc.stderr.read()[-2000:]}")


def test_fault_latches_over_dds_and_an_operator_resume_plans_again(dds_domain, stand_in_factory,
                                                                   service, go2_engine, tmp_path):
    from robot.control_endpoint import send

    srv, ep = service
    robot = stand_in_factory("--dds-start-pose", "stand")
    control = f"ipc://{tmp_path}/ctl.sock"
    ctl = ControllerProc(dds_domain, "--planner", ep, "--control", control, "--stand-timeout", "1.0",
                         "--duration", "120", *SAFE_FAST)
    try:
        assert ctl.wait_for("-> planning", 60), "".join(ctl.lines[-20:])
        assert served_plans(ep, at_least=20, timeout=60.0) >= 20
        t_kill = time.monotonic()
        os.kill(srv.pid, signal.SIGKILL)
        srv.wait(10)
        assert ctl.wait_for("-> damping", 30), "".join(ctl.lines[-20:])
        # the planner comes back (the same engine): the robot stays in damping by itself
        srv2 = start_service(go2_engine, ep)
        try:
            wait_service(ep)
            time.sleep(2.0)
            st = send(control, "status", timeout=10.0)
            assert st["mode"] == "damping" and "watchdog" in st["fault"] and st["resumable"], st
            got = send(control, "resume", timeout=10.0)
            assert got["ok"] and got["mode"] == "stand_up", got
            n_planning = sum("-> planning" in ln for ln in ctl.lines)
            deadline = time.monotonic() + 60
            while sum("-> planning" in ln for ln in ctl.lines) == n_planning and time.monotonic() < deadline:
                time.sleep(0.1)
            assert sum("-> planning" in ln for ln in ctl.lines) == n_planning + 1, "".join(ctl.lines[-20:])
            ctl.proc.send_signal(signal.SIGTERM)
            summary = ctl.result(timeout=60)
        finally:
            srv2.kill()
            srv2.wait(10)
    finally:
        if ctl.proc.poll() is None:
            ctl.proc.kill()
    stats = robot.stop()
    after = [tr for tr in summary["transitions"] if tr["t"] >= t_kill]
    assert [tr["to"] for tr in after] == ["hold", "stand", "damping", "stand_up", "stand", "planning",
                                          "damping"], after
    assert "operator resume (control endpoint) after: watchdog" in after[3]["reason"]
    assert "signal SIGTERM" in after[-1]["reason"] and summary["fault"]["resumable"] is False
    assert [r["accepted"] for r in summary["fault"]["resumes"]] == [True]
    # re-claimed the restarted service, with the engine identity it negotiated at start
    pl = summary["planner"]
    assert pl["claims_granted"] >= 2 and pl["refused"] is None and pl["owner"]
    assert stats["bad_crc"] == 0 and stats["non_finite"] == 0 and not stats["fell"]


def test_another_rt_lowcmd_publisher_refuses_the_start(dds_domain):
    squatter = _child(str(Path(__file__).with_name("_lowcmd_probe.py")), "squat", str(dds_domain), "30")
    try:
        res = subprocess.run([sys.executable, "-m", "planner_runtime.cli", "controller", "--iface", "lo",
                              "--domain-id", str(dds_domain), "--json"],
                             capture_output=True, text=True, timeout=60, env=child_env())
    finally:
        squatter.kill()
        squatter.wait(10)
    assert res.returncode == 2 and res.stdout == "", res.stderr[-2000:]
    assert "another process already publishes rt/lowcmd" in res.stderr
    assert "--release-sport-mode" in res.stderr and "Refusing to publish" in res.stderr


def test_release_sport_mode_then_every_stop_command_carries_the_sentinels(dds_domain, stand_in_factory,
                                                                         tmp_path):
    """--release-sport-mode against a stand-in motion-switcher service (unitree_sdk2py's own
    RPC server class on loopback DDS; see _motion_switcher_standin.py), then the commands the
    controller publishes, as a third process receives them: passive and damping ones carry
    PosStopF / VelStopF wherever the gain is 0, and the simulated Go2 applies them."""
    robot = stand_in_factory("--dds-start-pose", "stand")
    here = Path(__file__).parent
    switcher = _child(str(here / "_motion_switcher_standin.py"), str(dds_domain), "normal",
                      str(tmp_path / "switcher.json"))
    recorder = _child(str(here / "_lowcmd_probe.py"), "record", str(dds_domain), "12")
    try:
        ctl = ControllerProc(dds_domain, "--release-sport-mode", "--startup-wait", "0.5",
                             "--on-fault", "exit", *SAFE_FAST)
        summary = ctl.result(timeout=60)
        rec_out, _ = recorder.communicate(timeout=30)
    finally:
        for p in (switcher, recorder):
            if p.poll() is None:
                p.terminate()
            p.wait(10)
    stats = robot.stop()
    sw = json.loads((tmp_path / "switcher.json").read_text())
    assert summary["sport_mode"] == {"before": "normal", "after": "", "release_calls": 1, "dry_run": False}
    assert sw["releases"] == 1 and sw["checks"] >= 2 and sw["mode"] == ""
    assert [tr["to"] for tr in summary["transitions"]] == ["stand_up", "stand", "damping"]
    rec = json.loads(rec_out.strip().splitlines()[-1])
    assert rec["bad"] == 0 and rec["passive"] > 50 and rec["damping"] > 50 and rec["pd"] > 100, rec
    assert rec["q_without_stop_sentinel"] == 0 and rec["dq_without_stop_sentinel"] == 0, rec
    assert stats["cmds_applied"] > 100 and stats["non_finite"] == 0 and stats["bad_crc"] == 0


def test_a_loop_that_fell_behind_reads_the_newest_state_not_a_queue_of_old_ones(dds_domain, stand_in_factory):
    """rt/lowstate comes at 500 Hz. The bridge reads the newest message when the loop reads
    (robot.dds_bridge.NewestReader). Here the loop holds the GIL for 0.4 s, as a starved
    process does not run. The first state read after that must be as fresh as any state
    read before: the robot's tick against this clock shows it. A handler called for every
    message would still be working through the 0.4 s of messages queued behind it."""
    from robot.dds_bridge import DdsRobot

    robot_proc = stand_in_factory("--dds-start-pose", "stand")
    robot = DdsRobot(dds_domain, "lo", dry_run=True, lowcmd_check_s=0.0)
    try:
        robot.wait_for_state(10.0)
        offsets = []  # read time - robot tick (s): constant but for how late a state is read
        t_end = time.monotonic() + 1.2  # past the first second, in which the tick's unit is measured
        while time.monotonic() < t_end:
            st = robot.read_state()
            offsets.append(time.monotonic() - st.tick * 1e-3)
            time.sleep(0.002)
        assert robot.stats()["tick_unit"] == "ms"  # the simulated Go2 counts ms, as the firmware does
        skipped0 = robot.states_skipped
        old = sys.getswitchinterval()
        sys.setswitchinterval(5.0)  # no other thread of this process runs while this one spins
        try:
            t_end = time.monotonic() + 0.4
            while time.monotonic() < t_end:
                pass
        finally:
            sys.setswitchinterval(old)
        st = robot.read_state()
        behind = (time.monotonic() - st.tick * 1e-3) - min(offsets)
        assert behind < 0.05, f"the state read after the stall was {behind * 1e3:.0f} ms old"
        assert robot.states_skipped - skipped0 >= 100  # ~200 published meanwhile, never read
        delay = robot.stats()["state_delay_ms"]
        assert delay["n"] == robot.states_received and delay["median"] < 20.0, delay
    finally:
        robot.close()
        robot_proc.stop()


def test_a_robot_whose_tick_counts_microseconds_is_measured_not_misread_as_ms(dds_domain):
    """LowState_.tick in microseconds (as Unitree's older legged SDK documents it), wrapping
    past 2**32 mid-run, over real cyclonedds at 500 Hz. Read as milliseconds it would count
    about 999 skipped states per read and delays of seconds; measured, it is identified as us
    and the loop reading every period skips few states and reads them within milliseconds."""
    from robot.dds_bridge import DdsRobot

    here = Path(__file__).parent
    pub = subprocess.Popen([sys.executable, str(here / "_tick_publisher.py"), str(dds_domain), "4.0",
                            "1000000", str(2**32 - 2_000_000)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())
    robot = DdsRobot(dds_domain, "lo", dry_run=True, lowcmd_check_s=0.0)
    try:
        robot.wait_for_state(10.0)
        t_end = time.monotonic() + 3.0
        while time.monotonic() < t_end:
            robot.read_state()
            robot.wait_tick()
        stats = robot.stats()
    finally:
        robot.close()
        out, err = pub.communicate(timeout=30)
    sent = json.loads(out.strip().splitlines()[-1])
    assert sent["wrapped"], (out, err)  # the tick wrapped while the loop read
    assert stats["tick_unit"] == "us"
    assert stats["states_received"] > 1000
    assert stats["states_skipped"] < 0.2 * stats["states_received"], stats
    assert stats["state_delay_ms"]["median"] < 20.0, stats["state_delay_ms"]
