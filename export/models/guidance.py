"""Auxiliary models for guided sampling: DADP-F/I dynamics models, returns, DMEMM models.

Every model here works in the planner's *normalized* space (the same normalizer as the
diffusion model), so its gradient is directly a gradient w.r.t. the sampler's iterate.
Every ``*_grad`` method returns ``(value [B], d value / d tau [B, H, D])`` in closed form
(``mlp_grad``), so a guided sampler exports to ONNX and runs in the engine.

Plan layout (engine contract): ``tau [B, H, D]``, row t = ``[x_{t+1} (S), u_t (A)]``; the
observed state ``x0 [B, S]`` is not a row. The H transitions of a plan are
``(x_t, u_t) -> x_{t+1}`` for t = 0..H-1 with ``x_0 = x0`` (which receives no gradient).

Models:
- ``ForwardDynamics``  f_phi(x, u) = x + MLP([x, u])                        (DADP-F)
- ``InverseDynamicsVAE`` g_psi(x, x') -> u: a conditional VAE, latent 32 as in DADP's
  reference code; guidance uses the decoder at the prior mean z = 0     (DADP-I)
- ``ReturnModel``      J_hat(tau) = sum_t gamma^t r_phi(x_t, u_t)             (DADP J_hat)
- ``RewardModel``      R_hat(x, u); the DMEMM guidance uses sum_t R_hat       (DMEMM)
- ``GaussianTransition`` T_hat(x' | x, u) = N(x + mu(x, u), diag sigma(x, u)^2), an
  ensemble of E members (log-likelihood averaged), closed-form grad log T  (DMEMM)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from export.models.mlp_grad import GradMLP

_LOG_2PI = math.log(2.0 * math.pi)


def split_transitions(x0: torch.Tensor, tau: torch.Tensor, S: int
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_t [B,H,S], u_t [B,H,A], x_{t+1} [B,H,S]) of a plan; x_t for t=0 is x0."""
    x_next = tau[..., :S]
    u = tau[..., S:]
    x_prev = torch.cat([x0.unsqueeze(1), x_next[:, :-1]], dim=1)
    return x_prev, u, x_next


def merge_transition_grads(g_prev: torch.Tensor, g_u: torch.Tensor,
                           g_next: torch.Tensor) -> torch.Tensor:
    """Scatter gradients w.r.t. (x_t, u_t, x_{t+1}) back onto plan rows [B, H, D].

    Row t holds x_{t+1}: it gets g_next[t] plus g_prev[t+1] (its role as the start of the
    next transition). g_prev[0] belongs to x0 and is dropped. Built with cat, not slice
    assignment, so it exports.
    """
    shifted = torch.cat([g_prev[:, 1:], torch.zeros_like(g_prev[:, :1])], dim=1)
    return torch.cat([g_next + shifted, g_u], dim=-1)


def _check_plan(x0: torch.Tensor, tau: torch.Tensor, S: int, A: int) -> None:
    if torch.jit.is_tracing():  # shapes are fixed while exporting; keep the graph clean
        return
    if tau.dim() != 3 or tau.shape[-1] != S + A:
        raise ValueError(f"plan must be [B, H, {S + A}], got {tuple(tau.shape)}")
    if x0.dim() != 2 or x0.shape[-1] != S or x0.shape[0] != tau.shape[0]:
        raise ValueError(f"x0 must be [{tau.shape[0]}, {S}], got {tuple(x0.shape)}")


