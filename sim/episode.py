"""Episode runner and metrics, reusable by ``sim``, ``collect`` and closed-loop evaluation.

``run_episode`` drives any 50 Hz policy (a callable ``(state, command, t) -> LowCmd`` or an
object with ``act``) on a ``MujocoGo2`` under a command schedule and records per-tick
traces; ``episode_metrics`` turns the trace into falls, mean speed and tracking errors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from robot.controller import CommandSchedule
from robot.go2_constants import POLICY_DT
from robot.observation import tilt_cost
from robot.types import LowCmd, LowState

PHYSICS_PER_TICK = int(round(POLICY_DT / 0.002))

Policy = Callable[[LowState, np.ndarray, float], LowCmd]


@dataclass
class EpisodeTrace:
    """Per-tick traces (T rows), all body frame."""

    t: np.ndarray
    command: np.ndarray  # [T, 3]
    base_lin_vel: np.ndarray  # [T, 3]
    gyro: np.ndarray  # [T, 3]
    gravity_z: np.ndarray  # [T]
    base_pos: np.ndarray  # [T, 3]
    fell: bool
    fall_time: float | None = None
    extra: dict = field(default_factory=dict)
    fall_reason: str | None = None  # the robot's or the safety layer's, when it fell


def run_episode(robot, policy: Policy, schedule: CommandSchedule, duration: float,
                on_tick: Callable[[LowState, np.ndarray, LowCmd], None] | None = None) -> EpisodeTrace:
    """Run one episode from the robot's current state (call ``robot.reset()`` first).

    The policy is queried once per 50 Hz tick with the state read at the start of the tick;
    its command is held for 10 physics steps. Stops early when the robot falls.
    """
    n = int(round(duration / POLICY_DT))
    rows = {k: np.zeros((n, 3)) for k in ("command", "base_lin_vel", "gyro", "base_pos")}
    t_arr = np.zeros(n)
    gz = np.zeros(n)
    t_start = robot.now()
    fell, fall_time, T, reason = False, None, n, None
    for k in range(n):
        t = robot.now() - t_start
        s = robot.read_state()
        c = schedule.at(t)
        low = policy(s, c, t)
        if on_tick is not None:
            on_tick(s, c, low)
        robot.step_policy(low, PHYSICS_PER_TICK)
        t_arr[k] = t
        rows["command"][k] = c
        rows["base_lin_vel"][k] = robot.base_lin_vel()
        rows["gyro"][k] = robot.data.qvel[3:6]
        rows["base_pos"][k] = robot.data.qpos[0:3]
        gz[k] = robot.projected_gravity_z()
        reason = robot.fall_reason()
        if reason is not None:
            fell, fall_time, T = True, float(robot.now() - t_start), k + 1
            break
    return EpisodeTrace(t_arr[:T], rows["command"][:T], rows["base_lin_vel"][:T], rows["gyro"][:T],
                        gz[:T], rows["base_pos"][:T], fell, fall_time, fall_reason=reason)


def expert_policy(expert) -> Policy:
    """Adapt a ``TrotExpert`` to the ``Policy`` signature."""
    def policy(state: LowState, command: np.ndarray, t: float) -> LowCmd:
        return expert.act(state, command, t)[1]
    return policy


def since_command_change(command: np.ndarray, t: np.ndarray, starts: np.ndarray | None = None) -> np.ndarray:
    """Per row, the time since its command last changed (rows ``starts``, e.g. episode starts
    in a dataset, count as changes; so does row 0). ``command`` [T, 3], ``t`` [T] ascending."""
    change = np.r_[True, np.any(np.diff(command, axis=0) != 0, axis=1)]
    if starts is not None:
        change[starts] = True
    return t - np.maximum.accumulate(np.where(change, t, -np.inf))


def episode_metrics(tr: EpisodeTrace, settle: float = 1.0, stride: float = 0.32) -> dict:
    """Falls and tracking. Tracking errors skip ``settle`` s after every command change
    (the commanded step is not trackable instantly). ``*_rmse`` use per-tick velocities;
    ``stride_*_rmse`` use velocities averaged over ``stride`` s (the gait's own in-stride
    sway removed), which is what "tracks the command" means for a trot."""
    if len(tr.t) == 0:
        return {"fell": tr.fell, "duration": 0.0, "cost": 0.0}
    ok = since_command_change(tr.command, tr.t) >= settle
    if not ok.any():
        ok = np.ones_like(ok)
    ev = tr.base_lin_vel[ok, :2] - tr.command[ok, :2]
    ey = tr.gyro[ok, 2] - tr.command[ok, 2]
    k = max(1, int(round(stride / POLICY_DT)))
    kern = np.ones(k) / k
    def smooth(x: np.ndarray) -> np.ndarray:
        return np.convolve(x, kern, mode="same") if len(x) >= k else x
    sv = np.stack([smooth(tr.base_lin_vel[:, 0]), smooth(tr.base_lin_vel[:, 1]), smooth(tr.gyro[:, 2])], 1)
    es = sv[ok] - tr.command[ok]
    return {
        "fell": bool(tr.fell),
        "stride_vx_rmse": float(np.sqrt(np.mean(es[:, 0] ** 2))),
        "stride_vy_rmse": float(np.sqrt(np.mean(es[:, 1] ** 2))),
        "stride_yaw_rmse": float(np.sqrt(np.mean(es[:, 2] ** 2))),
        "fall_time": tr.fall_time,
        "fall_reason": tr.fall_reason,
        "duration": float(tr.t[-1] + POLICY_DT),
        "mean_vx": float(tr.base_lin_vel[:, 0].mean()),
        "mean_vy": float(tr.base_lin_vel[:, 1].mean()),
        "mean_yaw_rate": float(tr.gyro[:, 2].mean()),
        "mean_vx_settled": float(tr.base_lin_vel[ok, 0].mean()),
        "mean_vy_settled": float(tr.base_lin_vel[ok, 1].mean()),
        "mean_yaw_rate_settled": float(tr.gyro[ok, 2].mean()),
        "vx_rmse": float(np.sqrt(np.mean(ev[:, 0] ** 2))),
        "vy_rmse": float(np.sqrt(np.mean(ev[:, 1] ** 2))),
        "yaw_rmse": float(np.sqrt(np.mean(ey ** 2))),
        "vx_mean_abs_err": float(np.mean(np.abs(ev[:, 0]))),
        "min_gravity_z_abs": float(np.min(-tr.gravity_z)),
        "max_tilt_deg": float(np.degrees(np.arccos(np.clip(np.min(-tr.gravity_z), -1, 1)))),
        # the paper's cost: 50 Hz ticks with the torso tilted past ~18 deg (against eval's budget)
        "cost": float(np.sum(tilt_cost(tr.gravity_z))),
        "min_height": float(tr.base_pos[:, 2].min()),
        "distance": float(np.linalg.norm(tr.base_pos[-1, :2] - tr.base_pos[0, :2])),
    }


def aggregate(metrics: list[dict]) -> dict:
    """Summary over episodes: falls and averaged tracking errors."""
    keys = ("vx_rmse", "vy_rmse", "yaw_rmse", "vx_mean_abs_err", "mean_vx", "mean_vx_settled",
            "mean_vy_settled", "mean_yaw_rate_settled", "stride_vx_rmse", "stride_vy_rmse",
            "stride_yaw_rmse")
    out = {"episodes": len(metrics), "falls": int(sum(m["fell"] for m in metrics)),
           "sim_seconds": float(sum(m.get("duration", 0.0) for m in metrics))}
    for k in keys:
        vals = [m[k] for m in metrics if k in m]
        if vals:
            out[k] = float(np.mean(vals))
    tilts = [m["max_tilt_deg"] for m in metrics if "max_tilt_deg" in m]
    if tilts:
        out["max_tilt_deg"] = float(np.max(tilts))
    return out
