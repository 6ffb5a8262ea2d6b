"""DADP-F / DADP-I trainers: the planner plus the auxiliary guidance models.

Components, in training order (each is a ``TrainTask`` for the common loop, so EMA,
checkpoints, resume, progress bar and loss logs come from ``loop.fit``):

    planner   the trajectory diffusion model, trained exactly like MPDiffuser's planner
              (``export.train.mpdiffuser.PlannerTask``: CFG dropout, first-action weight)
    forward   (dadp_f) f_phi(x, u) -> x'  ``ForwardDynamics``, MSE on next states
    inverse   (dadp_i) g_psi(x, x') -> u  ``InverseDynamicsVAE`` (latent 32), recon + beta KL
    value     J_hat = sum_t gamma^t r_phi(x_t, u_t)  ``ReturnModel``: r_phi is regressed on
              the dataset's per-step rewards (the discounted sum is taken at guidance time)

The auxiliary models see the planner's normalized states and actions (the same fitted
normalizer), so their gradients are gradients w.r.t. the sampler's iterate. Their
training pairs are the transitions (x_t, u_t, x_{t+1}, r_t) inside the training split's
episodes (never across an episode end or into the padding).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from export.data import WindowData, WindowSet
from export.models.guidance import (
    ForwardDynamics,
    GaussianTransition,
    InverseDynamicsVAE,
    ReturnModel,
    RewardModel,
)
from export.train.checkpoint import register_model_class
from export.train.config import ComponentConfig
from export.train.loop import TrainTask
from export.train.mpdiffuser import PlannerTask

for _cls in (ForwardDynamics, InverseDynamicsVAE, ReturnModel, RewardModel, GaussianTransition):
    register_model_class(_cls)

# Section defaults of the auxiliary components. No "steps" and no "model" here: a section
# key wins over the top level, and ``--steps N`` / ``--set model.hidden=[...]`` must reach
# every component (MLP sizes default to hidden [256, 256], act from ``model.act``).
AUX_DEFAULTS: dict[str, Any] = {"batch_size": 256, "lr": 1e-3, "ema_start": 0}


def transitions(ws: WindowSet) -> dict[str, np.ndarray]:
    """Normalized (x, u, x_next) and raw r of every in-episode transition of a split."""
    if len(ws) == 0:
        return {}
    t = ws.starts
    t = t[ws.valid[t + 1] > 0]  # x_{t+1} must be a real sample of the same episode
    S = ws.S
    return {"x": ws.rows[t, :S], "u": ws.rows[t, S:], "x_next": ws.rows[t + 1, :S],
            "r": ws.rewards[t].astype(np.float32)}


class AuxTask(TrainTask):
    """Base of the small auxiliary models trained on single transitions."""

    def __init__(self, cfg: ComponentConfig, data: WindowData):
        super().__init__(cfg, data)
        self._split = {name: tr for name, tr in (("train", transitions(data.train)),
                                                 ("val", transitions(data.val))) if tr}
        if "train" not in self._split or len(self._split["train"]["x"]) == 0:
            raise ValueError(f"{self.component}: the training split has no transitions "
                             "(episodes of length 1?)")
        self.model: nn.Module | None = None  # the trained instance (read by DMEMM's planner)

    def model_kwargs(self) -> dict[str, Any]:
        m = self.cfg.model
        return {"hidden": tuple(m.hidden or (256, 256)), "act": m.act}

    def make(self) -> nn.Module:
        raise NotImplementedError

    def build_model(self) -> nn.Module:
        self.model = self.make()
        return self.model

    def has_val(self) -> bool:
        return "val" in self._split

    def batch(self, split: str, batch_size: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        s = self._split[split]
        i = rng.integers(0, len(s["r"]), size=batch_size)
        return {k: torch.from_numpy(v[i]) for k, v in s.items()}


class ForwardTask(AuxTask):
    component = "forward"
    model_class = "ForwardDynamics"

    def make(self) -> nn.Module:
        return ForwardDynamics(self.data.S, self.data.A, **self.model_kwargs())

    def loss(self, model, batch, gen):
        # call the (possibly DDP-wrapped) module through forward so gradients are reduced
        return torch.mean((model(batch["x"], batch["u"]) - batch["x_next"]) ** 2), {}


class InverseTask(AuxTask):
    component = "inverse"
    model_class = "InverseDynamicsVAE"

    def make(self) -> nn.Module:
        m = self.cfg.model
        return InverseDynamicsVAE(self.data.S, self.data.A, latent=m.latent, beta=m.beta,
                                  **self.model_kwargs())

    def loss(self, model, batch, gen):
        # reparameterization noise from ``gen``: deterministic, resumable runs
        x = batch["x"]
        noise = torch.randn(x.shape[0], self.cfg.model.latent, generator=gen)
        u_hat, kl = model(x, batch["x_next"], batch["u"], noise)
        recon = torch.mean((u_hat - batch["u"]) ** 2)
        beta = self.cfg.model.beta
        return recon + beta * kl, {"recon_mse": float(recon.detach()), "kl": float(kl.detach())}


class ValueTask(AuxTask):
    """J_hat's per-step reward head (gamma applied at guidance time)."""

    component = "value"
    model_class = "ReturnModel"

    def make(self) -> nn.Module:
        return ReturnModel(self.data.S, self.data.A, gamma=self.cfg.gamma,
                           **self.model_kwargs())

    def loss(self, model, batch, gen):
        return torch.mean((model(batch["x"], batch["u"]) - batch["r"]) ** 2), {}


def tasks_f(cfg_for: Any, data: WindowData) -> list[TrainTask]:
    return [PlannerTask(cfg_for("planner"), data), ForwardTask(cfg_for("forward"), data),
            ValueTask(cfg_for("value"), data)]


def tasks_i(cfg_for: Any, data: WindowData) -> list[TrainTask]:
    return [PlannerTask(cfg_for("planner"), data), InverseTask(cfg_for("inverse"), data),
            ValueTask(cfg_for("value"), data)]


def register() -> None:
    """Add dadp_f and dadp_i to the training registry (idempotent)."""
    from export.train.registry import MethodSpec, register_method

    register_method("dadp_f", MethodSpec("export.train.dadp:tasks_f", "dadp_f",
                                         defaults={"forward": AUX_DEFAULTS, "value": AUX_DEFAULTS},
                                         components=("planner", "forward", "value")))
    register_method("dadp_i", MethodSpec("export.train.dadp:tasks_i", "dadp_i",
                                         defaults={"inverse": AUX_DEFAULTS, "value": AUX_DEFAULTS},
                                         components=("planner", "inverse", "value")))


register()
