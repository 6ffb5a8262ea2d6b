"""The observation builder: robot state + command -> planner state and condition.

Written once and used by data collection, training, the controller and both simulators:
train/deploy skew in order, units or scaling is the classic failure of deployed planners.

State (S = 30, float32), the MPDiffuser Go2 state (paper Sec. 4.4), SDK joint order:
  [0:3]   base angular velocity, body frame, rad/s (IMU gyroscope)
  [3:6]   projected gravity, body frame, unit vector (upright = [0, 0, -1])
  [6:18]  joint positions minus DEFAULT_JOINT_POS, rad
  [18:30] joint velocities, rad/s
No scaling is applied here: the model's per-dimension normalizer handles magnitudes.
Condition: the velocity command [vx (m/s), vy (m/s), yaw rate (rad/s)], body frame (C = 3),
optionally followed by history blocks an engine was trained with (its manifest's
``condition_names`` say which; ``ConditionBuilder`` builds them, ``export.data`` computes the
same blocks from a dataset):
  prev_state    the state of the previous 50 Hz policy tick (30, the names prefixed prev_)
  prev_action   the action executed during the previous policy tick (12, prev_a_<joint>)
A one-step transition (x_{t-1}, a_{t-1}) -> x_t is what lets a planner tell which robot it is
on (mass, damping, actuator lag), as legged policies do with their history inputs.
"""

from __future__ import annotations

import numpy as np

from robot.go2_constants import DEFAULT_JOINT_POS, JOINT_NAMES
from robot.types import LowState

STATE_NAMES: tuple[str, ...] = (
    ("ang_vel_x", "ang_vel_y", "ang_vel_z", "gravity_x", "gravity_y", "gravity_z")
    + tuple(f"q_rel_{n}" for n in JOINT_NAMES)
    + tuple(f"dq_{n}" for n in JOINT_NAMES)
)
CONDITION_NAMES: tuple[str, ...] = ("cmd_vx", "cmd_vy", "cmd_yaw_rate")
ACTION_NAMES: tuple[str, ...] = tuple(f"a_{n}" for n in JOINT_NAMES)
STATE_DIM = len(STATE_NAMES)
CONDITION_DIM = len(CONDITION_NAMES)
ACTION_DIM = len(ACTION_NAMES)
GRAVITY_Z_SLICE = STATE_NAMES.index("gravity_z")  # 5: the state's projected gravity z (see tilt_cost)
ANG_VEL_Z = STATE_NAMES.index("ang_vel_z")  # 2: the state's yaw rate (the reward's yaw term)
OBS_SPEC_VERSION = 1


def projected_gravity(quat_wxyz: np.ndarray) -> np.ndarray:
    """World gravity direction [0, 0, -1] expressed in the body frame."""
    w, x, y, z = np.asarray(quat_wxyz, dtype=np.float64)
    n = w * w + x * x + y * y + z * z
    if not np.isfinite(n) or n < 1e-12:
        raise ValueError(f"invalid IMU quaternion {quat_wxyz!r}")
    s = 2.0 / n
    # -(third row of the rotation matrix body->world)
    return np.array([-s * (x * z - w * y), -s * (y * z + w * x), -(1.0 - s * (x * x + y * y))])


def build_state(state: LowState) -> np.ndarray:
    """LowState -> planner state vector (float32, length STATE_DIM)."""
    out = np.empty(STATE_DIM, dtype=np.float64)
    out[0:3] = state.gyroscope
    out[3:6] = projected_gravity(state.quaternion)
    out[6:18] = np.asarray(state.q) - DEFAULT_JOINT_POS
    out[18:30] = state.dq
    return out.astype(np.float32)


def build_condition(command: np.ndarray) -> np.ndarray:
    """Velocity command [vx, vy, yaw_rate] -> condition vector (float32, length 3)."""
    c = np.asarray(command, dtype=np.float32).reshape(-1)
    if c.shape != (CONDITION_DIM,):
        raise ValueError(f"command must have {CONDITION_DIM} entries [vx, vy, yaw], got {c.shape}")
    return c


HISTORY_BLOCKS: dict[str, tuple[str, ...]] = {
    "prev_state": tuple(f"prev_{n}" for n in STATE_NAMES),
    "prev_action": tuple(f"prev_{n}" for n in ACTION_NAMES),
}


