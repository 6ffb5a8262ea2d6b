"""Summaries of latency readings: the one median / p99 helper of the project (torch-free).

``summary(values)`` gives n, median, p99, mean, min and max; every bench and every report of
median / p99 latency (controller loop periods, plan age, chunk turnaround, the simulator's
inference times) goes through it, so that a p99 means the same thing everywhere (numpy's
default, linear interpolation between the two nearest readings). ``tail_bursts`` says
whether the slowest readings of a series come in runs (the machine slowing down for a while)
or alone. ``histogram_png`` draws the latency histograms the benches write with ``--plot``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

KEYS = ("median", "p99", "mean", "min", "max")


def _readings(values: Iterable[float] | np.ndarray) -> np.ndarray:
    """``values`` as a flat float64 array, in their order."""
    return np.asarray(values if isinstance(values, np.ndarray) else list(values), np.float64).ravel()


def summary(values: Iterable[float] | np.ndarray, *, scale: float = 1.0, suffix: str = "",
            digits: int | None = None) -> dict[str, float]:
    """``n`` and the median, p99, mean, min and max of ``values`` times ``scale``.

    ``scale=1e3`` turns seconds into ms; ``suffix`` is appended to every key but ``n``
    (``"_ms"``: ``median_ms`` ...); ``digits`` rounds. NaN readings (not measured) are left
    out and not counted; no readings at all give ``{}``."""
    a = _readings(values)
    a = a[~np.isnan(a)] * scale
    if a.size == 0:
        return {}
    vals = (np.median(a), np.percentile(a, 99), a.mean(), a.min(), a.max())
    out: dict[str, float] = {"n": int(a.size)}
    for k, v in zip(KEYS, vals, strict=True):
        out[k + suffix] = float(v) if digits is None else round(float(v), digits)
    return out


def tail_bursts(values: Iterable[float] | np.ndarray, window: int = 100) -> dict[str, float]:
    """How the slowest 1% of readings in time order sit: ``neighbour_share``, the share of
    them next to another one of them (about 0.02 when they fall independently, near 1 when
    they come in bursts), its ``chance`` level, and the spread of the medians of successive
    ``window``-reading stretches (``window_median_min`` / ``_max``: the machine's own drift).
    Fewer than 2 * ``window`` readings give ``{}``."""
    a = _readings(values)
    if a.size < 2 * window:
        return {}
    slow = a > np.percentile(a, 99)
    near = np.zeros_like(slow)  # a slow reading on either side
    near[1:] |= slow[:-1]
    near[:-1] |= slow[1:]
    med = np.median(a[: a.size // window * window].reshape(-1, window), axis=1)
    return {"neighbour_share": float(near[slow].mean()) if slow.any() else 0.0,
            "chance": float(2 * slow.mean()), "window": int(window),
            "window_median_min": float(med.min()), "window_median_max": float(med.max())}


def histogram_png(series: Mapping[str, Any], path: str | Path, title: str,
                  xlabel: str = "latency (ms)", target: float | None = None) -> str | None:
    """A histogram PNG of one or more series of readings (ms), each labelled with its median
    and p99, clipped at the largest p99.9; ``target`` draws a vertical line (e.g. the loop
    period). Returns the path, or None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    arrays = {k: np.asarray(v, np.float64) for k, v in series.items() if len(v)}
    if not arrays:
        return None
    hi = max(float(np.percentile(a, 99.9)) for a in arrays.values())
    bins = np.linspace(0.0, hi * 1.05, 80)
    fig, ax = plt.subplots(figsize=(7, 4))
    for k, a in arrays.items():
        s = summary(a)
        ax.hist(np.clip(a, 0.0, bins[-1]), bins=bins.tolist(), alpha=0.5,
                label=f"{k} (median {s['median']:.2f}, p99 {s['p99']:.2f} ms, n={s['n']})")
    if target is not None:
        ax.axvline(target, color="k", lw=0.8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)
