"""History conditions: the engine's condition layout, built by robot.observation and fed by
the controller with the previous policy tick's state and executed action."""

from __future__ import annotations

import numpy as np
import pytest

from robot.actions import LEGGED_GYM
from robot.observation import (
    CONDITION_NAMES,
    HISTORY_BLOCKS,
    ConditionBuilder,
    build_state,
    condition_names,
)

from .test_controller_inprocess import ScriptedLink, chunk_for, make_sim

pytest.importorskip("mujoco")


def test_condition_layouts_are_built_or_refused():
    names = condition_names(("prev_state", "prev_action"))
    assert len(names) == 3 + 30 + 12 and names[:3] == CONDITION_NAMES
    b = ConditionBuilder(names)
    assert b.history == ("prev_state", "prev_action") and b.dim == 45
    x, a = np.arange(30, dtype=np.float32), -np.arange(12, dtype=np.float32)
    c = b(np.array([0.5, 0.0, 0.1]), x, a)
    np.testing.assert_array_equal(c, np.concatenate([[0.5, 0.0, 0.1], x, a]).astype(np.float32))
    assert ConditionBuilder().history == () and ConditionBuilder()(np.zeros(3)).shape == (3,)
    with pytest.raises(ValueError, match="needs prev_state"):
        b(np.zeros(3))
    with pytest.raises(ValueError, match="prev_action must have 12"):
        b(np.zeros(3), x, np.zeros(5))
    with pytest.raises(ValueError, match="not a history block"):
        ConditionBuilder(CONDITION_NAMES + ("prev_ang_vel_x", "bogus"))
    with pytest.raises(ValueError, match="must start with"):
        ConditionBuilder(HISTORY_BLOCKS["prev_action"])
    with pytest.raises(ValueError, match="unknown history block"):
        condition_names(("prev_torque",))


def test_controller_sends_the_previous_tick_state_and_executed_action():
    from robot.controller import Controller, ControllerConfig
    from robot.safety import SafetyConfig

    sim = make_sim()
    # the chunk answering observation n holds n / 100 everywhere: tells which chunk ran when
    link = ScriptedLink(lambda o: chunk_for(o, np.full((16, 12), o.seq / 100.0)))
    states: dict[int, np.ndarray] = {}
    orig = sim.read_state

    def spy():
        s = orig()
        states[int(round(sim.now() / 0.002))] = build_state(s)
        return s

    sim.read_state = spy
    safety = SafetyConfig(passive_s=0.1, stand_up_s=0.5, startup_wait_s=5.0)
    ctl = Controller(sim, link, config=ControllerConfig(
        replan_every=1, safety=safety, semantics=LEGGED_GYM,
        condition_names=condition_names(("prev_state", "prev_action"))))
    ctl.run(stop_when=lambda c: c.robot.now() > 1.5)
    assert len(link.obs) > 40
    for o in link.obs[-20:]:
        assert o.cond.shape == (45,)
        tick = int(round(o.stamp / 0.002))
        # the state of the previous policy tick (10 control ticks earlier)
        np.testing.assert_allclose(o.cond[3:33], states[tick - 10], atol=1e-6)
        # the action executed during it: the chunk answering the previous observation
        np.testing.assert_allclose(o.cond[33:45], np.full(12, (o.seq - 1) / 100.0), atol=1e-5)
