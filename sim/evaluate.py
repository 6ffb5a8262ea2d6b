"""`planner-runtime eval`: closed-loop evaluation of planners in the MuJoCo Go2.

Each planner engine drives the simulated robot through the unchanged controller
(``robot.controller.Controller``: safety state machine, chunk timing, command filter) with
the planner called in-process and in lockstep on the simulated clock: every observation
is answered before the next control tick, so the numbers measure the plans, not this
machine's load (plan latency is reported separately, in wall time). The expert is run on
the same seeds and command schedules as the reference. Schedules come from
``SeedSequence([seed, i])`` with a base seed (10000) that data collection does not use.

Per method: falls, velocity-tracking RMSE (per tick and stride-averaged, 1 s settling after
each command change), cost (50 Hz ticks with ``robot.observation.tilt_cost``, against the
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
RMS over state dimensions in normalizer units). ``--timing-trace RUN`` replays a real-time
run's plan turnarounds in order and its loop periods instead (``sim.timing_replay``).

The options are one typed config, ``sim.eval_config.EvalConfig``, built once from the
command line (:func:`run`); everything below reads that config.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from planner_runtime.bench.stats import summary
from planner_runtime.config import ConfigError
from robot.observation import CONDITION_NAMES
from robot.recording import RAW_SHAPES, ClosedLoopRecorder, engine_dataset_writer, new_dataset_path
from sim.eval_config import (
    EvalConfig,
    as_flags,
    config_from_args,
    given_options,
    to_argv,
    unused_options,
)
from sim.eval_config import add_arguments as add_arguments  # the CLI's options (sim/eval_config.py)
from sim.physics import check_model_argument

HELP = "closed-loop evaluation in MuJoCo: falls, tracking, cost, dynamics consistency, latency"
COST_BUDGET = 10.0


# --------------------------------------------------------------------------- episodes
def physics_ranges(cfg: EvalConfig):
    """The physics ranges an eval run asks for (one definition for every method)."""
    from dataclasses import replace

    from sim.physics import RANDOMIZED, PhysicsRanges

    r = RANDOMIZED if cfg.randomize else PhysicsRanges()
    if cfg.friction is not None:
        r = replace(r, foot_friction=cfg.friction)
    if cfg.mass_delta is not None:
        r = replace(r, trunk_mass_delta=cfg.mass_delta)
    if cfg.actuator_lag is not None:
        r = replace(r, actuator_lag=(cfg.actuator_lag / 1e3, cfg.actuator_lag / 1e3))
    if cfg.obs_latency is not None:
        r = replace(r, obs_latency=(cfg.obs_latency / 1e3, cfg.obs_latency / 1e3))
    return r.validate()


def _episode_setup(index: int, cfg: EvalConfig) -> tuple:
    from robot.controller import CommandSchedule
    from sim.commands import random_schedule
    from sim.mujoco_harness import MujocoGo2, SimConfig

    ss = np.random.SeedSequence([cfg.seed, index])
    s_sim, s_sched = (int(x.generate_state(1)[0]) for x in ss.spawn(2))
    kw = {"seed": s_sim, "model": cfg.model, "physics": physics_ranges(cfg)}
    if cfg.pushes:
        kw["push_interval"] = (4.0, 8.0)
    robot = MujocoGo2(SimConfig(**kw))
    robot.reset()
    horizon = cfg.duration + 5.0
    sched = (CommandSchedule.from_options(cfg.command, cfg.schedule)
             or random_schedule(np.random.default_rng(s_sched), horizon))
    return robot, sched


def _trace(rows: dict, fell: bool, fall_time: float | None, reason: str | None = None):
    from sim.episode import EpisodeTrace

    a = {k: np.asarray(v) for k, v in rows.items()}
    return EpisodeTrace(a["t"], a["command"], a["base_lin_vel"], a["gyro"], a["gravity_z"],
                        a["base_pos"], fell, fall_time, fall_reason=reason)


def run_expert_episode(index: int, cfg: EvalConfig, which: str = "trot") -> tuple[dict, object]:
    """A reference policy on the episode: the trot expert (its own project semantics) or
    the PPO walking policy (its legged-gym semantics)."""
    from sim.collect import make_expert
    from sim.episode import episode_metrics, expert_policy, run_episode

    robot, sched = _episode_setup(index, cfg)
    tr = run_episode(robot, expert_policy(make_expert(which)), sched, cfg.duration)
    m = episode_metrics(tr)
    m["physics"] = robot.physics.as_dict()
    return m, tr


def run_planner_episode(engine, spec, index: int, cfg: EvalConfig, state_scale: np.ndarray,
                        contract=None, on_setup=None, recorder=None, setup=None) -> tuple[dict, object]:
    """Controller + lockstep planner on one episode; metrics over the planning phase.
    ``on_setup(robot, index)`` is called once the episode's simulator exists; a
    ``recorder`` (``robot.recording.ClosedLoopRecorder``'s interface) gets every sampled state
    and executed action; ``setup`` = (robot, command schedule) replaces eval's own."""
    from planner_runtime.link import InProcessPlanner
    from robot.controller import Controller, ControllerConfig, check_engine
    from robot.observation import build_state
    from robot.safety import Mode, SafetyConfig
    from sim.episode import episode_metrics

    robot, sched = setup if setup is not None else _episode_setup(index, cfg)
    physics = robot.physics.as_dict()  # this episode's draw, reported with its metrics
    if on_setup is not None:
        on_setup(robot, index)
    # the engine's action semantics and condition layout, checked as the controller checks a
    # service's hello: ValueError when the Go2 controller cannot run it
    contract = contract or check_engine(engine.manifest)
    lat = latency_range(cfg)
    replay = timing_trace(cfg)  # a real-time run's turnarounds and loop periods (sim.timing_replay)
    link = InProcessPlanner(engine, spec, seed=index, latency=lat, clock=robot.now,
                               rng=np.random.default_rng([cfg.seed, index, 7]),
                               latencies=None if replay is None else replay.turnarounds)
    # The simulated robot starts standing: no passive phase, a short stand-up, then planning.
    safety = SafetyConfig(passive_s=0.0, stand_up_s=0.5)
    ctrl = Controller(robot, link, command=sched.at,
                      config=ControllerConfig(lockstep=lat[1] <= 0 and replay is None, max_actions=spec.chunk,
                                              replan_every=cfg.replan_every,
                                              safety=safety,
                                              semantics=contract.semantics,
                                              condition_names=contract.condition_names,
                                              merge=cfg.merge,
                                              start_state=cfg.start_state,
                                              fixed_delay=cfg.delay_ticks,
                                              horizon=spec.H))
    rows: dict[str, list] = {k: [] for k in ("t", "command", "base_lin_vel", "gyro", "gravity_z", "base_pos")}
    states: dict[int, np.ndarray] = {}  # policy tick index since planning began -> state
    fell, fall_time, t_plan0, reason = False, None, None, None
    dec = ctrl.config.policy_decimation
    t_limit = robot.now() + 4.0 + cfg.duration + 10.0  # stand-up + duration + slack
    while robot.now() < t_limit:
        tick = ctrl.tick
        ctrl.step()
        if recorder is not None:
            recorder.executed(ctrl.executor.records)
        mode = ctrl.mode
        if mode is Mode.DAMPING:  # the safety layer stopped the robot: its reason
            reason = f"safety stop: {ctrl.safety.fault}"
        elif t_plan0 is not None:
            reason = robot.fall_reason()
        if reason is not None:
            fell, fall_time = True, None if t_plan0 is None else robot.now() - t_plan0
            break
        if t_plan0 is None:
            if mode is Mode.PLANNING:
                t_plan0 = robot.now()
                if replay is not None:  # the loop's periods from here on, as they ran in real time
                    robot.tick_steps = replay.tick_steps(robot.control_dt)
            else:
                continue
        if tick % dec != dec - 1:  # sample once per policy tick, after its last physics step
            continue
        t = robot.now() - t_plan0
        if t > cfg.duration:
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
        if recorder is not None:
            recorder.sample(robot.now(), states[k], rows["command"][-1], rows["base_lin_vel"][-1])
    if t_plan0 is None:
        return {"fell": True, "never_planned": True, "duration": 0.0, "physics": physics,
                "fall_reason": reason or "never planned: the controller did not reach planning"}, None
    tr = _trace(rows, fell, fall_time, reason)
    m = episode_metrics(tr)
    m["physics"] = physics
    inf = summary(link.infer_ms)
    m["infer_ms_median"], m["infer_ms_p99"] = inf.get("median"), inf.get("p99")
    m["plans"] = len(link.chunks)
    m["cold_starts"] = int(sum(bool(c.cold) for c in link.chunks))
    m["consistency"] = _consistency(link.chunks, states, t_plan0, spec, state_scale)
    m["controller"] = {"rejected": dict(ctrl.rejected), "counts": ctrl.counts}
    m.update(ctrl.executor.switch_metrics(contract.semantics.scale))
    m.update(_forecast_errors(link, states, t_plan0, spec, state_scale))
    m["merge"], m["delay_ticks"] = ctrl.merge, ctrl.executor.delay.ticks()
    m["replan_every"] = ctrl.executor.config.interval()
    return m, tr


def timing_trace(cfg: EvalConfig):
    """--timing-trace loaded (``sim.timing_replay.TimingTrace``), None when not given.
    Raises ValueError (a bad trace, or given with --latency)."""
    if not cfg.timing_trace:
        return None
    if cfg.latency:
        raise ValueError("give --latency or --timing-trace, not both (the trace has its own plan latencies)")
    from sim.timing_replay import load_timing_trace

    return load_timing_trace(cfg.timing_trace)  # cached per path: every episode shares one read


def latency_range(cfg: EvalConfig) -> tuple[float, float]:
    """--latency in seconds as (lo, hi); (0, 0) when not given."""
    v = cfg.latency
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
    # which episodes fell, when, how (tipped over, collapsed, a safety stop) and under which
    # physics draw (the same index is the same episode, physics and command schedule for
    # every method of one run)
    out["fell_episodes"] = [{"episode": i, "fall_time_s": m.get("fall_time"), "reason": m.get("fall_reason"),
                             "physics": m.get("physics")}
                            for i, m in enumerate(metrics) if m.get("fell")]
    costs = [m["cost"] for m in ok if "cost" in m]
    if costs:
        out["cost_mean"] = float(np.mean(costs))
        out["cost_max"] = float(np.max(costs))
        # the same attribution for the episodes over the tilt budget (fallen ones included)
        over = [{"episode": i, "cost": m["cost"], "max_tilt_deg": m.get("max_tilt_deg"),
                 "fell": bool(m.get("fell")), "physics": m.get("physics")}
                for i, m in enumerate(metrics) if not m.get("never_planned") and m.get("cost", 0.0) > COST_BUDGET]
        out["episodes_over_budget"], out["over_budget_episodes"] = len(over), over
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
    intervals = sorted({int(m["replan_every"]) for m in ok if m.get("replan_every")})
    if intervals:
        out["replan_every"] = intervals[0] if len(intervals) == 1 else intervals
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


def _engines(cfg: EvalConfig) -> list[tuple[str, str]]:
    items = []
    for e in cfg.engine:
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
    """``planner-runtime eval``: the parsed options as an :class:`EvalConfig`, then :func:`run_eval`."""
    try:
        cfg = config_from_args(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return run_eval(cfg)


def run_eval(cfg: EvalConfig) -> int:
    """The evaluation ``cfg`` asks for (Go2, matrix, sweep or Gymnasium); the exit status."""
    from tqdm import tqdm

    from planner_runtime.async_planner import PlannerSpec, state_scale_from_manifest
    from planner_runtime.backends import load_engine
    from robot.controller import check_engine

    unused = unused_options(cfg)
    if unused:
        one = len(unused) == 1
        where = (f"{'does' if one else 'do'} not apply to a Gymnasium evaluation (--env)" if cfg.env
                 else f"{'applies' if one else 'apply'} only with --env ID (a Gymnasium evaluation)")
        print(f"error: {as_flags(unused)} {where}", file=sys.stderr)
        return 2
    if cfg.no_expert and "reference" in given_options(cfg):
        # --no-expert skips every reference policy: an explicit --reference would run nothing
        print(f"error: --no-expert skips every reference policy, so --reference {' '.join(cfg.reference)} "
              "would run none; drop --no-expert (--reference ppo alone runs the PPO policy without "
              "the trot expert)", file=sys.stderr)
        return 2
    if cfg.env:
        from sim.gym_eval import run_gym

        return run_gym(cfg)
    if cfg.episodes < 1 or cfg.duration <= 0:
        print("error: --episodes must be >= 1 and --duration > 0", file=sys.stderr)
        return 2
    if cfg.matrix:
        from sim.eval_matrix import run_matrix

        return run_matrix(cfg)
    if cfg.latency_sweep:
        from sim.latency_sweep import run_sweep

        return run_sweep(cfg)
    if cfg.speed_sweep:
        from sim.speed_sweep import run_sweep as run_speed_sweep

        return run_speed_sweep(cfg)
    if cfg.plan_fidelity:
        from sim.plan_fidelity import run_fidelity

        return run_fidelity(cfg)
    err = check_model_argument(cfg.model)
    if err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        physics_ranges(cfg)
        latency_range(cfg)
        replay = timing_trace(cfg)
        from robot.controller import CommandSchedule

        CommandSchedule.from_options(cfg.command, cfg.schedule)
        engines = _engines(cfg)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if cfg.record and len(engines) != 1:
        print(f"error: --record writes the episodes of exactly one engine ({len(engines)} --engine given)",
              file=sys.stderr)
        return 2
    if cfg.record:  # refused before any episode runs (the writer opens with the engine)
        from planner_runtime.dataset import DatasetError

        try:
            new_dataset_path(cfg.record)
        except DatasetError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    if cfg.ranker_data and not cfg.ranker_check:
        print("error: --ranker-data needs --ranker-check", file=sys.stderr)
        return 2
    # every engine is opened and checked before any episode runs: a bad --engine found after
    # the reference policies' episodes would throw them away
    opened: list[_Opened] = []
    for name, path in engines:
        engine = None
        try:
            engine = load_engine(path, threads=cfg.threads)
            spec = PlannerSpec.from_manifest(engine.manifest, chunk=cfg.chunk, cfg_w=cfg.cfg_w)
            opened.append(_Opened(name, path, engine, spec, check_engine(engine.manifest)))
        except Exception as exc:
            print(f"error: engine {name} ({path}): {exc}", file=sys.stderr)
            if engine is not None:
                engine.close()
            return _close_all(opened, 2)
    results: dict[str, dict] = {}
    traces: dict[str, object] = {}
    per_episode: dict[str, list[dict]] = {}
    t_start = time.monotonic()
    refs = [] if cfg.no_expert else list(dict.fromkeys(cfg.reference))
    for which in refs:
        name = "expert" if which == "trot" else "ppo"
        ms = []
        for i in tqdm(range(cfg.episodes), desc=name, disable=cfg.no_progress, file=sys.stderr):
            m, tr = run_expert_episode(i, cfg, which)
            ms.append(m)
            if i == 0:
                traces[name] = tr
        results[name] = summarize(ms)
        per_episode[name] = ms
    writer = recording = None
    n_recorded = 0
    for name, path, engine, spec, contract in opened:
        scale = state_scale_from_manifest(engine.manifest, spec.S)
        scorer = None
        if cfg.ranker_check and spec.B > 1:  # an N = 1 engine runs as the closed-loop baseline
            from sim.ranker_check import CandidateScorer, open_writer

            try:
                gamma = engine.manifest.method.knobs.get("gamma")
                if not isinstance(gamma, (int, float)):  # the ranker's discount, from its engine
                    raise ValueError("--ranker-check needs the ranker's discount (method knob 'gamma') "
                                     "in the engine's manifest; this engine records none")
                if cfg.ranker_data and writer is None:
                    writer = open_writer(cfg.ranker_data, engine.manifest, cfg)
                scorer = CandidateScorer(engine, contract.semantics, float(gamma),
                                         list(contract.condition_names), writer)
            except ValueError as exc:
                print(f"error: engine {name} ({path}): {exc}", file=sys.stderr)
                return _close_all(opened, 2)
        if cfg.record:
            recording = engine_dataset_writer(cfg.record, engine.manifest, {
                "collector": "planner-runtime eval --record (robot/recording.py)", "engine": path,
                "eval_argv": to_argv(cfg)}, list(CONDITION_NAMES), RAW_SHAPES)
        ms = []
        for i in tqdm(range(cfg.episodes), desc=name, disable=cfg.no_progress, file=sys.stderr):
            rec = ClosedLoopRecorder() if recording is not None else None
            m, tr = run_planner_episode(scorer or engine, spec, i, cfg, scale, contract,
                                        on_setup=scorer.attach if scorer else None, recorder=rec)
            if recording is not None and rec is not None:
                for ep in rec.episodes(bool(m.get("fell"))):
                    recording.append(ep)
                    n_recorded += 1
            ms.append(m)
            if i == 0:
                traces[name] = tr
        results[name] = summarize(ms)
        results[name]["engine"] = path
        if scorer is not None:
            from sim.ranker_check import summarize as ranker_summary

            results[name]["ranker_check"] = ranker_summary(scorer.records)
        results[name]["method"] = engine.manifest.method.name
        per_episode[name] = ms
        engine.close()
    if writer is not None:
        writer.close()
    recorded = None
    if recording is not None:
        recorded = {"path": cfg.record, "episodes": n_recorded, "samples": recording.committed}
        recording.close()
    for ref_name, key in (("expert", "tracking_vs_expert"), ("ppo", "tracking_vs_ppo")):
        ref = results.get(ref_name, {}).get("tracking_rmse_xy")
        for r in results.values():
            if ref and r.get("tracking_rmse_xy") is not None:
                r[key] = r["tracking_rmse_xy"] / ref
    report = {"episodes": cfg.episodes, "duration_s": cfg.duration, "seed": cfg.seed,
              "cost_budget": COST_BUDGET, "wall_s": time.monotonic() - t_start,
              "conditions": {"model": cfg.model, "pushes": cfg.pushes, "randomize": cfg.randomize,
                             "friction": cfg.friction, "mass_delta": cfg.mass_delta,
                             "actuator_lag_ms": cfg.actuator_lag, "obs_latency_ms": cfg.obs_latency,
                             "command": cfg.command, "schedule": cfg.schedule,
                             "latency_ms": cfg.latency,
                             "timing_trace": None if replay is None else replay.summary(), "merge": cfg.merge,
                             "start_state": cfg.start_state, "delay_ticks": cfg.delay_ticks,
                             "physics_ranges": {k: v for k, v in asdict(physics_ranges(cfg)).items() if v is not None}},
              "results": results}
    if recorded is not None:
        report["recorded"] = recorded
    if cfg.plot:
        report["plot"] = str(plot(results, traces, cfg.plot))
    if cfg.json:
        print(json.dumps(report, default=float))
    else:
        _print_table(report)
    return 0


class _Opened(NamedTuple):
    """An --engine opened and checked before any episode runs."""
    name: str
    path: str
    engine: Any
    spec: Any
    contract: Any


def _close_all(opened: list[_Opened], rc: int) -> int:
    """Close the engines ``opened``; return ``rc``."""
    for entry in opened:
        entry.engine.close()
    return rc


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
    for name, r in report["results"].items():
        if r.get("fell_episodes"):
            print(f"{name} fell in episodes " + "; ".join(
                f"{f['episode']}" + ("" if f["fall_time_s"] is None else f" at {f['fall_time_s']:.1f} s")
                + (f" ({f['reason']})" if f.get("reason") else "")
                for f in r["fell_episodes"]))
        if r.get("over_budget_episodes"):
            print(f"{name} over the cost budget ({COST_BUDGET:g}) in episodes " + "; ".join(
                f"{o['episode']} (cost {o['cost']:g}" + (", fell)" if o["fell"] else ")")
                for o in r["over_budget_episodes"]))
    rec = report.get("recorded")
    if rec:
        print(f"recorded {rec['episodes']} episodes, {rec['samples']} samples -> {rec['path']}")
    for name, r in report["results"].items():
        rc = r.get("ranker_check")
        if rc and rc.get("plans"):
            lo, hi = rc["gain_ci95"]
            print(f"ranker check {name}: {rc['plans']} plans x {rc['candidates']} candidates; true return of "
                  f"the pick - mean candidate {rc['gain_mean']:+.4f} (95% CI {lo:+.4f} .. {hi:+.4f}; "
                  f"perfect ranker {rc['oracle_gain_mean']:+.4f}), win rate {rc['win_rate']:.3f} "
                  f"(random 0.5), rank corr. {rc['rank_corr_mean']:+.3f}, cost of the pick - mean "
                  f"{rc['cost_gain_mean']:+.4f}: {'beats' if rc['beats_random'] else 'does not measurably beat'} "
                  f"a random candidate")
    if report.get("plot"):
        print(f"plot: {report['plot']}")