def condition_names(history: tuple[str, ...] | list[str] = ()) -> tuple[str, ...]:
    """The condition layout: the command, then each history block in the given order."""
    out = CONDITION_NAMES
    for block in history:
        if block not in HISTORY_BLOCKS:
            raise ValueError(f"unknown history block {block!r}; known: {list(HISTORY_BLOCKS)}")
        out = out + HISTORY_BLOCKS[block]
    return out


class ConditionBuilder:
    """Builds the condition vector of an engine from its ``condition_names`` (the command, then
    history blocks). Refuses (ValueError) a layout this robot side cannot build."""

    def __init__(self, names: list[str] | tuple[str, ...] = CONDITION_NAMES) -> None:
        names = tuple(names)
        if names[:CONDITION_DIM] != CONDITION_NAMES:
            raise ValueError(f"condition names must start with {list(CONDITION_NAMES)}, got {list(names[:3])}")
        blocks, rest = [], names[CONDITION_DIM:]
        while rest:
            for block, bnames in HISTORY_BLOCKS.items():
                if rest[:len(bnames)] == bnames:
                    blocks.append(block)
                    rest = rest[len(bnames):]
                    break
            else:
                raise ValueError(f"condition names {list(rest[:3])}... are not a history block this "
                                 f"controller can build ({list(HISTORY_BLOCKS)})")
        self.names = names
        self.history = tuple(blocks)
        self.dim = len(names)

    def __call__(self, command: np.ndarray, prev_state: np.ndarray | None = None,
                 prev_action: np.ndarray | None = None) -> np.ndarray:
        parts = [build_condition(command)]
        for block in self.history:
            v = prev_state if block == "prev_state" else prev_action
            want = STATE_DIM if block == "prev_state" else ACTION_DIM
            if v is None:
                raise ValueError(f"this engine's condition needs {block}")
            v = np.asarray(v, dtype=np.float32).reshape(-1)
            if v.shape != (want,):
                raise ValueError(f"{block} must have {want} entries, got {v.shape}")
            parts.append(v)
        return np.concatenate(parts)


def observation_spec(history: tuple[str, ...] | list[str] = ()) -> dict:
    """The plain-type description recorded in datasets and engine manifests."""
    return {
        "version": OBS_SPEC_VERSION,
        "robot": "go2",
        "state_names": list(STATE_NAMES),
        "condition_names": list(condition_names(history)),
        "action_names": list(ACTION_NAMES),
        "joint_order": list(JOINT_NAMES),
        "default_joint_pos": [float(v) for v in DEFAULT_JOINT_POS],
        "units": "rad, rad/s, body frame; joint positions relative to default; no scaling",
    }


TILT_COST_GRAVITY_Z = -0.95  # cost 1 while projected gravity z is above this (~18 deg tilt)


def tilt_cost(gravity_z: np.ndarray | float) -> np.ndarray:
    """The paper's Go2 cost, elementwise: 1.0 where the projected gravity z is above
    ``TILT_COST_GRAVITY_Z`` (torso tilted more than ~18 deg), else 0.0 (float64)."""
    return (np.asarray(gravity_z) > TILT_COST_GRAVITY_Z).astype(np.float64)


def state_reward_cost(state: np.ndarray, base_lin_vel: np.ndarray, command: np.ndarray) -> tuple[float, float]:
    """``reward_cost`` at a state from ``build_state`` (its yaw rate and projected gravity z)
    and the base velocity there (privileged: simulators only): how collection labels a tick,
    at the state the tick led to."""
    return reward_cost(base_lin_vel, float(state[ANG_VEL_Z]), float(state[GRAVITY_Z_SLICE]), command)


def reward_cost(base_lin_vel: np.ndarray, ang_vel_z: float, gravity_z: float,
                command: np.ndarray) -> tuple[float, float]:
    """The paper's Go2 reward and cost for one step.

    reward = exp(-|v_xy - c_xy|^2 / 0.25) + 0.5 exp(-(w_z - c_yaw)^2 / 0.25)  (Isaac Lab's
    velocity-tracking terms, std 0.5, with their 1 : 0.5 weighting), in [0, 1.5].
    cost = ``tilt_cost(gravity_z)``: 1 when the torso is tilted more than ~18 deg, else 0.
    """
    c = np.asarray(command, dtype=np.float64)
    v = np.asarray(base_lin_vel, dtype=np.float64)
    e_lin = float(np.sum((v[:2] - c[:2]) ** 2))
    e_yaw = float((ang_vel_z - c[2]) ** 2)
    reward = float(np.exp(-e_lin / 0.25) + 0.5 * np.exp(-e_yaw / 0.25))
    cost = float(tilt_cost(gravity_z))
    return reward, cost
