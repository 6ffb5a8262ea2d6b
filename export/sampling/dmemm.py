"""DMEMM reference sampler: the modulated planner diffusion model plus dual guidance.

Each reverse step: eps = CFG_w(planner(tau^k | k, x_0, y)), then the guided DDIM step of
``guided.py`` with the dual guidance of the paper (Eq. 13)

    g = sum_t grad R_hat(x_t, u_t) + lambda * sum_t grad log T_hat(x_{t+1} | x_t, u_t)

shifted into the mean with strength alpha: mu <- mu + alpha sigma_k^2 g, in its DDIM form
eps <- eps - alpha sqrt(1 - alpha_bar_k) g (one guidance step per reverse step, every
level, as in the paper's Alg. 1). x_0 is the observed state at every step: it is the
conditioning input, not a plan row, and starts the first transition of log T_hat.
The gradients are closed-form (``GaussianTransition.logprob_grad``,
``RewardModel.value_grad``), so the sampler exports to the fused and step graphs.

Knobs (METHODS.md): alpha (paper: 0.001 with 100 DDPM steps), lambda; max_step caps the
x0_hat step before alpha is applied (``guided.py``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from export.data import Normalizers
from export.models.guidance import GaussianTransition, RewardModel
from export.sampling.guided import GuidedSampler


class DMEMMSampler(GuidedSampler):
    method = "dmemm"

    def __init__(self, planner: nn.Module, reward_model: RewardModel,
                 transition_model: GaussianTransition, norms: Normalizers, S: int, A: int, C: int,
                 H: int, num_levels: int, *, alpha: float = 0.001, lam: float = 1.0,
                 max_step: float | None = 1.0, schedule: str = "cosine", clip: float | None = None):
        super().__init__(norms, S, A, C, H, num_levels, schedule, clip)
        if not isinstance(transition_model, GaussianTransition):
            raise ValueError(f"DMEMM needs a GaussianTransition, got {type(transition_model).__name__}")
        if alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {alpha}")
        self.planner, self.R, self.T = planner, reward_model, transition_model
        self.alpha, self.lam = float(alpha), float(lam)
        self.max_step = None if max_step is None else float(max_step)

    def knobs(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "lambda": self.lam, "max_step": self.max_step}

    def guidance(self, x0n: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        """g = sum_t grad R_hat + lambda sum_t grad log T_hat at the normalized plan."""
        g = self.R.value_grad(x0n, tau)[1]
        if self.lam != 0.0:
            g = g + self.lam * self.T.logprob_grad(x0n, tau)[1]
        return g

    def guide_options(self) -> dict:
        return {"scale": self.alpha, "guide_steps": 1, "var_scaling": True, "stop_level": 0,
                "max_step": self.max_step}


def build_dmemm(cks: dict, *, n_samples: int = 1, **knobs: Any) -> DMEMMSampler:
    """Components 'planner', 'transition', 'reward'. Knobs: alpha, lambda, max_step, clip."""
    from export.sampling.registry import require
    from export.train.checkpoint import build_model, sampler_kwargs

    if n_samples != 1:
        raise ValueError(f"dmemm has no ranker: n_samples must be 1, got {n_samples}")
    pl, tr, rd = require(cks, "planner", "transition", "reward")
    k = dict(knobs)
    if "lambda" in k:
        k["lam"] = k.pop("lambda")
    return DMEMMSampler(build_model(pl), build_model(rd), build_model(tr), **sampler_kwargs(pl), **k)


def _register() -> None:
    from export.sampling.registry import register_sampler
    from export.train.checkpoint import register_model_class

    for cls in (GaussianTransition, RewardModel):  # so build_model can load their checkpoints
        register_model_class(cls)

    register_sampler("dmemm", build_dmemm)


_register()
