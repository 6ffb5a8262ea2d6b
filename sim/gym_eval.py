"""`planner-runtime eval --env ID`: closed-loop evaluation on any Gymnasium environment.

    planner-runtime eval --env InvertedPendulum-v5 --engine pend=pend.onnx --episodes 10 \\
        [--condition 0.0 | --condition-hook my_hooks.py:condition] [--policy random] [--json]
    planner-runtime eval --env InvertedPendulum-v5 --policy my_hooks.py:policy --episodes 50 \\
        --record data/pend.h5          # collect a dataset from a policy, in the project's format

Any environment with Box observation and action spaces works. Each engine plans in
lockstep with the environment (``planner_runtime.link.InProcessPlanner``: the runtime's
``AsyncPlanner`` warm-start bookkeeping on the caller's thread, stamps on the simulated
clock t = step * dt): an observation is sent, the chunk it answers is executed for the
engine's chunk size (``--chunk`` to change), actions picked by the chunk's own timing rule
(``planner_runtime.chunking``), then the next observation is planned. The engine must fit the
environment: S = the observation size, A = the action size, and the manifest's control dt
= the environment's ``dt`` (``env.unwrapped.dt``), else it is refused. Actions outside the
action space's bounds are counted, then clipped before ``env.step``.

The condition: ``--condition V ...`` (a constant vector of the engine's C), or
``--condition-hook MODULE:FUNCTION`` (or ``path/file.py:FUNCTION``) called as
``fn(observation, step) -> [C]``; for an engine whose only condition is the constant
``none`` column of data without conditions (``planner_runtime.dataset_import``), zeros.

Reference policies (``--policy``, repeatable): ``random`` (uniform over the action space,
seeded) or ``MODULE:FUNCTION`` / ``path/file.py:FUNCTION`` called as ``fn(observation) ->
action``; they run on the same seeds. ``--record OUT.h5`` writes the reference policy's
episodes (one policy) as a new dataset: states obs0.., actions act0.., the condition used
(``none`` = 0 without one), rewards, no costs, terminals (terminated) and timeouts
(truncated), dt = the environment's, robot = the environment id.

Per policy: episodes, returns (mean, std, min, max), episode length, failures (terminated),
actions outside the bounds before clipping (fraction, and the most extreme value relative to
the bounds), and for engines plans, cold starts, inference ms and the dynamics consistency of
the executed chunks (predicted vs reached state, RMS in normalizer units, per step ahead).
``--diversity N`` adds the spread of N plans from the first state of each episode
(``planner_runtime.diversity``), at the engine's temperature or ``--temperature``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from planner_runtime.bench.stats import summary

if TYPE_CHECKING:
    from sim.eval_config import EvalConfig


def add_gym_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("Gymnasium environments (--env)")
    g.add_argument("--env", default=None, metavar="ID",
                   help="evaluate on this Gymnasium environment (Box spaces) instead of the MuJoCo Go2")
    g.add_argument("--env-kwargs", default=None, metavar="JSON", help="keyword arguments for gymnasium.make")
    g.add_argument("--max-steps", type=int, default=None, help="time limit in steps (default: the env's)")
    g.add_argument("--condition", type=float, nargs="+", default=None, metavar="V",
                   help="constant condition vector (the engine's C values)")
    g.add_argument("--condition-hook", default=None, metavar="MOD:FN",
                   help="condition per step: fn(observation, step) -> [C] (module or path/file.py)")
    g.add_argument("--policy", action="append", default=[], metavar="random|MOD:FN",
                   help="reference policy run on the same seeds: random, or fn(observation) -> action")
    g.add_argument("--temperature", type=float, default=None, help="override the engine's noise temperature")
    g.add_argument("--diversity", type=int, default=0, metavar="N",
                   help="also measure the spread of N plans from each episode's first state")


# --------------------------------------------------------------------------- hooks
def load_hook(ref: str) -> Callable[..., Any]:
    """``module:function`` or ``path/to/file.py:function`` -> the callable."""
    if ":" not in ref:
        raise ValueError(f"a hook is MODULE:FUNCTION or FILE.py:FUNCTION, got {ref!r}")
    mod_ref, name = ref.rsplit(":", 1)
    if mod_ref.endswith(".py"):
        path = Path(mod_ref)
        if not path.is_file():
            raise ValueError(f"hook file not found: {path}")
        spec = importlib.util.spec_from_file_location(f"_prt_hook_{path.stem}", path)
        if spec is None or spec.loader is None:
            raise ValueError(f"cannot load hook file {path}")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    else:
        mod = importlib.import_module(mod_ref)
    fn = getattr(mod, name, None)
    if not callable(fn):
        raise ValueError(f"{ref}: {name!r} is not a callable in {mod_ref}")
    return fn


def make_env(cfg: EvalConfig):
    """The Gymnasium environment, checked: Box observation and action spaces."""
    try:
        import gymnasium as gym
        from gymnasium.spaces import Box
    except ImportError as exc:
        raise ValueError("eval --env needs gymnasium: pip install 'planner-runtime[sim]' "
                         "(or pip install 'gymnasium[mujoco]')") from exc
    kw = json.loads(cfg.env_kwargs) if cfg.env_kwargs else {}
    if cfg.max_steps is not None:
        kw["max_episode_steps"] = int(cfg.max_steps)
    try:
        env = gym.make(cfg.env, **kw)
    except Exception as exc:  # unknown id, missing extra (box2d, ...), bad kwargs
        raise ValueError(f"cannot make Gymnasium environment {cfg.env!r}: {type(exc).__name__}: {exc}") from exc
    for what, space in (("observation", env.observation_space), ("action", env.action_space)):
        if not isinstance(space, Box) or len(space.shape) != 1:
            env.close()
            raise ValueError(f"{cfg.env}: the {what} space must be a 1-D Box, got {space}")
    return env


def env_dt(env) -> float | None:
    dt = getattr(env.unwrapped, "dt", None)
    try:
        return None if dt is None else float(dt)
    except (TypeError, ValueError):
        return None


def condition_fn(cfg: EvalConfig, C: int, names: list[str] | None) -> Callable[[np.ndarray, int], np.ndarray]:
    """The condition for (observation, step): constant, a hook, or the ``none`` column."""
    if cfg.condition is not None and cfg.condition_hook is not None:
        raise ValueError("give --condition or --condition-hook, not both")
    if cfg.condition_hook is not None:
        hook = load_hook(cfg.condition_hook)

        def from_hook(obs: np.ndarray, step: int) -> np.ndarray:
            c = np.asarray(hook(obs, step), np.float32).reshape(-1)
            if c.shape != (C,) or not np.all(np.isfinite(c)):
                raise ValueError(f"--condition-hook returned {c.shape} (finite: {bool(np.all(np.isfinite(c)))}), "
                                 f"expected {C} finite values")
            return c
        return from_hook
    if cfg.condition is not None:
        c = np.asarray(cfg.condition, np.float32)
        if c.shape != (C,):
            raise ValueError(f"--condition has {c.size} values; the engine's condition has C={C}"
                             + (f" ({', '.join(names)})" if names else ""))
        return lambda obs, step: c
    if names in (None, ["none"]) and (names is not None or C == 1):
        z = np.zeros(C, np.float32)
        return lambda obs, step: z
    raise ValueError(f"the engine is conditioned on {C} values ({', '.join(names or [])}): give them with "
                     "--condition V ... or --condition-hook MOD:FN")


def recorded_condition(cfg: EvalConfig) -> Callable[[np.ndarray, int], np.ndarray]:
    """The condition recorded with a reference policy's episodes: --condition, the hook's
    value (any fixed size), or the constant ``none`` column (0)."""
    if cfg.condition is not None and cfg.condition_hook is not None:
        raise ValueError("give --condition or --condition-hook, not both")
    if cfg.condition_hook is not None:
        hook = load_hook(cfg.condition_hook)
        return lambda obs, step: np.asarray(hook(obs, step), np.float32).reshape(-1)
    c = np.asarray(cfg.condition if cfg.condition is not None else [0.0], np.float32)
    return lambda obs, step: c


def reference_policy(ref: str, env, seed: int) -> Callable[[np.ndarray], np.ndarray]:
    if ref == "random":
        space = env.action_space
        rng = np.random.default_rng(seed)
        return lambda obs: rng.uniform(space.low, space.high).astype(np.float32)
    fn = load_hook(ref)
    return lambda obs: np.asarray(fn(obs), np.float32).reshape(-1)


# --------------------------------------------------------------------------- episodes
def _bounds_stats(acts: list[np.ndarray], low: np.ndarray, high: np.ndarray) -> dict[str, Any]:
    a = np.asarray(acts, np.float64).reshape(len(acts), -1)
    span = np.where(np.isfinite(high - low), high - low, 1.0)
    below = (low - a) / span
    above = (a - high) / span
    out = (a < low - 1e-6) | (a > high + 1e-6)
    return {"actions_out_of_bounds": float(out.any(axis=1).mean()) if len(a) else 0.0,
            "action_min": a.min(axis=0).tolist() if len(a) else None,
            "action_max": a.max(axis=0).tolist() if len(a) else None,
            "worst_excess": float(max(below.max(initial=-np.inf), above.max(initial=-np.inf)))}


def run_episode(env, seed: int, act_fn: Callable[[np.ndarray, int], np.ndarray],
                cond_fn: Callable[[np.ndarray, int], np.ndarray], record: bool = False) -> dict[str, Any]:
    """One episode; ``act_fn(obs, step)`` gives the raw action (clipped here before env.step)."""
    low, high = env.action_space.low.astype(np.float64), env.action_space.high.astype(np.float64)
    obs, _ = env.reset(seed=seed)
    ret, steps, terminated, truncated = 0.0, 0, False, False
    acts: list[np.ndarray] = []
    rows: dict[str, list] = {"observations": [], "actions": [], "conditions": [], "rewards": []}
    while not (terminated or truncated):
        o = np.asarray(obs, np.float32)
        c = cond_fn(o, steps)
        a = np.asarray(act_fn(o, steps), np.float64).reshape(-1)
        if not np.all(np.isfinite(a)):
            raise RuntimeError(f"non-finite action at step {steps}: {a}")
        acts.append(a)
        a_exec = np.clip(a, low, high)
        obs, r, terminated, truncated, _ = env.step(a_exec.astype(env.action_space.dtype))
        ret += float(r)
        steps += 1
        if record:
            rows["observations"].append(o)
            rows["actions"].append(a_exec.astype(np.float32))
            rows["conditions"].append(np.asarray(c, np.float32))
            rows["rewards"].append(float(r))
    m = {"return": ret, "length": steps, "terminated": bool(terminated), **_bounds_stats(acts, low, high)}
    if record:
        m["_rows"] = rows
    return m


class EngineActor:
    """An engine as ``act_fn``: plans in lockstep on the simulated clock, executes ``chunk``
    actions of each plan by the runtime's chunk rules (planner_runtime.chunking, the fixed
    ``hold`` schedule), records predicted vs reached states for the consistency metric."""

    def __init__(self, engine, spec, cond_fn, seed: int, dt: float) -> None:
        from planner_runtime.chunking import ChunkConfig, ChunkExecutor
        from planner_runtime.link import InProcessPlanner

        self.link = InProcessPlanner(engine, spec, seed=seed)
        self.spec, self.cond_fn, self.dt = spec, cond_fn, dt
        self.executor = ChunkExecutor(ChunkConfig(merge="hold", execute=spec.chunk), dt=dt,
                                      horizon=spec.H)
        self.seq = 0
        self.pred: dict[int, np.ndarray] = {}  # step -> predicted state (of executed rows)
        self.reached: dict[int, np.ndarray] = {}
        self.ahead: dict[int, int] = {}  # step -> steps ahead of its plan

    def __call__(self, obs: np.ndarray, step: int) -> np.ndarray:
        from planner_runtime.protocol import Observation

        t = step * self.dt
        self.reached[step] = obs
        ex = self.executor
        if ex.due(step, t):
            self.link.send_observation(Observation(self.seq, t, obs, self.cond_fn(obs, step)))
            ex.sent(self.seq, t, step, obs)
            self.seq += 1
            ex.offer(self.link.poll_chunk(), t, next_seq=self.seq)
        a = ex.action(t)
        chunk = ex.current
        if a is None or chunk is None:
            raise RuntimeError(f"no action at step {step}: refused chunks {ex.rejected}")
        i = int(round((t - chunk.t0) / self.dt))
        self.pred[step + 1] = np.asarray(chunk.states[i], np.float64)
        self.ahead[step + 1] = i + 1
        return np.asarray(a, np.float64)

    def consistency(self, scale: np.ndarray) -> list[float | None]:
        errs: list[list[float]] = [[] for _ in range(self.spec.chunk)]
        for k, p in self.pred.items():
            if k in self.reached:
                errs[self.ahead[k] - 1].append(float(np.sqrt(np.mean(((p - self.reached[k]) / scale) ** 2))))
        return [float(np.mean(e)) if e else None for e in errs]


def summarize(ms: list[dict[str, Any]]) -> dict[str, Any]:
    r = np.array([m["return"] for m in ms], np.float64)
    out: dict[str, Any] = {
        "episodes": len(ms), "return_mean": float(r.mean()), "return_std": float(r.std()),
        "return_min": float(r.min()), "return_max": float(r.max()),
        "length_mean": float(np.mean([m["length"] for m in ms])),
        "terminated": int(sum(m["terminated"] for m in ms)),
        "actions_out_of_bounds": float(np.mean([m["actions_out_of_bounds"] for m in ms])),
        "worst_excess": float(max(m["worst_excess"] for m in ms)),
        "action_min": np.min([m["action_min"] for m in ms], axis=0).tolist(),
        "action_max": np.max([m["action_max"] for m in ms], axis=0).tolist(),
    }
    for k in ("plans", "cold_starts"):
        if k in ms[0]:
            out[k] = int(sum(m[k] for m in ms))
    inf = summary(v for m in ms for v in m.get("_infer_ms", []))
    if inf:
        out["infer_ms_median"], out["infer_ms_p99"] = inf["median"], inf["p99"]
    cons = [m["consistency"] for m in ms if m.get("consistency")]
    if cons:
        arr = np.array([[np.nan if v is None else v for v in c] for c in cons], dtype=float)
        with np.errstate(all="ignore"):
            per = np.nanmean(arr, axis=0)
        out["consistency_per_step"] = [None if np.isnan(v) else float(v) for v in per]
        out["consistency_mean"] = float(np.nanmean(arr))
    return out


def _record(path: str, env_id: str, dt: float, eps: list[dict[str, Any]], cond_names: list[str],
            policy: str, seed: int) -> dict[str, Any]:
    from planner_runtime.dataset import DatasetWriter, Episode
    from robot.recording import new_dataset_path

    out = new_dataset_path(path)
    rows0 = eps[0]["_rows"]
    S, A = len(rows0["observations"][0]), len(rows0["actions"][0])
    with DatasetWriter(out, [f"obs{i}" for i in range(S)], [f"act{i}" for i in range(A)], cond_names, dt,
                       robot=env_id, costs=False,
                       provenance={"collector": "planner-runtime eval --env --record", "env": env_id,
                                   "policy": policy, "seed": seed}) as w:
        for m in eps:
            rw = m["_rows"]
            w.append(Episode(np.asarray(rw["observations"], np.float32), np.asarray(rw["actions"], np.float32),
                             np.asarray(rw["conditions"], np.float32), np.asarray(rw["rewards"], np.float32),
                             None, terminal=m["terminated"]))
    return {"path": str(out), "episodes": len(eps), "samples": int(sum(m["length"] for m in eps))}


# --------------------------------------------------------------------------- command
def run_gym(cfg: EvalConfig) -> int:
    from planner_runtime.async_planner import PlannerSpec, state_scale_from_manifest
    from planner_runtime.backends import load_engine
    from planner_runtime.dataset import DatasetError

    if cfg.episodes < 1:
        print("error: --episodes must be >= 1", file=sys.stderr)
        return 2
    if not cfg.engine and not cfg.policy:
        print("error: eval --env needs an engine (--engine NAME=PATH) or a reference policy (--policy)",
              file=sys.stderr)
        return 2
    if cfg.record and len(cfg.policy) != 1:
        print("error: --record writes the episodes of exactly one --policy", file=sys.stderr)
        return 2
    try:
        env = make_env(cfg)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    dt = env_dt(env)
    obs_dim, act_dim = int(env.observation_space.shape[0]), int(env.action_space.shape[0])
    seeds = [cfg.seed + i for i in range(cfg.episodes)]
    t_start = time.monotonic()
    results: dict[str, Any] = {}
    report: dict[str, Any] = {"env": cfg.env, "dt": dt, "obs_dim": obs_dim, "act_dim": act_dim,
                              "action_low": env.action_space.low.tolist(),
                              "action_high": env.action_space.high.tolist(),
                              "episodes": cfg.episodes, "seeds": [seeds[0], seeds[-1]], "results": results}
    try:
        for ref in cfg.policy:
            if cfg.record and dt is None:
                raise ValueError(f"{cfg.env} has no dt (env.unwrapped.dt): cannot record a dataset")
            cfn = recorded_condition(cfg)
            ms = []
            for s in seeds:
                pol = reference_policy(ref, env, s)
                ms.append(run_episode(env, s, lambda o, k, pol=pol: pol(o), cfn, record=bool(cfg.record)))
            results[f"policy:{ref}"] = summarize(ms)
            if cfg.record:
                C = len(ms[0]["_rows"]["conditions"][0])
                names = ["none"] if cfg.condition is None and cfg.condition_hook is None else \
                    [f"cond{i}" for i in range(C)]
                report["recorded"] = _record(cfg.record, cfg.env, dt, ms, names, ref, seeds[0])
        for item in cfg.engine:
            name, path = item.split("=", 1) if "=" in item else (Path(item).stem, item)
            engine = load_engine(path, threads=cfg.threads)
            m = engine.manifest
            spec = PlannerSpec.from_manifest(m, chunk=cfg.chunk, cfg_w=cfg.cfg_w,
                                             temperature=cfg.temperature)
            if (spec.S, spec.A) != (obs_dim, act_dim):
                raise ValueError(f"engine {name}: S={spec.S}, A={spec.A} but {cfg.env} has "
                                 f"{obs_dim} observations and {act_dim} actions")
            if dt is not None and abs(spec.dt - dt) > 1e-9 * max(1.0, dt):
                raise ValueError(f"engine {name}: control dt {spec.dt} s (manifest) but {cfg.env} steps "
                                 f"{dt} s: the plans' timing would be wrong")
            step_dt = spec.dt if dt is None else dt
            names = list(m.observation.condition_names)
            cfn = condition_fn(cfg, spec.C, names)
            scale = state_scale_from_manifest(m, spec.S)
            ms = []
            for i, s in enumerate(seeds):
                actor = EngineActor(engine, spec, cfn, seed=i, dt=step_dt)
                ep = run_episode(env, s, actor, cfn)
                ep.update(plans=len(actor.link.chunks), cold_starts=int(sum(bool(c.cold) for c in actor.link.chunks)),
                          consistency=actor.consistency(scale), _infer_ms=actor.link.infer_ms)
                ms.append(ep)
            res = summarize(ms)
            res.update(engine=path, method=m.method.name, manifest_dt=spec.dt, chunk=spec.chunk,
                       temperature=spec.temperature, robot=m.robot.name,
                       state_names=list(m.observation.state_names),
                       action_names=list(m.observation.action_names),
                       condition_names=names)
            if cfg.diversity:
                res["diversity"] = _diversity(env, engine, spec, cfn, seeds, cfg.diversity)
            results[name] = res
            engine.close()
    except (ValueError, DatasetError, OSError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        env.close()
    report["wall_s"] = time.monotonic() - t_start
    if cfg.json:
        print(json.dumps(report))
    else:
        _print(report)
    return 0


def _diversity(env, engine, spec, cfn, seeds: list[int], n: int) -> dict[str, Any]:
    from planner_runtime.diversity import spread_over_states

    states, conds = [], []
    for s in seeds:
        obs, _ = env.reset(seed=s)
        o = np.asarray(obs, np.float32)
        states.append(o)
        conds.append(cfn(o, 0))
    return {"cold": spread_over_states(engine, spec, states, conds, n),
            "warm": spread_over_states(engine, spec, states, conds, n, warm=True)}


def _print(report: dict[str, Any]) -> None:
    print(f"{report['env']}: dt {report['dt']} s, {report['obs_dim']} observations, {report['act_dim']} actions, "
          f"{report['episodes']} episodes (seeds {report['seeds'][0]}..{report['seeds'][1]})")
    cols = ("return_mean", "return_std", "length_mean", "terminated", "actions_out_of_bounds",
            "consistency_mean", "infer_ms_median")
    from sim.evaluate import print_table

    print_table(report["results"], cols, "policy", 24, 19)
    for n, r in report["results"].items():
        if "diversity" in r:
            for mode, d in r["diversity"].items():
                print(f"{n[:24]:24s} spread of {d['n']} plans ({mode}, temperature {d['temperature']:g}): "
                      f"{d['spread']:.4f} (first action {d['spread_first_action']:.4f})")
    if report.get("recorded"):
        rec = report["recorded"]
        print(f"recorded {rec['episodes']} episodes, {rec['samples']} samples -> {rec['path']}")
