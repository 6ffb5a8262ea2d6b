"""The project's Go2 MJCF: mass, joints, limits, actuators, sensors."""

from __future__ import annotations

import mujoco
import numpy as np

from robot.go2_constants import (
    JOINT_NAMES,
    JOINT_POS_LOWER,
    JOINT_POS_UPPER,
    TORQUE_LIMIT,
    TOTAL_MASS,
)
from sim.physics import ASSET


def test_model_loads_with_go2_mass_joints_and_limits():
    m = mujoco.MjModel.from_xml_path(str(ASSET))
    assert abs(m.body_mass.sum() - TOTAL_MASS) < 0.1
    assert m.opt.timestep == 0.002
    hinges = [m.joint(i).name for i in range(m.njnt) if m.jnt_type[i] == mujoco.mjtJoint.mjJNT_HINGE]
    assert sorted(hinges) == sorted(JOINT_NAMES)
    # MuJoCo's body-tree order is not the SDK order: the harness must map by name.
    assert hinges[:3] == ["FL_hip_joint", "FL_thigh_joint", "FL_calf_joint"]
    for i, name in enumerate(JOINT_NAMES):
        j = m.joint(name)
        assert m.jnt_limited[j.id]
        np.testing.assert_allclose(m.jnt_range[j.id], [JOINT_POS_LOWER[i], JOINT_POS_UPPER[i]], atol=1e-4)
        a = [k for k in range(m.nu) if m.actuator_trnid[k, 0] == j.id]
        assert len(a) == 1, f"{name} needs exactly one actuator"
        np.testing.assert_allclose(m.actuator_forcerange[a[0]], [-TORQUE_LIMIT[i], TORQUE_LIMIT[i]])
        assert m.actuator_forcelimited[a[0]]
    for s in ("imu_quat", "imu_gyro", "imu_acc", "FR_foot_touch", "RL_foot_touch"):
        assert m.sensor(s).id >= 0
