"""Diffusion noise schedules: the one function both the trainer and the runtime use.

Levels are indexed k = 0..K: level 0 is the clean trajectory (alpha_bar[0] = 1) and level
K the noisiest. A reverse sampling pass visits a decreasing sub-sequence of levels
(e.g. [7, 6, ..., 0] for a warm start at level 7 of K = 10). Everything is float64 here
and handed to graphs as float32 constants: the last cosine coefficients underflow fp16.
"""

from __future__ import annotations

import numpy as np

SCHEDULES = ("cosine", "linear")


def alpha_bar(num_levels: int, kind: str = "cosine", s: float = 0.008,
              beta_start: float = 1e-4, beta_end: float = 2e-2) -> np.ndarray:
    """Cumulative signal rates alpha_bar[0..K] (length K + 1, alpha_bar[0] == 1).

    cosine: Nichol & Dhariwal (2021), betas clipped to 0.999.
    linear: betas evenly spaced in [beta_start, beta_end] (scaled for K != 1000 by the caller).
    """
    if num_levels < 1:
        raise ValueError(f"num_levels must be >= 1, got {num_levels}")
    K = int(num_levels)
    if kind == "cosine":
        t = np.arange(K + 1, dtype=np.float64) / K
        f = np.cos((t + s) / (1.0 + s) * np.pi / 2.0) ** 2
        betas = np.clip(1.0 - f[1:] / f[:-1], 0.0, 0.999)
    elif kind == "linear":
        betas = np.linspace(beta_start, beta_end, K, dtype=np.float64)
    else:
        raise ValueError(f"unknown schedule {kind!r}; expected one of {SCHEDULES}")
    ab = np.concatenate([[1.0], np.cumprod(1.0 - betas)])
    return ab


def warm_levels(warm_level: int) -> np.ndarray:
    """Level sequence for a warm start: [k_w, k_w - 1, ..., 0] (k_w reverse steps)."""
    if warm_level < 1:
        raise ValueError(f"warm_level must be >= 1, got {warm_level}")
    return np.arange(warm_level, -1, -1, dtype=np.int64)


def ddim_levels(num_levels: int, num_steps: int) -> np.ndarray:
    """A DDIM sub-sequence of ``num_steps`` reverse steps from level K down to 0.

    Evenly spaced, always starting at K and ending at 0, strictly decreasing. With
    num_steps == K it visits every level.
    """
    if not 1 <= num_steps <= num_levels:
        raise ValueError(f"num_steps must be in [1, {num_levels}], got {num_steps}")
    lv = np.round(np.linspace(num_levels, 0, num_steps + 1)).astype(np.int64)
    if np.any(np.diff(lv) >= 0):  # cannot happen for num_steps <= K, kept as a guard
        raise ValueError(f"degenerate DDIM sub-sequence {lv.tolist()}")
    return lv


def validate_levels(levels: np.ndarray, num_levels: int) -> np.ndarray:
    """Check a level sequence: int, strictly decreasing, within [0, K], ends at 0."""
    lv = np.asarray(levels)
    if lv.ndim != 1 or lv.size < 2:
        raise ValueError(f"levels must be a 1-D sequence of >= 2 entries, got shape {lv.shape}")
    if not np.issubdtype(lv.dtype, np.integer):
        raise ValueError(f"levels must be integers, got {lv.dtype}")
    if lv[0] > num_levels or lv[-1] != 0 or np.any(np.diff(lv) >= 0):
        raise ValueError(
            f"levels must decrease strictly from <= {num_levels} to 0, got {lv.tolist()}"
        )
    return lv.astype(np.int64)
