"""DADP-F and DADP-I reference samplers: a planner diffusion model plus dynamics guidance.

Each reverse step: eps = CFG_w(planner(tau^k | k, x_0, y)), then the guided DDIM step of
``guided.py`` with

    g = s_J * grad J_hat(tau) - lambda * grad E_dyn(tau)

    DADP-F: E_dyn = sum_t || x_{t+1} - f_phi(x_t, u_t) ||^2   (forward model, ``ForwardDynamics``)
    DADP-I: E_dyn = sum_t || u_t - g_psi(x_t, x_{t+1}) ||^2   (inverse model, ``InverseDynamicsVAE``)

applied as eps <- eps - sqrt(1 - alpha_bar_k) g (the DDIM form of mu <- mu + sigma_k^2 g;
see ``guided.py``), ``guide_steps`` times per reverse step, only at levels above
``stop_level``. The dynamics term acts on the channels ``dyn_channels`` selects: DADP-F
moves the states (state-level feasibility), DADP-I the actions (action-level
executability) by default; "all" lets both terms move every channel. The J_hat term always
acts on every channel. All gradients are closed-form (``models/mlp_grad.py``): the
samplers export to the fused and step graphs of ``base.py`` unchanged.

Knobs (METHODS.md): s_J, lambda, guide_steps, stop_level (the stop-grad step),
var_scaling, plus dyn_channels and max_step (cap of the x0_hat step, ``guided.py``). Each variant is its own class (no branch over methods).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from export.data import Normalizers
from export.models.guidance import ForwardDynamics, InverseDynamicsVAE, ReturnModel
from export.sampling.guided import GuidedSampler

DYN_CHANNELS = ("states", "actions", "all")


class _DADPSampler(GuidedSampler):
    """Shared body of the two DADP variants; subclasses fix the dynamics model type."""

    default_channels = "all"

    def __init__(self, planner: nn.Module, dyn_model: nn.Module, norms: Normalizers, S: int,
                 A: int, C: int, H: int, num_levels: int, *, return_model: ReturnModel | None = None,
                 s_J: float = 0.0, lam: float = 0.25, guide_steps: int = 1, stop_level: int = 0,
                 var_scaling: bool = True, dyn_channels: str | None = None,
                 max_step: float | None = 1.0, schedule: str = "cosine", clip: float | None = None):
        super().__init__(norms, S, A, C, H, num_levels, schedule, clip)
        channels = dyn_channels or self.default_channels
        if channels not in DYN_CHANNELS:
            raise ValueError(f"dyn_channels must be one of {DYN_CHANNELS}, got {channels!r}")
        if guide_steps < 0 or stop_level < 0:
            raise ValueError(f"guide_steps and stop_level must be >= 0, got {guide_steps}, {stop_level}")
        if s_J != 0.0 and return_model is None:
            raise ValueError("s_J != 0 needs a return model (J_hat)")
        self.planner, self.dyn = planner, dyn_model
        self.J = return_model if s_J != 0.0 else None
        self.s_J, self.lam = float(s_J), float(lam)
        self.guide_steps, self.stop_level = int(guide_steps), int(stop_level)
        self.var_scaling, self.dyn_channels = bool(var_scaling), channels
        self.max_step = None if max_step is None else float(max_step)
        mask = torch.zeros(S + A)
        if channels in ("states", "all"):
            mask[:S] = 1.0
        if channels in ("actions", "all"):
            mask[S:] = 1.0
        self.register_buffer("dyn_mask", mask)

    def knobs(self) -> dict[str, Any]:
        """Plain-typed knobs for the manifest."""
        return {"s_J": self.s_J, "lambda": self.lam, "guide_steps": self.guide_steps,
                "stop_level": self.stop_level, "var_scaling": self.var_scaling,
                "dyn_channels": self.dyn_channels, "max_step": self.max_step}

    def guidance(self, x0n: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        """g = s_J grad J_hat - lambda grad E_dyn at the (normalized) plan ``tau``."""
        _, g_e = self.dyn.energy_grad(x0n, tau)
        g = -self.lam * g_e * self.dyn_mask
        if self.J is not None:
            g = g + self.s_J * self.J.value_grad(x0n, tau)[1]
        return g

    def guide_options(self) -> dict:
        return {"guide_steps": self.guide_steps, "var_scaling": self.var_scaling,
                "stop_level": self.stop_level, "max_step": self.max_step}

    def dynamics_error(self, x0: torch.Tensor, plan: torch.Tensor) -> torch.Tensor:
        """E_dyn per sample of raw plans under this sampler's own dynamics model."""
        return self.dyn.energy_grad(self.norm_x0(x0), self.norm_traj(plan))[0]


