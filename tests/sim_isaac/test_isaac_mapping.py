"""Isaac Lab <-> SDK conventions (sim.isaac_mapping): runs without Isaac Lab.

The Isaac joint order is built from Isaac Lab's documented grouping (all hips, then thighs,
then calves; legs FL, FR, RL, RR); the default pose is cross-checked against the regexes of
Isaac Lab's UNITREE_GO2_CFG init_state; the motor law is checked against MuJoCo's actuators.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from robot.go2_constants import DEFAULT_JOINT_POS, JOINT_NAMES, TORQUE_LIMIT
from robot.observation import build_state, projected_gravity
from robot.types import LowCmd, LowState
from sim.isaac_mapping import (
    ISAAC_GO2_JOINT_NAMES,
    IsaacJointMap,
    LowStateBatch,
    firmware_pd_torque,
    quat_order_for_version,
    rotate_world_to_body,
    to_wxyz,
)

# Isaac Lab's Go2 joint order, written out from its documented grouping.
ISAAC_ORDER = [f"{leg}_{j}_joint" for j in ("hip", "thigh", "calf") for leg in ("FL", "FR", "RL", "RR")]


def test_documented_isaac_order():
    assert list(ISAAC_GO2_JOINT_NAMES) == ISAAC_ORDER
    assert ISAAC_ORDER[:4] == ["FL_hip_joint", "FR_hip_joint", "RL_hip_joint", "RR_hip_joint"]
    assert ISAAC_ORDER[8] == "FL_calf_joint"


def test_index_map_picks_the_right_joints_and_round_trips():
    m = IsaacJointMap(ISAAC_ORDER)
    assert [ISAAC_ORDER[i] for i in m.sdk_from_isaac] == list(JOINT_NAMES)
    assert [JOINT_NAMES[i] for i in m.isaac_from_sdk] == ISAAC_ORDER
    # SDK motor 0 is FR_hip (Isaac index 1); SDK 5 is FL_calf (Isaac 8); SDK 9 RL_hip (Isaac 2).
    assert m.sdk_from_isaac[0] == 1 and m.sdk_from_isaac[5] == 8 and m.sdk_from_isaac[9] == 2
    x_isaac = np.arange(12.0) * 10
    x_sdk = m.to_sdk(x_isaac)
    assert x_sdk[0] == 10.0 and x_sdk[5] == 80.0
    assert np.array_equal(m.to_isaac(x_sdk), x_isaac)
    batch = np.random.default_rng(0).normal(size=(5, 12))
    assert np.array_equal(m.to_sdk(m.to_isaac(batch)), batch)


def test_index_map_on_torch_tensors():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    m = IsaacJointMap(ISAAC_ORDER)
    x = torch.arange(24.0).reshape(2, 12)
    idx = torch.as_tensor(m.sdk_from_isaac)
    assert torch.equal(x[:, idx], torch.as_tensor(m.to_sdk(x.numpy())))
    assert torch.equal(x[:, idx][:, torch.as_tensor(m.isaac_from_sdk)], x)


def test_default_pose_matches_isaac_labs_go2_init_state():
    # UNITREE_GO2_CFG.init_state.joint_pos (regex -> rad), as documented in isaaclab_assets.
    init = {r".*L_hip_joint": 0.1, r".*R_hip_joint": -0.1, r"F[L,R]_thigh_joint": 0.8,
            r"R[L,R]_thigh_joint": 1.0, r".*_calf_joint": -1.5}
    expected = []
    for name in ISAAC_ORDER:
        hits = [v for pat, v in init.items() if re.fullmatch(pat, name)]
        assert len(hits) == 1, name
        expected.append(hits[0])
    assert np.allclose(IsaacJointMap(ISAAC_ORDER).to_isaac(DEFAULT_JOINT_POS), expected)


def test_any_order_maps_by_name_and_bad_names_are_refused():
    rng = np.random.default_rng(1)
    shuffled = list(rng.permutation(ISAAC_ORDER))
    m = IsaacJointMap(shuffled)
    assert [shuffled[i] for i in m.sdk_from_isaac] == list(JOINT_NAMES)
    with pytest.raises(ValueError, match="must have 12 joints"):
        IsaacJointMap(ISAAC_ORDER[:11])
    with pytest.raises(ValueError, match="missing"):
        IsaacJointMap([*ISAAC_ORDER[:11], "FL_knee_joint"])
    with pytest.raises(ValueError, match="missing|duplicate"):
        IsaacJointMap([*ISAAC_ORDER[:11], ISAAC_ORDER[0]])


def test_torque_limits_follow_the_joint_type():
    lim = IsaacJointMap(ISAAC_ORDER).torque_limit_isaac()
    assert np.allclose(lim[:8], 23.7) and np.allclose(lim[8:], 45.43)


def test_quaternion_orders():
    q_xyzw = np.array([[0.1, 0.2, 0.3, 0.9]])
    assert np.allclose(to_wxyz(q_xyzw, "xyzw"), [[0.9, 0.1, 0.2, 0.3]])
    assert np.array_equal(to_wxyz(q_xyzw, "wxyz"), q_xyzw)
    with pytest.raises(ValueError):
        to_wxyz(q_xyzw, "zyxw")
    with pytest.raises(ValueError):
        to_wxyz(np.zeros((2, 3)), "wxyz")
    assert quat_order_for_version("2.2.1") == "wxyz" and quat_order_for_version("3.0.0") == "xyzw"
    with pytest.raises(ValueError):
        quat_order_for_version("dev")


def test_world_to_body_rotation_agrees_with_the_observation_builder():
    rng = np.random.default_rng(2)
    q = rng.normal(size=(50, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    g_body = rotate_world_to_body(q, np.tile([0.0, 0.0, -1.0], (50, 1)))
    assert np.allclose(g_body, np.stack([projected_gravity(x) for x in q]), atol=1e-12)
    # yaw 90 deg: world +x is body -y
    qz = np.array([np.cos(np.pi / 4), 0, 0, np.sin(np.pi / 4)])
    assert np.allclose(rotate_world_to_body(qz, [1.0, 0, 0]), [0, -1, 0], atol=1e-12)
    with pytest.raises(ValueError):
        rotate_world_to_body(np.zeros(4), [1.0, 0, 0])


def test_motor_law_clamps_and_ignores_zero_gain_targets():
    q = np.zeros(12)
    dq = np.full(12, 2.0)
    tau = firmware_pd_torque(q, dq, np.full(12, 0.1), np.zeros(12), np.full(12, 30.0), np.full(12, 0.7),
                             np.zeros(12), TORQUE_LIMIT)
    assert np.allclose(tau, 30 * 0.1 - 0.7 * 2.0)
    big = firmware_pd_torque(q, dq, np.full(12, 5.0), np.zeros(12), np.full(12, 60.0), np.zeros(12),
                             np.zeros(12), TORQUE_LIMIT)
    assert np.allclose(big, TORQUE_LIMIT)
    # kp = kd = 0 with the SDK's stop sentinels: only the feed-forward torque remains
    ff = np.linspace(-50, 50, 12)
    t0 = firmware_pd_torque(q, dq, np.full(12, 2.146e9), np.full(12, 16000.0), np.zeros(12), np.zeros(12),
                            ff, TORQUE_LIMIT)
    assert np.allclose(t0, np.clip(ff, -TORQUE_LIMIT, TORQUE_LIMIT))


def test_motor_law_numpy_and_torch_agree():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    rng = np.random.default_rng(3)
    args = [rng.normal(size=(8, 12)) * s for s in (1, 5, 1, 5)]
    kp = rng.uniform(0, 80, (8, 12)) * (rng.random((8, 12)) > 0.2)
    kd = rng.uniform(0, 3, (8, 12)) * (rng.random((8, 12)) > 0.2)
    ff = rng.normal(size=(8, 12)) * 10
    ref = firmware_pd_torque(*args, kp, kd, ff, TORQUE_LIMIT)
    tt = [torch.as_tensor(a, dtype=torch.float64) for a in (*args, kp, kd, ff, TORQUE_LIMIT)]
    got = firmware_pd_torque(*tt).numpy()
    assert np.allclose(got, ref, atol=1e-12)
    assert np.all(np.abs(ref) <= TORQUE_LIMIT + 1e-12)


def test_motor_law_matches_the_mujoco_harness():
    """Same LowCmd, same state: the torque MuJoCo's actuators apply equals the law's."""
    pytest.importorskip("mujoco")
    from sim.mujoco_harness import MujocoGo2, SimConfig

    sim = MujocoGo2(SimConfig(seed=0))
    rng = np.random.default_rng(4)
    for _ in range(5):
        s = sim.read_state()
        cmd = LowCmd(q=DEFAULT_JOINT_POS + rng.normal(0, 0.3, 12), dq=rng.normal(0, 1, 12),
                     kp=np.where(rng.random(12) > 0.2, 40.0, 0.0), kd=np.full(12, 1.0), tau=rng.normal(0, 3, 12))
        sim.write_command(cmd)
        sim.step(1)
        want = firmware_pd_torque(s.q, s.dq, cmd.q, cmd.dq, cmd.kp, cmd.kd, cmd.tau, sim.torque_limit)
        assert np.allclose(sim.data.actuator_force[sim.act], want, atol=1e-6)


def test_low_state_batch_rows_are_low_states_and_states_use_the_builder():
    rng = np.random.default_rng(5)
    n = 3
    quat = rng.normal(size=(n, 4))
    quat /= np.linalg.norm(quat, axis=1, keepdims=True)
    b = LowStateBatch(quaternion=quat, gyroscope=rng.normal(size=(n, 3)), accelerometer=rng.normal(size=(n, 3)),
                      q=rng.normal(size=(n, 12)), dq=rng.normal(size=(n, 12)), tau_est=rng.normal(size=(n, 12)),
                      foot_force=rng.random((n, 4)), base_lin_vel=rng.normal(size=(n, 3)),
                      base_pos=rng.normal(size=(n, 3)), tick=7)
    assert len(b) == n
    s1 = b.env(1)
    assert isinstance(s1, LowState) and s1.tick == 7 and np.array_equal(s1.q, b.q[1])
    X = b.states()
    assert X.shape == (n, 30) and X.dtype == np.float32
    assert np.array_equal(X[2], build_state(b.env(2)))
