"""Velocity commands given while the controller runs: the Go2's wireless remote or a program.

``planner-runtime controller --command-source remote`` steers with the Go2's own wireless
remote (the sticks in ``LowState.wireless_remote``, ``robot.wireless_remote``):

    left stick up / down     vx   forward / backward
    left stick left / right  vy   left / right
    right stick left / right yaw  turn left / right (counter-clockwise is positive)

(vx = ly, vy = -lx, yaw = -rx: the remote reports lx and rx positive to the right, the
convention of Go2 and G1 deployments), each stick's travel outside a dead zone
(``STICK_DEADZONE``) scaled to the command limits in that direction, so a full stick asks for
the largest command the engine's data covered.
``--command-source endpoint`` takes the command from a program over the controller's control
endpoint (``{"cmd": "velocity", "vx": .., "vy": .., "yaw": ..}``, ``robot.control_endpoint``);
a command not renewed within ``--command-timeout`` s lapses to zero (the robot walks in place
and stands still), so a program that dies stops the robot walking away.

Limits: a command is clamped to the range of the commands the engine's networks were trained
on (the service's ``condition_range``, from its min-max normalizer: the condition starts with
the command), narrowed by ``--command-limits`` when given; a diffusion planner asked for a
command outside its data does what nothing measured. Non-finite commands are refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from robot.wireless_remote import RemoteState

SOURCES = ("schedule", "remote", "endpoint")
STICK_DEADZONE = 0.08  # stick travel (of 1) read as zero: a released stick rests near, not at, 0
COMMAND_TIMEOUT_S = 0.5  # an endpoint command lapses to zero after this long without renewal
NAMES = ("vx", "vy", "yaw")


@dataclass(frozen=True)
class CommandLimits:
    """Per-axis command bounds [vx, vy, yaw] (m/s, m/s, rad/s); lo <= 0 <= hi on every axis."""

    lo: np.ndarray
    hi: np.ndarray
    source: str = ""

    def __post_init__(self) -> None:
        lo = np.asarray(self.lo, np.float64).reshape(-1)
        hi = np.asarray(self.hi, np.float64).reshape(-1)
        if lo.shape != (3,) or hi.shape != (3,) or not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
            raise ValueError(f"command limits must be 3 finite lows and highs, got {self.lo} / {self.hi}")
        if np.any(lo > 0) or np.any(hi < 0):
            raise ValueError(f"command limits must contain 0 (standing) on every axis, got lo {lo.tolist()} "
                             f"hi {hi.tolist()}")
        object.__setattr__(self, "lo", lo)
        object.__setattr__(self, "hi", hi)

    @classmethod
    def from_condition_range(cls, rng: Any) -> CommandLimits | None:
        """The command's range in the engine's training data, from a service's metadata
        ``condition_range`` ({"lo": [...], "hi": [...]}, the networks' condition in training
        order: the command first). None when the service states none (a normalizer other
        than min-max) or a malformed one; a range that leaves out standing still is
        widened to include 0."""
        if not isinstance(rng, dict):
            return None
        try:
            lo = np.asarray(rng["lo"], np.float64)[:3]
            hi = np.asarray(rng["hi"], np.float64)[:3]
            return cls(np.minimum(lo, 0.0), np.maximum(hi, 0.0), "the engine's training data")
        except (KeyError, TypeError, ValueError, IndexError):
            return None

    @classmethod
    def from_option(cls, values: Any) -> CommandLimits:
        """``--command-limits VX_MIN VX_MAX VY_MAX YAW_MAX`` (vy and yaw symmetric)."""
        vx_min, vx_max, vy_max, yaw_max = (float(v) for v in values)
        return cls(np.array([vx_min, -abs(vy_max), -abs(yaw_max)]), np.array([vx_max, abs(vy_max), abs(yaw_max)]),
                   "--command-limits")

    def intersect(self, other: CommandLimits | None) -> CommandLimits:
        if other is None:
            return self
        return CommandLimits(np.maximum(self.lo, other.lo), np.minimum(self.hi, other.hi),
                             f"{self.source} and {other.source}")

    def clamp(self, cmd: np.ndarray) -> tuple[np.ndarray, bool]:
        out = np.clip(cmd, self.lo, self.hi)
        return out, bool(np.any(out != cmd))

    def as_dict(self) -> dict[str, Any]:
        return {"lo": self.lo.tolist(), "hi": self.hi.tolist(), "from": self.source}


def _stick(v: float, deadzone: float) -> float:
    """Travel outside the dead zone, rescaled to [-1, 1]."""
    v = float(np.clip(v, -1.0, 1.0))
    if abs(v) <= deadzone:
        return 0.0
    return float(np.sign(v) * (abs(v) - deadzone) / (1.0 - deadzone))


@dataclass
class LiveCommand:
    """The velocity command of a live source (``SOURCES[1:]``), read by the controller each
    policy tick with ``at(now)``; times are the controller's clock (``robot.now()``)."""

    source: str
    limits: CommandLimits
    timeout_s: float = COMMAND_TIMEOUT_S
    deadzone: float = STICK_DEADZONE
    _cmd: np.ndarray = field(default_factory=lambda: np.zeros(3), init=False)
    _t: float | None = field(default=None, init=False)
    updates: int = field(default=0, init=False)
    clamped: int = field(default=0, init=False)
    lapses: int = field(default=0, init=False)
    _lapsed: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        if self.source not in SOURCES[1:]:
            raise ValueError(f"live command source must be one of {SOURCES[1:]}, got {self.source!r}")
        if not self.timeout_s > 0:
            raise ValueError(f"--command-timeout must be > 0 s, got {self.timeout_s}")
        if not 0.0 <= self.deadzone < 1.0:
            raise ValueError(f"stick dead zone must be in [0, 1), got {self.deadzone}")

    def set(self, cmd: Any, now: float) -> tuple[np.ndarray, bool]:
        """Take a new command [vx, vy, yaw]; returns it as clamped and whether it was.
        ValueError for anything but 3 finite numbers (the previous command stays)."""
        try:
            c = np.asarray(cmd, np.float64).reshape(-1)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"a velocity command is 3 numbers (vx, vy, yaw), got {cmd!r}") from exc
        if c.shape != (3,) or not np.all(np.isfinite(c)):
            raise ValueError(f"a velocity command is 3 finite numbers (vx, vy, yaw), got {cmd!r}")
        c, clamped = self.limits.clamp(c)
        self._cmd, self._t = c, float(now)
        self.updates += 1
        self.clamped += int(clamped)
        self._lapsed = False
        return c.copy(), clamped

    def from_remote(self, remote: RemoteState, now: float) -> np.ndarray:
        """The command the remote's sticks ask for (``set`` with it): each axis scaled to the
        limit on its side."""
        axes = np.array([_stick(remote.ly, self.deadzone), -_stick(remote.lx, self.deadzone),
                         -_stick(remote.rx, self.deadzone)])
        cmd = np.where(axes >= 0, axes * self.limits.hi, -axes * self.limits.lo)
        return self.set(cmd, now)[0]

    def at(self, now: float) -> np.ndarray:
        """The command now: the last one set, or zero before any and once it lapsed."""
        if self._t is None:
            return np.zeros(3)
        if now - self._t > self.timeout_s:
            if not self._lapsed:
                self.lapses += 1
                self._lapsed = True
            return np.zeros(3)
        return self._cmd.copy()

    def stats(self) -> dict[str, Any]:
        return {"source": self.source, "limits": self.limits.as_dict(), "timeout_s": self.timeout_s,
                "updates": self.updates, "clamped": self.clamped, "lapses": self.lapses,
                "last": self._cmd.tolist()}
