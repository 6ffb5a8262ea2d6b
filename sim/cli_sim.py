"""`planner-runtime sim`: the MuJoCo Go2 as a self-contained episode runner with the expert
trot (falls, speeds, tracking errors; ``--plot`` writes a PNG), or, with ``--dds``, as a
stand-in robot speaking the Go2's DDS topics (``sim.dds_robot``)."""

from __future__ import annotations

import argparse
import json
import sys
import time

from sim.physics import add_model_argument, check_model_argument

HELP = "MuJoCo Go2: run expert episodes and report metrics, or stand in for the robot (--dds)"


def _dds_module():
    try:
        from sim import dds_robot
    except ImportError:
        return None
    return dds_robot


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--episodes", type=int, default=5, help="number of episodes (default 5)")
    p.add_argument("--duration", type=float, default=20.0, help="episode length in s (default 20)")
    p.add_argument("--seed", type=int, default=0, help="base seed: episode i uses seed + i")
    p.add_argument("--command", type=float, nargs=3, metavar=("VX", "VY", "YAW"), default=None,
                   help="constant command; default: random schedules (vx -0.3..0.8, vy +/-0.2, "
                        "yaw +/-0.8, new command every 2-5 s)")
    p.add_argument("--pushes", action="store_true", help="random 30-100 N pushes every 3-6 s")
    add_model_argument(p)
    p.add_argument("--expert", choices=("trot", "ppo"), default="trot",
                   help="the policy of the episodes: the trot expert or the PPO walking policy")
    p.add_argument("--randomize", action="store_true", help="randomize physics per episode (sim.physics.RANDOMIZED)")
    p.add_argument("--friction", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                   help="foot friction range (default: the model's)")
    p.add_argument("--mass-delta", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                   help="kg added to the trunk, sampled per episode")
    p.add_argument("--sensor-noise", type=float, default=0.0, help="sensor noise scale (1 = typical)")
    p.add_argument("--expert-config", default=None, metavar="JSON",
                   help='expert parameter overrides, e.g. \'{"integrate_after": 0.6}\' (sim.expert.ExpertConfig)')
    p.add_argument("--settle", type=float, default=1.0,
                   help="s after each command change excluded from tracking errors")
    p.add_argument("--plot", metavar="PNG", default=None,
                   help="write commanded vs measured velocity and torso tilt of episode 0")
    p.add_argument("--json", action="store_true", help="print one JSON object with the metrics")
    dds = _dds_module()
    p.add_argument("--dds", action="store_true",
                   help="run as a stand-in Go2 on DDS (rt/lowstate, rt/lowcmd) instead of episodes"
                        + ("" if dds is not None else " [unavailable: sim.dds_robot not installed]"))
    if dds is not None and hasattr(dds, "add_arguments"):
        dds.add_arguments(p)


def run(args: argparse.Namespace) -> int:
    if getattr(args, "dds", False):
        dds = _dds_module()
        if dds is None:
            print("error: --dds needs sim.dds_robot, which is not available in this install", file=sys.stderr)
            return 2
        return int(dds.run(args) or 0)

    import numpy as np

    from planner_runtime.config import from_mapping
    from robot.controller import CommandSchedule
    from sim.collect import make_expert
    from sim.commands import random_schedule
    from sim.episode import aggregate, episode_metrics, expert_policy, run_episode
    from sim.eval_config import EvalConfig
    from sim.evaluate import physics_ranges
    from sim.mujoco_harness import MujocoGo2, SimConfig

    err = check_model_argument(args.model)
    if err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        overrides = json.loads(args.expert_config) if args.expert_config else None
        make_expert(args.expert, overrides=overrides)
        ranges = physics_ranges(from_mapping(EvalConfig, {"randomize": args.randomize, "friction": args.friction,
                                                          "mass_delta": args.mass_delta}, "planner-runtime sim options"))
    except (ValueError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.episodes < 1 or args.duration <= 0:
        print("error: --episodes must be >= 1 and --duration > 0", file=sys.stderr)
        return 2
    per_ep, traces = [], []
    t0 = time.perf_counter()
    for i in range(args.episodes):
        seed = args.seed + i
        cfg = SimConfig(seed=seed, model=args.model, physics=ranges,
                        sensor_noise=args.sensor_noise, push_interval=(3.0, 6.0) if args.pushes else None)
        robot = MujocoGo2(cfg)
        if args.command is not None:
            sched = CommandSchedule.constant(*args.command)
        else:
            sched = random_schedule(np.random.default_rng(10_000 + seed), args.duration)
        tr = run_episode(robot, expert_policy(make_expert(args.expert, overrides=overrides)), sched, args.duration)
        m = episode_metrics(tr, settle=args.settle)
        m.update(seed=seed, pushes=len(robot.pushes), physics=robot.physics.as_dict())
        per_ep.append(m)
        if i == 0:
            traces.append(tr)
        if not args.json:
            status = f"FELL at {m['fall_time']:.2f} s" if m["fell"] else "ok"
            print(f"episode {i} seed {seed}: {status}  "
                  f"mean vx {m['mean_vx_settled']:+.3f}  stride rmse vx {m['stride_vx_rmse']:.3f} "
                  f"vy {m['stride_vy_rmse']:.3f} yaw {m['stride_yaw_rmse']:.3f}  max tilt {m['max_tilt_deg']:.1f} deg")
    wall = time.perf_counter() - t0
    out = aggregate(per_ep)
    out.update(wall_s=wall, realtime_factor=out["sim_seconds"] / wall, command=args.command,
               pushes=bool(args.pushes), per_episode=per_ep)
    if args.plot:
        from sim.plots import plot_episode

        out["plot"] = str(plot_episode(traces[0], args.plot,
                                       title=f"Go2 {args.expert} on {args.model}, seed {args.seed}"))
    if args.json:
        print(json.dumps(out))
    else:
        print(f"{out['episodes']} episodes, {out['falls']} falls, mean settled vx {out['mean_vx_settled']:+.3f} m/s, "
              f"stride rmse vx {out['stride_vx_rmse']:.3f} vy {out['stride_vy_rmse']:.3f} "
              f"yaw {out['stride_yaw_rmse']:.3f}, max tilt {out['max_tilt_deg']:.1f} deg, "
              f"{out['realtime_factor']:.1f}x real time" + (f", plot {out['plot']}" if args.plot else ""))
    return 1 if out["falls"] else 0
