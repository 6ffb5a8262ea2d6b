"""`planner-runtime eval`: closed-loop evaluation of planners in the MuJoCo Go2.

Each planner engine drives the simulated robot through the unchanged controller
(``robot.controller.Controller``: safety state machine, chunk timing, command filter) with
the planner called in-process and in lockstep on the simulated clock: every observation
is answered before the next control tick, so the numbers measure the plans, not this
machine's load (plan latency is reported separately, in wall time). The expert is run on
the same seeds and command schedules as the reference. Schedules come from
``SeedSequence([seed, i])`` with a base seed (10000) that data collection does not use.

Per method: falls, velocity-tracking RMSE (per tick and stride-averaged, 1 s settling after
each command change), cost (50 Hz ticks with projected gravity z > -0.95, against the
per-episode budget), dynamics-consistency error of the executed chunks (the plan's
predicted states vs the states the robot reached while executing the plan's actions, RMS
over state dimensions in units of the engine's normalizer scale, per step ahead), plan
latency. ``--json`` prints one object; ``--plot`` writes tracking curves and bars.

Latency (``--latency MS`` or ``--latency LO HI``, drawn per plan): still lockstep and
deterministic, but each plan becomes available to the controller only that much simulated
time after its observation; meanwhile the controller keeps executing the chunk it has, by
the runtime's chunk rules (``planner_runtime.chunking``, ``--merge``, ``--start-state``).
A plan warm-starts from the newest plan already available at its observation. Added
metrics: the chunk-switch discontinuity (largest and mean joint-target jump at a switch,
largest jump between other ticks, RMS jerk of the joint targets) and the forecast error of
the state at the tick each plan's first free action runs: the plan's own states over the
committed prefix (the dynamics model's forecast) and the previous plan's prediction (both
RMS over state dimensions in normalizer units).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from sim.physics import add_model_argument, check_model_argument

HELP = "closed-loop evaluation in MuJoCo: falls, tracking, cost, dynamics consistency, latency"
EVAL_SEED = 10000
COST_BUDGET = 10.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine", action="append", default=[], metavar="NAME=PATH",
                   help="an engine to evaluate (repeatable); default: the embedded Go2 engine")
    p.add_argument("--no-expert", action="store_true", help="skip the reference policies")
    p.add_argument("--reference", nargs="+", choices=("trot", "ppo"), default=["trot"],
                   help="reference policies run on the same episodes (default: trot; ppo = the PPO walking policy)")
    add_model_argument(p)
    p.add_argument("--randomize", action="store_true",
                   help="randomize physics per episode over sim.physics.RANDOMIZED (--friction/--mass-delta/--actuator-lag override their ranges)")
    p.add_argument("--actuator-lag", type=float, default=None, metavar="MS",
                   help="a fixed first-order actuator torque lag (ms)")
    p.add_argument("--obs-latency", type=float, default=None, metavar="MS",
                   help="a fixed observation latency (ms): every method reads the state this old")
    p.add_argument("--episodes", type=int, default=20, help="episodes per method (default 20)")
    p.add_argument("--duration", type=float, default=20.0, help="seconds of planning per episode")
    p.add_argument("--seed", type=int, default=EVAL_SEED, help=f"base seed (default {EVAL_SEED})")
    p.add_argument("--command", type=float, nargs=3, default=None, metavar=("VX", "VY", "YAW"),
                   help="a constant command instead of random schedules")
    p.add_argument("--pushes", action="store_true", help="random pushes during episodes")
    p.add_argument("--friction", type=float, nargs=2, default=None, metavar=("LO", "HI"))
    p.add_argument("--mass-delta", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                   help="kg added to the trunk, sampled per episode")
    p.add_argument("--chunk", type=int, default=None, help="actions executed per plan (default: manifest)")
    p.add_argument("--latency", type=float, nargs="+", default=None, metavar="MS",
                   help="simulated plan latency in ms: one value, or LO HI drawn per plan (default 0)")
    from planner_runtime.chunking import add_chunking_arguments

    add_chunking_arguments(p)
    p.add_argument("--cfg-w", type=float, default=None, help="override the engine's CFG weight")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--plot", default=None, metavar="PNG", help="write tracking curves and bars here")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--matrix", default=None, metavar="DIR",
                   help="run the robustness matrix (models x conditions, sim.eval_matrix) into DIR")
    p.add_argument("--matrix-models", nargs="+", default=None, metavar="MODEL",
                   help="models of the matrix (default: project menagerie menagerie-fitted)")
    p.add_argument("--matrix-conditions", nargs="+", default=None, metavar="COND",
                   help="conditions of the matrix (default: all of sim.eval_matrix.CONDITIONS)")
    p.add_argument("--jobs", type=int, default=2, help="matrix / sweep cells run in parallel (default 2)")
    p.add_argument("--latency-sweep", default=None, metavar="DIR",
                   help="run the latency sweep (latencies x chunk rules, sim.latency_sweep) into DIR")
    p.add_argument("--sweep-latencies", type=float, nargs="+", default=None, metavar="MS",
                   help="latencies of the sweep (default 0 20 40 80)")
    p.add_argument("--sweep-rules", nargs="+", default=None, metavar="RULE",
                   help="chunk rules of the sweep (default: all of sim.latency_sweep.RULES)")
    from sim.gym_eval import add_gym_arguments

    add_gym_arguments(p)  # --env ID: any Gymnasium environment (sim/gym_eval.py)


# --------------------------------------------------------------------------- episodes
def physics_ranges(args):
    """The physics ranges an eval run asks for (one definition for every method)."""
    from dataclasses import replace

    from sim.physics import RANDOMIZED, PhysicsRanges

    r = RANDOMIZED if args.randomize else PhysicsRanges()
    if args.friction is not None:
        r = replace(r, foot_friction=tuple(args.friction))
    if args.mass_delta is not None:
        r = replace(r, trunk_mass_delta=tuple(args.mass_delta))
    if args.actuator_lag is not None:
        r = replace(r, actuator_lag=(args.actuator_lag / 1e3, args.actuator_lag / 1e3))
    if getattr(args, "obs_latency", None) is not None:
        r = replace(r, obs_latency=(args.obs_latency / 1e3, args.obs_latency / 1e3))
    return r.validate()


def _episode_setup(seed: int, index: int, args) -> tuple:
    from robot.controller import CommandSchedule
    from sim.commands import random_schedule
    from sim.mujoco_harness import MujocoGo2, SimConfig

    ss = np.random.SeedSequence([seed, index])
    s_sim, s_sched = (int(x.generate_state(1)[0]) for x in ss.spawn(2))
    kw = {"seed": s_sim, "model": args.model, "physics": physics_ranges(args)}
    if args.pushes:
        kw["push_interval"] = (4.0, 8.0)
    robot = MujocoGo2(SimConfig(**kw))
    robot.reset()
    horizon = args.duration + 5.0
    sched = (CommandSchedule.constant(*args.command) if args.command is not None
             else random_schedule(np.random.default_rng(s_sched), horizon))
    return robot, sched


def _trace(rows: dict, fell: bool, fall_time: float | None):
    from sim.episode import EpisodeTrace

    a = {k: np.asarray(v) for k, v in rows.items()}
    return EpisodeTrace(a["t"], a["command"], a["base_lin_vel"], a["gyro"], a["gravity_z"],
                        a["base_pos"], fell, fall_time)


def run_expert_episode(index: int, args, which: str = "trot") -> tuple[dict, object]:
    """A reference policy on the episode: the trot expert (its own project semantics) or
    the PPO walking policy (its legged-gym semantics)."""
    from robot.actions import PROJECT
    from sim.collect import make_expert
    from sim.episode import episode_metrics, expert_policy, run_episode

    robot, sched = _episode_setup(args.seed, index, args)
    tr = run_episode(robot, expert_policy(make_expert(which, PROJECT)), sched, args.duration)
    m = episode_metrics(tr)
    m["cost"] = float(np.sum(tr.gravity_z > -0.95))
    return m, tr


def engine_contract(manifest: dict):
    """The engine's action semantics and condition layout, checked as the controller checks a
    service's hello (robot.controller.check_planner_metadata): ValueError when the Go2
    controller cannot run it."""
    from robot.controller import check_planner_metadata

    d = manifest["dims"]
    return check_planner_metadata({"state_dim": d["S"], "action_dim": d["A"], "cond_dim": d["C"],
                                   "dt": manifest["control"]["dt"], "manifest": manifest})


def run_planner_episode(engine, spec, index: int, args, state_scale: np.ndarray,
                        contract=None) -> tuple[dict, object]:
    """Controller + lockstep planner on one episode; metrics over the planning phase."""
    from planner_runtime.link import InProcessPlanner
    from robot.controller import Controller, ControllerConfig
    from robot.observation import build_state
    from robot.safety import Mode, SafetyConfig
    from sim.episode import episode_metrics

    robot, sched = _episode_setup(args.seed, index, args)
    contract = contract or engine_contract(engine.manifest)
    lat = latency_range(args)
    link = InProcessPlanner(engine, spec, seed=index, latency=lat, clock=robot.now,
                               rng=np.random.default_rng([args.seed, index, 7]))
    # The simulated robot starts standing: no passive phase, a short stand-up, then planning.
    safety = SafetyConfig(passive_s=0.0, stand_up_s=0.5)
    ctrl = Controller(robot, link, command=sched.at,
                      config=ControllerConfig(lockstep=lat[1] <= 0, max_actions=spec.chunk,
                                              replan_every=getattr(args, "replan_every", None) or spec.chunk,
                                              safety=safety,
                                              semantics=contract.semantics,
                                              condition_names=contract.condition_names,
                                              merge=getattr(args, "merge", None),
                                              start_state=getattr(args, "start_state", "measured"),
                                              fixed_delay=getattr(args, "delay_ticks", None),
                                              horizon=spec.H))
    rows: dict[str, list] = {k: [] for k in ("t", "command", "base_lin_vel", "gyro", "gravity_z", "base_pos")}
    states: dict[int, np.ndarray] = {}  # policy tick index since planning began -> state
    fell, fall_time, t_plan0 = False, None, None
    dec = ctrl.config.policy_decimation
    t_limit = robot.now() + 4.0 + args.duration + 10.0  # stand-up + duration + slack
    while robot.now() < t_limit:
        tick = ctrl.tick
        ctrl.step()
        mode = ctrl.mode
        if mode is Mode.DAMPING or (t_plan0 is not None and robot.fallen()):
            fell, fall_time = True, None if t_plan0 is None else robot.now() - t_plan0
            break
        if t_plan0 is None:
            if mode is Mode.PLANNING:
                t_plan0 = robot.now()
            else:
                continue
        if tick % dec != dec - 1:  # sample once per policy tick, after its last physics step
            continue
        t = robot.now() - t_plan0
        if t > args.duration:
            break
        s = robot.read_state()
        k = int(round(t / spec.dt))
        states[k] = build_state(s)
        rows["t"].append(t)
        rows["command"].append(sched.at(t))
        rows["base_lin_vel"].append(robot.base_lin_vel())
        rows["gyro"].append(np.array(robot.data.qvel[3:6]))
        rows["gravity_z"].append(robot.projected_gravity_z())
        rows["base_pos"].append(np.array(robot.data.qpos[0:3]))
    if t_plan0 is None:
        return {"fell": True, "never_planned": True, "duration": 0.0}, None
    tr = _trace(rows, fell, fall_time)
    m = episode_metrics(tr)
    m["cost"] = float(np.sum(tr.gravity_z > -0.95))
    m["infer_ms_median"] = float(np.nanmedian(link.infer_ms)) if link.infer_ms else None
    m["infer_ms_p99"] = float(np.nanpercentile(link.infer_ms, 99)) if link.infer_ms else None
    m["plans"] = len(link.chunks)
    m["cold_starts"] = int(sum(bool(c.cold) for c in link.chunks))
    m["consistency"] = _consistency(link.chunks, states, t_plan0, spec, state_scale)
    m["controller"] = {"rejected": dict(ctrl.rejected), "counts": ctrl.counts}
    m.update(ctrl.executor.switch_metrics(contract.semantics.scale))
    m.update(_forecast_errors(link, states, t_plan0, spec, state_scale))
    m["merge"], m["delay_ticks"] = ctrl.merge, ctrl.executor.delay.ticks()
    return m, tr


def latency_range(args) -> tuple[float, float]:
    """--latency in seconds as (lo, hi); (0, 0) when not given."""
    v = getattr(args, "latency", None)
    if not v:
        return 0.0, 0.0
    if len(v) > 2 or any(not np.isfinite(x) or x < 0 for x in v) or v[-1] < v[0]:
        raise ValueError(f"--latency takes MS or LO HI (0 <= LO <= HI), got {v}")
    return v[0] / 1e3, v[-1] / 1e3


def _consistency(chunks, states: dict[int, np.ndarray], t_plan0: float, spec,
                 scale: np.ndarray) -> list[float | None]:
    """Per step ahead i = 1..chunk: RMS over state dims of (planned x_{t+i} - reached x_{t+i})
    / scale, over the chunks whose actions were executed while planning."""
    errs: list[list[float]] = [[] for _ in range(spec.chunk)]
    for c in chunks:
        k0 = int(round((c.t0 - t_plan0) / spec.dt))
        if k0 < 0 or c.states is None:
            continue
        pred = np.asarray(c.states)
        for i in range(min(spec.chunk, pred.shape[0])):
            real = states.get(k0 + i + 1)
            if real is None:
                continue
            errs[i].append(float(np.sqrt(np.mean(((pred[i] - real) / scale) ** 2))))
    return [float(np.mean(e)) if e else None for e in errs]


def _forecast_errors(link, states: dict[int, np.ndarray], t_plan0: float, spec,
                     scale: np.ndarray) -> dict[str, float | None]:
    """Errors of estimates of the state at the tick each plan's first free action runs (the
    first policy tick at or after its release), RMS over state dims in normalizer units, mean
    over plans: ``stale`` = the state measured when the observation was sent (no forecast);
    ``plan`` = that state plus the change the previous plan predicts over the delay (the
    ``--start-state forecast`` rule, planner_runtime.chunking); ``dynamics`` = the plan's own
    state after its committed prefix (the dynamics model over the committed actions);
    ``sent`` = the forecast start state an observation carried (``--start-state forecast``)
    against the state at the tick it was made for."""
    dt = spec.dt

    def tick(x: float) -> int:
        return int(round((x - t_plan0) / dt))

    def err(a, b) -> float:
        return float(np.sqrt(np.mean(((np.asarray(a) - b) / scale) ** 2)))

    def planned(j: int, k: int):
        c = link.chunks[j]
        i = k - tick(c.t0)
        if i == 0:
            return link.obs_states[j]
        return np.asarray(c.states[i - 1]) if 1 <= i <= len(c.states) else None

    out: dict[str, list[float]] = {"stale": [], "plan": [], "dynamics": [], "sent": []}
    for j, c in enumerate(link.chunks):
        k_send = tick(link.sent_at[j])
        k_start = int(np.ceil((link.released_at[j] - t_plan0) / dt - 1e-6))
        real, measured = states.get(k_start), states.get(k_send)
        if real is None or measured is None or k_start <= k_send:
            continue
        out["stale"].append(err(measured, real))
        if c.t0 > link.sent_at[j] + 1e-9 and states.get(tick(c.t0)) is not None:
            out["sent"].append(err(link.obs_states[j], states[tick(c.t0)]))  # a forecast start state
        i = k_start - tick(c.t0) - 1  # states row i is for t0 + (i + 1) dt
        if c.prefix and 0 <= i < min(len(c.states), c.prefix):
            out["dynamics"].append(err(c.states[i], real))
        if j > 0:
            a, b = planned(j - 1, k_start), planned(j - 1, k_send)
            if a is not None and b is not None:
                out["plan"].append(err(measured + (a - b), real))
    return {f"forecast_err_{k}": float(np.mean(v)) if v else None for k, v in out.items()}


# --------------------------------------------------------------------------- aggregation
def summarize(metrics: list[dict]) -> dict:
    from sim.episode import aggregate

    ok = [m for m in metrics if not m.get("never_planned")]
    out = aggregate(ok) if ok else {"episodes": 0, "falls": 0}
    out["episodes"] = len(metrics)
    out["falls"] = int(sum(bool(m.get("fell")) for m in metrics))
    costs = [m["cost"] for m in ok if "cost" in m]
    if costs:
        out["cost_mean"] = float(np.mean(costs))
        out["cost_max"] = float(np.max(costs))
        out["episodes_over_budget"] = int(sum(c > COST_BUDGET for c in costs))
    if ok and "vx_rmse" in ok[0]:
        e = np.array([[m["vx_rmse"], m["vy_rmse"]] for m in ok if "vx_rmse" in m])
        out["tracking_rmse_xy"] = float(np.sqrt(np.mean(e ** 2)))
    cons = [m["consistency"] for m in ok if m.get("consistency")]
    if cons:
        arr = np.array([[np.nan if v is None else v for v in c] for c in cons], dtype=float)
        out["consistency_per_step"] = [float(v) for v in np.nanmean(arr, axis=0)]
        out["consistency_mean"] = float(np.nanmean(arr))
    for k in ("infer_ms_median", "infer_ms_p99"):
        v = [m[k] for m in ok if m.get(k) is not None]
        if v:
            out[k] = float(np.median(v)) if k.endswith("median") else float(np.max(v))
    # chunk switches: the largest jump of any episode; means of the rest
    for k, agg in (("switch_jump_max", np.max), ("switch_jump_mean", np.mean), ("step_jump_max", np.max),
                   ("step_jump_mean", np.mean),
                   ("jerk_rms", np.mean), ("forecast_err_stale", np.mean),
                   ("forecast_err_plan", np.mean), ("forecast_err_dynamics", np.mean),
                   ("forecast_err_sent", np.mean)):
        v = [m[k] for m in ok if m.get(k) is not None]
        if v:
            out[k] = float(agg(v))
    merges = {m.get("merge") for m in ok if m.get("merge")}
    if merges:
        out["merge"] = ",".join(sorted(merges))
    return out


def plot(results: dict[str, dict], traces: dict[str, object], path: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    fig, axes = plt.subplots(2, 2, figsize=(13, 8))
    first = next((tr for tr in traces.values() if tr is not None), None)
    for ax, col, what, unit in ((axes[0, 0], 0, "forward velocity", "m/s"),
                                (axes[0, 1], 2, "yaw rate", "rad/s")):
        if first is not None:
            ax.plot(first.t, first.command[:, col], "k--", lw=1.5, label=f"command {what}")
        for n in names:
            tr = traces.get(n)
            if tr is not None:
                meas = tr.base_lin_vel[:, 0] if col == 0 else tr.gyro[:, 2]
                ax.plot(tr.t, meas, lw=0.9, label=n)
        ax.set(title=f"episode 0: {what}", xlabel="s", ylabel=unit)
        ax.legend(fontsize=7)
    ax = axes[1, 0]
    x = np.arange(len(names))
    vals = [results[n].get("tracking_rmse_xy", np.nan) for n in names]
    ax.bar(x, vals, color="tab:blue")
    for i, n in enumerate(names):
        ax.text(i, 0, f"falls {results[n]['falls']}/{results[n]['episodes']}", ha="center",
                va="bottom", fontsize=7, color="white")
    ax.set_xticks(x, names, rotation=20, fontsize=8)
    ax.set(title="velocity-tracking RMSE (xy, per tick)", ylabel="m/s")
    ax = axes[1, 1]
    for n in names:
        c = results[n].get("consistency_per_step")
        if c:
            ax.plot(np.arange(1, len(c) + 1), c, "o-", label=n)
    ax.set(title="dynamics-consistency error of executed chunks", xlabel="steps ahead",
           ylabel="RMS error (normalizer units)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _engines(args) -> list[tuple[str, str]]:
    items = []
    for e in args.engine:
        if "=" in e:
            name, path = e.split("=", 1)
        else:
            name, path = Path(e).stem, e
        items.append((name, path))
    if not items:
        from planner_runtime.engines import default_engine_path

        items.append(("default (go2.onnx)", str(default_engine_path())))
    return items


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from planner_runtime.async_planner import PlannerSpec, state_scale_from_manifest
    from planner_runtime.backends import load_engine

    if getattr(args, "env", None):
        from sim.gym_eval import run_gym

        return run_gym(args)
    if args.episodes < 1 or args.duration <= 0:
        print("error: --episodes must be >= 1 and --duration > 0", file=sys.stderr)
        return 2
    if args.matrix:
        from sim.eval_matrix import run_matrix

        return run_matrix(args)
    if args.latency_sweep:
        from sim.latency_sweep import run_sweep

        return run_sweep(args)
    err = check_model_argument(args.model)
    if err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        physics_ranges(args)
        latency_range(args)
        engines = _engines(args)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    results: dict[str, dict] = {}
    traces: dict[str, object] = {}
    per_episode: dict[str, list[dict]] = {}
    t_start = time.monotonic()
    refs = [] if args.no_expert else list(dict.fromkeys(args.reference))
    for which in refs:
        name = "expert" if which == "trot" else "ppo"
        ms = []
        for i in tqdm(range(args.episodes), desc=name, disable=args.no_progress, file=sys.stderr):
            m, tr = run_expert_episode(i, args, which)
            ms.append(m)
            if i == 0:
                traces[name] = tr
        results[name] = summarize(ms)
        per_episode[name] = ms
    for name, path in engines:
        try:
            engine = load_engine(path, threads=args.threads)
            spec = PlannerSpec.from_manifest(engine.manifest, chunk=args.chunk, cfg_w=args.cfg_w)
            contract = engine_contract(engine.manifest)
        except Exception as exc:
            print(f"error: engine {name} ({path}): {exc}", file=sys.stderr)
            return 2
        scale = state_scale_from_manifest(engine.manifest, spec.S)
        ms = []
        for i in tqdm(range(args.episodes), desc=name, disable=args.no_progress, file=sys.stderr):
            m, tr = run_planner_episode(engine, spec, i, args, scale, contract)
            ms.append(m)
            if i == 0:
                traces[name] = tr
        results[name] = summarize(ms)
        results[name]["engine"] = path
        results[name]["method"] = engine.manifest.get("method", {}).get("name")
        per_episode[name] = ms
        engine.close()
    for ref_name, key in (("expert", "tracking_vs_expert"), ("ppo", "tracking_vs_ppo")):
        ref = results.get(ref_name, {}).get("tracking_rmse_xy")
        for r in results.values():
            if ref and r.get("tracking_rmse_xy") is not None:
                r[key] = r["tracking_rmse_xy"] / ref
    report = {"episodes": args.episodes, "duration_s": args.duration, "seed": args.seed,
              "cost_budget": COST_BUDGET, "wall_s": time.monotonic() - t_start,
              "conditions": {"model": args.model, "pushes": args.pushes, "randomize": args.randomize,
                             "friction": args.friction, "mass_delta": args.mass_delta,
                             "actuator_lag_ms": args.actuator_lag, "obs_latency_ms": args.obs_latency,
                             "command": args.command,
                             "latency_ms": args.latency, "merge": args.merge,
                             "start_state": args.start_state, "delay_ticks": args.delay_ticks,
                             "physics_ranges": {k: v for k, v in asdict(physics_ranges(args)).items() if v is not None}},
              "results": results}
    if args.plot:
        report["plot"] = str(plot(results, traces, args.plot))
    if args.json:
        print(json.dumps(report, default=float))
    else:
        _print_table(report)
    return 0


def print_table(results: dict[str, dict], cols: tuple[str, ...], first: str, name_w: int, col_w: int) -> None:
    """One row per method, one right-aligned column per metric ('-' where missing)."""
    print(f"{first:{name_w}s}" + "".join(f"{c[:col_w - 1]:>{col_w}s}" for c in cols))
    for n, r in results.items():
        cells = []
        for c in cols:
            v = r.get(c)
            cells.append(f"{'-':>{col_w}s}" if v is None else f"{v:{col_w}.3f}" if isinstance(v, float)
                         else f"{v!s:>{col_w}s}")
        print(f"{n[:name_w]:{name_w}s}" + "".join(cells))


def _print_table(report: dict) -> None:
    cols = ("falls", "tracking_rmse_xy", "tracking_vs_expert", "tracking_vs_ppo", "stride_vx_rmse", "yaw_rmse",
            "cost_mean", "consistency_mean", "switch_jump_max", "switch_jump_mean", "jerk_rms",
            "forecast_err_stale", "forecast_err_plan", "forecast_err_dynamics", "infer_ms_median",
            "infer_ms_p99")
    print(f"{report['episodes']} episodes x {report['duration_s']} s, seed {report['seed']}")
    print_table(report["results"], cols, "method", 28, 17)
    if report.get("plot"):
        print(f"plot: {report['plot']}")
