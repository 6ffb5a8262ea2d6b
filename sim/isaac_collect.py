"""Vectorized Go2 data collection in Isaac Lab, into the project's dataset format.

``collect`` runs N robots at once (``sim.isaac_harness.IsaacGo2Sim``), each driven by its own
instance of an expert or policy at 50 Hz, and appends every finished episode to a
``planner_runtime.dataset.DatasetWriter`` as soon as it ends (fall or time limit), then
resets that robot and starts the next episode there. The samples follow the MuJoCo
collector (``sim.collect``) exactly, so the two datasets can be mixed:

  observations  build_state(LowState at tick t)                 (robot.observation)
  actions       target_to_action(clean target)                 (the label)
  conditions    the velocity command [vx, vy, yaw] (sim.commands.random_schedule per episode)
  executed      clean target + N(0, action_noise^2), clipped to the joint limits, in raw/
  rewards/costs reward_cost at the state after the tick (t + 20 ms)
  raw/*         IMU, motor, foot force, privileged base velocity/position, time

The expert/policy is any object with ``act(state: LowState, command, t) -> (target, LowCmd)``
(``sim.expert.TrotExpert``, the default) or a callable ``(state, command, t) -> LowCmd``;
``--expert module:attr`` names a class or zero-argument factory. Episode i's command
schedule and noise come from ``SeedSequence([seed, i])``, as in ``sim.collect``.

``collect`` needs only the batch interface of the sim (``num_envs``, ``decimation``,
``reset``, ``read_states``, ``write_commands``, ``step``, ``now``, ``fallen``), so it is tested
here on a batch of MuJoCo robots; the Isaac Lab run itself needs a GPU machine:

    python -m sim.isaac_collect --num-envs 256 --episodes 512 --out data/go2_isaac.h5
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from robot.go2_constants import (
    NUM_JOINTS,
    POLICY_DT,
    clamp_target,
    target_to_action,
)
from robot.observation import (
    ACTION_NAMES,
    CONDITION_NAMES,
    STATE_NAMES,
    build_condition,
    observation_spec,
    state_reward_cost,
)
from robot.types import LowCmd, LowState

DEFAULT_EXPERT = "sim.expert:TrotExpert"
RAW_FIELDS = ("quaternion", "gyroscope", "accelerometer", "q", "dq", "tau_est", "foot_force",
              "base_lin_vel", "base_pos")


@dataclass
class CollectConfig:
    episodes: int = 16
    episode_duration: float = 20.0  # s (time limit: the episode ends as a timeout)
    action_noise: float = 0.05  # rad, std of the noise on the executed target
    seed: int = 0
    first_episode: int = 0  # index of the first episode (seeds continue across --append)

    def validate(self) -> CollectConfig:
        if self.episodes < 1:
            raise ValueError(f"episodes must be >= 1, got {self.episodes}")
        if not self.episode_duration >= POLICY_DT:
            raise ValueError(f"episode_duration must be >= {POLICY_DT} s, got {self.episode_duration}")
        if not self.action_noise >= 0:
            raise ValueError(f"action_noise must be >= 0, got {self.action_noise}")
        return self


def load_expert(spec: str) -> Callable[[], Any]:
    """'module:attr' -> a zero-argument factory of expert/policy instances."""
    mod_name, sep, attr = spec.partition(":")
    if not sep or not mod_name or not attr:
        raise ValueError(f"expert must be given as 'module:attr', got {spec!r}")
    obj = getattr(importlib.import_module(mod_name), attr)
    if not callable(obj):
        raise ValueError(f"{spec} is not a class or factory")
    return obj


def _act(policy: Any, state: LowState, command: np.ndarray, t: float) -> tuple[np.ndarray, LowCmd]:
    out = policy.act(state, command, t) if hasattr(policy, "act") else policy(state, command, t)
    if isinstance(out, LowCmd):
        # a joint without position control has no target (its q is the SDK's PosStopF):
        # label it with where the joint is
        held = np.asarray(out.kp) > 0
        return np.where(held, np.asarray(out.q, dtype=np.float64), np.asarray(state.q, dtype=np.float64)), out
    target, low = out
    return np.asarray(target, dtype=np.float64), low


class _Episode:
    """Per-env buffers of the episode in progress."""

    def __init__(self, index: int, seed: int, t0: float, policy: Any, duration: float):
        from sim.commands import random_schedule

        ss = np.random.SeedSequence([seed, index])
        _s_sim, s_sched, s_noise = (int(x.generate_state(1)[0]) for x in ss.spawn(3))
        self.index = index
        self.t0 = t0
        self.schedule = random_schedule(np.random.default_rng(s_sched), duration)
        self.noise = np.random.default_rng(s_noise)
        self.policy = policy
        if hasattr(policy, "reset"):
            policy.reset()
        self.rows: dict[str, list] = {k: [] for k in ("obs", "act", "cond", "rew", "cost", *RAW_FIELDS,
                                                      "target_executed", "time", "noise_level")}

    def __len__(self) -> int:
        return len(self.rows["obs"])

    def to_episode(self, terminal: bool):
        from planner_runtime.dataset import Episode

        r = self.rows
        f32 = np.float32
        raw = {k: np.asarray(r[k], dtype=f32) for k in (*RAW_FIELDS, "target_executed", "time", "noise_level")}
        return Episode(np.asarray(r["obs"], f32), np.asarray(r["act"], f32), np.asarray(r["cond"], f32),
                       np.asarray(r["rew"], f32), np.asarray(r["cost"], f32), terminal, raw)


def collect(sim: Any, writer: Any, make_policy: Callable[[], Any], config: CollectConfig,
            progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Run ``sim``'s envs until ``config.episodes`` episodes are written; returns counts.

    Episodes still running when the target is reached are discarded (never half-written).
    """
    cfg = config.validate()
    n_env = int(sim.num_envs)
    T = int(round(cfg.episode_duration / POLICY_DT))
    policies = [make_policy() for _ in range(n_env)]
    next_index = cfg.first_episode
    sim.reset()
    t_now = sim.now()
    eps: list[_Episode] = []
    for i in range(n_env):
        eps.append(_Episode(next_index, cfg.seed, t_now, policies[i], cfg.episode_duration))
        next_index += 1
    written = falls = samples = 0
    wall0 = time.monotonic()
    while written < cfg.episodes:
        s = sim.read_states()
        X = s.states()
        fallen = np.asarray(sim.fallen(s), dtype=bool)
        done: list[int] = []
        for i, ep in enumerate(eps):
            k = len(ep)
            if k == 0:
                continue
            # reward of the previous tick (sample k - 1), at the state it led to
            rew, cost = state_reward_cost(X[i], s.base_lin_vel[i], ep.rows["cond"][k - 1])
            ep.rows["rew"].append(rew)
            ep.rows["cost"].append(cost)
            if fallen[i] or k >= T:
                done.append(i)
        if done:
            for i in done:
                if written < cfg.episodes:
                    writer.append(eps[i].to_episode(terminal=bool(fallen[i])))
                    written += 1
                    falls += int(bool(fallen[i]))
                    samples += len(eps[i])
                    if progress is not None:
                        progress(written, cfg.episodes)
            if written >= cfg.episodes:
                break
            sim.reset(done)
            t_now = sim.now()
            for i in done:
                eps[i] = _Episode(next_index, cfg.seed, t_now, policies[i], cfg.episode_duration)
                next_index += 1
            s = sim.read_states()  # the reset robots moved
            X = s.states()
        q = np.zeros((n_env, NUM_JOINTS))
        dq, kp, kd, tau = (np.zeros((n_env, NUM_JOINTS)) for _ in range(4))
        for i, ep in enumerate(eps):
            st = s.env(i)
            t = sim.now() - ep.t0
            c = ep.schedule.at(t)
            target, low = _act(ep.policy, st, c, t)
            # as sim.collect: targets in the command filter's band, the noise on the executed one
            target = clamp_target(target)
            executed = np.where(np.asarray(low.kp) > 0, target, np.asarray(low.q, dtype=np.float64))
            if cfg.action_noise > 0:
                executed = clamp_target(target + ep.noise.normal(0.0, cfg.action_noise, NUM_JOINTS))
            q[i], dq[i], kp[i], kd[i], tau[i] = executed, low.dq, low.kp, low.kd, low.tau
            r = ep.rows
            r["obs"].append(X[i])
            r["act"].append(target_to_action(target))
            r["cond"].append(build_condition(c))
            for name in RAW_FIELDS:
                r[name].append(getattr(st, name))
            r["target_executed"].append(executed)
            r["time"].append(t)
            r["noise_level"].append(cfg.action_noise)
        sim.write_commands(q, dq, kp, kd, tau)
        sim.step(int(sim.decimation))
    wall = time.monotonic() - wall0
    return {"episodes": written, "falls": falls, "samples": samples, "num_envs": n_env,
            "wall_s": round(wall, 3), "samples_per_s": round(samples / wall, 1) if wall > 0 else None,
            "next_episode": next_index}


