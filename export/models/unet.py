"""The temporal U-Net denoiser (Janner et al. 2022) with FiLM conditioning on [k, x_0, y].

Shapes (B batch, H horizon, Din / Dout channels):

    forward(tau [B, H, Din] f32, k [B] f32 diffusion level (0..K, as a float),
            x0 [B, S] f32 normalized observed state, y [B, C] f32 normalized condition,
            y_drop [B] f32 in {0, 1}: 1 replaces y's embedding by a learned null token (CFG))
        -> eps [B, H, Dout] f32

    planner:  Din = Dout = S + A   (rows [x_{t+1}, u_t])
    dynamics: Din = S + A (states and the noised actions as input), Dout = S

Architecture: 1-D convolutions over the horizon; residual blocks
Conv1d(k=5) -> GroupNorm(8) -> Mish, FiLM (per-channel scale and shift from an MLP of
[time embedding, x_0 embedding, y embedding]), Conv1d(k=5) -> GroupNorm -> Mish, plus a
1x1 skip. ``len(mults)`` resolution levels, down/up-sampling by 2 between them (so H must be
divisible by 2 ** (len(mults) - 1); for H = 16 use at most three levels, i.e. two
downsamplings). ``blocks_per_level`` residual blocks per level on each path and
``mid_blocks`` at the bottom (Janner: 2 and 2; the Go2 default is leaner, for latency).
The FiLM input is act(MLP([time, x_0, y])) computed once per call. No attention.
``x0_channels=True`` also concatenates x_0 to the input at every horizon step (Din + S input
channels to the first 1x1 conv), so the convolutions see the observed state directly instead
of only through the per-channel FiLM modulation.
``y_state > 0``: the last ``y_state`` columns of y (history blocks: the previous state or
action, which the robot always knows) are embedded with x_0 and never replaced by the null
token, so classifier-free guidance extrapolates only the rest of the condition (the command)
and not the history with it.

Export notes: no in-place slice assignment, no data-dependent control flow; the null token
is mixed in arithmetically (y_drop * null + (1 - y_drop) * emb) so a CFG batch is one call.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from export.models.mlp import ACTIVATIONS


class SinusoidalEmbedding(nn.Module):
    """k [B] -> [B, dim]: sin/cos of k at geometric frequencies (dim even)."""

    def __init__(self, dim: int):
        super().__init__()
        half = dim // 2
        freqs = torch.exp(torch.arange(half, dtype=torch.float32) * (-math.log(10000.0) / max(half - 1, 1)))
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, k: torch.Tensor) -> torch.Tensor:
        a = k.reshape(-1, 1) * self.freqs.reshape(1, -1)
        return torch.cat([a.sin(), a.cos()], dim=-1)


class ConvBlock(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int, groups: int, act: str):
        super().__init__(nn.Conv1d(cin, cout, k, padding=k // 2), nn.GroupNorm(groups, cout),
                         ACTIVATIONS[act]())


class ResBlock(nn.Module):
    """[B, cin, L] + cond [B, cond_dim] -> [B, cout, L]; FiLM between the two convs."""

    def __init__(self, cin: int, cout: int, cond_dim: int, k: int, groups: int, act: str):
        super().__init__()
        self.block1 = ConvBlock(cin, cout, k, groups, act)
        self.block2 = ConvBlock(cout, cout, k, groups, act)
        # c arrives already activated (TemporalUnet.embed), so FiLM is one Linear per block;
        # the scale half's bias starts at 1 (identity modulation) instead of adding 1 per call
        self.film = nn.Linear(cond_dim, 2 * cout)
        with torch.no_grad():
            self.film.bias[:cout] += 1.0
        self.skip = nn.Conv1d(cin, cout, 1) if cin != cout else nn.Identity()
        self.cout = cout

    def forward(self, x: torch.Tensor, c: torch.Tensor,
                film: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """``film``: this block's (scale, shift) [B, cout, 1] when the caller computed every
        block's FiLM in one matmul (TemporalUnet.forward); else from ``c`` here."""
        h = self.block1(x)
        if film is None:
            ss = self.film(c).unsqueeze(-1)  # [B, 2 cout, 1]
            film = (ss[:, : self.cout], ss[:, self.cout:])
        return self.block2(h * film[0] + film[1]) + self.skip(x)


