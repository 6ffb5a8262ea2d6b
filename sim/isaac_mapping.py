"""Isaac Lab <-> project conventions for the Go2, without Isaac Lab (testable anywhere).

What the Isaac Lab harness (``sim.isaac_harness``) needs to turn articulation data into the
robot's ``LowState`` and a ``LowCmd`` into joint efforts:

- joint order: Isaac Lab's articulation lists the Go2's joints grouped by type (all hips,
  then all thighs, then all calves; legs FL, FR, RL, RR within each group), the SDK lists them
  by leg (FR, FL, RR, RL; hip, thigh, calf). ``IsaacJointMap`` maps between them BY NAME
  from the articulation's own ``joint_names`` (``robot.go2_constants.joint_index_map``), so a
  different USD order is handled too; ``ISAAC_GO2_JOINT_NAMES`` is the documented grouping,
  used by the tests and as the expected order in error messages.
- quaternion order: Isaac Lab 2.x reports (w, x, y, z) like the SDK; Isaac Lab 3.x reports
  (x, y, z, w). ``to_wxyz`` converts.
- batches of robot state: ``LowStateBatch`` (what a vectorized sim reports, one row per env).
- the Go2 firmware's motor law, per joint, every control period:
  tau = kp (q* - q) + kd (dq* - dq) + tau_ff, clamped to the torque limits; a zero gain makes
  its target irrelevant (the SDK's "no target" sentinels). ``firmware_pd_torque`` works on
  numpy arrays and torch tensors alike (the harness runs it on the GPU for all envs at once).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from robot.go2_constants import JOINT_NAMES, JOINT_TYPES, NUM_JOINTS, TORQUE_LIMIT, joint_index_map
from robot.observation import build_state
from robot.types import LowState

# Isaac Lab's leg order inside each joint-type group (the USD's breadth-first body order).
ISAAC_LEG_ORDER = ("FL", "FR", "RL", "RR")
ISAAC_GO2_JOINT_NAMES: tuple[str, ...] = tuple(
    f"{leg}_{j}_joint" for j in JOINT_TYPES for leg in ISAAC_LEG_ORDER
)
# Joint-name regexes of the Go2 actuator group in Isaac Lab's UNITREE_GO2_CFG.
ISAAC_GO2_JOINT_EXPR = (".*_hip_joint", ".*_thigh_joint", ".*_calf_joint")
QUAT_ORDERS = ("wxyz", "xyzw")


class IsaacJointMap:
    """Index arrays between an articulation's joint order and the SDK order, by name.

    ``sdk_from_isaac``: ``x_sdk = x_isaac[..., sdk_from_isaac]``;
    ``isaac_from_sdk``: ``x_isaac = x_sdk[..., isaac_from_sdk]``. Works for numpy arrays and
    torch tensors (index with ``torch.as_tensor(idx)`` on the tensor's device).
    """

    def __init__(self, isaac_joint_names: list[str] | tuple[str, ...]):
        names = list(isaac_joint_names)
        if len(names) != NUM_JOINTS:
            raise ValueError(f"the Go2 articulation must have {NUM_JOINTS} joints, got {len(names)}: {names} "
                             f"(expected Isaac Lab's order {list(ISAAC_GO2_JOINT_NAMES)})")
        self.isaac_names = names
        self.sdk_from_isaac = joint_index_map(names, JOINT_NAMES)
        self.isaac_from_sdk = joint_index_map(JOINT_NAMES, names)
        if not np.array_equal(self.sdk_from_isaac[self.isaac_from_sdk], np.arange(NUM_JOINTS)):
            raise ValueError(f"joint names do not form a permutation of the Go2's: {names}")

    def to_sdk(self, x_isaac: Any) -> Any:
        return x_isaac[..., self.sdk_from_isaac]

    def to_isaac(self, x_sdk: Any) -> Any:
        return x_sdk[..., self.isaac_from_sdk]

    def torque_limit_isaac(self) -> np.ndarray:
        """The SDK-order torque limits, in the articulation's order."""
        return self.to_isaac(TORQUE_LIMIT)


def to_wxyz(quat: np.ndarray, order: str) -> np.ndarray:
    """Quaternions [..., 4] in ``order`` ("wxyz" or "xyzw") -> (w, x, y, z)."""
    if order not in QUAT_ORDERS:
        raise ValueError(f"quaternion order must be one of {QUAT_ORDERS}, got {order!r}")
    q = np.asarray(quat)
    if q.shape[-1] != 4:
        raise ValueError(f"quaternions need 4 components in the last axis, got shape {q.shape}")
    return q if order == "wxyz" else q[..., [3, 0, 1, 2]]


def quat_order_for_version(version: str) -> str:
    """Isaac Lab's quaternion order by its version string: 3.x and later use (x, y, z, w)."""
    try:
        major = int(str(version).split(".")[0])
    except ValueError as exc:
        raise ValueError(f"cannot read an Isaac Lab version from {version!r}") from exc
    return "xyzw" if major >= 3 else "wxyz"


def rotate_world_to_body(quat_wxyz: np.ndarray, v_world: np.ndarray) -> np.ndarray:
    """R(q)^T v for body->world quaternions (w, x, y, z) [..., 4] and vectors [..., 3]."""
    q = np.asarray(quat_wxyz, dtype=np.float64)
    v = np.asarray(v_world, dtype=np.float64)
    n = np.linalg.norm(q, axis=-1, keepdims=True)
    if not np.all(np.isfinite(n)) or np.any(n < 1e-9):
        raise ValueError("invalid quaternion (zero norm or not finite)")
    q = q / n
    w, u = q[..., :1], q[..., 1:]
    # Rotation by the conjugate: v' = v - 2w (u x v) + 2 u x (u x v).
    uv = np.cross(u, v)
    return v - 2.0 * w * uv + 2.0 * np.cross(u, uv)


def firmware_pd_torque(q: Any, dq: Any, q_des: Any, dq_des: Any, kp: Any, kd: Any, tau_ff: Any,
                       limit: Any) -> Any:
    """The Go2 motor law for arrays of any leading shape (numpy or torch, all the same kind).

    tau = kp (q* - q) + kd (dq* - dq) + tau_ff, clamped to [-limit, limit]. A term whose gain
    is zero contributes nothing whatever its target (the SDK sends 2.146e9 / 16000 there).
    """
    pos = (kp * (q_des - q)) * (kp > 0)
    vel = (kd * (dq_des - dq)) * (kd > 0)
    return (pos + vel + tau_ff).clip(-limit, limit)


@dataclass
class LowStateBatch:
    """``LowState`` fields for N robots (numpy, SDK motor order, leading axis = env)."""

    quaternion: np.ndarray  # [N, 4] w, x, y, z
    gyroscope: np.ndarray  # [N, 3]
    accelerometer: np.ndarray  # [N, 3]
    q: np.ndarray  # [N, 12]
    dq: np.ndarray
    tau_est: np.ndarray
    foot_force: np.ndarray  # [N, 4] FR, FL, RR, RL
    base_lin_vel: np.ndarray  # [N, 3] body frame
    base_pos: np.ndarray  # [N, 3] relative to the env origin
    tick: int

    def __len__(self) -> int:
        return int(self.q.shape[0])

    def env(self, i: int) -> LowState:
        return LowState(quaternion=self.quaternion[i].copy(), gyroscope=self.gyroscope[i].copy(),
                        accelerometer=self.accelerometer[i].copy(), q=self.q[i].copy(), dq=self.dq[i].copy(),
                        tau_est=self.tau_est[i].copy(), foot_force=self.foot_force[i].copy(), tick=self.tick,
                        base_lin_vel=self.base_lin_vel[i].copy(), base_pos=self.base_pos[i].copy())

    def states(self) -> np.ndarray:
        """Planner state vectors [N, S] through the one observation builder."""
        return np.stack([build_state(self.env(i)) for i in range(len(self))])
