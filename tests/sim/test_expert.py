"""The expert trot: leg kinematics, command schedules, and walking forward."""

from __future__ import annotations

import numpy as np
import pytest

from robot.controller import CommandSchedule
from robot.go2_constants import DEFAULT_JOINT_POS
from sim.commands import random_schedule
from sim.episode import episode_metrics, expert_policy, run_episode
from sim.expert import TrotExpert, leg_fk, leg_ik, leg_jacobian
from sim.mujoco_harness import MujocoGo2, SimConfig


def test_leg_ik_inverts_fk_and_matches_mujoco(robot):
    rng = np.random.default_rng(0)
    q = DEFAULT_JOINT_POS.reshape(4, 3) + rng.uniform(-0.3, 0.3, (4, 3))
    np.testing.assert_allclose(leg_ik(leg_fk(q)), q, atol=1e-9)
    # The analytic FK agrees with MuJoCo's foot positions (hip frame = base frame at the hip).
    import mujoco

    robot.data.qpos[robot.qadr] = q.reshape(12)
    mujoco.mj_kinematics(robot.model, robot.data)
    base = robot.data.xpos[robot.model.body("base").id]
    from sim.expert import HIP_POS

    feet = robot.data.geom_xpos[robot._feet_geoms] - base  # base frame (base not rotated)
    np.testing.assert_allclose(leg_fk(q) + HIP_POS, feet, atol=1e-9)
    J = leg_jacobian(q)
    assert J.shape == (4, 3, 3)


def test_random_schedule_ranges_and_seeding():
    s1 = random_schedule(np.random.default_rng(5), 60.0)
    s2 = random_schedule(np.random.default_rng(5), 60.0)
    np.testing.assert_array_equal(s1.commands, s2.commands)
    assert s1.times[0] == 0 and s1.times[-1] < 60.0
    holds = np.diff(s1.times)
    assert np.all((holds >= 2.0) & (holds <= 5.0))
    c = s1.commands
    assert np.all((c[:, 0] >= -0.3) & (c[:, 0] <= 0.8) & (np.abs(c[:, 1]) <= 0.2) & (np.abs(c[:, 2]) <= 0.8))
    assert np.array_equal(s1.at(s1.times[1] + 1e-6), c[1]) and np.array_equal(s1.at(0.0), c[0])
    with pytest.raises(ValueError, match="duration"):
        random_schedule(np.random.default_rng(0), 0.0)


def test_expert_walks_forward_short_episode():
    robot = MujocoGo2(SimConfig(seed=0))
    tr = run_episode(robot, expert_policy(TrotExpert()), CommandSchedule.constant(0.5, 0.0, 0.0), 5.0)
    m = episode_metrics(tr, settle=2.0)
    assert not m["fell"]
    assert tr.base_pos[-1, 0] - tr.base_pos[0, 0] > 1.5  # ~0.5 m/s after a 0.4 s start
    assert abs(m["mean_vx_settled"] - 0.5) < 0.05
    # Body-frame tracking (the command is body-frame; the start from standing may leave a few
    # degrees of heading offset, which no velocity command corrects).
    assert abs(m["mean_vy_settled"]) < 0.05 and abs(m["mean_yaw_rate_settled"]) < 0.05
    assert m["max_tilt_deg"] < 15.0


def test_expert_turns_in_place():
    robot = MujocoGo2(SimConfig(seed=1))
    tr = run_episode(robot, expert_policy(TrotExpert()), CommandSchedule.constant(0.0, 0.0, 0.6), 4.0)
    m = episode_metrics(tr, settle=2.0)
    assert not m["fell"]
    assert abs(m["mean_yaw_rate_settled"] - 0.6) < 0.1
    assert m["distance"] < 0.3


def test_expert_config_refuses_unknown_and_mistyped_parameters():
    """--expert-config is read by planner_runtime/config.py like every config: a typo is
    refused with its name and the close match, a value must have the field's type."""
    from sim.expert import ExpertConfig

    with pytest.raises(ValueError, match=r"--expert-config: unknown expert parameter 'periodd' "
                                         r"\(did you mean 'period'\?\); allowed: period, duty"):
        ExpertConfig.from_overrides({"periodd": 0.3})
    with pytest.raises(ValueError, match=r"'raibert_filtered' must be bool, got 1"):
        ExpertConfig.from_overrides({"raibert_filtered": 1})
    with pytest.raises(ValueError, match=r"'period' must be float, got '0.3'"):
        ExpertConfig.from_overrides({"period": "0.3"})
    cfg = ExpertConfig.from_overrides({"period": 1, "raibert_filtered": False})
    assert cfg.period == 1.0 and isinstance(cfg.period, float) and cfg.raibert_filtered is False
    assert cfg.duty == ExpertConfig().duty
