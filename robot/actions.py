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

from dataclasses import dataclass
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
    def from_dict(d: dict[str, Any], where: str = "action semantics") -> ActionSemantics:
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
        """What keeps the Go2 controller from executing these semantics (empty: it can)."""
        bad = []
        if list(self.joint_names) != list(go2.JOINT_NAMES):
            bad.append(f"joint order {list(self.joint_names)} is not the Go2 SDK order {list(go2.JOINT_NAMES)}")
            return bad
        if np.any(self.default_joint_pos < go2.JOINT_POS_LOWER) or np.any(self.default_joint_pos > go2.JOINT_POS_UPPER):
            bad.append("default_joint_pos lies outside the Go2 joint limits")
        if np.any(self.scale < SCALE_RANGE[0]) or np.any(self.scale > SCALE_RANGE[1]):
            bad.append(f"action scale outside {SCALE_RANGE}")
        if not KP_RANGE[0] <= self.kp <= KP_RANGE[1]:
            bad.append(f"kp {self.kp} outside {KP_RANGE}")
        if not KD_RANGE[0] <= self.kd <= KD_RANGE[1]:
            bad.append(f"kd {self.kd} outside {KD_RANGE}")
        return bad


PROJECT = ActionSemantics("project", go2.JOINT_NAMES, go2.DEFAULT_JOINT_POS.copy(),
                          np.full(go2.NUM_JOINTS, go2.ACTION_SCALE), go2.DEFAULT_KP, go2.DEFAULT_KD)
LEGGED_GYM = ActionSemantics("legged-gym", go2.JOINT_NAMES, np.array([0.0, 0.8, -1.5] * 4),
                             np.array([0.125, 0.25, 0.25] * 4), 20.0, 0.5)
NAMED = {s.name: s for s in (PROJECT, LEGGED_GYM)}
