"""Plan fidelity: does an engine's plan reproduce the motion of the data it imitates?

    planner-runtime eval --plan-fidelity runs/default_engine/go2_robust.h5 --engine default=go2.onnx

Open loop, no simulator: for dataset rows where the demonstrator walks straight ahead at the
commanded speed (one band of speeds at a time, :data:`BANDS`; at least 1.5 s into the
command, within 0.07 m/s of it, no action noise, a full horizon left in the episode), the
engine plans cold from the row's state and condition, and its plan is set against what the
demonstrator did next:
- ``slope[j]`` / ``r2[j]``: the plan's action j (of the chunk) regressed on the data's, both
  as deviations from the band's mean action (slope 1 and R^2 1: a faithful copy; a slope
  under 1: damped toward the mean action);
- ``motion_ratio``: the spread of the planned joint positions over the horizon against the
  data's over the same ticks (1: the same stride amplitude).
A planner that damps the gait this way walks slower than its data, and at slow commands
stops (``eval --speed-sweep`` shows the closed-loop side).
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import numpy as np

from robot.go2_constants import POLICY_DT

BANDS = ((0.15, 0.25), (0.45, 0.55))  # commanded vx (m/s)
SETTLED_S = 1.5  # s into the command before a row counts
ON_SPEED = 0.07  # m/s: the row's body vx within this of the command
STRAIGHT = (0.03, 0.05)  # |vy| (m/s), |yaw rate| (rad/s) commands counted as straight ahead
SAMPLES = 60  # rows per band
# the eval options it reads (any other one given is refused: it would not apply)
OPTIONS = ("plan_fidelity", "engine", "seed", "cfg_w", "threads", "json", "no_progress")

Planner = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (state [S], cond [C]) -> plan [H, S + A]


def band_rows(conditions: np.ndarray, base_vx: np.ndarray, bounds: np.ndarray, noise: np.ndarray | None,
              band: tuple[float, float], horizon: int) -> np.ndarray:
    """Indices of the rows of ``band`` (see the module docstring)."""
    from sim.episode import since_command_change

    c = conditions
    idx = np.arange(len(c))
    age = since_command_change(c[:, :3], idx * POLICY_DT, bounds[:, 0])
    ends = np.repeat(bounds[:, 1], bounds[:, 1] - bounds[:, 0])
    ok = ((c[:, 0] >= band[0]) & (c[:, 0] < band[1]) & (np.abs(c[:, 1]) < STRAIGHT[0])
          & (np.abs(c[:, 2]) < STRAIGHT[1]) & (age >= SETTLED_S) & (np.abs(base_vx - c[:, 0]) < ON_SPEED)
          & (idx + horizon <= ends))  # 1.5 s in: the previous row is in the same episode
    if noise is not None:
        ok &= noise == 0
    return np.flatnonzero(ok)


def fidelity(plan: Planner, states: np.ndarray, actions: np.ndarray, cond_at: Callable[[int], np.ndarray],
             rows: np.ndarray, all_rows: np.ndarray, q_index: np.ndarray, chunk: int, horizon: int) -> dict:
    """The band's numbers (module docstring) over ``rows``; ``all_rows``: every row of the band
    (for its mean action); ``cond_at(i)``: row i's condition as the engine takes it."""
    S = states.shape[1]
    mean = actions[all_rows].mean(axis=0)
    planned, taken, motion = [], [], []
    for i in rows:
        p = np.asarray(plan(states[i], cond_at(int(i))), np.float64)
        if p.shape != (horizon, S + actions.shape[1]):
            raise ValueError(f"the plan has shape {p.shape}, expected {(horizon, S + actions.shape[1])}")
        planned.append(p[:chunk, S:])
        taken.append(actions[i:i + chunk])
        dq = states[i:i + horizon][:, q_index].std(axis=0).mean()
        motion.append((p[:, q_index].std(axis=0).mean(), dq))
    P, D = np.array(planned) - mean, np.array(taken) - mean
    slope, r2 = [], []
    for j in range(chunk):
        p, d = P[:, j].ravel(), D[:, j].ravel()
        slope.append(float(p @ d / (d @ d)))
        r2.append(float(1.0 - np.sum((p - d) ** 2) / np.sum(d ** 2)))
    m = np.array(motion)
    return {"rows": int(len(rows)), "band_rows": int(len(all_rows)), "slope": slope, "r2": r2,
            "motion_ratio": float(m[:, 0].mean() / m[:, 1].mean())}


