"""MPDiffuser's reference samplers (mpdiffuser.txt Alg. 1 and 2) and the planner-only ablation.

Networks (see ``export/models/unet.py`` for shapes):
    planner   eps^pl(tau^k | k, x_0, y)          TemporalUnet, in D = S + A, out D
    dynamics  eps^dyn(x^k | u^k, k, x_0, y)      TemporalUnet, in D (states and noised actions),
                                                 out S
    ranker    r_hat, c_hat (x_t, u_t, y)         :class:`RankerNet`, per-step reward and cost

Alternating step k -> k' (Alg. 1, read literally, eta = 0):
    1. eps_x   = CFG_w(eps^dyn([x^k, u^k] | k, x_0, y))            dynamics, states only
    2. x~      = DDIM_{k->k'}(x^k, eps_x)                           updated states
    3. eps_tau = CFG_w(eps^pl([x~, u^k] | k, x_0, y))              planner at level k
    4. tau^k'  = DDIM_{k->k'}([x~, u^k], eps_tau)                   states and actions
CFG keeps x_0 in the unconditional pass and drops only y. The planner-only ablation skips
1-2 (x~ = x^k). The clean estimate reported by the step graph is the planner's x0_hat.

Ranking (Alg. 2), only when the sampler is built with n_samples > 1: with the plan's pairs
(x_t, u_t), t = 0..H-1 (x_0 the observed state, x_t = plan[t - 1, :S] after),
J_i = sum_t gamma^t r_hat, C_i = sum_t gamma^t c_hat (gamma 0.997). Among candidates with
C_i <= budget the highest J wins, else the lowest C. ``score`` is J. The budget is a buffer
fixed in the graph (``set_budget``); the engine contract has no budget input, so tracking a
*remaining* budget at run time would need a contract change (noted in the report).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from export.data import Normalizers
from export.models.mlp import MLP
from export.models.unet import TemporalUnet
from export.sampling.base import DiffusionSampler
from export.sampling.common import Normalize, cfg_eps, ddim_step


class RankerNet(nn.Module):
    """Reward and cost heads. forward(xn [.., S], un [.., A], yn [.., C]) normalized inputs
    -> (r_hat [..], c_hat [..]) in raw reward / cost units."""

    def __init__(self, S: int, A: int, C: int, hidden: Sequence[int] = (128, 128), act: str = "mish"):
        super().__init__()
        self._config = dict(S=S, A=A, C=C, hidden=list(hidden), act=act)
        self.reward = MLP(S + A + C, 1, hidden, act)
        self.cost = MLP(S + A + C, 1, hidden, act)

    def config(self) -> dict:
        return dict(self._config)

    def forward(self, xn: torch.Tensor, un: torch.Tensor, yn: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        z = torch.cat([xn, un, yn], dim=-1)
        return self.reward(z).squeeze(-1), self.cost(z).squeeze(-1)


class BudgetRanker(nn.Module):
    """Alg. 2 on raw plans: (score [B] = discounted return, best [1] int64)."""

    def __init__(self, net: RankerNet, norms: Normalizers, S: int, H: int, gamma: float = 0.997,
                 budget: float = 10.0):
        super().__init__()
        self.net, self.S, self.gamma = net, S, float(gamma)
        self.norm_traj = Normalize(norms.traj)
        self.norm_cond = Normalize(norms.cond)
        self.register_buffer("discount", gamma ** torch.arange(H, dtype=torch.float32))
        self.register_buffer("budget", torch.tensor([budget], dtype=torch.float32))

    def set_budget(self, budget: float) -> None:
        self.budget.fill_(float(budget))

    def returns(self, plan: torch.Tensor, x0: torch.Tensor, cond: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """(J [B], C [B]) discounted predicted return and cost of raw plans [B, H, D]."""
        S, H = self.S, plan.shape[1]
        x = torch.cat([x0.unsqueeze(1), plan[:, :-1, :S]], dim=1)  # x_0..x_{H-1}
        pairs = self.norm_traj(torch.cat([x, plan[:, :, S:]], dim=-1))
        yn = self.norm_cond(cond).unsqueeze(1).expand(-1, H, -1)
        r, c = self.net(pairs[..., :S], pairs[..., S:], yn)
        return (r * self.discount).sum(-1), (c * self.discount).sum(-1)

    def forward(self, plan: torch.Tensor, x0: torch.Tensor, cond: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        J, Cc = self.returns(plan, x0, cond)
        feasible = Cc <= self.budget
        # finite sentinels instead of inf: friendlier to TensorRT / fp16 builds
        best_feasible = torch.argmax(torch.where(feasible, J, torch.full_like(J, -1e30)), dim=0)
        least_cost = torch.argmin(Cc, dim=0)
        best = torch.where(feasible.any(), best_feasible, least_cost)
        return J, best.reshape(1).to(torch.int64)


class _RankedSampler(DiffusionSampler):
    """Adds the optional budget ranker (n_samples > 1) to a sampler."""

    def _set_ranker(self, ranker: BudgetRanker | None, n_samples: int) -> None:
        if n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {n_samples}")
        self.n_samples = n_samples
        self.ranker = ranker if n_samples > 1 else None  # N = 1 skips the ranker (Go2)
        if n_samples > 1 and ranker is None:
            raise ValueError("n_samples > 1 needs a ranker checkpoint")

    def knobs(self) -> dict:
        k = {**super().knobs(), "n_samples": self.n_samples}
        if self.ranker is not None:
            k.update(gamma=self.ranker.gamma,
                     budget=float(self.ranker.budget[0]))
        return k

    def rank(self, plan: torch.Tensor, x0: torch.Tensor, cond: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.ranker is None:
            return super().rank(plan, x0, cond)
        return self.ranker(plan, x0, cond)


class MPDiffuserSampler(_RankedSampler):
    """Alternating dynamics / planner steps (Alg. 1) with CFG; optional ranking (Alg. 2)."""

    method = "mpdiffuser"

    def __init__(self, planner: TemporalUnet, dynamics: TemporalUnet, norms: Normalizers,
                 S: int, A: int, C: int, H: int, num_levels: int, schedule: str = "cosine",
                 clip: float | None = None, ranker: BudgetRanker | None = None, n_samples: int = 1):
        super().__init__(norms, S, A, C, H, num_levels, schedule, clip)
        self.planner, self.dynamics = planner, dynamics
        self._set_ranker(ranker, n_samples)

    def knobs(self) -> dict:
        return {**super().knobs(), "alternation": True}

    def denoise_step(self, tau, level, next_level, x0n, yn, cfg_w):
        S = self.S
        u = tau[..., S:]
        eps_x = cfg_eps(self.dynamics, tau, level, x0n, yn, cfg_w)
        x_tilde, _ = ddim_step(self.sched, tau[..., :S], eps_x, level, next_level, self.clip)
        mixed = torch.cat([x_tilde, u], dim=-1)
        eps = cfg_eps(self.planner, mixed, level, x0n, yn, cfg_w)
        return ddim_step(self.sched, mixed, eps, level, next_level, self.clip)


class PlannerOnlySampler(_RankedSampler):
    """The ablation: the planner's DDIM step alone (no dynamics model)."""

    method = "planner"

    def __init__(self, planner: TemporalUnet, norms: Normalizers, S: int, A: int, C: int, H: int,
                 num_levels: int, schedule: str = "cosine", clip: float | None = None,
                 ranker: BudgetRanker | None = None, n_samples: int = 1):
        super().__init__(norms, S, A, C, H, num_levels, schedule, clip)
        self.planner = planner
        self._set_ranker(ranker, n_samples)

    def knobs(self) -> dict:
        return {**super().knobs(), "alternation": False}

    def denoise_step(self, tau, level, next_level, x0n, yn, cfg_w):
        eps = cfg_eps(self.planner, tau, level, x0n, yn, cfg_w)
        return ddim_step(self.sched, tau, eps, level, next_level, self.clip)


