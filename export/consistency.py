"""Dynamics-consistency error: does executing a plan's actions reproduce its planned states?

MPDiffuser Fig. 4 / 12: execute the plan's actions open-loop from the observed state in the
real environment and compare the visited states with the plan's states, per horizon step.
Works for any environment that can be stepped from Python through :class:`SteppableEnv`
(the MuJoCo Go2 harness, a linear system, ...). Plans use the engine layout: row t is
[x_{t+1} (S), u_t (A)], so row t's action is applied at x_t and its state is compared with
the state reached after that action.

Robots whose planner state does not determine the full simulator state (the Go2's state has
no base position or linear velocity) cannot be ``reset_to`` a planner state: snapshot the
simulator when the plan is made, restore it yourself, and pass ``reset=False`` so the
rollout starts from wherever the environment is.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class SteppableEnv(Protocol):
    def reset_to(self, state: np.ndarray) -> None:
        """Put the environment in the (planner-space) state ``state`` [S]."""

    def step(self, action: np.ndarray) -> np.ndarray:
        """Apply action [A]; return the next planner-space state [S]."""


def rollout_actions(env: SteppableEnv, x0: np.ndarray, actions: np.ndarray,
                    reset: bool = True) -> np.ndarray:
    """Open-loop states [H, S] visited by applying ``actions`` [H, A] from ``x0``."""
    if reset:
        env.reset_to(np.asarray(x0, np.float64))
    return np.stack([np.asarray(env.step(np.asarray(a, np.float64)), np.float64) for a in actions])


def consistency_error(env: SteppableEnv, x0: np.ndarray, plan: np.ndarray, S: int,
                      scale: np.ndarray | None = None, reset: bool = True) -> np.ndarray:
    """Per-step error [H]: || (x_sim_{t+1} - x_plan_{t+1}) / scale ||_2 for one plan [H, S + A].

    ``scale`` [S] divides each state dimension first (e.g. the normalizer's scale, so joint
    angles and velocities count alike); None compares raw units.
    """
    plan = np.asarray(plan, np.float64)
    if plan.ndim != 2 or plan.shape[1] <= S:
        raise ValueError(f"plan must be [H, S + A] with S = {S}, got {plan.shape}")
    sim = rollout_actions(env, x0, plan[:, S:], reset=reset)
    diff = sim - plan[:, :S]
    if scale is not None:
        diff = diff / np.asarray(scale, np.float64)
    return np.linalg.norm(diff, axis=-1)

