"""Plots of simulated episodes: commanded vs measured velocity and torso tilt (PNG)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from robot.observation import TILT_COST_GRAVITY_Z
from sim.episode import EpisodeTrace


def plot_episode(tr: EpisodeTrace, path: str | Path, title: str = "") -> Path:
    """Write a 4-panel PNG: vx, vy, yaw rate (commanded vs measured) and torso tilt."""
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on robots, CI or here
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(4, 1, figsize=(10, 9), sharex=True)
    meas = (tr.base_lin_vel[:, 0], tr.base_lin_vel[:, 1], tr.gyro[:, 2])
    labels = ("vx (m/s)", "vy (m/s)", "yaw rate (rad/s)")
    k = 16  # one 0.32 s stride (the expert trot period) at 50 Hz
    for i in range(3):
        ax[i].plot(tr.t, meas[i], color="0.7", lw=0.8, label="measured")
        if len(tr.t) >= k:
            ax[i].plot(tr.t, np.convolve(meas[i], np.ones(k) / k, mode="same"), color="C0", lw=1.5,
                       label="measured, stride average")
        ax[i].step(tr.t, tr.command[:, i], where="post", color="C3", lw=1.5, label="command")
        ax[i].set_ylabel(labels[i])
        ax[i].grid(alpha=0.3)
    ax[0].legend(loc="upper right", fontsize=8)
    tilt = np.degrees(np.arccos(np.clip(-tr.gravity_z, -1.0, 1.0)))
    ax[3].plot(tr.t, tilt, color="C2")
    ax[3].axhline(np.degrees(np.arccos(-TILT_COST_GRAVITY_Z)), color="C3", ls="--", lw=1,
                  label=f"cost threshold (g_z > {TILT_COST_GRAVITY_Z})")
    ax[3].set_ylabel("torso tilt (deg)")
    ax[3].set_xlabel("time (s)")
    ax[3].legend(loc="upper right", fontsize=8)
    ax[3].grid(alpha=0.3)
    if tr.fell:
        for a in ax:
            a.axvline(tr.fall_time or tr.t[-1], color="k", ls=":")
    fig.suptitle(title or ("Go2 episode (fell)" if tr.fell else "Go2 episode"))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
