"""Closed-loop evaluation with plan latency (``planner-runtime eval --latency``) on the
shipped engine and the in-process MuJoCo Go2: still lockstep and deterministic, the plan
becomes available only after the latency, and the controller's chunk rules
(planner_runtime.chunking) decide what runs meanwhile."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

pytest.importorskip("mujoco")

from planner_runtime.async_planner import PlannerSpec, state_scale_from_manifest  # noqa: E402
from planner_runtime.backends import load_engine  # noqa: E402
from planner_runtime.engines import default_engine_path  # noqa: E402
from sim import evaluate as ev  # noqa: E402


@pytest.fixture(scope="module")
def engine():
    return load_engine(default_engine_path(), threads=1)


def run_episode(engine, monkeypatch, *argv: str, on_setup=None):
    """One eval episode (``on_setup(robot, index)`` before it starts); returns (metrics, link,
    controller)."""
    import planner_runtime.link as pl
    import robot.controller as rc

    seen: dict = {}

    class Link(pl.InProcessPlanner):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            seen["link"] = self

    class Ctl(rc.Controller):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            seen["ctl"] = self

    monkeypatch.setattr(pl, "InProcessPlanner", Link)
    monkeypatch.setattr(rc, "Controller", Ctl)
    p = argparse.ArgumentParser()
    ev.add_arguments(p)
    cfg = ev.config_from_args(p.parse_args(["--episodes", "1", "--duration", "3", "--command", "0.4", "0", "0",
                                            *argv]))
    spec = PlannerSpec.from_manifest(engine.manifest)
    m, _ = ev.run_planner_episode(engine, spec, 0, cfg, state_scale_from_manifest(engine.manifest, spec.S),
                                  on_setup=on_setup)
    return m, seen["link"], seen["ctl"]


def test_latency_delays_every_plan_and_inpainting_holds_what_the_robot_ran(engine, monkeypatch):
    m, link, ctl = run_episode(engine, monkeypatch, "--latency", "40", "--merge", "inpaint")
    assert ctl.merge == "inpaint" and ctl.executor.delay.ticks() == 2
    assert np.allclose(np.subtract(link.released_at, link.sent_at), 0.040)
    ran = {round(r.t / 0.02): r.action for r in ctl.executor.records}
    held = [c for c in link.chunks if c.prefix]
    assert len(held) > 10 and all(c.prefix == 2 for c in held)
    for c in held:  # the committed rows are exactly the actions the robot executed meanwhile
        k0 = round(c.t0 / 0.02)
        for i in range(c.prefix):
            if k0 + i in ran:
                np.testing.assert_array_equal(ran[k0 + i], c.actions[i])
    assert m["switches"] > 10 and m["forecast_err_dynamics"] is not None and m["merge"] == "inpaint"


def test_at_zero_latency_the_rules_differ_only_in_how_often_they_replan(engine, monkeypatch):
    a, la, ca = run_episode(engine, monkeypatch)  # inpaint: continuous replanning
    b, lb, cb = run_episode(engine, monkeypatch, "--merge", "hold")
    c, _, _ = run_episode(engine, monkeypatch, "--merge", "hold", "--replan-every", "1")
    assert ca.merge == "inpaint" and ca.config.chunking(ca.merge).interval() == 1
    assert (a["replan_every"], b["replan_every"], c["replan_every"]) == (1, 4, 1)
    assert cb.merge == "hold" and cb.config.chunking(cb.merge).interval() == 4
    assert len(la.chunks) > 3 * len(lb.chunks)  # a plan every tick vs every 4 ticks
    assert a["vx_rmse"] == c["vx_rmse"] and a["switch_jump_max"] == c["switch_jump_max"]
    assert a["vx_rmse"] != b["vx_rmse"]


def test_forecast_start_state_is_stamped_for_the_first_free_tick(engine, monkeypatch):
    m, link, _ = run_episode(engine, monkeypatch, "--latency", "40", "--merge", "aligned",
                             "--start-state", "forecast", "--replan-every", "1")
    ahead = [round((c.t0 - s) / 0.02) for c, s in zip(link.chunks, link.sent_at, strict=True)]
    assert ahead.count(2) > 10 and set(ahead) <= {0, 2}  # 0: before the delay was measured
    assert m["forecast_err_sent"] is not None


def test_a_delay_the_engine_cannot_cover_stops_the_robot_with_the_reason(engine, monkeypatch):
    m, _, ctl = run_episode(engine, monkeypatch, "--merge", "inpaint", "--delay-ticks", "13")
    reasons = [tr.reason for tr in ctl.safety.transitions]
    assert any("planner too slow" in r and "smaller chunk" in r for r in reasons), reasons


@pytest.mark.parametrize("bad", [["--latency", "40", "20"], ["--latency", "-5"], ["--latency", "1", "2", "3"]])
def test_bad_latency_arguments_are_refused(bad, capsys):
    from planner_runtime.cli import main

    assert main(["eval", "--no-expert", "--episodes", "1", *bad]) == 2
    assert "--latency" in capsys.readouterr().err


def test_observation_latency_is_a_physics_condition_of_every_method():
    p = argparse.ArgumentParser()
    ev.add_arguments(p)
    r = ev.physics_ranges(ev.config_from_args(p.parse_args(["--obs-latency", "40"])))
    assert r.obs_latency == (0.04, 0.04)
    assert ev.physics_ranges(ev.config_from_args(p.parse_args([]))).obs_latency is None
    # with --randomize the fixed delays replace their ranges and every other range stays drawn
    from sim.physics import RANDOMIZED

    r = ev.physics_ranges(ev.config_from_args(p.parse_args(
        ["--randomize", "--obs-latency", "15", "--actuator-lag", "15"])))
    assert r.obs_latency == (0.015, 0.015) and r.actuator_lag == (0.015, 0.015)
    assert (r.foot_friction, r.pd_gain_scale, r.leg_mass_scale) == (
        RANDOMIZED.foot_friction, RANDOMIZED.pd_gain_scale, RANDOMIZED.leg_mass_scale)


def test_demo_runs_count_every_fall_and_every_safety_stop(monkeypatch, tmp_path, capsys):
    """``demo --runs N`` totals the runs' reports (the runs themselves: tests/e2e)."""
    import json

    from sim import demo

    runs = iter([(False, None), (True, None), (False, None),
                 (False, "robot state stale for 0.103 s (limit 0.100 s)"), (False, None)])

    def fake_once(args, out, quiet=False):
        out.mkdir(parents=True)
        f, stop = next(runs)
        (out / "demo_report.json").write_text(json.dumps({
            "fell": f, "safety_stop": stop, "metrics": {"vx_rmse": 0.1, "max_tilt_deg": 70.0 if f else 9.0},
            "controller": {"plan_age_ms": {"p99": 40.0}}}))
        return int(f or stop is not None)

    monkeypatch.setattr(demo, "_run_once", fake_once)
    p = argparse.ArgumentParser()
    demo.add_arguments(p)
    assert demo.run(p.parse_args(["--runs", "3", "--out", str(tmp_path), "--json"])) == 1
    s = json.loads(capsys.readouterr().out)
    assert s["runs"] == 3 and s["falls"] == 1 and s["max_tilt_deg"] == [9.0, 70.0, 9.0]
    assert s["safety_stops"] == 0
    # a run cut short by the safety layer is not a fall, but the demo did not pass either
    assert demo.run(p.parse_args(["--runs", "2", "--out", str(tmp_path / "b")])) == 1
    out = capsys.readouterr().out
    assert "0 fell" in out and "1 stopped by the safety layer" in out and "run 0: robot state stale" in out
    assert json.loads((tmp_path / "b" / "demo_runs.json").read_text())["safety_stop_reasons"] == [
        "robot state stale for 0.103 s (limit 0.100 s)", None]
    assert demo.run(p.parse_args(["--runs", "0"])) == 2


def test_a_planner_episode_that_falls_says_how(engine, monkeypatch):
    """A trunk 40 kg too heavy for the legs: the episode ends in a fall, its metrics say when
    and how (the harness's collapse / tip-over or the safety layer's stop, with its reason)."""
    def heavy(robot, index):
        robot.model.body_mass[robot._base] += 40.0

    m, _, ctl = run_episode(engine, monkeypatch, on_setup=heavy)
    assert m["fell"] and m["fall_reason"], m
    fault = ctl.safety.fault
    if fault is not None:
        assert m["fall_reason"] == f"safety stop: {fault}"
    else:
        assert m["fall_reason"].startswith(("collapsed", "tipped over")) and m["fall_time"] < 3.0
    assert ev.summarize([m])["fell_episodes"][0]["reason"] == m["fall_reason"]
