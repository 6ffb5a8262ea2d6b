"""Small synthetic systems and datasets (tests, benchmarks, examples without a simulator).

- :class:`LinearSystem` / :func:`double_integrator`: x_{t+1} = A x_t + B u_t, a steppable
  environment (``reset_to`` / ``step``) for the dynamics-consistency error.
- :func:`write_linear_dataset`: MPDiffuser Appendix E's stochastic expert: an LQR policy
  (gain from the discrete Riccati equation, Q = I, R = 0.1 I) driving the state to a random
  goal position, with Gaussian noise (std 0.25) added to the executed action with
  probability ``p``; the executed (noisy) action is stored, so the data are dynamically
  exact. Condition y = the goal position; reward = -(quadratic cost); cost = 1 when the
  speed exceeds ``speed_limit``.
- :func:`write_go2_shaped_dataset`: random stable linear dynamics with the Go2's sizes
  (S = 30, A = 12, C = 3) and names, for benchmarks before real data exist.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from planner_runtime.dataset import DatasetWriter, Episode


@dataclass
class LinearSystem:
    A: np.ndarray
    B: np.ndarray

    def __post_init__(self) -> None:
        self.x = np.zeros(self.A.shape[0])

    def reset_to(self, state: np.ndarray) -> None:
        self.x = np.asarray(state, np.float64).copy()

    def step(self, action: np.ndarray) -> np.ndarray:
        self.x = self.A @ self.x + self.B @ np.asarray(action, np.float64)
        return self.x.copy()


def double_integrator(dims: int = 2, dt: float = 0.1) -> LinearSystem:
    """Zero-order-hold double integrator; state [pos (dims), vel (dims)], action = accel."""
    eye, zero = np.eye(dims), np.zeros((dims, dims))
    A = np.block([[eye, dt * eye], [zero, eye]])
    B = np.vstack([0.5 * dt * dt * eye, dt * eye])
    return LinearSystem(A, B)


def lqr_gain(A: np.ndarray, B: np.ndarray, Q: np.ndarray, R: np.ndarray, iters: int = 2000) -> np.ndarray:
    """Infinite-horizon discrete LQR gain K (u = -K x) by Riccati iteration."""
    P = Q.copy()
    for _ in range(iters):
        K = np.linalg.solve(R + B.T @ P @ B, B.T @ P @ A)
        P = Q + A.T @ P @ (A - B @ K)
    return np.linalg.solve(R + B.T @ P @ B, B.T @ P @ A)


def write_linear_dataset(path: str | os.PathLike, n_episodes: int = 200, T: int = 60,
                         p_noise: float = 0.8, noise_std: float = 0.25, dims: int = 2,
                         seed: int = 0, speed_limit: float = 1.5) -> LinearSystem:
    sys_ = double_integrator(dims)
    S, A = 2 * dims, dims
    K = lqr_gain(sys_.A, sys_.B, np.eye(S), 0.1 * np.eye(A))
    rng = np.random.default_rng(seed)
    names = ([f"pos{i}" for i in range(dims)] + [f"vel{i}" for i in range(dims)],
             [f"acc{i}" for i in range(dims)], [f"goal{i}" for i in range(dims)])
    with DatasetWriter(path, *names, dt=0.1, robot="double_integrator",
                       provenance={"generator": "export.synthetic.write_linear_dataset",
                                   "p_noise": p_noise, "seed": seed}) as w:
        for _ in range(n_episodes):
            goal = rng.uniform(-1, 1, dims)
            x = np.concatenate([rng.uniform(-2, 2, dims), rng.uniform(-1, 1, dims)])
            obs, act, rew, cost = [], [], [], []
            target = np.concatenate([goal, np.zeros(dims)])
            for _ in range(T):
                u = -K @ (x - target)
                if rng.random() < p_noise:
                    u = u + rng.normal(0, noise_std, dims)
                obs.append(x.copy())
                act.append(u)
                e = x - target
                rew.append(-(e @ e + 0.1 * u @ u))
                cost.append(float(np.linalg.norm(x[dims:]) > speed_limit))
                x = sys_.A @ x + sys_.B @ u
            w.append(Episode(np.array(obs, np.float32), np.array(act, np.float32),
                             np.repeat(goal[None].astype(np.float32), T, 0),
                             np.array(rew, np.float32), np.array(cost, np.float32)))
    return sys_


def write_go2_shaped_dataset(path: str | os.PathLike, n_episodes: int = 20, T: int = 500,
                             seed: int = 0) -> None:
    """Go2-sized (S=30, A=12, C=3) synthetic data from a random stable linear system."""
    from robot.observation import ACTION_NAMES, CONDITION_NAMES, STATE_NAMES

    S, A, C = len(STATE_NAMES), len(ACTION_NAMES), len(CONDITION_NAMES)
    rng = np.random.default_rng(seed)
    M = rng.normal(0, 1, (S, S))
    Amat = 0.9 * M / np.max(np.abs(np.linalg.eigvals(M)))
    Bmat = rng.normal(0, 0.3, (S, A))
    Cmat = rng.normal(0, 0.5, (A, C))
    with DatasetWriter(path, list(STATE_NAMES), list(ACTION_NAMES), list(CONDITION_NAMES),
                       dt=0.02, robot="go2-synthetic",
                       provenance={"generator": "export.synthetic.write_go2_shaped_dataset",
                                   "seed": seed}) as w:
        for _ in range(n_episodes):
            cmd = rng.uniform([-0.3, -0.2, -0.8], [0.8, 0.2, 0.8])
            x = rng.normal(0, 0.1, S)
            obs, act, cmds = [], [], []
            for t in range(T):
                if t % 100 == 0:
                    cmd = rng.uniform([-0.3, -0.2, -0.8], [0.8, 0.2, 0.8])
                u = np.tanh(Cmat @ cmd + 0.3 * np.sin(0.3 * t + np.arange(A)) + rng.normal(0, 0.05, A))
                obs.append(x)
                act.append(u)
                cmds.append(cmd)
                x = Amat @ x + Bmat @ u + rng.normal(0, 0.01, S)
            o = np.array(obs, np.float32)
            w.append(Episode(o, np.array(act, np.float32), np.array(cmds, np.float32),
                             np.exp(-np.abs(o[:, 0])).astype(np.float32),
                             (o[:, 5] > 0.5).astype(np.float32)))
