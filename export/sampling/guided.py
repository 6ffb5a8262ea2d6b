"""The guided DDIM step shared by DADP-F/I and DMEMM (gradient guidance, exportable).

Classifier guidance shifts the reverse-step mean by ``sigma_k^2 g`` (DDPM form). The
samplers here run deterministic DDIM (eta = 0; the only noise is the initial one), where
that shift has no variance to scale, so the DDIM-equivalent correction of the predicted
noise is used (Dhariwal & Nichol 2021, Alg. 2):

    eps <- eps - sqrt(1 - alpha_bar_k) * g
    (equivalently x0_hat <- x0_hat + (1 - alpha_bar_k) / sqrt(alpha_bar_k) * g)

Choices, stated because the papers leave them open:
- ``g`` is evaluated at the step's clean estimate ``x0_hat`` (clipped like the DDIM step
  when the normalizer clips), because the auxiliary models are trained on clean data;
  the denoiser's Jacobian is not back-propagated (no autograd at run time), so ``g`` is
  the auxiliary models' gradient only.
- ``guide_steps`` > 1 re-evaluates ``g`` at the corrected ``x0_hat`` and corrects again;
  it costs small-MLP calls only, never another denoiser call.
- ``var_scaling`` False uses a unit step instead: ``x0_hat <- x0_hat + g``.
- The x0_hat step (1 - alpha_bar_k) / sqrt(alpha_bar_k) grows without bound at the top of
  a cosine schedule (about 204 at k = K = 10, 6.3 at k = 9), where x0_hat is mostly noise:
  it is capped at ``max_step`` (default 1.0, which only touches k >= 6 of K = 10) so plans
  stay finite without clipping (std normalizer); ``max_step=None`` is the uncapped form.
- Guidance is active only for levels ``k > stop_level`` (a tensor mask: the level is a
  graph input, so no Python branch on it).
- The observed state x_0 is a conditioning input, never a plan row, so it stays fixed at
  the observation at every step by construction; it enters the guidance energies as the
  start of the first transition.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from export.sampling.base import DiffusionSampler
from export.sampling.common import Schedule, cfg_eps, ddim_step

GradFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x0 [B,S], tau [B,H,D]) -> g


def guided_ddim_step(sched: Schedule, tau: torch.Tensor, eps: torch.Tensor, level: torch.Tensor,
                     next_level: torch.Tensor, x0: torch.Tensor, grad_fn: GradFn, *,
                     scale: float = 1.0, guide_steps: int = 1, var_scaling: bool = True,
                     stop_level: int = 0, clip: float | None = None,
                     max_step: float | None = 1.0
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One DDIM step with gradient guidance. Returns (tau^{k'}, x0_hat, corrected eps).

    ``grad_fn(x0, plan)`` returns the ascent direction g [B, H, D] in normalized units;
    ``scale`` multiplies it (DMEMM's alpha; DADP folds s_J and lambda into grad_fn).
    ``level`` / ``next_level`` are int64 [1] tensors.
    """
    if guide_steps < 0:
        raise ValueError(f"guide_steps must be >= 0, got {guide_steps}")
    a, s = sched.coeffs(level)
    x0_hat = (tau - s * eps) / a
    step = (s * s) / a if var_scaling else torch.ones_like(a)
    if max_step is not None:
        step = torch.clamp(step, max=max_step)
    active = (level.reshape(-1, 1, 1) > stop_level).to(tau.dtype)
    step = step * active * scale
    delta = torch.zeros_like(tau)
    for _ in range(guide_steps):
        at = x0_hat + delta
        if clip is not None:
            at = torch.clamp(at, -clip, clip)
        delta = delta + step * grad_fn(x0, at)
    eps_g = eps - (a / s) * delta
    tau_next, x0_out = ddim_step(sched, tau, eps_g, level, next_level, clip)
    return tau_next, x0_out, eps_g


class GuidedSampler(DiffusionSampler):
    """A sampler whose reverse step is the planner's CFG eps plus gradient guidance.

    Subclasses give ``guidance(x0n, tau) -> g`` and ``guide_options()`` (the keyword
    arguments of ``guided_ddim_step`` that distinguish the method); the step itself is here.
    """

    def guidance(self, x0n: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def guide_options(self) -> dict:
        raise NotImplementedError

    def denoise_step(self, tau: torch.Tensor, level: torch.Tensor, next_level: torch.Tensor,
                     x0n: torch.Tensor, yn: torch.Tensor, cfg_w: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        eps = cfg_eps(self.planner, tau, level, x0n, yn, cfg_w)
        tau_next, x0_hat, _ = guided_ddim_step(
            self.sched, tau, eps, level, next_level, x0n, self.guidance, clip=self.clip,
            **self.guide_options())
        return tau_next, x0_hat
