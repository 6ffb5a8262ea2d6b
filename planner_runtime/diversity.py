"""Sample diversity: how far apart N plans from one state are.

A diffusion planner draws a plan from a distribution; ranking N candidates (MPDiffuser's
ranker) and the alternation of planner and dynamics only matter when the candidates differ.
``plan_spread`` measures it: N plans for the same observation with independent noise (each
a cold start, or each warm-started from the same previous plan), and their spread per
dimension across the N samples (standard deviation, in the engine's normalizer units: the
trajectory scale of each state and action dimension), averaged over the horizon and the
dimensions; also for the first action alone (what the robot executes first), and the mean
pairwise RMS distance between plans. The runtime's own bookkeeping is used
(``AsyncPlanner.plan_once``): the noise is standard normal scaled by sqrt(temperature), as
when serving.

    python -m planner_runtime.diversity ENGINE --dataset data.h5 [--states 8] [--n 16]
        [--temperature 0.001 1.0] [--json]

takes states and conditions from a dataset file (evenly spaced samples) and prints the
spread at each temperature. ``planner-runtime eval --env ID --diversity N`` reports the same
on a Gymnasium environment's states. Torch-free.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from planner_runtime.async_planner import AsyncPlanner, PlannerSpec
from planner_runtime.manifest import Manifest
from planner_runtime.protocol import Observation


def traj_scale(manifest: Manifest, D: int) -> np.ndarray:
    """Per-dimension scale of a trajectory row [x (S), u (A)] from the normalizer (1 if absent)."""
    block = (manifest.normalizer or {}).get("traj") or {}
    sc = block.get("scale") if isinstance(block, Mapping) else None
    if isinstance(sc, tuple) and len(sc) == D:
        a = np.asarray(sc, np.float64)
        if np.all(np.isfinite(a)) and np.all(a > 0):
            return a
    return np.ones(D)


def plan_spread(engine: Any, spec: PlannerSpec, state: np.ndarray, cond: np.ndarray, n: int = 16,
                seed: int = 0, temperature: float | None = None, warm: bool = False) -> dict[str, float]:
    """Spread of ``n`` plans for one observation (see the module docstring). ``warm``: every
    plan is warm-started from the same previous plan (a cold plan made first)."""
    if n < 2:
        raise ValueError(f"the spread needs n >= 2 plans, got {n}")
    sp = spec if temperature is None else dataclasses.replace(spec, temperature=float(temperature))
    planner = AsyncPlanner(engine, sp, seed=seed, cold_threshold=float("inf"))
    obs = Observation(0, 0.0, np.asarray(state, np.float32), np.asarray(cond, np.float32))
    last = None
    if warm:
        _, last = planner.plan_once(obs, None)
    plans = []
    for _ in range(n):
        chunk, new_last = planner.plan_once(obs, last)
        plans.append(new_last.plan)
    P = np.stack(plans).astype(np.float64)  # [n, H, D]
    scale = traj_scale(engine.manifest, P.shape[-1])
    Z = P / scale
    std = Z.std(axis=0, ddof=1)  # [H, D]
    S = sp.S
    diff = Z[:, None] - Z[None, :]
    iu = np.triu_indices(n, 1)
    pair = np.sqrt((diff ** 2).mean(axis=(-1, -2)))[iu]
    return {"n": int(n), "temperature": float(sp.temperature), "warm": bool(warm),
            "spread": float(std.mean()), "spread_states": float(std[:, :S].mean()),
            "spread_actions": float(std[:, S:].mean()), "spread_first_action": float(std[0, S:].mean()),
            "pairwise_rms": float(pair.mean())}


def spread_over_states(engine: Any, spec: PlannerSpec, states: Sequence[np.ndarray],
                       conds: Sequence[np.ndarray], n: int, temperature: float | None = None,
                       warm: bool = False, seed: int = 0) -> dict[str, Any]:
    """``plan_spread`` at each state; the mean of every measure over the states."""
    rows = [plan_spread(engine, spec, s, c, n=n, seed=seed + i, temperature=temperature, warm=warm)
            for i, (s, c) in enumerate(zip(states, conds, strict=True))]
    keys = ("spread", "spread_states", "spread_actions", "spread_first_action", "pairwise_rms")
    return {"n": n, "states": len(rows), "temperature": rows[0]["temperature"], "warm": warm,
            **{k: float(np.mean([r[k] for r in rows])) for k in keys}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m planner_runtime.diversity",
                                description="spread of N plans from one state, at given temperatures")
    p.add_argument("engine", help=".onnx or .plan engine")
    p.add_argument("--dataset", required=True, help="dataset file: states and conditions are taken from it")
    p.add_argument("--states", type=int, default=8, help="evenly spaced samples of the dataset")
    p.add_argument("--n", type=int, default=16, help="plans per state")
    p.add_argument("--temperature", type=float, nargs="+", default=None,
                   help="temperatures to measure at (default: the engine's)")
    p.add_argument("--warm", action="store_true", help="warm-start every plan from one previous plan")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    from planner_runtime.backends import load_engine
    from planner_runtime.dataset import DatasetError, load_dataset
    from planner_runtime.engine import EngineError

    try:
        engine = load_engine(a.engine, threads=a.threads)
        spec = PlannerSpec.from_manifest(engine.manifest)
        ds = load_dataset(a.dataset, load_raw=False, checksum=False)
    except (OSError, ValueError, DatasetError, EngineError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if ds.dims[0] != spec.S:
        print(f"error: the dataset's S={ds.dims[0]} differs from the engine's {spec.S}", file=sys.stderr)
        return 2
    idx = np.linspace(0, len(ds) - 1, a.states).astype(int)
    states = [ds.observations[i] for i in idx]
    names = list(engine.manifest.observation.condition_names)
    try:
        conds = [condition_from_dataset(ds, int(i), names) for i in idx]
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    temps = a.temperature or [spec.temperature]
    rows = [spread_over_states(engine, spec, states, conds, a.n, t, a.warm) for t in temps]
    rep = {"engine": a.engine, "method": engine.manifest.method.name, "B": spec.B,
           "cfg_w": spec.cfg_w, "dataset": a.dataset, "results": rows}
    engine.close()
    if a.json:
        print(json.dumps(rep))
    else:
        print(f"{a.engine}: {rep['method']}, {a.states} states x {a.n} plans ({'warm' if a.warm else 'cold'}), "
              "spread = std across plans in normalizer units")
        for r in rows:
            print(f"temperature {r['temperature']:<8g} spread {r['spread']:.4f}  states {r['spread_states']:.4f}  "
                  f"actions {r['spread_actions']:.4f}  first action {r['spread_first_action']:.4f}  "
                  f"pairwise RMS {r['pairwise_rms']:.4f}")
    return 0


def condition_from_dataset(ds: Any, i: int, names: Sequence[str]) -> np.ndarray:
    """The engine's condition (``names``, the manifest's) at sample ``i`` of a dataset: the
    dataset's condition columns by name, and ``prev_<state or action name>`` history columns
    from sample i - 1 of the same episode (its own row at an episode start, as in training)."""
    b = ds.episode_bounds()
    start = int(b[np.searchsorted(b[:, 1], i, side="right"), 0])
    j = i - 1 if i > start else i
    cols = {n: ds.conditions[i, k] for k, n in enumerate(ds.condition_names)}
    cols.update({f"prev_{n}": ds.observations[j, k] for k, n in enumerate(ds.state_names)})
    cols.update({f"prev_{n}": ds.actions[j, k] for k, n in enumerate(ds.action_names)})
    missing = [n for n in names if n not in cols]
    if missing:
        raise ValueError(f"cannot build the engine's condition {missing[:4]} from the dataset")
    return np.asarray([cols[n] for n in names], np.float32)


if __name__ == "__main__":
    sys.exit(main())
