"""`planner-runtime controller`: the Go2 controller loop and its safety state machine.

Talks to the robot over DDS (unitree_sdk2py: rt/lowstate, rt/lowcmd) or, with --sim, to an
in-process MuJoCo Go2 paced in real time, and to the planner service over ZeroMQ. Without
--planner it only stands up and (after --startup-wait) goes to damping: a safe bring-up
check. SIGINT / SIGTERM and the remote's L2+B send the robot to damping, then it exits.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys

HELP = "run the Go2 controller (DDS robot or --sim) with its safety state machine"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--iface", default="lo", help="network interface of the robot link (default lo; "
                   "the Go2's is usually eth0 / enp*)")
    p.add_argument("--domain-id", type=int, default=0, help="DDS domain id (the Go2 uses 0)")
    p.add_argument("--planner", default=None, metavar="ENDPOINT",
                   help="planner service, e.g. tcp://127.0.0.1:5555 (default: none, stand only)")
    p.add_argument("--dry-run", action="store_true",
                   help="never publish motor commands (reads the robot, runs everything else)")
    p.add_argument("--sim", action="store_true",
                   help="in-process MuJoCo Go2 (real-time paced) instead of DDS")
    p.add_argument("--duration", type=float, default=None, help="seconds to run (default: until stopped)")
    p.add_argument("--command", type=float, nargs=3, metavar=("VX", "VY", "YAW"), default=None,
                   help="constant velocity command (m/s, m/s, rad/s)")
    p.add_argument("--schedule", default=None, metavar="T:VX,VY,YAW;...",
                   help="command schedule, times from the start of planning, e.g. '0:0.5,0,0;5:0,0,0.5'")
    p.add_argument("--chunk", type=int, default=None,
                   help="at most this many actions of a chunk are executed (default: the engine's "
                        "chunk size from the planner's metadata, else 4)")
    p.add_argument("--replan-every", type=int, default=None,
                   help="policy ticks between observations sent to the planner (default: the chunk "
                        "size: execute a chunk while the next plan is computed)")
    p.add_argument("--grace", type=float, default=0.2, help="watchdog: s without a valid chunk -> hold")
    p.add_argument("--hold", type=float, default=0.5, help="watchdog: s of hold -> return to stand")
    p.add_argument("--stand-timeout", type=float, default=3.0,
                   help="watchdog: s in stand without a chunk -> damping")
    p.add_argument("--startup-wait", type=float, default=60.0,
                   help="s to wait standing for the first chunk before damping")
    p.add_argument("--passive", type=float, default=0.5, help="s of zero torque before stand-up")
    p.add_argument("--stand-up", type=float, default=2.0, help="s of the stand-up interpolation")
    p.add_argument("--state-timeout", type=float, default=0.1, help="s without robot state -> damping")
    p.add_argument("--no-state-crc", action="store_true",
                   help="accept rt/lowstate messages whose CRC does not verify")
    p.add_argument("--start-pose", choices=("lying", "stand"), default="lying", help="--sim initial pose")
    p.add_argument("--model", default="project", metavar="NAME|PATH",
                   help="--sim Go2 model: project, menagerie, menagerie-fitted or an MJCF path")
    p.add_argument("--velocity-estimator", default=None, metavar="NPZ",
                   help="base-velocity estimator weights: report tracking against its estimate "
                        "(default: robot/assets/velocity_estimator.npz when present)")
    p.add_argument("--rt-priority", type=int, default=None,
                   help="run the loop under SCHED_FIFO with this priority (1-99; needs root or "
                        "CAP_SYS_NICE); recommended on the robot")
    p.add_argument("--json", action="store_true", help="print one JSON summary object on stdout")


def _schedule(args):
    from robot.controller import CommandSchedule

    if args.schedule and args.command:
        raise ValueError("give --command or --schedule, not both")
    if args.schedule:
        return CommandSchedule.parse(args.schedule)
    if args.command:
        return CommandSchedule.constant(*args.command)
    return CommandSchedule()


def run(args: argparse.Namespace) -> int:
    from robot import go2_constants as go2
    from robot.controller import Controller, ControllerConfig, ServiceLink, check_planner_metadata
    from robot.safety import SafetyConfig

    log = logging.getLogger("robot.cli_controller")
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                            format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # Every safety transition is logged, whatever the global verbosity.
    logging.getLogger("robot").setLevel(min(logging.INFO, logging.getLogger().getEffectiveLevel()))
    try:
        schedule = _schedule(args)
        safety = SafetyConfig(passive_s=args.passive, stand_up_s=args.stand_up, grace_s=args.grace, hold_s=args.hold, stand_timeout_s=args.stand_timeout,
                              startup_wait_s=args.startup_wait, state_timeout_s=args.state_timeout)
        chunk = args.chunk or go2.CHUNK_SIZE
        config = ControllerConfig(max_actions=chunk, replan_every=args.replan_every or chunk,
                                  realtime=True, safety=safety).validate()
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    estimator = None
    try:
        from pathlib import Path

        from robot.velocity_estimator import VelocityEstimator

        path = args.velocity_estimator or Path(__file__).with_name("assets") / "velocity_estimator.npz"
        if args.velocity_estimator or Path(path).is_file():
            estimator = VelocityEstimator(path)
    except (OSError, ValueError) as exc:
        print(f"error: velocity estimator: {exc}", file=sys.stderr)
        return 2
    if args.rt_priority:
        from robot.realtime import set_realtime

        # Before DDS starts its threads, so they inherit the policy.
        log.info("real-time scheduling: %s", set_realtime(args.rt_priority))
    planner = None
    robot = None
    try:
        if args.planner:
            planner = ServiceLink(args.planner)
            try:
                meta = planner.hello(timeout=10.0)
            except Exception as exc:
                raise RuntimeError(f"planner service at {args.planner} did not answer: {exc}") from exc
            contract = check_planner_metadata(meta)
            config.semantics, config.condition_names = contract.semantics, contract.condition_names
            config.validate()  # the planning PD gains follow the engine's semantics
            log.info("engine action semantics %s: kp %.1f kd %.2f; condition %d values",
                     config.semantics.name, config.semantics.kp, config.semantics.kd,
                     len(config.condition_names))
            if args.chunk is None and isinstance(meta.get("chunk"), int) and meta["chunk"] >= 1:
                # The engine's manifest is the authority on how many actions a plan is good for.
                config.max_actions = meta["chunk"]
                config.replan_every = args.replan_every or meta["chunk"]
            log.info("planner %s: %s engine, H=%s chunk=%s", args.planner, meta.get("graph"),
                     meta.get("horizon"), meta.get("chunk"))
        if args.sim:
            from sim.mujoco_harness import MujocoGo2, SimConfig

            robot = MujocoGo2(SimConfig(model=args.model))
            robot.reset(joint_pos=go2.LYING_JOINT_POS if args.start_pose == "lying" else None)
            if args.dry_run:
                raise ValueError("--dry-run applies to the DDS robot; --sim writes no motor commands anyway")
        else:
            from robot.dds_bridge import DdsRobot

            robot = DdsRobot(args.domain_id, args.iface, dry_run=args.dry_run,
                             check_state_crc=not args.no_state_crc)
            robot.wait_for_state(timeout=5.0)
    except Exception as exc:
        print(f"error: {exc}", file=sys.stderr)
        if planner is not None:
            planner.close()
        return 2

    ctl = Controller(robot, planner, schedule, config, velocity_estimator=estimator)
    stops = {"n": 0}

    def _on_signal(signum, _frame):
        stops["n"] += 1
        name = signal.Signals(signum).name
        ctl.request_stop(f"signal {name}")
        if stops["n"] >= 3:  # the loop is stuck: leave now (the robot keeps the last command)
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    try:
        summary = ctl.run(duration=args.duration)
    finally:
        # Whatever happened, the last thing sent to the motors is damping.
        from robot.safety import damping_command

        try:
            if ctl.safety.mode.value != "passive":
                robot.write_command(damping_command())
        except Exception as exc:  # noqa: BLE001 - report, do not mask the original error
            log.error("could not send the final damping command: %s", exc)
        if planner is not None:
            planner.close()
        robot.close()
    if hasattr(robot, "stats"):
        summary["robot"] = robot.stats()
    if args.json:
        print(json.dumps(summary))
    else:
        for tr in summary["transitions"]:
            print(f"t={tr['t']:.3f}  {tr['from']} -> {tr['to']}: {tr['reason']}")
        print(f"ticks {summary['ticks']}, period error median {summary['period_error_ms']['median']:.3f} ms "
              f"p99 {summary['period_error_ms']['p99']:.3f} ms; chunks {summary['counts']['chunks_accepted']}")
    return 0
