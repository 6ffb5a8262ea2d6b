"""The expert trot that generates the Go2 training data (privileged: true base velocity, a
gait clock). It tracks (vx, vy, yaw-rate) body-frame commands at the 50 Hz policy rate and
outputs joint position targets for the firmware PD (kp 30, kd 0.7 at 500 Hz).

Recipe (shared/notes/go2-expert.md, re-measured here with ``planner-runtime sim``):
diagonal-pair trot, swing height 0.07 m, hip-to-foot height 0.27 m, foot trajectories through
analytic leg IK, and, because a naive IK trot at kp 30 lags by (kd + damping) / kp ~ 0.09 s,
longer than a swing:
- error amplification: target = q_des + clip(3 (q_des - q), +/-0.5 rad);
- lead compensation: + (kd + damping) / kp * dq_des;
- gravity-sag feed-forward on stance legs: + J^T (m g / n_stance) / kp;
- integral correction of the commanded velocity (1/s) and yaw rate (4/s);
- a Raibert foot-placement shift 0.05 (v - v_cmd).
Changes measured here: period 0.32 s instead of 0.4 s; the integrators and the Raibert shift
use the stride-averaged velocity (on the instantaneous one they resonate with the trot's own
sway: +/-2.5 rad/s of yaw wobble at 0.8 m/s); the command is followed through a slew limit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from planner_runtime.config import from_mapping
from robot.go2_constants import (
    CALF_LENGTH,
    DEFAULT_KD,
    DEFAULT_KP,
    HIP_OFFSET_X,
    HIP_OFFSET_Y,
    JOINT_POS_LOWER,
    JOINT_POS_UPPER,
    LEGS,
    POLICY_DT,
    THIGH_LENGTH,
    THIGH_OFFSET_Y,
    TOTAL_MASS,
)
from robot.types import LowCmd, LowState

L1, L2 = THIGH_LENGTH, CALF_LENGTH
_SX = np.array([1.0 if leg[0] == "F" else -1.0 for leg in LEGS])  # front +x
_SY = np.array([1.0 if leg[1] == "L" else -1.0 for leg in LEGS])  # left +y
HIP_POS = np.stack([_SX * HIP_OFFSET_X, _SY * HIP_OFFSET_Y, np.zeros(4)], axis=1)  # base frame
ABD = _SY * THIGH_OFFSET_Y  # signed abduction offset per leg
# Trot pairs: FR+RL swing together, then FL+RR (phase offsets in LEGS order FR, FL, RR, RL).
PHASE_OFFSET = np.array([0.0, 0.5, 0.5, 0.0])
JOINT_DAMPING = 2.0  # the MJCF's joint damping (lead compensation uses kd + damping)


@dataclass
class ExpertConfig:
    """Gait and feedback parameters of ``TrotExpert`` (lengths m, times s, angles rad)."""

    period: float = 0.32
    duty: float = 0.5
    step_height: float = 0.07
    height: float = 0.27  # hip-to-foot (foot centre) height
    foot_y: float = 0.11  # lateral foot offset from the hip joint (outward)
    foot_x: float = 0.0
    kp: float = DEFAULT_KP
    kd: float = DEFAULT_KD
    amplify: float = 3.0
    amplify_clip: float = 0.5
    lead: float = (DEFAULT_KD + JOINT_DAMPING) / DEFAULT_KP
    sag_ff: float = 1.0
    # "finite_difference" (default: how data/go2_expert.h5 was collected, kept so that the
    # collect command reproduces it bit for bit) or "analytic" (same to ~1e-6, 25 us faster).
    sag_jacobian: str = "finite_difference"
    ki_v: float = 1.0
    ki_yaw: float = 4.0
    i_v_max: float = 0.4
    i_yaw_max: float = 0.8
    raibert: float = 0.05
    accel_limit: float = 2.0  # m/s^2 slew limit of the internal velocity reference
    yaw_accel_limit: float = 4.0  # rad/s^2
    # Anti-windup: s after the reference settles before integrating. 0 = off (the default, as
    # the dataset was collected); 0.6 cut the stride-averaged vx RMSE on random schedules
    # from 0.068 to 0.054 m/s and yaw from 0.122 to 0.110 rad/s (8 episodes with pushes).
    integrate_after: float = 0.0
    raibert_filtered: bool = True  # use the stride-averaged velocity (no in-stride feedback)
    eval_ahead: float = 0.01  # evaluate the plan at the middle of the 20 ms tick
    startup: float = 0.4  # s over which step height and velocity ramp in from standing
    mass: float = TOTAL_MASS

    @staticmethod
    def from_overrides(overrides: dict | None) -> ExpertConfig:
        """Defaults with ``overrides`` (``--expert-config``) applied; unknown names or bad
        values raise ValueError (``planner_runtime/config.py``)."""
        cfg = from_mapping(ExpertConfig, overrides or {}, "--expert-config", item="expert parameter")
        if cfg.sag_jacobian not in ("analytic", "finite_difference"):
            raise ValueError(f"sag_jacobian must be 'analytic' or 'finite_difference', got {cfg.sag_jacobian!r}")
        if not (0 < cfg.duty < 1 and cfg.period > 0 and cfg.height > 0 and cfg.kp > 0):
            raise ValueError(f"invalid gait parameters: period {cfg.period}, duty {cfg.duty}, "
                             f"height {cfg.height}, kp {cfg.kp}")
        return cfg


def leg_fk(q: np.ndarray) -> np.ndarray:
    """Joint angles [..., 4, 3] (SDK leg order) -> foot centres in the hip-joint frame."""
    q1, q2, q3 = q[..., 0], q[..., 1], q[..., 2]
    a = L1 * np.sin(q2) + L2 * np.sin(q2 + q3)  # backward reach in the leg plane
    b = L1 * np.cos(q2) + L2 * np.cos(q2 + q3)  # downward reach
    c1, s1 = np.cos(q1), np.sin(q1)
    return np.stack([-a, ABD * c1 + b * s1, ABD * s1 - b * c1], axis=-1)


def leg_ik(p: np.ndarray) -> np.ndarray:
    """Foot centres in the hip-joint frame [..., 4, 3] -> joint angles (knee backward)."""
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    h = np.sqrt(np.maximum(y * y + z * z - ABD * ABD, 1e-6))
    q1 = np.arctan2(z, y) - np.arctan2(-h, ABD)
    q1 = (q1 + np.pi) % (2 * np.pi) - np.pi
    a, b = -x, h
    c3 = np.clip((a * a + b * b - L1 * L1 - L2 * L2) / (2 * L1 * L2), -1.0, 1.0)
    q3 = -np.arccos(c3)
    q2 = np.arctan2(a, b) - np.arctan2(L2 * np.sin(q3), L1 + L2 * np.cos(q3))
    return np.stack([q1, q2, q3], axis=-1)


_EYE = np.eye(3)


def leg_jacobian(q: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """d foot / d q per leg [4, 3 (xyz), 3 (joints)], by finite differences in one batch."""
    qs = np.concatenate([q[None], q[None] + eps * _EYE[:, None, :]], axis=0)  # [4 sets, 4 legs, 3]
    p = leg_fk(qs)
    return np.moveaxis((p[1:] - p[0]) / eps, 0, -1)


def leg_dz_dq(q: np.ndarray) -> np.ndarray:
    """d foot_z / d q per leg [4, 3], analytic (the only Jacobian row the sag feed-forward
    needs: the ground reaction is vertical)."""
    q1, q2, q3 = q[:, 0], q[:, 1], q[:, 2]
    s2, s23 = np.sin(q2), np.sin(q2 + q3)
    b = L1 * np.cos(q2) + L2 * np.cos(q2 + q3)
    c1, s1 = np.cos(q1), np.sin(q1)
    return np.stack([ABD * c1 + b * s1, c1 * (L1 * s2 + L2 * s23), c1 * L2 * s23], axis=1)


class TrotExpert:
    """Stateful expert: call ``reset()`` per episode, then ``act(state, command, t)`` at 50 Hz."""

    def __init__(self, config: ExpertConfig | None = None):
        self.cfg = config or ExpertConfig()
        self.reset()

    def reset(self) -> None:
        """Start a new episode (integrators, gait clock and filters cleared)."""
        self.i_v = np.zeros(2)
        self.i_yaw = 0.0
        self.t0: float | None = None
        # Gait-period moving average of (vx, vy, yaw rate): the integrators must not see the
        # within-stride oscillation (integrating it resonates with the gait).
        n = max(1, int(round(self.cfg.period / POLICY_DT)))
        self._hist = np.zeros((n, 3))
        self._hist_n = 0
        self._ref: np.ndarray | None = None  # slew-limited command actually tracked
        self._settled_at = -np.inf
        c = self.cfg
        self._lim = np.array([c.accel_limit, c.accel_limit, c.yaw_accel_limit]) * POLICY_DT
        self._kp = np.full(12, c.kp)
        self._nominal = np.stack([np.full(4, c.foot_x), _SY * c.foot_y, np.full(4, -c.height)], axis=1)
        self._nominal_base = HIP_POS + self._nominal  # nominal feet in the base frame
        self._kd = np.full(12, c.kd)

    # ------------------------------------------------------------------ plan
    def _feet(self, t: np.ndarray, v: np.ndarray, yaw: float, shift: np.ndarray,
              ramp: float) -> tuple[np.ndarray, np.ndarray]:
        """Desired foot positions [len(t), 4, 3] in hip frames at gait times ``t``, and the
        stance mask [len(t), 4]. Stance feet move backward at the ground speed of their
        nominal point; swing feet go from liftoff to the (Raibert-shifted) touchdown point."""
        c = self.cfg
        nominal, r = self._nominal, self._nominal_base
        v_leg = np.empty((4, 2))
        v_leg[:, 0] = v[0] - yaw * r[:, 1]
        v_leg[:, 1] = v[1] + yaw * r[:, 0]
        half = (0.5 * c.period * c.duty) * v_leg
        phase = (t[:, None] / c.period + PHASE_OFFSET) % 1.0  # [n, 4]
        stance = phase < c.duty
        s_st = phase / c.duty
        s = np.minimum(np.maximum((phase - c.duty) / (1.0 - c.duty), 0.0), 1.0)
        # Swing: blend linear and smoothstep (pure smoothstep stalls at liftoff against the
        # stance velocity); height: raised cosine (zero vertical speed at both ends).
        sm = 0.5 * s + 0.5 * (3 * s * s - 2 * s ** 3)
        frac = np.where(stance, 1 - 2 * s_st, 2 * sm - 1)  # +1 front ... -1 back
        p = np.empty((len(t), 4, 3))
        p[:] = nominal
        p[..., :2] += frac[..., None] * half + shift
        p[..., 2] += np.where(stance, 0.0, ramp * c.step_height * 0.5 * (1 - np.cos(2 * np.pi * s)))
        return p, stance

    def act(self, state: LowState, command: np.ndarray, t: float) -> tuple[np.ndarray, LowCmd]:
        """One 50 Hz tick: returns (joint target [12] SDK order, LowCmd with kp/kd)."""
        c = self.cfg
        cmd_in = np.asarray(command, dtype=np.float64)
        # Follow command steps at a bounded acceleration: a step in the reference would
        # demand an instant stride change and overshoot.
        if self._ref is None:
            self._ref = np.zeros(3)
        step = np.minimum(np.maximum(cmd_in - self._ref, -self._lim), self._lim)
        self._ref = self._ref + step
        # Anti-windup: the stride-averaged velocity lags a command step by ~0.3-0.5 s; integrating
        # that transient error makes the response overshoot, so wait until it has settled.
        if np.any(step != 0.0):
            self._settled_at = t + c.integrate_after
        cmd = self._ref
        if self.t0 is None:
            self.t0 = t
        tg = t - self.t0
        v_meas = np.asarray(state.base_lin_vel if state.base_lin_vel is not None else np.zeros(3))
        yaw_meas = float(state.gyroscope[2])
        ramp = min(1.0, tg / c.startup) if c.startup > 0 else 1.0
        self._hist[self._hist_n % len(self._hist)] = (v_meas[0], v_meas[1], yaw_meas)
        self._hist_n += 1
        avg = self._hist[: min(self._hist_n, len(self._hist))].mean(axis=0)
        # Integral corrections on the stride-averaged error, once walking (clamped).
        if ramp >= 1.0 and self._hist_n >= len(self._hist) and t >= self._settled_at:
            iv = self.i_v + c.ki_v * (cmd[:2] - avg[:2]) * POLICY_DT
            self.i_v = np.minimum(np.maximum(iv, -c.i_v_max), c.i_v_max)
            iy = self.i_yaw + c.ki_yaw * (float(cmd[2]) - float(avg[2])) * POLICY_DT
            self.i_yaw = min(max(iy, -c.i_yaw_max), c.i_yaw_max)
        v_eff = (cmd[:2] + self.i_v) * ramp
        yaw_eff = (cmd[2] + self.i_yaw) * ramp
        v_fb = avg[:2] if c.raibert_filtered else v_meas[:2]
        shift = c.raibert * (v_fb - cmd[:2]) * ramp
        te = tg + c.eval_ahead
        h = 0.004
        p, st = self._feet(np.array([te, te + h, te - h]), v_eff, yaw_eff, shift, ramp)
        stance = st[0]
        qs = leg_ik(p)
        q_des = qs[0]
        dq_des = (qs[1] - qs[2]) / (2 * h)
        q = np.asarray(state.q).reshape(4, 3)
        err = c.amplify * (q_des - q)
        target = q_des + np.minimum(np.maximum(err, -c.amplify_clip), c.amplify_clip)
        target += c.lead * dq_des
        if c.sag_ff > 0:
            fz = c.mass * 9.81 / max(1, int(stance.sum()))
            dz = leg_dz_dq(q_des) if c.sag_jacobian == "analytic" else leg_jacobian(q_des)[:, 2, :]
            tau = -fz * dz  # motor torque that holds the vertical ground reaction
            target[stance] += c.sag_ff * tau[stance] / c.kp
        target = np.minimum(np.maximum(target.reshape(12), JOINT_POS_LOWER), JOINT_POS_UPPER)
        low = LowCmd(q=target.copy(), kp=self._kp.copy(), kd=self._kd.copy())
        return target, low