# ---- builders for export.sampling.registry ------------------------------------------------

def _ranker(cks: dict, kw: dict, n_samples: int, gamma: float, budget: float) -> BudgetRanker | None:
    from export.train.checkpoint import build_model, normalizers

    if n_samples <= 1:
        return None
    if "ranker" not in cks:
        raise ValueError("n_samples > 1 needs the 'ranker' checkpoint")
    return BudgetRanker(build_model(cks["ranker"]), normalizers(cks["ranker"]), kw["S"], kw["H"],
                        gamma, budget)


def attach_forecaster(sampler, cks: dict, forecast_states: str = "all") -> None:
    """Give ``sampler`` the 'forecaster' checkpoint when there is one (real-time chunking by
    forecasting; without it a committed prefix is inpainted). ``forecast_states``: "all",
    "none" (do not use it), or comma-separated state-name prefixes (e.g. "q_rel_") whose
    dimensions the forecast replaces, by the names the training data recorded."""
    from export.train.checkpoint import CheckpointError, build_model

    spec = str(forecast_states).strip()
    if spec == "none" or "forecaster" not in list(cks):  # iterating records no use
        return
    fc = cks["forecaster"]
    # the plan's condition moves to the forecast's time with it (its history blocks)
    sampler.set_history(list(((cks.get("planner") or {}).get("config") or {}).get("cond_extras") or []))
    if spec == "all":
        sampler.set_forecaster(build_model(fc), None)
        return
    names = list((fc.get("dataset") or {}).get("state_names") or [])
    if len(names) != sampler.S:
        raise CheckpointError("forecast_states by name needs the state names the forecaster's data "
                              "recorded; this checkpoint has none (use forecast_states=all)")
    prefixes = [p for p in spec.split(",") if p]
    idx = [i for i, n in enumerate(names) if any(n.startswith(p) for p in prefixes)]
    if not idx:
        raise ValueError(f"forecast_states={spec!r} matches no state name; names: {names}")
    sampler.set_forecaster(build_model(fc), idx)