class DADPFSampler(_DADPSampler):
    """DADP-F: forward-model guidance (``ForwardDynamics``), acting on the states."""

    method = "dadp_f"
    default_channels = "states"

    def __init__(self, planner: nn.Module, forward_model: ForwardDynamics, norms: Normalizers,
                 S: int, A: int, C: int, H: int, num_levels: int, **knobs: Any):
        if not isinstance(forward_model, ForwardDynamics):
            raise ValueError(f"DADP-F needs a ForwardDynamics model, got {type(forward_model).__name__}")
        super().__init__(planner, forward_model, norms, S, A, C, H, num_levels, **knobs)


class DADPISampler(_DADPSampler):
    """DADP-I: inverse-model guidance (``InverseDynamicsVAE``), acting on the actions."""

    method = "dadp_i"
    default_channels = "actions"

    def __init__(self, planner: nn.Module, inverse_model: InverseDynamicsVAE, norms: Normalizers,
                 S: int, A: int, C: int, H: int, num_levels: int, **knobs: Any):
        if not isinstance(inverse_model, InverseDynamicsVAE):
            raise ValueError(f"DADP-I needs an InverseDynamicsVAE model, got {type(inverse_model).__name__}")
        super().__init__(planner, inverse_model, norms, S, A, C, H, num_levels, **knobs)


def _knobs(knobs: dict[str, Any]) -> dict[str, Any]:
    """Accept METHODS.md's name ``lambda`` (a Python keyword) as ``lam``."""
    k = dict(knobs)
    if "lambda" in k:
        k["lam"] = k.pop("lambda")
    return k


def _build(cks: dict, cls: type[_DADPSampler], dyn_name: str, n_samples: int,
           knobs: dict[str, Any]) -> _DADPSampler:
    from export.sampling.registry import require
    from export.train.checkpoint import build_model, sampler_kwargs

    if n_samples != 1:
        raise ValueError(f"{cls.method} has no ranker: n_samples must be 1, got {n_samples}")
    pl, dyn = require(cks, "planner", dyn_name)
    k = _knobs(knobs)
    if float(k.get("s_J", 0.0)) != 0.0:
        k["return_model"] = build_model(require(cks, "value")[0])
    return cls(build_model(pl), build_model(dyn), **sampler_kwargs(pl), **k)


def build_dadp_f(cks: dict, *, n_samples: int = 1, **knobs: Any) -> DADPFSampler:
    """Components 'planner', 'forward' (and 'value' when s_J != 0). Knobs: s_J, lambda,
    guide_steps, stop_level, var_scaling, dyn_channels, max_step, clip."""
    return _build(cks, DADPFSampler, "forward", n_samples, knobs)


def build_dadp_i(cks: dict, *, n_samples: int = 1, **knobs: Any) -> DADPISampler:
    """Components 'planner', 'inverse' (and 'value' when s_J != 0); knobs as DADP-F."""
    return _build(cks, DADPISampler, "inverse", n_samples, knobs)


def _register() -> None:
    from export.sampling.registry import register_sampler
    from export.train.checkpoint import register_model_class

    for cls in (ForwardDynamics, InverseDynamicsVAE, ReturnModel):  # so build_model can load their checkpoints
        register_model_class(cls)

    register_sampler("dadp_f", build_dadp_f)
    register_sampler("dadp_i", build_dadp_i)


_register()
