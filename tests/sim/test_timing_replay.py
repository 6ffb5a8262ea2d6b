"""Replaying a real-time run's timing in lockstep evaluation (``planner-runtime eval
--timing-trace``, sim/timing_replay.py): the plans' turnarounds in their recorded order and the
controller loop's periods, on the shipped engine and the in-process MuJoCo Go2."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("mujoco")

from sim.timing_replay import TimingTrace, TimingTraceError, load_timing_trace  # noqa: E402

from .test_latency_eval import engine, run_episode  # noqa: E402,F401  (the module's engine fixture)


def write_trace(path, periods, turnarounds, planning_tick=0, period_tick0=1, drop=()):
    """An NPZ laid out as the controller's --timing-out writes it (``drop``: keys left out)."""
    arrays = {"period_s": np.asarray(periods, float), "period_tick0": np.array(period_tick0),
              "turnaround_s": np.asarray(turnarounds, float), "planning_tick": np.array(planning_tick),
              "control_dt": np.array(0.002)}
    np.savez(path, **{k: v for k, v in arrays.items() if k not in drop})
    return path


def test_a_late_iteration_holds_the_command_and_the_clock_loses_no_time():
    # 2 ms, then an iteration 8.4 ms late, then two that catch up, then 2 ms again
    tr = TimingTrace(np.array([0.002, 0.0104, 0.0008, 0.0008, 0.002]), np.array([0.02]), 0.002, "t")
    steps = tr.tick_steps(0.002)
    first = [next(steps) for _ in range(5)]
    assert first == [1, 5, 1, 0, 1]  # 0.002, 0.0124, 0.0132, 0.0140, 0.0160 s rounded to 2 ms steps
    more = [next(steps) for _ in range(5 * 9)]  # cycles: ten passes in all
    assert sum(first) + sum(more) == round(10 * 0.016 / 0.002)


def test_the_trace_starts_where_planning_began_and_bad_traces_are_refused(tmp_path):
    per = np.arange(1, 11) * 1e-3  # period_s[j] ended loop iteration 1 + j
    tr = load_timing_trace(write_trace(tmp_path / "a.npz", per, [0.03, 0.05], planning_tick=3))
    np.testing.assert_array_equal(tr.periods, per[3:])  # iterations 4.. run after planning began at 3
    np.testing.assert_array_equal(tr.turnarounds, [0.03, 0.05])
    s = tr.summary()
    assert s["plans"] == 2 and s["turnaround_ms_median"] == pytest.approx(40.0)
    assert s["period_ms_max"] == pytest.approx(10.0)
    # a demo run folder holds timing.npz
    (tmp_path / "run00").mkdir()
    write_trace(tmp_path / "run00" / "timing.npz", per, [0.02])
    assert load_timing_trace(tmp_path / "run00").turnarounds.tolist() == [0.02]
    cases = {
        "not found": tmp_path / "nothing",
        "missing turnaround_s": write_trace(tmp_path / "b.npz", per, [0.02], drop=("turnaround_s",)),
        "non-finite": write_trace(tmp_path / "c.npz", per, [0.02, np.nan]),
        "never reached planning": write_trace(tmp_path / "d.npz", per, [0.02], planning_tick=-1),
        "no loop periods": write_trace(tmp_path / "e.npz", per, [0.02], planning_tick=40),
        "cannot read": tmp_path / "f.npz",
    }
    (tmp_path / "f.npz").write_bytes(b"not an npz")
    for why, path in cases.items():
        with pytest.raises(TimingTraceError, match=why):
            load_timing_trace(path)


def test_eval_replays_the_turnarounds_in_order_and_the_loop_periods(engine, monkeypatch, tmp_path):  # noqa: F811
    tat = [0.030, 0.070, 0.050]
    per = [0.002] * 9 + [0.012]  # one iteration in ten runs 10 ms late: 30 ms per 10 iterations
    trace = write_trace(tmp_path / "t.npz", per, tat, planning_tick=0)
    m, link, ctl = run_episode(engine, monkeypatch, "--timing-trace", str(trace))
    assert not m["fell"]
    lat = np.subtract(link.released_at, link.sent_at)
    assert len(lat) > 20
    np.testing.assert_allclose(lat, [tat[i % 3] for i in range(len(lat))])
    # 3 s of planning took 1000 loop iterations, not 1500: the loop ran late as recorded
    ticks = ctl.tick - ctl.planning_tick
    assert abs(ticks - 3.0 / 0.030 * 10) < 25, ticks
    # without the trace, the same episode runs every iteration on time
    m0, link0, ctl0 = run_episode(engine, monkeypatch, "--latency", "50")
    assert abs((ctl0.tick - ctl0.planning_tick) - 1500) < 25
    assert np.allclose(np.subtract(link0.released_at, link0.sent_at), 0.050)


def test_timing_trace_and_schedule_options_are_checked_before_any_episode(tmp_path, capsys):
    from planner_runtime.cli import main

    trace = write_trace(tmp_path / "t.npz", [0.002] * 10, [0.03])
    assert main(["eval", "--no-expert", "--episodes", "1", "--timing-trace", str(trace), "--latency", "40"]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["eval", "--no-expert", "--episodes", "1", "--timing-trace", str(tmp_path / "none")]) == 2
    assert "timing trace not found" in capsys.readouterr().err
    assert main(["eval", "--no-expert", "--episodes", "1", "--schedule", "0:0.5,0,0",
                 "--command", "0.5", "0", "0"]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["eval", "--no-expert", "--episodes", "1", "--schedule", "0:0.5"]) == 2
    assert "T:vx,vy,yaw" in capsys.readouterr().err


def test_a_schedule_is_every_episodes_command():
    import argparse

    from sim import evaluate as ev

    p = argparse.ArgumentParser()
    ev.add_arguments(p)
    cfg = ev.config_from_args(p.parse_args(["--schedule", "0:0.3,0,0;1:0.5,0,0.2"]))
    for index in (0, 1):
        _, sched = ev._episode_setup(index, cfg)
        np.testing.assert_allclose(sched.at(0.5), [0.3, 0, 0])
        np.testing.assert_allclose(sched.at(1.5), [0.5, 0, 0.2])