def build_mpdiffuser(cks: dict, *, n_samples: int = 1, gamma: float = 0.997, budget: float = 10.0,
                     clip: float | None = None, forecast_states: str = "all") -> MPDiffuserSampler:
    """Needs components 'planner' and 'dynamics' (and 'ranker' when n_samples > 1); uses
    'forecaster' when present (``attach_forecaster``)."""
    from export.sampling.registry import require
    from export.train.checkpoint import build_model, sampler_kwargs

    pl, dyn = require(cks, "planner", "dynamics")
    kw = sampler_kwargs(pl)
    s = MPDiffuserSampler(build_model(pl), build_model(dyn), clip=clip,
                          ranker=_ranker(cks, kw, n_samples, gamma, budget),
                          n_samples=n_samples, **kw)
    attach_forecaster(s, cks, forecast_states)
    return s


def build_planner_only(cks: dict, *, n_samples: int = 1, gamma: float = 0.997, budget: float = 10.0,
                       clip: float | None = None, forecast_states: str = "all") -> PlannerOnlySampler:
    """Needs component 'planner' (and 'ranker' when n_samples > 1); 'forecaster' as above."""
    from export.sampling.registry import require
    from export.train.checkpoint import build_model, sampler_kwargs

    (pl,) = require(cks, "planner")
    kw = sampler_kwargs(pl)
    s = PlannerOnlySampler(build_model(pl), clip=clip,
                           ranker=_ranker(cks, kw, n_samples, gamma, budget),
                           n_samples=n_samples, **kw)
    attach_forecaster(s, cks, forecast_states)
    return s
