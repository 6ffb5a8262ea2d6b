"""Seeded random velocity-command schedules for collection and evaluation
(``robot.controller.CommandSchedule``, the one schedule type).

A schedule is piecewise constant: a new (vx, vy, yaw-rate) command every 2-5 s, drawn
uniformly from vx -0.3..0.8 m/s, vy +/-0.2 m/s, yaw +/-0.8 rad/s (issue 2). Some segments
are pure forward, pure turning or standing still so the data covers those modes too.
"""

from __future__ import annotations

import numpy as np

from robot.controller import CommandSchedule

VX_RANGE = (-0.3, 0.8)
VY_RANGE = (-0.2, 0.2)
YAW_RANGE = (-0.8, 0.8)
HOLD_RANGE = (2.0, 5.0)


def random_schedule(rng: np.random.Generator, duration: float, *, vx: tuple[float, float] = VX_RANGE,
                    vy: tuple[float, float] = VY_RANGE, yaw: tuple[float, float] = YAW_RANGE,
                    hold: tuple[float, float] = HOLD_RANGE, special_prob: float = 0.2) -> CommandSchedule:
    """A random schedule covering ``duration`` seconds."""
    if duration <= 0:
        raise ValueError(f"duration must be positive, got {duration}")
    if not (0 < hold[0] <= hold[1]):
        raise ValueError(f"hold must be a positive (low, high) range, got {hold}")
    times, cmds = [], []
    t = 0.0
    while t < duration:
        c = np.array([rng.uniform(*vx), rng.uniform(*vy), rng.uniform(*yaw)])
        if rng.random() < special_prob:
            kind = rng.integers(3)
            if kind == 0:  # straight forward/backward
                c[1:] = 0.0
            elif kind == 1:  # turn in place
                c[:2] = 0.0
            else:  # stand still (trotting in place)
                c[:] = 0.0
        times.append(t)
        cmds.append(c)
        t += float(rng.uniform(*hold))
    return CommandSchedule.from_arrays(np.array(times), np.array(cmds))
