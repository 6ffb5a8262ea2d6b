"""State and command types mirroring the Go2 SDK's LowState_ / LowCmd_ fields we use.

Plain numpy dataclasses so that the controller, the in-process simulator and the DDS
bridge share one representation; the bridge converts to and from the IDL types.
Units: rad, rad/s, N m, m/s^2, N (foot force is the SDK's raw int16 value as float).
Quaternion order is the SDK's: w, x, y, z (body to world).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from robot.go2_constants import NUM_JOINTS, POS_STOP_F, VEL_STOP_F


def _z(n: int) -> np.ndarray:
    return np.zeros(n, dtype=np.float64)


@dataclass
class LowState:
    quaternion: np.ndarray = field(default_factory=lambda: np.array([1.0, 0.0, 0.0, 0.0]))
    gyroscope: np.ndarray = field(default_factory=lambda: _z(3))  # body frame, rad/s
    accelerometer: np.ndarray = field(default_factory=lambda: _z(3))  # body frame, m/s^2
    q: np.ndarray = field(default_factory=lambda: _z(NUM_JOINTS))  # SDK motor order
    dq: np.ndarray = field(default_factory=lambda: _z(NUM_JOINTS))
    tau_est: np.ndarray = field(default_factory=lambda: _z(NUM_JOINTS))
    foot_force: np.ndarray = field(default_factory=lambda: _z(4))  # FR, FL, RR, RL
    tick: int = 0  # firmware tick: ms on the Go2 and MuJoCo Go2, Isaac Lab steps (TickClock measures it)
    wireless_remote: bytes = b"\x00" * 40
    # Privileged, simulator-only fields (None on the robot).
    base_lin_vel: np.ndarray | None = None  # body frame, m/s
    base_pos: np.ndarray | None = None  # world, m


@dataclass
class LowCmd:
    q: np.ndarray = field(default_factory=lambda: _z(NUM_JOINTS))
    dq: np.ndarray = field(default_factory=lambda: _z(NUM_JOINTS))
    kp: np.ndarray = field(default_factory=lambda: _z(NUM_JOINTS))
    kd: np.ndarray = field(default_factory=lambda: _z(NUM_JOINTS))
    tau: np.ndarray = field(default_factory=lambda: _z(NUM_JOINTS))

    @staticmethod
    def zero_torque() -> LowCmd:
        """Passive: kp = kd = tau = 0 (the motors apply nothing), with the SDK's "no position /
        velocity control" sentinels as the targets (PosStopF, VelStopF)."""
        n = NUM_JOINTS
        return LowCmd(q=np.full(n, POS_STOP_F), dq=np.full(n, VEL_STOP_F))

    def is_finite(self) -> bool:
        return all(np.all(np.isfinite(a)) for a in (self.q, self.dq, self.kp, self.kd, self.tau))
