"""Action semantics: what a planner's action means on the motors, recorded with its data.

joint target = default_joint_pos + scale * action (per joint, SDK order), held by the
firmware PD with gains kp, kd. The dataset records the semantics its actions were collected
with; training carries them into the checkpoint and export into the engine manifest; the
controller, the demo and eval execute with exactly those and refuse an engine whose
semantics they cannot honour (``check``).

Two named sets:
  project     the project's trot expert: the Go2 policy pose (hip +/-0.1, thigh 0.8 / 1.0,
              calf -1.5), scale 0.25, kp 30, kd 0.7 (notes/go2-expert.md).
  legged-gym  the rl_sar robot_lab PPO policy's: pose [0, 0.8, -1.5] per leg, scale
              [0.125, 0.25, 0.25] per leg, kp 20, kd 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from robot import go2_constants as go2

# What a controller will execute: gains a Go2 motor can hold a walking gait with.
KP_RANGE = (5.0, 80.0)
KD_RANGE = (0.1, 5.0)
SCALE_RANGE = (0.01, 1.0)


@dataclass(frozen=True)
class ActionSemantics:
    name: str
    joint_names: tuple[str, ...]
    default_joint_pos: np.ndarray  # [A] rad
    scale: np.ndarray  # [A]
    kp: float
    kd: float

    def to_target(self, action: np.ndarray) -> np.ndarray:
        return self.default_joint_pos + self.scale * np.asarray(action, dtype=np.float64)

    def to_action(self, target: np.ndarray) -> np.ndarray:
        return (np.asarray(target, dtype=np.float64) - self.default_joint_pos) / self.scale

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "joint_names": list(self.joint_names),
                "default_joint_pos": [float(v) for v in self.default_joint_pos],
                "scale": [float(v) for v in self.scale], "kp": float(self.kp), "kd": float(self.kd)}

    @staticmethod
    def from_dict(d: object, where: str = "action semantics") -> ActionSemantics:
        """Parse a recorded block (dataset attribute or manifest ``action``); ValueError names
        what is missing or malformed. A scalar scale is broadcast to every joint."""
        if not isinstance(d, dict):
            raise ValueError(f"{where}: expected an object, got {type(d).__name__}")
        missing = [k for k in ("joint_names", "default_joint_pos", "scale", "kp", "kd") if k not in d]
        if missing:
            raise ValueError(f"{where}: missing {', '.join(missing)} (an engine exported before action "
                             f"semantics were recorded: re-export it from its checkpoints)")
        names = tuple(str(n) for n in d["joint_names"])
        pose = np.asarray(d["default_joint_pos"], dtype=np.float64).reshape(-1)
        scale = np.asarray(d["scale"], dtype=np.float64).reshape(-1)
        if scale.size == 1:
            scale = np.full(len(names), float(scale[0]))
        if pose.shape != (len(names),) or scale.shape != (len(names),):
            raise ValueError(f"{where}: default_joint_pos {pose.shape} and scale {scale.shape} must have "
                             f"one entry per joint ({len(names)})")
        kp, kd = float(d["kp"]), float(d["kd"])
        if not (np.all(np.isfinite(pose)) and np.all(np.isfinite(scale)) and np.isfinite(kp) and np.isfinite(kd)):
            raise ValueError(f"{where}: non-finite values")
        return ActionSemantics(str(d.get("name", "recorded")), names, pose, scale, kp, kd)

    def check(self) -> list[str]:
        """What keeps the Go2 controller from executing these semantics (empty: it can): the
        engine-vs-robot rule (``planner_runtime.manifest.action_problems``) against
        ``go2_execution_profile``."""
        from planner_runtime import manifest as mf

        return mf.action_problems(mf.parse_action(self.as_dict()), go2_execution_profile())

    def same_actions(self, other: ActionSemantics) -> bool:
        """Whether an action means the same joint targets under both (joints, default pose,
        scale), whatever PD gains each holds them with."""
        return (self.joint_names == other.joint_names
                and np.array_equal(self.default_joint_pos, other.default_joint_pos)
                and np.array_equal(self.scale, other.scale))

    def with_gains(self, kp: float | None = None, kd: float | None = None,
                   where: str = "--kp/--kd") -> ActionSemantics:
        """These semantics executed at other PD gains (None keeps the recorded one); ValueError
        when the Go2 controller could not execute them (``check``), NaN included."""
        out = replace(self, kp=self.kp if kp is None else float(kp), kd=self.kd if kd is None else float(kd))
        bad = out.check() if np.isfinite(out.kp) and np.isfinite(out.kd) else [
            f"non-finite gains kp {out.kp}, kd {out.kd}"]
        if bad:
            raise ValueError(f"{where}: gains the Go2 controller cannot execute: " + "; ".join(bad))
        return out


def go2_execution_profile() -> dict[str, Any]:
    """The part of the Go2 robot profile (``planner_runtime.manifest`` schema) that says what
    its controller executes: the SDK joint order and joint-position targets with gains and
    scale in the ranges above and a default pose within the joint limits."""
    return {"joint_names": list(go2.JOINT_NAMES),
            "action": {"type": "joint_position", "target": "default_joint_pos + scale * action",
                       "joint_pos_lower": [float(v) for v in go2.JOINT_POS_LOWER],
                       "joint_pos_upper": [float(v) for v in go2.JOINT_POS_UPPER],
                       "kp_range": list(KP_RANGE), "kd_range": list(KD_RANGE),
                       "scale_range": list(SCALE_RANGE)}}


PROJECT = ActionSemantics("project", go2.JOINT_NAMES, go2.DEFAULT_JOINT_POS.copy(),
                          np.full(go2.NUM_JOINTS, go2.ACTION_SCALE), go2.DEFAULT_KP, go2.DEFAULT_KD)
LEGGED_GYM = ActionSemantics("legged-gym", go2.JOINT_NAMES, np.array([0.0, 0.8, -1.5] * 4),
                             np.array([0.125, 0.25, 0.25] * 4), 20.0, 0.5)
NAMED = {s.name: s for s in (PROJECT, LEGGED_GYM)}
