"""DMEMM trainer (dmemm.txt Sec. 4.1): environment models first, then the modulated planner.

Components, in training order:

    transition  T_hat(x' | x, u): ``GaussianTransition`` (ensemble of diagonal Gaussians,
                the paper's backend), Gaussian NLL on the training split's transitions
    reward      R_hat(x, u): ``RewardModel``, MSE to the per-step reward
    planner     the trajectory diffusion model (same network and CFG dropout as
                MPDiffuser's planner) trained with

        L = L_wdiff + lambda_tr * L_tr + lambda_rd * L_rd

    L_wdiff  prediction MSE (eps or x0, ``prediction``) of each window (first-action weight
             as the planner's) times the window's reward weight w in (0, 1] (``reward_weights``; off with
             ``reward_weighting: false``)
    L_tr     mean_t,s (x_{t+1} - mean T_hat(x_t, u_t))^2 along tau0_hat
    L_rd     - mean_t R_hat(x_t, u_t) along tau0_hat

tau0_hat is the ONE-STEP x0 prediction from the noised window (the network output for an
x0 network, else tau0_hat = (tau^k - sqrt(1 - ab_k) eps_theta) / sqrt(ab_k)): the cheap
approximation of the paper's k-step unroll (Eq. 8), one network call instead of k. Its error grows like
sqrt((1 - ab_k) / ab_k) at high levels, so each window's L_tr and L_rd are weighted by
ab_k (the signal fraction); means replace the paper's sums so the lambdas do not depend
on H or S. T_hat and R_hat are frozen here (trained first); gradients flow through them
into the planner only. The transition pair t = 0 starts at the observed x_0.

T_hat and R_hat come from the same run (the trained instances of the components above) or,
when only the planner is trained, from ``transition_checkpoint`` / ``reward_checkpoint``
(paths) or ``<aux_dir>/transition.pt`` / ``reward.pt``.
Defaults (paper): lambda_tr = 0.1, lambda_rd = 0.05.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from export.data import WindowData
from export.models.guidance import GaussianTransition, RewardModel
from export.train.checkpoint import build_model, load_checkpoint
from export.train.config import ComponentConfig
from export.train.dadp import AUX_DEFAULTS, AuxTask
from export.train.diffusion import draw_cond_drop
from export.train.loop import TrainTask
from export.train.mpdiffuser import PlannerTask


def reward_weights(rewards: torch.Tensor, valid: torch.Tensor, r_min: float, r_max: float,
                   floor: float = 1e-3) -> torch.Tensor:
    """Normalized cumulative reward of windows [B, H] -> weights [B] in (0, 1].

    The paper's sum_t r_t / (T_max r_max) with T_max = H (the window) when rewards are
    non-negative (r_min >= 0 is then taken as 0). With negative rewards they are shifted by
    r_min first: sum_t (r_t - r_min) / (H (r_max - r_min)). Padding rows (valid 0) add
    nothing. Clamped to [floor, 1] so every window keeps a positive weight; monotone in the
    window's return.
    """
    lo = min(float(r_min), 0.0)
    span = float(r_max) - lo
    if not span > 0:
        raise ValueError(f"reward weights need r_max > min(r_min, 0), got r_min {r_min}, r_max {r_max}")
    H = rewards.shape[-1]
    w = torch.sum((rewards - lo) * valid, dim=-1) / (H * span)
    return torch.clamp(w, min=floor, max=1.0)


class TransitionTask(AuxTask):
    component = "transition"
    model_class = "GaussianTransition"

    def make(self) -> nn.Module:
        m = self.cfg.model
        return GaussianTransition(self.data.S, self.data.A, ensemble=m.ensemble,
                                  min_logstd=m.min_logstd, max_logstd=m.max_logstd,
                                  **self.model_kwargs())

    def loss(self, model, batch, gen):
        lp = model(batch["x"], batch["u"], batch["x_next"])
        return -torch.mean(lp) / self.data.S, {}


class RewardTask(AuxTask):
    component = "reward"
    model_class = "RewardModel"

    def make(self) -> nn.Module:
        return RewardModel(self.data.S, self.data.A, **self.model_kwargs())

    def loss(self, model, batch, gen):
        return torch.mean((model(batch["x"], batch["u"]) - batch["r"]) ** 2), {}


class DMEMMPlannerTask(PlannerTask):
    component = "planner"

    def __init__(self, cfg: ComponentConfig, data: WindowData, transition: TransitionTask | None = None,
                 reward: RewardTask | None = None):
        super().__init__(cfg, data)
        self._tr_task, self._rd_task = transition, reward
        self._T: GaussianTransition | None = None
        self._R: RewardModel | None = None
        self.lambda_tr = cfg.lambda_tr
        self.lambda_rd = cfg.lambda_rd
        self.weighting = cfg.reward_weighting
        r = data.train_samples.get("rewards")
        if r is None or len(r) == 0:
            raise ValueError("DMEMM needs rewards in the training split")
        self.r_min = float(np.min(r) if cfg.reward_min is None else cfg.reward_min)
        self.r_max = float(np.max(r) if cfg.reward_max is None else cfg.reward_max)

    def _aux(self, name: str, task: AuxTask | None) -> nn.Module:
        key = f"{name}_checkpoint"
        path = {"transition": self.cfg.transition_checkpoint,
                "reward": self.cfg.reward_checkpoint}[name]
        if path or self.cfg.aux_dir:
            model = build_model(load_checkpoint(path or Path(str(self.cfg.aux_dir)) / f"{name}.pt"))
        elif task is not None and task.model is not None:
            model = task.model
        else:
            raise ValueError(f"DMEMM planner needs a trained {name} model: train the {name!r} "
                             f"component first in the same run, or set {key} / aux_dir")
        frozen = type(model)(**model.config())
        frozen.load_state_dict(model.state_dict())
        for p in frozen.parameters():
            p.requires_grad_(False)
        return frozen.eval()

    def env_models(self) -> tuple[GaussianTransition, RewardModel]:
        if self._T is None:
            self._T = self._aux("transition", self._tr_task)
            self._R = self._aux("reward", self._rd_task)
        return self._T, self._R

    def loss(self, model, batch, gen):
        d = self.data
        S = d.S
        traj = batch["traj"]
        tau_k, k, eps = self.noised(traj, gen)
        drop = draw_cond_drop(traj.shape[0], self.cfg.cond_dropout, gen)
        pred = model(tau_k, k.to(torch.float32), batch["x0"], batch["cond"], drop)
        err = ((pred - self.target(traj, eps)) ** 2 * self.loss_weights()).mean(dim=(1, 2))  # [B]
        if self.weighting:
            w = reward_weights(batch["rewards"], batch["valid"], self.r_min, self.r_max)
        else:
            w = torch.ones_like(err)
        l_wdiff = torch.mean(w * err)
        extra = {"diff_mse": float(err.mean().detach()), "weight_mean": float(w.mean())}
        loss = l_wdiff
        if self.lambda_tr or self.lambda_rd:
            T, R = self.env_models()
            a, s = self.sched.coeffs(k)
            # one-step x0 prediction (see module docstring): the output itself for x0 networks
            tau0 = pred if self.prediction == "x0" else (tau_k - s * pred) / a
            ab = (a * a).reshape(-1)
            x_prev = torch.cat([batch["x0"].unsqueeze(1), tau0[:, :-1, :S]], dim=1)
            u = tau0[..., S:]
            l_tr = torch.mean(ab * ((tau0[..., :S] - T(x_prev, u)) ** 2).mean(dim=(1, 2)))
            l_rd = -torch.mean(ab * R(x_prev, u).mean(dim=1))
            loss = loss + self.lambda_tr * l_tr + self.lambda_rd * l_rd
            extra.update(l_wdiff=float(l_wdiff.detach()), l_tr=float(l_tr.detach()),
                         l_rd=float(l_rd.detach()))
        return loss, extra


def tasks(cfg_for: Any, data: WindowData) -> list[TrainTask]:
    tr = TransitionTask(cfg_for("transition"), data)
    rd = RewardTask(cfg_for("reward"), data)
    return [tr, rd, DMEMMPlannerTask(cfg_for("planner"), data, tr, rd)]


def register() -> None:
    """Add dmemm to the training registry (idempotent)."""
    from export.train.registry import MethodSpec, register_method

    register_method("dmemm", MethodSpec(
        "export.train.dmemm:tasks", "dmemm",
        # lambda_tr, lambda_rd, reward_weighting: top-level fields (export/train/config.py)
        defaults={"transition": AUX_DEFAULTS, "reward": AUX_DEFAULTS},
        components=("transition", "reward", "planner")))


register()
