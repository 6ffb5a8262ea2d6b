"""A small linear system with known dynamics, written as a planner-runtime dataset.

For checks that need ground-truth dynamics (guidance vs no guidance, DyDiff rollouts):

x_{t+1} = A x_t + B u_t (S = 2, A = 2, B invertible, so the true inverse model is
u = B^-1 (x' - A x)); a noisy linear feedback policy; reward exp(-|x|^2) in (0, 1];
one constant condition. Used by tests/export_methods and ``export.guidance_check``;
no torch here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from planner_runtime.dataset import DatasetWriter, Episode

A_MAT = np.array([[1.0, 0.1], [-0.1, 0.95]], dtype=np.float64)
B_MAT = np.array([[0.2, 0.05], [0.0, 0.25]], dtype=np.float64)
B_INV = np.linalg.inv(B_MAT)
POLICY_GAIN = np.array([[0.8, 0.3], [0.2, 0.9]])  # the data's policy: u = -K x + noise


def step(x: np.ndarray, u: np.ndarray) -> np.ndarray:
    return x @ A_MAT.T + u @ B_MAT.T


def inverse(x: np.ndarray, x_next: np.ndarray) -> np.ndarray:
    return (x_next - x @ A_MAT.T) @ B_INV.T


def write_dataset(path: Path, episodes: int = 24, T: int = 40, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    gain = POLICY_GAIN
    with DatasetWriter(path, ["p", "v"], ["u0", "u1"], ["cmd"], dt=0.1, robot="linear2d",
                       provenance={"generator": "export/linear_system.py"}) as w:
        for _ in range(episodes):
            x = rng.uniform(-2.0, 2.0, size=2)
            obs, act, rew = [], [], []
            for _ in range(T):
                u = -x @ gain.T + rng.normal(0.0, 0.5, size=2)
                obs.append(x)
                act.append(u)
                rew.append(np.exp(-float(x @ x)))
                x = step(x, u)
            w.append(Episode(np.asarray(obs, np.float32), np.asarray(act, np.float32),
                             np.zeros((T, 1), np.float32), np.asarray(rew, np.float32),
                             np.zeros(T, np.float32)))
    return path


def true_forward_error(x0: np.ndarray, plan: np.ndarray, S: int = 2) -> np.ndarray:
    """Mean over rows of ||x_{t+1} - f(x_t, u_t)||^2 per plan (raw units)."""
    x_prev = np.concatenate([x0[:, None], plan[:, :-1, :S]], axis=1)
    r = plan[..., :S] - step(x_prev, plan[..., S:])
    return (r ** 2).sum(-1).mean(-1)


def true_inverse_error(x0: np.ndarray, plan: np.ndarray, S: int = 2) -> np.ndarray:
    """Mean over rows of ||u_t - g(x_t, x_{t+1})||^2 per plan (raw units)."""
    x_prev = np.concatenate([x0[:, None], plan[:, :-1, :S]], axis=1)
    r = plan[..., S:] - inverse(x_prev, plan[..., :S])
    return (r ** 2).sum(-1).mean(-1)