class ForwardDynamics(nn.Module):
    """f_phi(x [.., S], u [.., A]) -> x' [.., S], residual: x' = x + MLP([x, u])."""

    def __init__(self, S: int, A: int, hidden: Sequence[int] = (256, 256), act: str = "mish"):
        super().__init__()
        self.S, self.A = S, A
        self._config = dict(S=S, A=A, hidden=list(hidden), act=act)
        self.mlp = GradMLP(S + A, S, hidden, act)

    def config(self) -> dict:
        """Constructor kwargs (plain types), for checkpoints."""
        return dict(self._config)

    def forward(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(torch.cat([x, u], dim=-1))

    def loss(self, x: torch.Tensor, u: torch.Tensor, x_next: torch.Tensor) -> torch.Tensor:
        return torch.mean((self(x, u) - x_next) ** 2)

    def energy_grad(self, x0: torch.Tensor, tau: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """E_dyn = sum_t ||x_{t+1} - f(x_t, u_t)||^2 (per sample) and dE/dtau."""
        _check_plan(x0, tau, self.S, self.A)
        x, u, xn = split_transitions(x0, tau, self.S)
        inp = torch.cat([x, u], dim=-1)
        # Forward once for the residual, then VJP with the residual as cotangent.
        delta, cache = self.mlp.forward_cache(inp)
        r = xn - x - delta
        j = self.mlp.backward(cache, r)
        g_prev = -2.0 * (r + j[..., :self.S])
        g_u = -2.0 * j[..., self.S:]
        energy = torch.sum(r * r, dim=(1, 2))
        return energy, merge_transition_grads(g_prev, g_u, 2.0 * r)


class InverseDynamicsVAE(nn.Module):
    """g_psi(x, x') -> u as a conditional VAE over the action.

    Encoder q(z | x, x', u) = N(mu, diag exp(logvar)), latent ``latent`` (32 by default);
    decoder u = D([x, x', z]). At guidance time the decoder runs at z = 0 (the prior mean),
    which makes g_psi deterministic and its gradient closed-form.
    """

    def __init__(self, S: int, A: int, latent: int = 32, hidden: Sequence[int] = (256, 256),
                 act: str = "mish", beta: float = 0.5):
        super().__init__()
        self.S, self.A, self.latent, self.beta = S, A, latent, beta
        self._config = dict(S=S, A=A, latent=latent, hidden=list(hidden), act=act, beta=beta)
        self.encoder = GradMLP(2 * S + A, 2 * latent, hidden, act)
        self.decoder = GradMLP(2 * S + latent, A, hidden, act)

    def config(self) -> dict:
        return dict(self._config)

    def forward(self, x: torch.Tensor, x_next: torch.Tensor, u: torch.Tensor | None = None,
                noise: torch.Tensor | None = None):
        """g_psi(x, x') = D([x, x', 0]) [.., A]; with ``u`` given, the training pass instead:
        (u_hat [.., A] decoded from z ~ q(z | x, x', u), KL(q || N(0, I)) per latent dim).
        ``noise`` [.., latent] is the reparameterization noise (drawn if None)."""
        if u is None:
            z = torch.zeros(*x.shape[:-1], self.latent, dtype=x.dtype, device=x.device)
            return self.decoder(torch.cat([x, x_next, z], dim=-1))
        h = self.encoder(torch.cat([x, x_next, u], dim=-1))
        mu, logvar = h[..., :self.latent], h[..., self.latent:].clamp(-8.0, 8.0)
        eps = torch.randn_like(mu) if noise is None else noise
        z = mu + eps * torch.exp(0.5 * logvar)
        u_hat = self.decoder(torch.cat([x, x_next, z], dim=-1))
        kl = 0.5 * torch.mean(mu * mu + torch.exp(logvar) - 1.0 - logvar)
        return u_hat, kl

    def loss(self, x: torch.Tensor, u: torch.Tensor, x_next: torch.Tensor,
             noise: torch.Tensor | None = None) -> torch.Tensor:
        """Reconstruction MSE + beta * KL(q || N(0, I)) (per latent dimension)."""
        u_hat, kl = self(x, x_next, u, noise)
        return torch.mean((u_hat - u) ** 2) + self.beta * kl

    def energy_grad(self, x0: torch.Tensor, tau: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """E_inv = sum_t ||u_t - g(x_t, x_{t+1})||^2 (per sample) and dE/dtau."""
        _check_plan(x0, tau, self.S, self.A)
        x, u, xn = split_transitions(x0, tau, self.S)
        z = torch.zeros(*x.shape[:-1], self.latent, dtype=x.dtype, device=x.device)
        inp = torch.cat([x, xn, z], dim=-1)
        u_hat, cache = self.decoder.forward_cache(inp)
        r = u - u_hat
        j = self.decoder.backward(cache, r)
        S = self.S
        energy = torch.sum(r * r, dim=(1, 2))
        return energy, merge_transition_grads(-2.0 * j[..., :S], 2.0 * r, -2.0 * j[..., S:2 * S])


class RewardModel(nn.Module):
    """R_hat(x [.., S], u [.., A]) -> r [..]; over a plan, sum_t gamma^t R_hat(x_t, u_t)."""

    def __init__(self, S: int, A: int, hidden: Sequence[int] = (256, 256), act: str = "mish",
                 gamma: float = 1.0):
        super().__init__()
        if not 0.0 < gamma <= 1.0:
            raise ValueError(f"gamma must be in (0, 1], got {gamma}")
        self.S, self.A, self.gamma = S, A, gamma
        self._config = dict(S=S, A=A, hidden=list(hidden), act=act, gamma=gamma)
        self.mlp = GradMLP(S + A, 1, hidden, act)

    def config(self) -> dict:
        return dict(self._config)

    def forward(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return self.mlp(torch.cat([x, u], dim=-1)).squeeze(-1)

    def loss(self, x: torch.Tensor, u: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        return torch.mean((self(x, u) - r) ** 2)

    def _discounts(self, H: int, like: torch.Tensor) -> torch.Tensor:
        return self.gamma ** torch.arange(H, dtype=like.dtype, device=like.device)

    def plan_value(self, x0: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        x, u, _ = split_transitions(x0, tau, self.S)
        return torch.sum(self(x, u) * self._discounts(tau.shape[1], tau), dim=1)

    def value_grad(self, x0: torch.Tensor, tau: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """sum_t gamma^t R_hat(x_t, u_t) per sample and its gradient w.r.t. the plan."""
        _check_plan(x0, tau, self.S, self.A)
        x, u, xn = split_transitions(x0, tau, self.S)
        w = self._discounts(tau.shape[1], tau).reshape(1, -1, 1).expand(x.shape[0], -1, 1)
        r, j = self.mlp.forward_vjp(torch.cat([x, u], dim=-1), w)
        value = torch.sum(r.squeeze(-1) * w.squeeze(-1), dim=1)
        return value, merge_transition_grads(j[..., :self.S], j[..., self.S:], torch.zeros_like(xn))


class ReturnModel(RewardModel):
    """J_hat(tau) = sum_t gamma^t r_phi(x_t, u_t): DADP's return model (gamma 0.997)."""

    def __init__(self, S: int, A: int, hidden: Sequence[int] = (256, 256), act: str = "mish",
                 gamma: float = 0.997):
        super().__init__(S, A, hidden, act, gamma)


class GaussianTransition(nn.Module):
    """T_hat(x' | x, u) = N(x + mu(x, u), diag exp(2 l(x, u))), an ensemble of E members.

    Each member is one MLP with 2S outputs [mu, raw log-std]; the log-std is softly
    bounded to [min_logstd, max_logstd] with softplus (differentiable, closed form).
    ``log_prob`` averages the members' log-likelihoods.

    The floor matters for guidance: grad log T scales like 1 / sigma^2, so a mean shift
    alpha * step * grad is only stable while alpha / sigma^2 stays below about 1. On a
    deterministic system sigma shrinks to the floor (measured: log-std -5.9 with a floor of
    -6, which made the paper's alpha = 1e-3 diverge); the default floor -3 (sigma >= 0.05
    in normalized units) keeps alpha = 1e-3 stable.
    """

    def __init__(self, S: int, A: int, hidden: Sequence[int] = (256, 256), act: str = "mish",
                 ensemble: int = 1, min_logstd: float = -3.0, max_logstd: float = 0.5):
        super().__init__()
        if ensemble < 1:
            raise ValueError(f"ensemble must be >= 1, got {ensemble}")
        if not min_logstd < max_logstd:
            raise ValueError(f"need min_logstd < max_logstd, got {min_logstd}, {max_logstd}")
        self.S, self.A = S, A
        self._config = dict(S=S, A=A, hidden=list(hidden), act=act, ensemble=ensemble,
                            min_logstd=min_logstd, max_logstd=max_logstd)
        self.min_logstd, self.max_logstd = float(min_logstd), float(max_logstd)
        self.members = nn.ModuleList(GradMLP(S + A, 2 * S, hidden, act) for _ in range(ensemble))

    def config(self) -> dict:
        return dict(self._config)

    def _bound(self, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(log-std, d log-std / d raw) of the soft bounds."""
        hi = self.max_logstd - nn.functional.softplus(self.max_logstd - raw)
        d_hi = torch.sigmoid(self.max_logstd - raw)
        lo = self.min_logstd + nn.functional.softplus(hi - self.min_logstd)
        return lo, torch.sigmoid(hi - self.min_logstd) * d_hi

    def mean_logstd(self, x: torch.Tensor, u: torch.Tensor, member: int = 0
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.members[member](torch.cat([x, u], dim=-1))
        return x + h[..., :self.S], self._bound(h[..., self.S:])[0]

    def forward(self, x: torch.Tensor, u: torch.Tensor,
                x_next: torch.Tensor | None = None) -> torch.Tensor:
        """The ensemble-mean predicted next state [.., S] (the DMEMM transition loss uses
        it); with ``x_next`` given, log T_hat(x_next | x, u) [..] instead (training)."""
        if x_next is not None:
            return self.log_prob(x, u, x_next)
        means = [self.mean_logstd(x, u, m)[0] for m in range(len(self.members))]
        return torch.stack(means, 0).mean(0)

    def log_prob(self, x: torch.Tensor, u: torch.Tensor, x_next: torch.Tensor) -> torch.Tensor:
        lps = []
        for m in range(len(self.members)):
            mu, ls = self.mean_logstd(x, u, m)
            e = (x_next - mu) * torch.exp(-ls)
            lps.append(torch.sum(-0.5 * e * e - ls - 0.5 * _LOG_2PI, dim=-1))
        return torch.stack(lps, 0).mean(0)

    def loss(self, x: torch.Tensor, u: torch.Tensor, x_next: torch.Tensor) -> torch.Tensor:
        """Gaussian negative log-likelihood per state dimension (each member on the batch)."""
        return -torch.mean(self.log_prob(x, u, x_next)) / self.S

    def logprob_grad(self, x0: torch.Tensor, tau: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """sum_t log T_hat(x_{t+1} | x_t, u_t) per sample and its gradient w.r.t. the plan."""
        _check_plan(x0, tau, self.S, self.A)
        S = self.S
        x, u, xn = split_transitions(x0, tau, S)
        inp = torch.cat([x, u], dim=-1)
        E = len(self.members)
        total = torch.zeros(tau.shape[0], dtype=tau.dtype, device=tau.device)
        g_prev = torch.zeros_like(x)
        g_u = torch.zeros_like(u)
        g_next = torch.zeros_like(xn)
        for m in range(E):
            mlp = self.members[m]
            h, cache = mlp.forward_cache(inp)
            mu = x + h[..., :S]
            ls, dls = self._bound(h[..., S:])
            inv_var = torch.exp(-2.0 * ls)
            e = xn - mu
            total = total + torch.sum(-0.5 * e * e * inv_var - ls - 0.5 * _LOG_2PI, dim=(1, 2)) / E
            d_mu = e * inv_var  # d logp / d mu
            d_ls = e * e * inv_var - 1.0  # d logp / d log-std
            j = mlp.backward(cache, torch.cat([d_mu, d_ls * dls], dim=-1))
            g_prev = g_prev + (d_mu + j[..., :S]) / E
            g_u = g_u + j[..., S:] / E
            g_next = g_next - d_mu / E
        return total, merge_transition_grads(g_prev, g_u, g_next)
