"""DyDiff: long-horizon rollouts on the dynamics diffusion model (offline evaluation/augmentation).

"What would this policy (or this open-loop action sequence) do over 100+ steps", without a
simulator, from the project's own models (dydiff-summary.txt; 2 rounds as in the reference
code):

0. Roll out ``length`` steps from x_0 with a one-step model: x_{t+1} = f(x_t, pi(x_t)).
1. For each round: walk the rollout in segments of the diffusion horizon H. For a segment
   starting at state x_s (of the *current* round, so segments chain), sample its states
   x_{s+1..s+H} with the MPDiffuser dynamics diffusion model eps^dyn(x^k | u^k, k, x_s, y)
   while its actions are held fixed (inpainted: at each level the model sees the fixed
   actions noised to that level with one fixed noise draw), cold-started from noise at K,
   deterministic DDIM over ``steps`` levels; average with the previous round's states,
   x <- w x_diffused + (1 - w) x_prev (w = ``avg_weight``); then relabel every action with
   the policy on the new states, u_t = pi(x_t).
2. Return states [B, L + 1, S] (x_0 first), actions [B, L, A], and every round's states.

The policy is either a callable on raw states (numpy [B, S] -> [B, A]; a torch module or a
function returning a tensor also works) or a fixed raw action sequence [L, A] / [B, L, A]
(open-loop: relabelling keeps it unchanged). The one-step model is a trained
``ForwardDynamics`` (normalized space; wrapped here) or any callable (x [B, S], u [B, A])
-> x' [B, S] in raw units. The last segment is padded by repeating its last action and cut
back to ``length``. Plain Python; not an exported graph.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from export.data import Normalizers
from export.models.guidance import ForwardDynamics
from export.sampling.common import Normalize, Schedule, cfg_eps, ddim_step, q_sample
from planner_runtime.schedule import ddim_levels

Policy = Callable[[np.ndarray], np.ndarray] | np.ndarray
OneStep = ForwardDynamics | Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass
class DyDiffResult:
    states: np.ndarray  # [B, L + 1, S] raw, states[:, 0] = x_0
    actions: np.ndarray  # [B, L, A] raw
    round_states: list[np.ndarray] = field(default_factory=list)  # round 0 = one-step model

    @property
    def length(self) -> int:
        return int(self.actions.shape[1])


class DyDiff:
    """Rollouts with a one-step model refined by the dynamics diffusion model."""

    def __init__(self, dynamics: nn.Module, one_step: OneStep, norms: Normalizers, S: int, A: int,
                 C: int, H: int, num_levels: int, schedule: str = "cosine",
                 clip: float | None = None):
        if norms.traj.dim != S + A or norms.cond.dim != C:
            raise ValueError(f"normalizer dims (traj {norms.traj.dim}, cond {norms.cond.dim}) do "
                             f"not match S + A = {S + A}, C = {C}")
        self.dynamics, self.one_step = dynamics.eval(), one_step
        self.S, self.A, self.C, self.H, self.K = S, A, C, H, num_levels
        self.sched = Schedule(num_levels, schedule)
        self.norm_traj = Normalize(norms.traj)
        self.norm_x = Normalize(norms.traj.slice(0, S))
        self.norm_u = Normalize(norms.traj.slice(S, S + A))
        self.norm_cond = Normalize(norms.cond)
        self.clip = clip if clip is not None else norms.traj.clip

    # ---- pieces ----------------------------------------------------------------------------
    def _policy(self, policy: Policy, x: np.ndarray, t: int) -> np.ndarray:
        if isinstance(policy, np.ndarray):
            return policy[:, t]
        if isinstance(policy, nn.Module):
            with torch.no_grad():
                u = policy(torch.from_numpy(np.ascontiguousarray(x, np.float32)))
        else:
            u = policy(x)
        if isinstance(u, torch.Tensor):
            u = u.detach().cpu().numpy()
        u = np.asarray(u, np.float32)
        if u.shape != (x.shape[0], self.A):
            raise ValueError(f"policy returned shape {u.shape}, expected {(x.shape[0], self.A)}")
        return u

    @torch.no_grad()
    def _step(self, x: np.ndarray, u: np.ndarray) -> np.ndarray:
        if isinstance(self.one_step, ForwardDynamics):
            xt, ut = torch.from_numpy(x), torch.from_numpy(u)
            xn = self.one_step(self.norm_x(xt), self.norm_u(ut))
            return self.norm_x.inverse(xn).numpy().astype(np.float32)
        return np.asarray(self.one_step(x, u), np.float32)

    @torch.no_grad()
    def diffuse_states(self, x0: torch.Tensor, u: torch.Tensor, cond: torch.Tensor,
                       noise: torch.Tensor, levels: torch.Tensor, cfg_w: float = 1.0) -> torch.Tensor:
        """States [B, H, S] (raw) for fixed raw actions u [B, H, A] from raw x0 [B, S].

        ``noise`` [B, H, S + A]: its state part starts the states at level levels[0], its
        action part noises the fixed actions at every level (one draw, as the forward
        process would).
        """
        S = self.S
        x0n, yn = self.norm_x(x0), self.norm_cond(cond)
        un = self.norm_u(u)
        x = q_sample(self.sched, torch.zeros_like(noise[..., :S]), noise[..., :S], levels[0:1])
        w = torch.tensor([float(cfg_w)])
        for i in range(int(levels.shape[0]) - 1):
            lv, nx = levels[i:i + 1], levels[i + 1:i + 2]
            u_k = q_sample(self.sched, un, noise[..., S:], lv)
            eps_x = cfg_eps(self.dynamics, torch.cat([x, u_k], dim=-1), lv, x0n, yn, w)
            x, _ = ddim_step(self.sched, x, eps_x, lv, nx, self.clip)
        return self.norm_x.inverse(x)

    # ---- the procedure ---------------------------------------------------------------------
    def rollout(self, x0: np.ndarray, policy: Policy, cond: np.ndarray, *, length: int = 100,
                rounds: int = 2, avg_weight: float = 0.5, steps: int | None = None,
                cfg_w: float = 1.0, seed: int = 0) -> DyDiffResult:
        """Roll out ``length`` steps from raw x0 [S] or [B, S]; see the module docstring.

        cond: raw [C], [B, C] or per step [B, length, C] (a segment uses its first step's).
        steps: DDIM steps per segment (default K). Deterministic for a given seed.
        """
        if length < 1 or rounds < 0 or not 0.0 <= avg_weight <= 1.0:
            raise ValueError(f"need length >= 1, rounds >= 0, 0 <= avg_weight <= 1; got "
                             f"{length}, {rounds}, {avg_weight}")
        x0 = np.atleast_2d(np.asarray(x0, np.float32))
        B, S, A, H = x0.shape[0], self.S, self.A, self.H
        if x0.shape[1] != S:
            raise ValueError(f"x0 must have {S} state dims, got {x0.shape}")
        cond = np.asarray(cond, np.float32)
        if cond.ndim == 1:
            cond = np.broadcast_to(cond, (B, self.C))
        if cond.ndim == 2:
            cond = np.broadcast_to(cond[:, None], (B, length, self.C))
        if cond.shape != (B, length, self.C):
            raise ValueError(f"cond must be [C], [B, C] or [B, L, C]; got {cond.shape}")
        if isinstance(policy, np.ndarray):
            policy = np.asarray(policy, np.float32)
            if policy.ndim == 2:
                policy = np.broadcast_to(policy, (B, *policy.shape))
            if policy.shape != (B, length, A):
                raise ValueError(f"fixed actions must be [L, A] or [B, L, A] with L = {length}, "
                                 f"got {policy.shape}")
        levels = torch.from_numpy(ddim_levels(self.K, steps or self.K))

        # round 0: the one-step model
        states = np.zeros((B, length + 1, S), np.float32)
        actions = np.zeros((B, length, A), np.float32)
        states[:, 0] = x0
        for t in range(length):
            actions[:, t] = self._policy(policy, states[:, t], t)
            states[:, t + 1] = self._step(states[:, t], actions[:, t])
        history = [states.copy()]

        gen = torch.Generator().manual_seed(int(seed))
        n_seg = -(-length // H)
        for _ in range(rounds):
            new = states.copy()
            for j in range(n_seg):
                s0, n = j * H, min(H, length - j * H)
                u = actions[:, s0:s0 + n]
                if n < H:  # pad the last segment with its last action
                    u = np.concatenate([u, np.repeat(u[:, -1:], H - n, axis=1)], axis=1)
                noise = torch.randn(B, H, S + A, generator=gen)
                xs = self.diffuse_states(torch.from_numpy(new[:, s0].copy()), torch.from_numpy(u),
                                         torch.from_numpy(np.array(cond[:, s0], np.float32)),
                                         noise, levels, cfg_w).numpy()[:, :n]
                new[:, s0 + 1:s0 + 1 + n] = avg_weight * xs + (1.0 - avg_weight) * states[:, s0 + 1:s0 + 1 + n]
            states = new
            for t in range(length):
                actions[:, t] = self._policy(policy, states[:, t], t)
            history.append(states.copy())
        return DyDiffResult(states, actions, history)
