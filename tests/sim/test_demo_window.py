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