class TemporalUnet(nn.Module):
    def __init__(self, horizon: int, in_dim: int, out_dim: int, x0_dim: int, cond_dim: int,
                 dim: int = 32, mults: Sequence[int] = (1, 2, 4), blocks_per_level: int = 1,
                 emb_dim: int | None = None, kernel: int = 5, groups: int = 8, act: str = "mish",
                 mid_blocks: int = 2, x0_channels: bool = False, y_state: int = 0):
        super().__init__()
        if act not in ACTIVATIONS:
            raise ValueError(f"unknown activation {act!r}; expected one of {sorted(ACTIVATIONS)}")
        if horizon % (2 ** (len(mults) - 1)):
            raise ValueError(f"horizon {horizon} not divisible by 2^{len(mults) - 1} "
                             f"(mults {tuple(mults)} downsample {len(mults) - 1} times)")
        chans = [dim * m for m in mults]
        if any(c % groups for c in chans):
            raise ValueError(f"channels {chans} must be divisible by GroupNorm groups {groups}")
        self._config = dict(horizon=horizon, in_dim=in_dim, out_dim=out_dim, x0_dim=x0_dim,
                            cond_dim=cond_dim, dim=dim, mults=list(mults),
                            blocks_per_level=blocks_per_level, emb_dim=emb_dim, kernel=kernel,
                            groups=groups, act=act, mid_blocks=mid_blocks,
                            x0_channels=bool(x0_channels), y_state=int(y_state))
        if not 0 <= y_state < cond_dim:
            raise ValueError(f"y_state must be in 0..{cond_dim - 1} (condition columns {cond_dim}), got {y_state}")
        self.x0_channels = bool(x0_channels)
        self.y_state = int(y_state)
        e = emb_dim or dim
        A = ACTIVATIONS[act]
        self.time_emb = nn.Sequential(SinusoidalEmbedding(e), nn.Linear(e, 4 * e), A(),
                                      nn.Linear(4 * e, e))
        self.x0_emb = nn.Sequential(nn.Linear(x0_dim + y_state, 2 * e), A(), nn.Linear(2 * e, e))
        self.y_emb = nn.Sequential(nn.Linear(cond_dim - y_state, 2 * e), A(), nn.Linear(2 * e, e))
        self.y_null = nn.Parameter(torch.zeros(e))
        cdim = 3 * e
        # ends with the activation every block's FiLM Linear would otherwise apply itself
        self.cond_mlp = nn.Sequential(nn.Linear(cdim, cdim), A(), nn.Linear(cdim, cdim), A())

        self.inp = nn.Conv1d(in_dim + (x0_dim if x0_channels else 0), chans[0], 1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        skips = []
        c = chans[0]
        for i, co in enumerate(chans):
            blocks = nn.ModuleList()
            for _ in range(blocks_per_level):
                blocks.append(ResBlock(c, co, cdim, kernel, groups, act))
                c = co
            self.down.append(blocks)
            skips.append(c)
            last = i == len(chans) - 1
            self.downsample.append(nn.Identity() if last else nn.Conv1d(c, c, 3, stride=2, padding=1))
        self.mid = nn.ModuleList([ResBlock(c, c, cdim, kernel, groups, act) for _ in range(mid_blocks)])
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i, co in reversed(list(enumerate(chans))):
            blocks = nn.ModuleList()
            cin = c + skips[i]
            for _ in range(blocks_per_level):
                blocks.append(ResBlock(cin, co, cdim, kernel, groups, act))
                cin = co
            c = co
            self.up.append(blocks)
            self.upsample.append(nn.Identity() if i == 0 else nn.ConvTranspose1d(c, c, 4, stride=2, padding=1))
        self.out = nn.Sequential(ConvBlock(c, c, kernel, groups, act), nn.Conv1d(c, out_dim, 1))

    def config(self) -> dict[str, Any]:
        """Constructor kwargs (plain types): ``TemporalUnet(**cfg)`` rebuilds the net."""
        return dict(self._config)

    def embed(self, k: torch.Tensor, x0: torch.Tensor, y: torch.Tensor,
              y_drop: torch.Tensor) -> torch.Tensor:
        """The FiLM conditioning vector [B, 3 * emb_dim]."""
        d = y_drop.reshape(-1, 1).to(y.dtype)
        if self.y_state:
            n = y.shape[-1] - self.y_state
            x0, y = torch.cat([x0, y[..., n:]], dim=-1), y[..., :n]
        ye = d * self.y_null.reshape(1, -1) + (1.0 - d) * self.y_emb(y)
        return self.cond_mlp(torch.cat([self.time_emb(k), self.x0_emb(x0), ye], dim=-1))

    def forward(self, tau: torch.Tensor, k: torch.Tensor, x0: torch.Tensor, y: torch.Tensor,
                y_drop: torch.Tensor) -> torch.Tensor:
        c = self.embed(k, x0, y, y_drop)
        if self.x0_channels:  # x_0 also as input channels at every horizon step
            tau = torch.cat([tau, x0.unsqueeze(1).expand(-1, tau.shape[1], -1)], dim=-1)
        h = self.inp(tau.transpose(1, 2))
        films = iter(self._films(c))
        hs = []
        for blocks, ds in zip(self.down, self.downsample, strict=True):
            for b in blocks:
                h = b(h, c, next(films))
            hs.append(h)
            h = ds(h)
        for b in self.mid:
            h = b(h, c, next(films))
        for blocks, us in zip(self.up, self.upsample, strict=True):
            h = torch.cat([h, hs.pop()], dim=1)
            for b in blocks:
                h = b(h, c, next(films))
            h = us(h)
        return self.out(h).transpose(1, 2)

    def _blocks(self) -> list[ResBlock]:
        """Every residual block in call order (down, mid, up)."""
        return [b for bl in self.down for b in bl] + list(self.mid) + [b for bl in self.up for b in bl]

    def _films(self, c: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Every block's FiLM (scale, shift) from ONE matmul over the concatenated weights.

        Same numbers as each block's own Linear; in an exported graph the weight concat is
        folded to a constant, so the per-block Gemm/Unsqueeze/Split triples (a third of a
        small U-Net's nodes are such per-call overhead on ONNX Runtime CPU) become one each.
        """
        blocks = self._blocks()
        w = torch.cat([b.film.weight for b in blocks], dim=0)
        bias = torch.cat([b.film.bias for b in blocks], dim=0)
        parts = torch.split(nn.functional.linear(c, w, bias).unsqueeze(-1),
                            [n for b in blocks for n in (b.cout, b.cout)], dim=1)
        return [(parts[2 * i], parts[2 * i + 1]) for i in range(len(blocks))]


def count_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())