def run_fidelity(cfg) -> int:
    """``planner-runtime eval --plan-fidelity DATA``: every ``--engine`` (default: the embedded
    one) on the dataset's rows; prints a table (or ``--json``)."""
    import json

    from planner_runtime.async_planner import AsyncPlanner, PlannerSpec
    from planner_runtime.backends import load_engine
    from planner_runtime.dataset import DatasetError, load_dataset
    from robot.actions import ActionSemantics
    from robot.controller import check_engine
    from robot.observation import ConditionBuilder
    from sim.eval_config import as_flags, given_options
    from sim.evaluate import _engines

    bad = [k for k in given_options(cfg) if k not in OPTIONS]
    if bad:
        print(f"error: --plan-fidelity is open loop on a dataset: {as_flags(bad)} "
              f"{'does' if len(bad) == 1 else 'do'} not apply (it takes {as_flags(OPTIONS[1:])})", file=sys.stderr)
        return 2
    try:
        ds = load_dataset(cfg.plan_fidelity, checksum=False)
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if "base_lin_vel" not in ds.raw:
        print(f"error: {cfg.plan_fidelity} records no raw/base_lin_vel (the body velocity that says which rows "
              "walk at their command): a dataset from `planner-runtime collect`", file=sys.stderr)
        return 2
    bounds = ds.episode_bounds()
    q_index = np.array([i for i, n in enumerate(ds.state_names) if n.startswith("q_rel_")])
    noise = ds.raw.get("noise_level")
    report: dict = {"dataset": str(cfg.plan_fidelity), "seed": cfg.seed, "engines": {}}
    for name, path in _engines(cfg):
        try:
            engine = load_engine(path, threads=cfg.threads)
            spec = PlannerSpec.from_manifest(engine.manifest, cfg_w=cfg.cfg_w)
            contract = check_engine(engine.manifest)
            problems = []
            if list(engine.manifest.observation.state_names) != list(ds.state_names):
                problems.append("its state names differ from the dataset's")
            if ds.action_semantics is None or not contract.semantics.same_actions(
                    ActionSemantics.from_dict(ds.action_semantics, "dataset action_semantics")):
                problems.append("its actions do not mean what the dataset's do (action_semantics)")
            if problems:
                raise ValueError("; ".join(problems))
        except Exception as exc:
            print(f"error: engine {name} ({path}): {exc}", file=sys.stderr)
            return 2
        plan = _planner(AsyncPlanner(engine, spec, seed=cfg.seed, send_steps=spec.H))
        build = ConditionBuilder(contract.condition_names)

        def cond_at(i: int, build=build) -> np.ndarray:  # the command, then history blocks from row i - 1
            return build(ds.conditions[i, :3], ds.observations[i - 1], ds.actions[i - 1])

        bands = {}
        rng = np.random.default_rng(cfg.seed)
        for band in BANDS:
            rows = band_rows(ds.conditions, ds.raw["base_lin_vel"][:, 0], bounds, noise, band, spec.H)
            label = f"{band[0]:g}-{band[1]:g} m/s"
            if len(rows) == 0:
                bands[label] = {"rows": 0}
                continue
            pick = np.sort(rng.choice(rows, min(SAMPLES, len(rows)), replace=False))
            bands[label] = fidelity(plan, ds.observations, ds.actions, cond_at, pick, rows, q_index,
                                    spec.chunk, spec.H)
        report["engines"][name] = bands
    if cfg.json:
        print(json.dumps(report))
    else:
        print(table(report))
    return 0


def _planner(ap) -> Planner:
    """A cold plan from (state, condition) by ``ap`` (an ``AsyncPlanner``): [H, S + A]."""
    from planner_runtime.protocol import Observation

    def plan(state: np.ndarray, cond: np.ndarray) -> np.ndarray:
        chunk, _ = ap.plan_once(Observation(seq=0, stamp=0.0, state=state.astype(np.float32),
                                            cond=cond.astype(np.float32)))
        return np.concatenate([chunk.states, chunk.actions], axis=1)

    return plan


def table(report: dict) -> str:
    head = ("| engine | band (commanded vx) | rows | first action: slope / R^2 | last chunk action: slope / R^2 "
            "| joint motion, plan / data |\n|---|---|---|---|---|---|\n")
    rows = []
    for name, bands in report["engines"].items():
        for label, b in bands.items():
            if not b.get("rows"):
                rows.append(f"| {name} | {label} | 0 | - | - | - |")
                continue
            rows.append(f"| {name} | {label} | {b['rows']} of {b['band_rows']} | {b['slope'][0]:.2f} / {b['r2'][0]:.2f} "
                        f"| {b['slope'][-1]:.2f} / {b['r2'][-1]:.2f} | {b['motion_ratio']:.2f} |")
    return head + "\n".join(rows) + "\n"