def raw_shapes() -> dict[str, tuple[int, ...]]:
    """The raw/ fields: the MuJoCo collector's names and shapes, so the datasets can be mixed."""
    from sim.collect import RAW_SHAPES

    return dict(RAW_SHAPES)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sim.isaac_collect",
                                description="Collect Go2 episodes in Isaac Lab (vectorized, headless).")
    p.add_argument("--out", default="data/go2_isaac.h5", help="output HDF5 (default data/go2_isaac.h5)")
    p.add_argument("--num-envs", type=int, default=64, help="robots simulated at once (default 64)")
    p.add_argument("--episodes", type=int, default=128, help="episodes to write (default 128)")
    p.add_argument("--episode-duration", type=float, default=20.0, help="s per episode (default 20)")
    p.add_argument("--action-noise", type=float, default=0.05, help="std (rad) of the executed-target noise")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--expert", default=DEFAULT_EXPERT, help=f"module:attr of the policy (default {DEFAULT_EXPERT})")
    p.add_argument("--task", default="Isaac-Velocity-Flat-Unitree-Go2-v0")
    p.add_argument("--device", default="cuda:0")
    p.add_argument("--randomize", action="store_true", help="keep the task's base-mass/CoM randomization")
    p.add_argument("--gui", action="store_true", help="open the Isaac Sim window (default headless)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--append", action="store_true", help="add episodes to an existing file")
    g.add_argument("--overwrite", action="store_true", help="replace an existing file")
    p.add_argument("--json", action="store_true", help="print one JSON report on stdout")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from planner_runtime.dataset import DatasetError, DatasetWriter
    from planner_runtime.provenance import utc_stamp

    out = Path(args.out)
    if out.exists() and not (args.append or args.overwrite):
        print(f"error: {out} exists; pass --append or --overwrite", file=sys.stderr)
        return 2
    try:
        make_policy = load_expert(args.expert)
        cfg = CollectConfig(episodes=args.episodes, episode_duration=args.episode_duration,
                            action_noise=args.action_noise, seed=args.seed).validate()
    except (ValueError, ImportError, AttributeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        from sim import isaac_harness as ih
    except ImportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if out.exists() and args.append:
        from planner_runtime.dataset import load_dataset

        try:  # episode seeds continue after the episodes already in the file
            cfg.first_episode = sum(1 for _ in load_dataset(out, load_raw=False, checksum=False).episodes())
        except DatasetError as exc:
            print(f"error: cannot append: {exc}", file=sys.stderr)
            return 2
    sim = ih.IsaacGo2Sim(ih.IsaacConfig(task=args.task, num_envs=args.num_envs, device=args.device,
                                        headless=not args.gui, seed=args.seed, randomize=args.randomize))
    provenance = {
        "collector": "sim.isaac_collect", "simulator": "isaaclab", "isaaclab_version": ih.isaaclab_version(),
        "task": args.task, "num_envs": args.num_envs, "physics_dt": sim.physics_dt,
        "motor_law": "firmware PD every physics step (sim.isaac_mapping.firmware_pd_torque)",
        "expert": args.expert, "config": asdict(cfg), "randomize": args.randomize,
        "observation_spec": observation_spec(),
        "reward": "robot.observation.reward_cost at the state after each tick",
        "actions": "target_to_action(clean target); raw/target_executed = noisy target sent",
    }
    if out.exists() and args.overwrite:
        out.unlink()  # only now: a failed Isaac Sim start leaves the old file alone
    try:
        writer = DatasetWriter(out, list(STATE_NAMES), list(ACTION_NAMES), list(CONDITION_NAMES), POLICY_DT,
                               robot="go2", provenance=provenance, raw_shapes=raw_shapes())
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sim.close()
        ih.close_app()
        return 2
    try:
        with writer:
            report = collect(sim, writer, make_policy, cfg,
                             progress=None if args.json else lambda n, tot: print(f"\r{n}/{tot} episodes",
                                                                                 end="", file=sys.stderr))
            writer.update_provenance(last_run={**report, "finished_utc": utc_stamp()})
    finally:
        sim.close()
        ih.close_app()
    report["out"] = str(out)
    if args.json:
        print(json.dumps(report))
    else:
        print(f"\nwrote {report['episodes']} episodes ({report['samples']} samples, {report['falls']} falls) "
              f"to {out} in {report['wall_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
