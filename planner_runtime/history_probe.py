"""What the demonstrator's next action depends on: ``planner-runtime dataset probe DATA.h5``.

A planner conditioned on the state and the command learns, for its first action, about the
conditional mean of what the demonstrator did next given those. When the demonstrator also
acted on something the state does not hold (its own previous action, a gait clock, a memory),
that mean is a damped copy of its actions, and no network size or training length recovers
the rest. This probe says how much is missing and which history would supply it: it fits
the next action on held-out episodes by ridge regression on random Fourier features of

- the state and condition (``actions 0, states 0``),
- those plus the last k actions (k = 1..N, ``--history N``),
- those plus the last k states (k = 1..N),

and reports the held-out R^2 (mean over the action dimensions) of each, with its gain over the
state alone. Rows are those with k predecessors in their episode (k the largest asked for, so
every input set is scored on the same rows); where the file records the collector's action
noise (``raw/noise_level``), only rows whose action and predecessors were noise-free, so that
the fit is of the demonstrator, not of the noise. Episodes are split with
:func:`planner_runtime.dataset.split_episodes`. Numpy only.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from planner_runtime.dataset import Dataset, DatasetError, split_episodes

FEATURES = 3000  # random Fourier features (the inputs themselves are kept beside them)
ROWS = 60_000  # training rows at most (a random subset)
RIDGE = 1e-2
VAL_FRACTION = 0.2


def probe_rows(ds: Dataset, history: int) -> np.ndarray:
    """Row indices with ``history`` predecessors in their episode, all noise-free when the file
    records the action noise."""
    bounds = ds.episode_bounds()
    start = np.repeat(bounds[:, 0], bounds[:, 1] - bounds[:, 0])
    idx = np.arange(len(ds))
    ok = idx - start >= history
    noise = ds.raw.get("noise_level")
    if noise is not None:
        clean = np.asarray(noise).reshape(len(ds), -1).max(axis=1) == 0
        ok &= clean
        for j in range(1, history + 1):
            ok &= np.r_[np.zeros(j, bool), clean[:-j]]
    return np.flatnonzero(ok)


def _inputs(ds: Dataset, rows: np.ndarray, n_actions: int, n_states: int) -> np.ndarray:
    cols = [ds.observations[rows], ds.conditions[rows]]
    cols += [ds.actions[rows - j] for j in range(1, n_actions + 1)]
    cols += [ds.observations[rows - j] for j in range(1, n_states + 1)]
    return np.concatenate(cols, axis=1).astype(np.float64)


def _r2(ds: Dataset, tr: np.ndarray, va: np.ndarray, n_actions: int, n_states: int,
        rng: np.random.Generator, features: int) -> float:
    xtr, xva = _inputs(ds, tr, n_actions, n_states), _inputs(ds, va, n_actions, n_states)
    mu, sd = xtr.mean(axis=0), xtr.std(axis=0) + 1e-6
    xtr, xva = (xtr - mu) / sd, (xva - mu) / sd
    w = rng.normal(0.0, 1.0 / np.sqrt(xtr.shape[1]), (xtr.shape[1], features))
    b = rng.uniform(-np.pi, np.pi, features)

    def lift(x: np.ndarray) -> np.ndarray:
        return np.hstack([x, np.cos(x @ w + b), np.ones((len(x), 1))])

    ftr, fva = lift(xtr), lift(xva)
    coef = np.linalg.solve(ftr.T @ ftr + RIDGE * np.eye(ftr.shape[1]), ftr.T @ ds.actions[tr].astype(np.float64))
    y = ds.actions[va].astype(np.float64)
    var = ((y - y.mean(axis=0)) ** 2).sum(axis=0)
    keep = var > 0  # an action dimension the held-out rows never vary says nothing
    if not keep.any():
        raise DatasetError("the held-out rows' actions never vary: nothing to explain")
    r2 = 1.0 - ((fva @ coef - y) ** 2).sum(axis=0)[keep] / var[keep]
    return float(r2.mean())


def probe(ds: Dataset, history: int = 2, *, features: int = FEATURES, rows: int = ROWS,
          seed: int = 0) -> dict[str, Any]:
    """The probe's report (module docstring): ``sets`` of {actions, states, r2, gain}."""
    if history < 1:
        raise ValueError(f"history must be at least 1, got {history}")
    if features < 1 or rows < 1:
        raise ValueError(f"features and rows must be positive, got {features} and {rows}")
    bounds = ds.episode_bounds()
    if len(bounds) < 2:
        raise DatasetError(f"{ds.path}: the probe holds out whole episodes and needs at least 2, the file has "
                           f"{len(bounds)}")
    tr_ep, va_ep = split_episodes(len(bounds), VAL_FRACTION, seed)
    if len(va_ep) == 0:
        va_ep, tr_ep = tr_ep[-1:], tr_ep[:-1]
    episode = np.repeat(np.arange(len(bounds)), bounds[:, 1] - bounds[:, 0])
    ok = probe_rows(ds, history)
    tr, va = ok[np.isin(episode[ok], tr_ep)], ok[np.isin(episode[ok], va_ep)]
    need = 10 * (ds.observations.shape[1] + ds.conditions.shape[1])
    if len(tr) < need or len(va) < 10:
        raise DatasetError(f"{ds.path}: {len(tr)} training and {len(va)} held-out rows with {history} "
                           f"predecessors{' and no action noise' if 'noise_level' in ds.raw else ''}; the probe "
                           f"needs at least {need} and 10 (a smaller --history, or more data)")
    rng = np.random.default_rng(seed)
    if len(tr) > rows:
        tr = np.sort(rng.choice(tr, rows, replace=False))
    sets = [(0, 0), *((k, 0) for k in range(1, history + 1)), *((0, k) for k in range(1, history + 1))]
    out = []
    for n_actions, n_states in sets:
        r2 = _r2(ds, tr, va, n_actions, n_states, np.random.default_rng(seed), features)
        out.append({"actions": n_actions, "states": n_states, "r2": r2})
    for s in out:
        s["gain"] = s["r2"] - out[0]["r2"]
    return {"file": str(ds.path), "history": history, "features": features, "train_rows": int(len(tr)),
            "heldout_rows": int(len(va)), "heldout_episodes": int(len(va_ep)),
            "noise_free_only": "noise_level" in ds.raw, "seed": seed, "sets": out}


def table(report: dict[str, Any]) -> str:
    lines = [f"{report['file']}: the next action fitted on {report['train_rows']} rows, scored on "
             f"{report['heldout_rows']} rows of {report['heldout_episodes']} held-out episodes"
             + (" (noise-free rows only)" if report["noise_free_only"] else ""),
             "| inputs | held-out R^2 | gain over the state |", "|---|---|---|"]
    for s in report["sets"]:
        what = "state + condition"
        if s["actions"]:
            what += f" + last {s['actions']} action{'s' if s['actions'] > 1 else ''}"
        if s["states"]:
            what += f" + last {s['states']} state{'s' if s['states'] > 1 else ''}"
        lines.append(f"| {what} | {s['r2']:.3f} | {s['gain']:+.3f} |")
    return "\n".join(lines)
