"""Unitree Go2 profile: joint order, default pose, limits and gains, in one place.

Joint order everywhere in this project (observations, actions, LowCmd/LowState motor
index) is the SDK's motor order: FR, FL, RR, RL legs, each hip, thigh, calf. MuJoCo's
qpos and Isaac Lab use other orders; map by name with ``joint_index_map``.
Sources: Unitree's published Go2 kinematics / URDF limits, MuJoCo Menagerie actuator
limits, and the measured expert recipe in shared/notes/go2-expert.md.
"""

from __future__ import annotations

import numpy as np

ROBOT_NAME = "go2"
LEGS = ("FR", "FL", "RR", "RL")  # SDK leg order
JOINT_TYPES = ("hip", "thigh", "calf")
JOINT_NAMES: tuple[str, ...] = tuple(f"{leg}_{j}_joint" for leg in LEGS for j in JOINT_TYPES)
NUM_JOINTS = 12
FOOT_NAMES = tuple(f"{leg}_foot" for leg in LEGS)


def _per_joint(hip: float, thigh_front: float, thigh_rear: float, calf: float,
               hip_sign_left: float = 1.0) -> np.ndarray:
    out = []
    for leg in LEGS:
        left = leg[1] == "L"
        front = leg[0] == "F"
        out += [hip * (hip_sign_left if left else -hip_sign_left),
                thigh_front if front else thigh_rear, calf]
    return np.array(out, dtype=np.float64)


# Standing pose used by Go2 locomotion policies (rad): hip +0.1 left / -0.1 right,
# thigh 0.8 front / 1.0 rear, calf -1.5.
DEFAULT_JOINT_POS = _per_joint(0.1, 0.8, 1.0, -1.5)
# Lying pose (what the robot looks like powered down) for the stand-up interpolation tests.
LYING_JOINT_POS = _per_joint(0.0, 1.36, 1.36, -2.65)

# Joint position limits (rad), Go2 URDF.
_HIP = (-1.0472, 1.0472)
_THIGH_FRONT = (-1.5708, 3.4907)
_THIGH_REAR = (-0.5236, 4.5379)
_CALF = (-2.7227, -0.83776)
JOINT_POS_LOWER = np.array(
    [v for leg in LEGS for v in (_HIP[0], (_THIGH_FRONT if leg[0] == "F" else _THIGH_REAR)[0], _CALF[0])]
)
JOINT_POS_UPPER = np.array(
    [v for leg in LEGS for v in (_HIP[1], (_THIGH_FRONT if leg[0] == "F" else _THIGH_REAR)[1], _CALF[1])]
)
# Position targets may lie this far (rad) beyond a joint's range: a PD target past the
# mechanical range only sets the torque towards the stop, and legged RL policies rely on it
# (the rl_sar PPO policy commands calf targets past the range in 62% of its ticks; clamped to
# the range it fell in 4 of 8 episodes with pushes, clamped to range + 0.5 rad in 0 of 8).
# The command filter clamps targets to this band; collection executes the same band.
TARGET_OVERDRIVE = 0.5
JOINT_VEL_LIMIT = np.full(NUM_JOINTS, 30.0)  # rad/s
# Torque limits (N m): hip/thigh 23.7, calf 45.43 (Menagerie actuator ranges).
TORQUE_LIMIT = np.array([23.7, 23.7, 45.43] * 4)

# PD gains for planner / expert control (firmware PD at 500 Hz). Measured to walk the
# expert trot in MuJoCo (notes/go2-expert.md); the dataset is collected with these.
DEFAULT_KP = 30.0
DEFAULT_KD = 0.7
# Stand-up and damping gains (SDK stand-up example uses kp 60 kd 5).
STAND_KP = 60.0
STAND_KD = 5.0
DAMPING_KD = 2.0

# Action semantics: joint target = DEFAULT_JOINT_POS + ACTION_SCALE * a (SDK order).
ACTION_SCALE = 0.25

# Timing.
CONTROL_DT = 0.002  # 500 Hz low-level command loop
POLICY_DT = 0.02  # 50 Hz policy tick
CHUNK_SIZE = 4  # actions executed per plan (Appendix O)

# Physical facts used by the MJCF (metres, kg).
THIGH_LENGTH = 0.213
CALF_LENGTH = 0.213
HIP_OFFSET_X = 0.1934
HIP_OFFSET_Y = 0.0465
THIGH_OFFSET_Y = 0.0955
TOTAL_MASS = 15.2

# Go2 LowCmd framing (unitree_sdk2 go2 low-level example).
LOWCMD_HEAD = (0xFE, 0xEF)
LOWCMD_LEVEL_FLAG = 0xFF
LOWCMD_GPIO = 0
# Motor mode: 0x01 = servo (FOC) enabled.
MOTOR_MODE_SERVO = 0x01
# "No position/velocity target" sentinels used by the SDK examples: a command meant as "no
# position control" sends q = POS_STOP_F with kp = 0, "no velocity control" dq = VEL_STOP_F
# with kd = 0 (passive: both; damping: q = POS_STOP_F, kp = 0, dq = 0, kd > 0).
POS_STOP_F = 2.146e9
VEL_STOP_F = 16000.0

# Fall detection: the trunk tilted more than this from upright (the angle between the body
# z axis and the world's up, from the IMU quaternion) -> damping. 1 rad, as Unitree's Go2
# deploy stacks drop to passive on a bad orientation.
FALL_TILT_RAD = 1.0


def clamp_target(q: np.ndarray) -> np.ndarray:
    """A joint position target (SDK order) clamped to the joint range +/- TARGET_OVERDRIVE."""
    return np.clip(q, JOINT_POS_LOWER - TARGET_OVERDRIVE, JOINT_POS_UPPER + TARGET_OVERDRIVE)


def joint_index_map(src_names: list[str] | tuple[str, ...],
                    dst_names: list[str] | tuple[str, ...] = JOINT_NAMES) -> np.ndarray:
    """Index array ``idx`` such that ``x_dst = x_src[idx]``: maps by name, not position.

    Names are compared after stripping a trailing ``_joint``, so MuJoCo ("FL_hip_joint")
    and Isaac Lab ("FL_hip_joint") names both match the SDK profile.
    """
    def key(n: str) -> str:
        return n[:-6] if n.endswith("_joint") else n

    src = [key(n) for n in src_names]
    missing = [n for n in dst_names if key(n) not in src]
    if missing:
        raise ValueError(f"joint names missing from source order: {missing}")
    if len(set(src)) != len(src):
        raise ValueError(f"duplicate joint names in source order: {list(src_names)}")
    return np.array([src.index(key(n)) for n in dst_names], dtype=np.int64)


def action_to_target(action: np.ndarray) -> np.ndarray:
    """Action (SDK order, dimensionless) -> joint position target (rad)."""
    return DEFAULT_JOINT_POS + ACTION_SCALE * np.asarray(action, dtype=np.float64)


def target_to_action(target: np.ndarray) -> np.ndarray:
    """Joint position target (rad) -> action; the inverse of ``action_to_target``."""
    return (np.asarray(target, dtype=np.float64) - DEFAULT_JOINT_POS) / ACTION_SCALE
