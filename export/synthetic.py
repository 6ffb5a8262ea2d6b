"""Small synthetic systems and datasets (tests, benchmarks, examples without a simulator).

- :class:`LinearSystem`: x_{t+1} = A x_t + B u_t with known dynamics: batched
  ``next_state`` / ``inverse`` and the per-plan ``forward_error`` / ``inverse_error``
  against the true model, and a steppable environment (``reset_to`` / ``step``) for the
  dynamics-consistency error. :func:`double_integrator` and :func:`planar_system` build one.
- :func:`write_linear_dataset`: MPDiffuser Appendix E's stochastic expert on the double
  integrator: an LQR policy (gain from the discrete Riccati equation, Q = I, R = 0.1 I)
  driving the state to a random goal position, with Gaussian noise (std 0.25) added to the
  executed action with probability ``p``; the executed (noisy) action is stored, so the
  data are dynamically exact. Condition y = the goal position; reward = -(quadratic cost);
  cost = 1 when the speed exceeds ``speed_limit``.
- :func:`write_planar_dataset`: the planar system (S = 2, A = 2, B invertible, so the true
  inverse model is u = B^-1 (x' - A x)) under a noisy linear feedback policy
  (``PLANAR_POLICY_GAIN``); reward exp(-|x|^2) in (0, 1]; one constant condition. For
  checks that need ground-truth dynamics (guidance vs no guidance, DyDiff rollouts:
  tests/export_methods and ``export.guidance_check``).
- :func:`write_go2_shaped_dataset`: random stable linear dynamics with the Go2's sizes
  (S = 30, A = 12, C = 3) and names, for benchmarks before real data exist.

No torch here.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from planner_runtime.dataset import DatasetWriter, Episode


@dataclass
class LinearSystem:
    """x_{t+1} = A x_t + B u_t. Plans use the engine layout: row t is [x_{t+1} (S), u_t (A)]."""

    A: np.ndarray
    B: np.ndarray

    def __post_init__(self) -> None:
        self.x = np.zeros(self.A.shape[0])

    @property
    def S(self) -> int:
        return int(self.A.shape[0])

    def next_state(self, x: np.ndarray, u: np.ndarray) -> np.ndarray:
        """x' = A x + B u for states [..., S] and actions [..., A]."""
        return x @ self.A.T + u @ self.B.T

    def inverse(self, x: np.ndarray, x_next: np.ndarray) -> np.ndarray:
        """The action that takes x to x_next: B^-1 (x' - A x) (B must be square, invertible)."""
        if self.B.shape[0] != self.B.shape[1]:
            raise ValueError(f"inverse needs a square B, got B of shape {self.B.shape}")
        return (x_next - x @ self.A.T) @ np.linalg.inv(self.B).T

    def _previous_states(self, x0: np.ndarray, plan: np.ndarray) -> np.ndarray:
        return np.concatenate([x0[:, None], plan[:, :-1, : self.S]], axis=1)

    def forward_error(self, x0: np.ndarray, plan: np.ndarray) -> np.ndarray:
        """Mean over rows of ||x_{t+1} - f(x_t, u_t)||^2 per plan [N, H, S + A] (raw units)."""
        S = self.S
        r = plan[..., :S] - self.next_state(self._previous_states(x0, plan), plan[..., S:])
        return (r ** 2).sum(-1).mean(-1)

    def inverse_error(self, x0: np.ndarray, plan: np.ndarray) -> np.ndarray:
        """Mean over rows of ||u_t - g(x_t, x_{t+1})||^2 per plan [N, H, S + A] (raw units)."""
        S = self.S
        r = plan[..., S:] - self.inverse(self._previous_states(x0, plan), plan[..., :S])
        return (r ** 2).sum(-1).mean(-1)

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


PLANAR_A = np.array([[1.0, 0.1], [-0.1, 0.95]], dtype=np.float64)
PLANAR_B = np.array([[0.2, 0.05], [0.0, 0.25]], dtype=np.float64)
PLANAR_POLICY_GAIN = np.array([[0.8, 0.3], [0.2, 0.9]])  # the planar data's policy: u = -K x + noise


def planar_system() -> LinearSystem:
    """The planar system of :func:`write_planar_dataset` (S = A = 2, B invertible)."""
    return LinearSystem(PLANAR_A.copy(), PLANAR_B.copy())


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


def write_planar_dataset(path: str | os.PathLike, episodes: int = 24, T: int = 40,
                         seed: int = 0) -> Path:
    """The planar system under the noisy feedback policy u = -K x + N(0, 0.5^2)."""
    sys_ = planar_system()
    rng = np.random.default_rng(seed)
    with DatasetWriter(path, ["p", "v"], ["u0", "u1"], ["cmd"], dt=0.1, robot="linear2d",
                       provenance={"generator": "export.synthetic.write_planar_dataset"}) as w:
        for _ in range(episodes):
            x = rng.uniform(-2.0, 2.0, size=2)
            obs, act, rew = [], [], []
            for _ in range(T):
                u = -x @ PLANAR_POLICY_GAIN.T + rng.normal(0.0, 0.5, size=2)
                obs.append(x)
                act.append(u)
                rew.append(np.exp(-float(x @ x)))
                x = sys_.next_state(x, u)
            w.append(Episode(np.asarray(obs, np.float32), np.asarray(act, np.float32),
                             np.zeros((T, 1), np.float32), np.asarray(rew, np.float32),
                             np.zeros(T, np.float32)))
    return Path(path)


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
