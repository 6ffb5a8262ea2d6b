"""The demo's walk window: which part of the controller's run its tracking metrics cover."""

from __future__ import annotations

from sim.demo import planning_window


def _tr(*steps):
    return {"transitions": [{"t": t, "from": a, "to": b, "reason": ""} for t, a, b in steps]}


def test_a_watchdog_hold_that_returns_to_planning_stays_inside_the_walk():
    s = _tr((1.0, "passive", "stand_up"), (3.0, "stand_up", "stand"), (3.1, "stand", "planning"),
            (3.4, "planning", "hold"), (3.45, "hold", "planning"), (7.0, "planning", "damping"))
    assert planning_window(s) == (3.1, 7.0)  # the fall at 7.0 is inside, not cut at 3.4


def test_the_walk_ends_when_the_planner_is_lost_for_good_or_runs_to_the_end():
    lost = _tr((3.1, "stand", "planning"), (5.0, "planning", "hold"), (5.5, "hold", "stand"),
               (8.5, "stand", "damping"))
    assert planning_window(lost) == (3.1, 5.5)
    assert planning_window(_tr((3.1, "stand", "planning"))) == (3.1, None)
    assert planning_window(_tr((1.0, "passive", "stand_up"))) == (None, None)


def test_trace_metrics_cover_the_window_and_count_tilted_ticks_as_cost():
    import numpy as np

    from sim.demo import trace_metrics

    n = 50
    gz = np.full(n, -1.0)
    gz[[5, 12, 13, 20, 40]] = [-0.9, -0.94, -0.95, -0.7, -0.6]  # -0.95 is not above the threshold
    trace = {"mono": 100.0 + 0.02 * np.arange(n), "base_lin_vel": np.zeros((n, 3)),
             "gyro": np.zeros((n, 3)), "gravity_z": gz, "base_pos": np.zeros((n, 3))}
    m, tr = trace_metrics(trace, 100.2, 100.5, lambda t: np.zeros(3))
    assert len(tr.t) == 16 and tr.t[0] == 0.0  # ticks 10..25, times from the window start
    assert m["cost"] == 2.0 and not tr.fell  # ticks 12 and 20; 13 sits on it, 5 and 40 are outside


def test_a_damping_that_is_not_a_fall_is_a_safety_stop_and_a_full_walk_is_neither():
    from sim.demo import walk_end

    def ended(reason):
        s = _tr((3.1, "stand", "planning"), (9.0, "planning", "damping"))
        s["transitions"][-1]["reason"] = reason
        return s

    assert walk_end(ended("fall: trunk tilted 1.01 rad > 1.00 rad")) == (True, "fall: trunk tilted 1.01 rad > 1.00 rad")
    assert walk_end(ended("robot state stale for 0.103 s (limit 0.100 s)")) == (
        False, "robot state stale for 0.103 s (limit 0.100 s)")
    assert walk_end(_tr((3.1, "stand", "planning"))) == (False, None)
    lost = _tr((3.1, "stand", "planning"), (5.0, "planning", "hold"), (5.5, "hold", "stand"))
    lost["transitions"][-1]["reason"] = "no valid chunk for 0.5 s"
    assert walk_end(lost) == (False, "no valid chunk for 0.5 s")  # the planner lost for good
    back = _tr((3.1, "stand", "planning"), (5.0, "planning", "hold"), (5.05, "hold", "planning"))
    assert walk_end(back) == (False, None)  # a late chunk, then on walking: not a stop


def test_rt_priority_reaches_the_controller_and_the_simulated_robot_or_is_refused(capsys):
    """--rt-priority: both processes; --robot-rt-priority: the simulated robot's own."""
    import argparse

    from sim import demo

    p = argparse.ArgumentParser()
    demo.add_arguments(p)
    args = p.parse_args(["--rt-priority", "20"])
    assert demo.rt_flags(args, "--rt-priority") == ["--rt-priority", "20"]
    assert demo.rt_flags(args, "--dds-rt-priority") == ["--dds-rt-priority", "20"]
    assert demo.rt_flags(p.parse_args([]), "--rt-priority") == []  # default: normal priority
    # the simulated robot alone (a real robot's physics keeps real time; the controller does not)
    only = p.parse_args(["--robot-rt-priority", "30"])
    assert demo.rt_flags(only, "--rt-priority") == [] and demo.robot_priority(only) == 30
    assert demo.rt_flags(only, "--dds-rt-priority") == ["--dds-rt-priority", "30"]
    both = p.parse_args(["--rt-priority", "20", "--robot-rt-priority", "30"])
    assert demo.rt_flags(both, "--rt-priority") == ["--rt-priority", "20"]
    assert demo.rt_flags(both, "--dds-rt-priority") == ["--dds-rt-priority", "30"]
    for bad in (["--rt-priority", "0"], ["--rt-priority", "100"], ["--robot-rt-priority", "0"],
                ["--serve-rt-priority", "100"]):
        assert demo.run(p.parse_args(bad)) == 2
        assert "--serve-rt-priority in 1-99" in capsys.readouterr().err
    # the planner service's own priority reaches serve only
    assert demo._option("--rt-priority", p.parse_args(["--serve-rt-priority", "10"]).serve_rt_priority) == [
        "--rt-priority", "10"]
    assert demo._option("--rt-priority", None) == []


def test_cpu_pinning_reaches_each_process_or_is_refused_before_anything_starts(capsys, tmp_path):
    """--serve-cpus / --controller-cpus reach serve's and the controller's own --cpus; the
    simulated robot is pinned before it starts; a CPU this machine lacks is refused (rc 2)."""
    import argparse
    import os

    from sim import demo

    p = argparse.ArgumentParser()
    demo.add_arguments(p)
    cpu = max(os.sched_getaffinity(0))
    args = p.parse_args(["--serve-cpus", str(cpu), "--controller-cpus", f"{cpu}, {cpu}"])
    pins = demo.pinning(args)
    assert pins == {"serve": {cpu}, "controller": {cpu}, "robot": None}
    assert demo._cpu_flag(pins["serve"]) == ["--cpus", str(cpu)] and demo._cpu_flag(None) == []
    assert demo._pin_child(None) is None
    for flag in ("--serve-cpus", "--controller-cpus", "--robot-cpus"):
        bad = p.parse_args([flag, str(cpu + 1000), "--out", str(tmp_path / "out")])
        assert demo.run(bad) == 2
        err = capsys.readouterr().err
        assert flag in err and "not all available" in err
    assert not (tmp_path / "out").exists()  # refused before any run started
