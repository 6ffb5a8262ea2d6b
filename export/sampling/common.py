"""Sampling math written once: schedule buffers, q_sample, the DDIM update, CFG, normalizers.

Every method's sampler (and so every exported graph) uses these functions; nothing else in
the project has a copy of an update rule. All schedule coefficients are float32 buffers
built from ``planner_runtime.schedule.alpha_bar`` (never fp16: the last cosine
coefficients underflow half precision). Levels are int64 tensors; coefficients are looked
up inside the graph by indexing the buffer (an ONNX Gather), so the same graph serves any
level sequence.

Shapes: tau / eps [B, H, D]; levels are int64 tensors of shape [1] (broadcast to the
batch) unless stated; coefficients come back shaped [-1, 1, 1] to broadcast over [B, H, D].
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from export.data import Normalizer
from planner_runtime.schedule import alpha_bar


class Schedule(nn.Module):
    """alpha_bar[0..K] and its square roots as float32 buffers (part of the state dict)."""

    def __init__(self, num_levels: int, kind: str = "cosine"):
        super().__init__()
        ab = alpha_bar(num_levels, kind)
        self.num_levels, self.kind = int(num_levels), kind
        self.register_buffer("alpha_bar", torch.tensor(ab, dtype=torch.float32))
        self.register_buffer("sqrt_ab", torch.tensor(np.sqrt(ab), dtype=torch.float32))
        self.register_buffer("sqrt_1mab", torch.tensor(np.sqrt(1.0 - ab), dtype=torch.float32))

    def coeffs(self, level: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(sqrt(alpha_bar_k), sqrt(1 - alpha_bar_k)) for int64 ``level`` [n], shaped [n, 1, 1]."""
        lv = level.reshape(-1)
        return (torch.index_select(self.sqrt_ab, 0, lv).reshape(-1, 1, 1),
                torch.index_select(self.sqrt_1mab, 0, lv).reshape(-1, 1, 1))


def q_sample(sched: Schedule, x_clean: torch.Tensor, noise: torch.Tensor,
             level: torch.Tensor) -> torch.Tensor:
    """Forward noising tau^k = sqrt(ab_k) x + sqrt(1 - ab_k) eps. ``level`` int64 [1] or [B]."""
    a, s = sched.coeffs(level)
    return a * x_clean + s * noise


def predict_x0(sched: Schedule, tau: torch.Tensor, eps: torch.Tensor, level: torch.Tensor,
               clip: float | None = None) -> torch.Tensor:
    """x0_hat = (tau^k - sqrt(1 - ab_k) eps) / sqrt(ab_k), clipped to [-clip, clip] if set."""
    a, s = sched.coeffs(level)
    x0 = (tau - s * eps) / a
    if clip is not None:
        x0 = torch.clamp(x0, -clip, clip)
    return x0


def ddim_step(sched: Schedule, tau: torch.Tensor, eps: torch.Tensor, level: torch.Tensor,
              next_level: torch.Tensor, clip: float | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic DDIM (eta = 0) from level k to k' < k. Returns (tau^{k'}, x0_hat).

    tau^{k'} = sqrt(ab_k') x0_hat + sqrt(1 - ab_k') eps, with the predicted eps (not
    re-derived from the clipped x0_hat). At k' = 0 this is exactly x0_hat.
    """
    x0 = predict_x0(sched, tau, eps, level, clip)
    a2, s2 = sched.coeffs(next_level)
    return a2 * x0 + s2 * eps, x0


def cfg_eps(model: Callable[..., torch.Tensor], tau: torch.Tensor, level: torch.Tensor,
            x0: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Classifier-free guidance in ONE batched call: eps_u + w (eps_c - eps_u).

    The batch is [conditional; unconditional] (concatenated along dim 0). x_0 is kept in
    the unconditional half; only y is dropped (replaced by the model's null token).
    ``level`` int64 [1]; ``w`` f32 [1].
    """
    B = tau.shape[0]
    k = level.to(tau.dtype).reshape(1).expand(2 * B)
    drop = torch.cat([torch.zeros(B, dtype=tau.dtype, device=tau.device),
                      torch.ones(B, dtype=tau.dtype, device=tau.device)])
    out = model(torch.cat([tau, tau]), k, torch.cat([x0, x0]), torch.cat([y, y]), drop)
    e_c, e_u = out[:B], out[B:]
    return e_u + w.reshape(1, 1, 1) * (e_c - e_u)


class EpsFromX0(nn.Module):
    """Wraps a network trained to predict the clean trajectory (``prediction = "x0"``) so
    that it answers like an eps-network: eps = (tau^k - sqrt(ab_k) x0_hat) / sqrt(1 - ab_k).

    Every sampler (DDIM, CFG, the alternation, guidance) is written in terms of eps; this is
    the only place the parametrization is converted. CFG on the wrapped outputs equals CFG
    on x0_hat (the map is affine in x0_hat at fixed tau and k). A network with fewer output
    channels than the trajectory (the dynamics model: states only) converts those leading
    channels. Same call signature as :class:`export.models.unet.TemporalUnet`.
    """

    def __init__(self, net: nn.Module, num_levels: int, kind: str = "cosine"):
        super().__init__()
        self.net = net
        self.sched = Schedule(num_levels, kind)

    def forward(self, tau: torch.Tensor, k: torch.Tensor, x0: torch.Tensor, y: torch.Tensor,
                y_drop: torch.Tensor) -> torch.Tensor:
        x0_hat = self.net(tau, k, x0, y, y_drop)
        # k carries integer levels as floats; +0.5 then truncation (Cast) rounds without an
        # ONNX Round op (outside the engine operator set)
        a, s = self.sched.coeffs((k + 0.5).to(torch.int64))
        return (tau[..., : x0_hat.shape[-1]] - a * x0_hat) / s


PREDICTIONS = ("eps", "x0")


class Normalize(nn.Module):
    """Affine per-dimension normalizer as buffers: z = (x - shift) / scale (and back)."""

    def __init__(self, norm: Normalizer):
        super().__init__()
        self.kind = norm.kind
        self.constant = tuple(norm.constant)  # recorded in the manifest (Normalizer.constant)
        self.register_buffer("shift", torch.tensor(norm.shift, dtype=torch.float32))
        self.register_buffer("scale", torch.tensor(norm.scale, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.shift) / self.scale

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.scale + self.shift


# ---- warm start -------------------------------------------------------------------------

def shift_plan(plan: torch.Tensor, steps: torch.Tensor | int) -> torch.Tensor:
    """The warm-start shift in the graph: row t of the result is row ``min(t + steps, H - 1)``
    of ``plan`` [B, H, D] (the first ``steps`` rows dropped, the end padded with the last row).

    Row t of a plan made at x_0 is [x_{t+1}, u_t]; after executing ``steps`` actions the new
    x_0 is (ideally) x_steps, so the old row steps + t becomes the new row t. The same rule
    as the runtime's numpy ``planner_runtime.async_planner.shift_plan``, steps in [0, H]:
    a Python int outside raises; an int64 tensor [1] (a graph input such as ``n_prefix``,
    which cannot raise inside an exported graph) is clamped to it. An index gather, so the
    step count may be a graph input.
    """
    H = plan.shape[1]
    if isinstance(steps, int):
        if not 0 <= steps <= H:
            raise ValueError(f"shift steps must be in [0, H={H}], got {steps}")
        steps = torch.tensor([steps], dtype=torch.int64, device=plan.device)
    idx = torch.clamp(torch.arange(H, device=plan.device) + steps.reshape(1), 0, H - 1)
    return torch.index_select(plan, 1, idx)
