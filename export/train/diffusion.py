"""Shared pieces of every diffusion trainer: window batches, noising, condition dropout.

:class:`DiffusionTask` is the base of the MPDiffuser planner and dynamics trainers and of
the other methods' trajectory models. A batch (see ``export/data.py``) holds normalized
x0 [B, S], traj [B, H, S + A], cond [B, C], rewards / costs / valid [B, H].

Noising: a level k is drawn uniformly from {1, ..., K} per window, eps ~ N(0, I), and
tau^k = sqrt(ab_k) tau + sqrt(1 - ab_k) eps (``sampling/common.q_sample``); the network is
called with k as a float. Condition dropout for CFG: each window's y is replaced by the
model's null token with probability ``cond_dropout`` (y_drop = 1); x_0 is never dropped.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from export.data import HISTORY_EXTRAS, WindowData, extra_columns
from export.models.unet import TemporalUnet
from export.sampling.common import PREDICTIONS, Schedule, q_sample
from export.train.config import ComponentConfig
from export.train.loop import TrainTask
from planner_runtime.config import to_dict

UNET_KEYS = ("dim", "mults", "blocks_per_level", "mid_blocks", "emb_dim", "kernel", "groups", "act",
             "x0_channels")


def to_tensors(b: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in b.items()}


def draw_levels(B: int, K: int, gen: torch.Generator) -> torch.Tensor:
    """Training levels k ~ U{1..K}, int64 [B]."""
    return torch.randint(1, K + 1, (B,), generator=gen)


def draw_cond_drop(B: int, p: float, gen: torch.Generator) -> torch.Tensor:
    """CFG condition dropout mask, float [B] in {0, 1} (1 = y replaced by the null token)."""
    return (torch.rand(B, generator=gen) < p).to(torch.float32)


class DiffusionTask(TrainTask):
    """Base for trajectory diffusion models trained on windows of ``WindowData``."""

    model_class = "TemporalUnet"
    out_states_only = False  # dynamics: predict the state channels only
    supports_x0 = False  # whether loss() uses self.target (prediction = "x0" possible)

    def __init__(self, cfg: ComponentConfig, data: WindowData):
        super().__init__(cfg, data)
        self.K = cfg.num_levels
        self.sched = Schedule(self.K, cfg.schedule)

    def out_dim(self) -> int:
        return self.data.S if self.out_states_only else self.data.D

    def build_model(self) -> nn.Module:
        d = self.data
        m = {k: v for k, v in to_dict(self.cfg.model).items() if k in UNET_KEYS}
        return TemporalUnet(d.H, d.D, self.out_dim(), d.S, d.C, y_state=self.history_width(), **m)

    def history_width(self) -> int:
        """Condition columns embedded with x_0 (``history_with_state``): the trailing history
        extras' width, 0 when off."""
        if not self.cfg.history_with_state:
            return 0
        d = self.data
        cols = extra_columns(self.cfg.cond_extras, d.S, d.A, d.C)
        history = [c for e, c in cols.items() if e in HISTORY_EXTRAS]
        if not history or any(c > min(history) for e, c in cols.items() if e not in HISTORY_EXTRAS):
            raise ValueError("history_with_state needs the history extras (prev_state, prev_action) last in "
                             f"cond_extras, got {list(self.cfg.cond_extras)}")
        return d.C - min(history)

    def batch(self, split: str, batch_size: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        ws = self.data.train if split == "train" else self.data.val
        return to_tensors(ws.sample(batch_size, rng))

    def has_val(self) -> bool:
        return len(self.data.val) > 0

    @property
    def prediction(self) -> str:
        """What the network predicts: ``eps`` (the noise) or ``x0`` (the clean trajectory)."""
        p = self.cfg.prediction
        if p not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {p!r}")
        if p != "eps" and not self.supports_x0:
            raise ValueError(f"prediction {p!r} is implemented for the MPDiffuser planner and "
                             f"dynamics only, not {type(self).__name__}")
        return p

    def target(self, traj: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """The regression target of the network output for ``self.prediction``."""
        return traj if self.prediction == "x0" else eps

    def noised(self, traj: torch.Tensor, gen: torch.Generator
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(tau^k [B, H, D], k int64 [B], eps [B, H, D])."""
        B = traj.shape[0]
        k = draw_levels(B, self.K, gen)
        eps = torch.randn(traj.shape, generator=gen)
        return q_sample(self.sched, traj, eps, k), k, eps

    def checkpoint_extra(self) -> dict[str, Any]:
        return {**super().checkpoint_extra(), "prediction": self.prediction}
