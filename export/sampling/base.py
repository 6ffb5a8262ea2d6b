"""The base reference sampler: the engine contract of ``planner_runtime/engine.py`` in torch.

A method's sampler subclasses :class:`DiffusionSampler` and supplies ONE hook,
``denoise_step`` (one reverse step k -> k' in normalized space); ranking is a second,
optional hook (``rank``). The base class owns everything else, written once: input
normalization, the first iterate (q_sample of the shifted previous plan: warm start, or
pure noise at level K: cold start), the unrolled reverse loop, unnormalization, and the two
graph shapes:

Fused (``FusedSampler(s)``, or ``s(...)`` directly):
    forward(x0 [B, S], cond [B, C], prev_plan [B, H, D], noise [B, H, D],
            levels [n + 1] int64, cfg_w [1] f32) -> plan [B, H, D] raw, score [B], best [1] int64
    The loop over n = levels.shape[0] - 1 steps is unrolled in Python: n is fixed when the
    graph is traced/exported; the level values stay graph inputs (coefficients gathered).

Step (``StepSampler(s)``):
    forward(x0, cond, prev_plan, noise, tau [B, H, D] normalized, level [1] i64,
            next_level [1] i64, start [1] i64, cfg_w [1]) -> tau_next [B, H, D] normalized,
            plan [B, H, D] raw (unnormalized clean estimate x0_hat)
    With start = 1 the iterate is q_sample(normalize(prev_plan), noise, level) and ``tau`` is
    ignored (selected with Where, so a NaN there cannot leak through).

Temperature: the runtime (or caller) scales ``noise`` by sqrt(temperature) before the call;
with DDIM (eta = 0) no further noise is added, so temperature only widens the start.
All inputs and outputs at this boundary are raw units; x_0 is normalized with the state
part of the trajectory normalizer, cond with the condition normalizer.
"""

from __future__ import annotations

import torch
from torch import nn

from export.data import Normalizers
from export.sampling.common import Normalize, Schedule, q_sample


class DiffusionSampler(nn.Module):
    """Shared machinery of every method's sampler. Subclasses implement ``denoise_step``."""

    method: str = "base"

    def __init__(self, norms: Normalizers, S: int, A: int, C: int, H: int, num_levels: int,
                 schedule: str = "cosine", clip: float | None = None):
        super().__init__()
        if norms.traj.dim != S + A or norms.cond.dim != C:
            raise ValueError(f"normalizer dims (traj {norms.traj.dim}, cond {norms.cond.dim}) do "
                             f"not match S + A = {S + A}, C = {C}")
        self.S, self.A, self.C, self.H, self.K = S, A, C, H, num_levels
        self.D = S + A
        self.sched = Schedule(num_levels, schedule)
        self.norm_traj = Normalize(norms.traj)
        self.norm_x0 = Normalize(norms.traj.slice(0, S))
        self.norm_cond = Normalize(norms.cond)
        # minmax data lives in [-1, 1]: clip x0_hat there; std data is not clipped by default
        self.clip = clip if clip is not None else norms.traj.clip

    # ---- hooks ---------------------------------------------------------------------------
    def denoise_step(self, tau: torch.Tensor, level: torch.Tensor, next_level: torch.Tensor,
                     x0n: torch.Tensor, yn: torch.Tensor, cfg_w: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """One reverse step in normalized space: (tau^{k'} [B, H, D], x0_hat [B, H, D])."""
        raise NotImplementedError

    def rank(self, plan: torch.Tensor, x0: torch.Tensor, cond: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """(score [B], best [1] int64) from the raw plans. Default: no ranker."""
        B = plan.shape[0]
        return (torch.zeros(B, dtype=plan.dtype, device=plan.device),
                torch.zeros(1, dtype=torch.int64, device=plan.device))

    def knobs(self) -> dict:
        """The method's sampling knobs (plain types) for the engine manifest."""
        return {"clip": self.clip}

    # ---- shared --------------------------------------------------------------------------
    def start(self, prev_plan: torch.Tensor, noise: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        """First iterate: the shifted previous plan noised to ``level`` (cold: zeros at K)."""
        return q_sample(self.sched, self.norm_traj(prev_plan), noise, level)

    def forward(self, x0: torch.Tensor, cond: torch.Tensor, prev_plan: torch.Tensor,
                noise: torch.Tensor, levels: torch.Tensor, cfg_w: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The fused graph: (plan [B, H, D] raw, score [B], best [1] int64)."""
        x0n, yn = self.norm_x0(x0), self.norm_cond(cond)
        n = int(levels.shape[0]) - 1  # static at export time
        tau = self.start(prev_plan, noise, levels[0:1])
        for i in range(n):
            tau, _ = self.denoise_step(tau, levels[i:i + 1], levels[i + 1:i + 2], x0n, yn, cfg_w)
        plan = self.norm_traj.inverse(tau)
        score, best = self.rank(plan, x0, cond)
        return plan, score, best

    def step(self, x0: torch.Tensor, cond: torch.Tensor, prev_plan: torch.Tensor,
             noise: torch.Tensor, tau: torch.Tensor, level: torch.Tensor,
             next_level: torch.Tensor, start: torch.Tensor, cfg_w: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """The step graph: (tau_next normalized, plan raw = unnormalized x0_hat)."""
        x0n, yn = self.norm_x0(x0), self.norm_cond(cond)
        first = self.start(prev_plan, noise, level)
        tau = torch.where(start.reshape(1, 1, 1) > 0, first, tau)
        tau_next, x0_hat = self.denoise_step(tau, level, next_level, x0n, yn, cfg_w)
        return tau_next, self.norm_traj.inverse(x0_hat)


class FusedSampler(nn.Module):
    """The fused graph of a sampler (what the exporter traces): engine.FUSED_INPUTS/OUTPUTS."""

    def __init__(self, sampler: DiffusionSampler):
        super().__init__()
        self.sampler = sampler

    def forward(self, x0: torch.Tensor, cond: torch.Tensor, prev_plan: torch.Tensor,
                noise: torch.Tensor, levels: torch.Tensor, cfg_w: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.sampler(x0, cond, prev_plan, noise, levels, cfg_w)


class StepSampler(nn.Module):
    """The step graph of a sampler: engine.STEP_INPUTS/STEP_OUTPUTS."""

    def __init__(self, sampler: DiffusionSampler):
        super().__init__()
        self.sampler = sampler

    def forward(self, x0: torch.Tensor, cond: torch.Tensor, prev_plan: torch.Tensor,
                noise: torch.Tensor, tau: torch.Tensor, level: torch.Tensor,
                next_level: torch.Tensor, start: torch.Tensor, cfg_w: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.sampler.step(x0, cond, prev_plan, noise, tau, level, next_level, start, cfg_w)
