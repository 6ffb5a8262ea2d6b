"""The MuJoCo harness: firmware PD semantics, SDK <-> MuJoCo joint map, state, standing."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest

from robot.go2_constants import DEFAULT_JOINT_POS, DEFAULT_KD, DEFAULT_KP, JOINT_NAMES, TORQUE_LIMIT
from robot.interface import RobotInterface
from robot.observation import build_state
from robot.types import LowCmd
from sim.mujoco_harness import MujocoGo2, SimConfig
from sim.physics import PhysicsRanges


def _tau(robot: MujocoGo2) -> np.ndarray:
    mujoco.mj_forward(robot.model, robot.data)
    return robot.data.actuator_force[robot.act].copy()


def test_is_a_robot_interface(robot):
    assert isinstance(robot, RobotInterface)
    t0, tick0 = robot.now(), robot.read_state().tick
    robot.wait_tick()
    assert robot.now() == pytest.approx(t0 + 0.002)
    assert robot.read_state().tick == tick0 + 2  # ms, as the Go2 firmware counts


def test_pd_torque_is_the_firmware_formula(robot):
    rng = np.random.default_rng(1)
    q, dq = robot.data.qpos[robot.qadr].copy(), rng.normal(0, 0.5, 12)
    robot.data.qvel[robot.vadr] = dq
    cmd = LowCmd(q=q + rng.normal(0, 0.05, 12), dq=rng.normal(0, 0.5, 12), kp=rng.uniform(5, 40, 12),
                 kd=rng.uniform(0.1, 2, 12), tau=rng.normal(0, 1, 12))
    robot.write_command(cmd)
    want = cmd.kp * (cmd.q - q) + cmd.kd * (cmd.dq - dq) + cmd.tau
    assert np.all(np.abs(want) < TORQUE_LIMIT)  # unclamped case
    np.testing.assert_allclose(_tau(robot), want, atol=1e-9)
    np.testing.assert_allclose(robot.read_state().tau_est, want, atol=1e-9)


def test_pd_torque_is_clamped_to_the_limits(robot):
    q = robot.data.qpos[robot.qadr].copy()
    cmd = LowCmd(q=q + 2.0, kp=np.full(12, 100.0), kd=np.zeros(12), tau=np.zeros(12))
    robot.write_command(cmd)
    np.testing.assert_allclose(_tau(robot), TORQUE_LIMIT)
    robot.write_command(LowCmd(q=q, kp=np.zeros(12), kd=np.zeros(12), tau=np.full(12, -99.0)))
    np.testing.assert_allclose(_tau(robot), -TORQUE_LIMIT)


def test_zero_gains_ignore_sdk_stop_sentinels(robot):
    cmd = LowCmd(q=np.full(12, 2.146e9), dq=np.full(12, 16000.0), tau=np.full(12, 0.5))
    robot.write_command(cmd)
    np.testing.assert_allclose(_tau(robot), 0.5)


def test_non_finite_or_negative_gain_commands_are_refused(robot):
    bad = LowCmd(q=np.full(12, np.nan), kp=np.ones(12))
    with pytest.raises(ValueError, match="NaN"):
        robot.write_command(bad)
    with pytest.raises(ValueError, match="kp, kd"):
        robot.write_command(LowCmd(kp=-np.ones(12)))


@pytest.mark.parametrize("name", ["FL_calf_joint", "RR_hip_joint", "FR_thigh_joint"])
def test_joint_map_by_name(robot, name):
    m, d = robot.model, robot.data
    sdk = JOINT_NAMES.index(name)
    before = robot.read_state().q
    d.qpos[m.jnt_qposadr[m.joint(name).id]] += 0.3  # move the named MuJoCo joint
    after = robot.read_state().q
    changed = np.flatnonzero(np.abs(after - before) > 1e-12)
    assert changed.tolist() == [sdk]
    # Commands go the other way: torque on SDK slot `sdk` drives exactly that MuJoCo joint.
    tau = np.zeros(12)
    tau[sdk] = 1.5
    robot.write_command(LowCmd(tau=tau))
    mujoco.mj_forward(m, d)
    qfrc = d.qfrc_actuator.copy()
    assert qfrc[m.jnt_dofadr[m.joint(name).id]] == pytest.approx(1.5)
    assert np.count_nonzero(np.abs(qfrc) > 1e-12) == 1


def test_stands_five_seconds_from_default_pose(robot):
    s = robot.reset()
    np.testing.assert_allclose(s.q, DEFAULT_JOINT_POS, atol=1e-9)
    cmd = LowCmd(q=DEFAULT_JOINT_POS.copy(), kp=np.full(12, DEFAULT_KP), kd=np.full(12, DEFAULT_KD))
    for _ in range(250):
        robot.step_policy(cmd)
        assert not robot.fallen()
    s = robot.read_state()
    assert robot.now() == pytest.approx(5.0)
    assert s.base_pos[2] > 0.25
    assert np.linalg.norm(s.base_pos[:2]) < 0.05  # did not walk away
    x = build_state(s)
    assert x[5] < -0.995  # upright
    assert np.all(np.abs(s.dq) < 0.05)  # at rest
    np.testing.assert_allclose(s.foot_force.sum(), robot.total_mass() * 9.81, rtol=0.02)
    np.testing.assert_allclose(s.accelerometer, [0, 0, 9.81], atol=0.1)  # the IMU feels gravity
    np.testing.assert_allclose(np.linalg.norm(s.quaternion), 1.0, atol=1e-9)


def test_falls_are_detected(robot):
    robot.reset()
    robot.write_command(LowCmd.zero_torque())
    robot.data.qvel[3] = 8.0  # roll it over, motors off
    for _ in range(200):
        robot.step(10)
        if robot.fallen():
            break
    assert robot.fallen()


def test_randomization_and_pushes_are_seeded():
    ranges = PhysicsRanges(foot_friction=(0.5, 1.0), trunk_mass_delta=(-0.5, 1.0))
    cfg = dict(physics=ranges, push_interval=(0.2, 0.4), sensor_noise=1.0)
    a, b, c = (MujocoGo2(SimConfig(seed=s, **cfg)) for s in (3, 3, 4))
    cmd = LowCmd(q=DEFAULT_JOINT_POS.copy(), kp=np.full(12, DEFAULT_KP), kd=np.full(12, DEFAULT_KD))
    for r in (a, b, c):
        for _ in range(50):
            r.step_policy(cmd)
    assert len(a.pushes) >= 2
    assert a.physics == b.physics
    assert 0.5 <= a.friction <= 1.0 and -0.5 <= a.physics.trunk_mass_delta <= 1.0
    assert a.friction == a.physics.foot_friction
    np.testing.assert_array_equal(a.read_state().q, b.read_state().q)
    assert a.friction != c.friction
    assert not np.array_equal(a.data.qpos, c.data.qpos)
    assert a.total_mass() == pytest.approx(15.206 + a.physics.trunk_mass_delta, abs=1e-3)


def test_config_validation_names_the_bad_value():
    with pytest.raises(ValueError, match="foot_friction"):
        SimConfig(physics=PhysicsRanges(foot_friction=(1.0, 0.5))).validate()
    with pytest.raises(ValueError, match="leg_mass_scale"):
        SimConfig(physics=PhysicsRanges(leg_mass_scale=(0.0, 1.0))).validate()
    with pytest.raises(ValueError, match="push_interval"):
        SimConfig(push_interval=(0.0, 1.0)).validate()
    with pytest.raises(ValueError, match="sensor_noise"):
        SimConfig(sensor_noise=-1).validate()
