import numpy as np
import pytest

from robot import go2_constants as c
from robot.observation import (
    STATE_DIM,
    TILT_COST_GRAVITY_Z,
    build_condition,
    build_state,
    projected_gravity,
    reward_cost,
    tilt_cost,
)
from robot.types import LowCmd, LowState


def test_profile_shapes_and_default_pose_inside_limits():
    assert c.JOINT_NAMES[:3] == ("FR_hip_joint", "FR_thigh_joint", "FR_calf_joint")
    assert c.JOINT_NAMES[3] == "FL_hip_joint"
    for arr in (c.DEFAULT_JOINT_POS, c.JOINT_POS_LOWER, c.JOINT_POS_UPPER, c.TORQUE_LIMIT):
        assert arr.shape == (12,)
    assert np.all(c.JOINT_POS_LOWER < c.DEFAULT_JOINT_POS)
    assert np.all(c.DEFAULT_JOINT_POS < c.JOINT_POS_UPPER)
    # left hips +0.1, right hips -0.1
    assert c.DEFAULT_JOINT_POS[c.JOINT_NAMES.index("FL_hip_joint")] == pytest.approx(0.1)
    assert c.DEFAULT_JOINT_POS[c.JOINT_NAMES.index("RR_hip_joint")] == pytest.approx(-0.1)


def test_joint_index_map_by_name():
    mujoco_order = [f"{leg}_{j}_joint" for leg in ("FL", "FR", "RL", "RR") for j in ("hip", "thigh", "calf")]
    idx = c.joint_index_map(mujoco_order)
    x_mj = np.arange(12.0)
    x_sdk = x_mj[idx]
    # SDK slot 0 is FR_hip, which is MuJoCo slot 3
    assert x_sdk[0] == 3.0 and x_sdk[3] == 0.0
    back = c.joint_index_map(list(c.JOINT_NAMES), mujoco_order)
    assert np.array_equal(x_sdk[back], x_mj)
    with pytest.raises(ValueError, match="missing"):
        c.joint_index_map(mujoco_order[:-1])


def test_action_semantics_round_trip():
    a = np.linspace(-1, 1, 12)
    t = c.action_to_target(a)
    assert np.allclose(t, c.DEFAULT_JOINT_POS + 0.25 * a)
    assert np.allclose(c.target_to_action(t), a)


def test_projected_gravity():
    assert np.allclose(projected_gravity([1, 0, 0, 0]), [0, 0, -1])
    # pitched nose-down by 90 deg about y: gravity points along body +x
    h = np.sqrt(0.5)
    assert np.allclose(projected_gravity([h, 0, h, 0]), [1, 0, 0], atol=1e-12)
    with pytest.raises(ValueError, match="quaternion"):
        projected_gravity([0, 0, 0, 0])


def test_build_state_layout():
    s = LowState()
    s.gyroscope = np.array([0.1, 0.2, 0.3])
    s.q = c.DEFAULT_JOINT_POS + 0.01 * np.arange(12)
    s.dq = np.arange(12) * 1.0
    x = build_state(s)
    assert x.shape == (STATE_DIM,) and x.dtype == np.float32
    assert np.allclose(x[0:3], [0.1, 0.2, 0.3])
    assert np.allclose(x[3:6], [0, 0, -1])
    assert np.allclose(x[6:18], 0.01 * np.arange(12), atol=1e-6)
    assert np.allclose(x[18:30], np.arange(12))
    with pytest.raises(ValueError, match="3 entries"):
        build_condition([0.5, 0.0])


def test_reward_and_cost():
    r, cost = reward_cost(np.array([0.5, 0.0, 0.0]), 0.0, -1.0, np.array([0.5, 0.0, 0.0]))
    assert r == pytest.approx(1.5) and cost == 0.0
    r2, cost2 = reward_cost(np.array([0.0, 0.0, 0.0]), 0.0, -0.9, np.array([0.5, 0.0, 0.0]))
    assert r2 < r and cost2 == 1.0
    # one threshold for the per-step cost and the episode counts of eval/demo (vectorised)
    assert TILT_COST_GRAVITY_Z == -0.95
    gz = np.array([-1.0, -0.96, -0.95, -0.949, -0.5])
    np.testing.assert_array_equal(tilt_cost(gz), [0.0, 0.0, 0.0, 1.0, 1.0])
    assert [reward_cost(np.zeros(3), 0.0, g, np.zeros(3))[1] for g in gz] == tilt_cost(gz).tolist()


def test_lowcmd_finite_check():
    cmd = LowCmd.zero_torque()
    assert cmd.is_finite()
    cmd.q[3] = np.nan
    assert not cmd.is_finite()
