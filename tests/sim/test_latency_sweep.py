"""The latency sweep's verdict and table (sim/latency_sweep.py) on a hand-made report; the
cells themselves are ``eval --latency`` runs, tested in test_latency_eval.py."""

from __future__ import annotations

from sim.latency_sweep import table, verdict


def cell(lat, rule, falls, rmse, jump):
    return {"latency_ms": lat, "rule": rule, "results": {"e": {
        "falls": falls, "episodes": 20, "tracking_rmse_xy": rmse, "switch_jump_mean": jump,
        "switch_jump_max": 2 * jump, "step_jump_mean": 0.2, "jerk_rms": 1e4}}}


def report(cells):
    return {"cells": cells, "latencies_ms": [0.0, 20.0, 40.0, 80.0], "rules": ["hold", "inpaint"]}


def test_verdict_applies_the_three_goals():
    r = report([cell(0, "hold", 0, 0.10, 0.3), cell(0, "inpaint", 0, 0.10, 0.3),
                cell(20, "hold", 5, 0.20, 0.8), cell(20, "inpaint", 0, 0.11, 0.3),
                cell(40, "hold", 9, 0.30, 0.9), cell(40, "inpaint", 0, 0.119, 0.45),
                cell(80, "hold", 20, 0.40, 1.0), cell(80, "inpaint", 0, 0.15, 0.5)])
    v = verdict(r, "inpaint")
    assert v["tracking_met"] and abs(v["tracking_40_vs_0"] - 1.19) < 1e-9
    assert v["falls_80_met"] and v["jump_met"]
    assert v["jump_reduction_vs_hold"] == {"20ms": 0.8 / 0.3, "40ms": 0.9 / 0.45}
    h = verdict(r, "hold")
    assert not h["tracking_met"] and not h["falls_80_met"] and not h["jump_met"]
    # a rule 1.21x slower at 40 ms, or one fall at 80 ms, misses
    r["cells"][5] = cell(40, "inpaint", 0, 0.121, 0.45)
    r["cells"][7] = cell(80, "inpaint", 1, 0.15, 0.5)
    v = verdict(r, "inpaint")
    assert not v["tracking_met"] and not v["falls_80_met"]


def test_table_has_a_row_per_cell_and_marks_errors():
    r = report([cell(0, "hold", 0, 0.1, 0.3), {"latency_ms": 20.0, "rule": "hold", "error": "boom"}])
    lines = table(r).strip().splitlines()
    assert len(lines) == 4 and "| 0/20 | 0.100 |" in lines[2] and "error" in lines[3]
