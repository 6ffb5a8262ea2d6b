"""`planner-runtime controller`: the Go2 controller loop and its safety state machine.

Talks to the robot over DDS (unitree_sdk2py: rt/lowstate, rt/lowcmd) or, with --sim, to an
in-process MuJoCo Go2 paced in real time, and to the planner service over ZeroMQ. Without
--planner it only stands up and (after --startup-wait) goes to damping: a safe bring-up
check. SIGINT / SIGTERM send the robot to damping, then it exits.

Before any motion: the planner is negotiated (robot profile out, engine identity back; a
mismatch keeps the robot out of planning, exit status 3), the Go2's sport mode is released
when asked (--release-sport-mode), and another publisher of rt/lowcmd refuses the start.
Faults latch (--on-fault latch, the default): after a fault or the remote's L2+B the robot
stays in damping, the controller keeps running, and an operator resumes with the remote's
L2+A, `python -m robot.control_endpoint resume EP` (--control EP) or SIGUSR1.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Any

import numpy as np

from planner_runtime.scheduling import priority_arg

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
    p.add_argument("--command-source", choices=["schedule", "remote", "endpoint"], default="schedule",
                   help="where the velocity command comes from: --command / --schedule (default), the "
                        "Go2's wireless remote sticks (left: vx, vy; right: yaw), or a program over the "
                        "--control endpoint ({\"cmd\": \"velocity\", ...}); live commands are clamped to "
                        "the engine's data range and --command-limits (robot/live_command.py)")
    p.add_argument("--command-limits", type=float, nargs=4, default=None,
                   metavar=("VX_MIN", "VX_MAX", "VY_MAX", "YAW_MAX"),
                   help="narrow live commands further (m/s, m/s, m/s, rad/s; vy and yaw symmetric); "
                        "required when the engine states no command range")
    p.add_argument("--command-timeout", type=float, default=0.5, metavar="S",
                   help="an endpoint velocity command lapses to zero after S s without renewal (default 0.5)")
    p.add_argument("--chunk", type=int, default=None,
                   help="at most this many actions of a chunk are executed (default: the engine's "
                        "chunk size from the planner's metadata, else 4)")
    from planner_runtime.chunking import add_chunking_arguments

    add_chunking_arguments(p)
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
    p.add_argument("--on-fault", choices=("latch", "exit"), default="latch",
                   help="after a fault took the robot to damping: latch (default; stay in damping until "
                        "an operator resumes: remote L2+A, --control, SIGUSR1; or --duration / a "
                        "signal ends the run) or exit (0.5 s later, for scripted runs)")
    p.add_argument("--control", default=None, metavar="ENDPOINT",
                   help="local control endpoint (ZeroMQ REP, ipc:// or loopback tcp://) for "
                        "`python -m robot.control_endpoint resume|stop|status ENDPOINT`")
    p.add_argument("--release-sport-mode", action="store_true",
                   help="before publishing, release the Go2's sport mode through its motion "
                        "switcher (unitree_sdk2py MotionSwitcherClient); a --dry-run only checks it")
    p.add_argument("--lowcmd-check", type=float, default=1.0, metavar="S",
                   help="s of DDS discovery looking for another rt/lowcmd publisher before "
                        "publishing (one found: refuse to start; default 1.0; 0 skips the check)")
    p.add_argument("--rt-priority", type=priority_arg, default=None,
                   help="run the loop under SCHED_FIFO with this priority (1-99; needs root or "
                        "CAP_SYS_NICE); recommended on the robot")
    p.add_argument("--cpus", default=None, metavar="LIST",
                   help="pin the controller (its loop and DDS's threads) to these CPUs, e.g. 1; on "
                        "the robot's computer keep them apart from the planner service's (serve "
                        "--cpus) so a real-time loop never preempts the planner")
    p.add_argument("--timing-out", default=None, metavar="NPZ",
                   help="write the loop periods and plan turnarounds here at exit (what "
                        "`planner-runtime eval --timing-trace` replays in lockstep)")
    p.add_argument("--record", default=None, metavar="OUT.h5",
                   help="write the run as a dataset at exit: the state at every policy tick while "
                        "planning, its command, the action executed, reward and tilt cost (the base "
                        "velocity from the robot, else the velocity estimator); needs h5py "
                        "(`planner-runtime dataset info OUT.h5`, `train --data OUT.h5`); while it "
                        "runs every tick is also appended to OUT.h5.journal, removed at exit")
    p.add_argument("--recover", default=None, metavar="OUT.h5",
                   help="write OUT.h5 from the journal (OUT.h5.journal) of a --record run whose "
                        "process died before it could, then exit; touches no robot")
    p.add_argument("--json", action="store_true", help="print one JSON summary object on stdout")


def _schedule(args):
    from robot.controller import CommandSchedule

    live = args.command_source != "schedule"
    if live and (args.command is not None or args.schedule is not None):
        raise ValueError(f"--command-source {args.command_source} takes the command live: give no "
                         "--command / --schedule")
    if live and args.command_source == "endpoint" and not args.control:
        raise ValueError("--command-source endpoint needs --control ENDPOINT (where commands arrive)")
    if not live and args.command_limits is not None:
        raise ValueError("--command-limits applies to live commands (--command-source remote|endpoint)")
    return CommandSchedule.from_options(args.command, args.schedule) or CommandSchedule()


def _live_command(args, meta: dict | None):
    """The live command source (``--command-source remote|endpoint``), clamped to the range
    of the engine's training data (``condition_range`` in the service's metadata) and to
    ``--command-limits``; None for a schedule. ValueError when no limit is known."""
    from robot.live_command import CommandLimits, LiveCommand

    if args.command_source == "schedule":
        return None
    engine = CommandLimits.from_condition_range((meta or {}).get("condition_range"))
    user = CommandLimits.from_option(args.command_limits) if args.command_limits is not None else None
    if engine is None and user is None:
        raise ValueError("--command-source " + args.command_source + ": the planner states no command range "
                         "for its engine (no --planner, or a normalizer other than min-max); give "
                         "--command-limits VX_MIN VX_MAX VY_MAX YAW_MAX")
    limits = engine.intersect(user) if engine is not None else user
    assert limits is not None
    return LiveCommand(args.command_source, limits, timeout_s=args.command_timeout)


def run(args: argparse.Namespace) -> int:
    from robot import go2_constants as go2
    from robot.controller import Controller, ControllerConfig, ServiceLink
    from robot.safety import SafetyConfig

    log = logging.getLogger("robot.cli_controller")
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                            format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.recover:
        return _recover(args)
    # Every safety transition is logged, whatever the global verbosity.
    logging.getLogger("robot").setLevel(min(logging.INFO, logging.getLogger().getEffectiveLevel()))
    try:
        schedule = _schedule(args)
        if args.timing_out and not Path(args.timing_out).resolve().parent.is_dir():
            raise ValueError(f"--timing-out {args.timing_out}: its folder does not exist")
        if args.record:
            if args.dry_run:
                raise ValueError("--record with --dry-run: the actions would be recorded as executed, "
                                 "and a dry run executes none")
            _check_record_path(args.record)
        safety = SafetyConfig(passive_s=args.passive, stand_up_s=args.stand_up, grace_s=args.grace, hold_s=args.hold, stand_timeout_s=args.stand_timeout,
                              startup_wait_s=args.startup_wait, state_timeout_s=args.state_timeout)
        chunk = args.chunk or go2.CHUNK_SIZE
        config = ControllerConfig(max_actions=chunk, replan_every=args.replan_every,
                                  realtime=True, safety=safety, merge=args.merge,
                                  start_state=args.start_state, fixed_delay=args.delay_ticks).validate()
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    estimator = None
    try:
        from robot.velocity_estimator import VelocityEstimator

        path = args.velocity_estimator or Path(__file__).with_name("assets") / "velocity_estimator.npz"
        if args.velocity_estimator or Path(path).is_file():
            estimator = VelocityEstimator(path)
    except (OSError, ValueError) as exc:
        print(f"error: velocity estimator: {exc}", file=sys.stderr)
        return 2
    if args.record and estimator is None and not args.sim:
        print("error: --record labels each tick's reward with the base velocity, which the robot does not "
              "measure: give --velocity-estimator NPZ (the shipped robot/assets/velocity_estimator.npz is "
              "missing)", file=sys.stderr)
        return 2
    from planner_runtime.scheduling import pin_cpus

    try:
        cpus = pin_cpus(args.cpus)  # before DDS starts its threads: they inherit the CPU set
    except (ValueError, OSError) as exc:
        print(f"error: --cpus {args.cpus!r}: {exc}", file=sys.stderr)
        return 2
    if args.rt_priority is not None:
        from planner_runtime.scheduling import set_realtime

        got = set_realtime(args.rt_priority)  # before DDS starts its threads, so they inherit the policy
        (log.info if got.startswith("SCHED_FIFO") else log.warning)("real-time scheduling: %s", got)
    elif not (args.sim or args.dry_run):
        log.warning("the 500 Hz loop runs at normal priority: under CPU load it runs late "
                    "(docs/benchmarks.md#controller-loop); on the robot give it --rt-priority N")
    planner = None
    robot = None
    control = None
    negotiated = True
    extra: dict = {}
    meta: dict | None = None
    try:
        if args.planner:
            from robot.controller import go2_profile, identity_line

            planner = ServiceLink(args.planner, profile=go2_profile())
            try:
                neg = planner.negotiate(timeout=10.0)
            except Exception as exc:
                raise RuntimeError(f"planner service at {args.planner} did not answer: {exc}") from exc
            if neg.ok and neg.contract is not None:
                contract = neg.contract
                config.semantics, config.condition_names = contract.semantics, contract.condition_names
                config.validate()  # the planning PD gains follow the engine's semantics
                log.info("engine action semantics %s: kp %.1f kd %.2f; condition %d values",
                         config.semantics.name, config.semantics.kp, config.semantics.kd,
                         len(config.condition_names))
                meta = neg.meta
                if args.chunk is None and isinstance(meta.get("chunk"), int) and meta["chunk"] >= 1:
                    # The engine's manifest is the authority on how many actions a plan is good for.
                    config.max_actions = meta["chunk"]
                if isinstance(meta.get("send_steps"), int):
                    config.horizon = meta["send_steps"]  # rows per chunk: the admission rule
                log.info("planner %s: %s engine, H=%s chunk=%s", args.planner, meta.get("graph"),
                         meta.get("horizon"), meta.get("chunk"))
            else:
                negotiated = False  # the link refuses to plan; the robot stands, then damps
            log.warning("planner engine identity: %s", identity_line(neg.identity))
        # (a refused engine never plans: its missing range is not what to report then)
        live = _live_command(args, meta) if negotiated or args.command_limits is not None else None
        if live is not None:
            log.warning("velocity command live from the %s, clamped to vx %.2f..%.2f m/s, vy %.2f..%.2f m/s, "
                        "yaw %.2f..%.2f rad/s (%s)", "wireless remote" if live.source == "remote" else
                        "control endpoint", live.limits.lo[0], live.limits.hi[0], live.limits.lo[1],
                        live.limits.hi[1], live.limits.lo[2], live.limits.hi[2], live.limits.source)
            schedule = live
        elif meta is not None:
            from robot.live_command import CommandLimits

            data = CommandLimits.from_condition_range(meta.get("condition_range"))
            if data is not None:
                outside = [c for c in schedule.commands if not np.array_equal(data.clamp(c)[0], c)]
                if outside:
                    log.warning("the command schedule asks for %s, outside the commands the engine was "
                                "trained on (vx %.2f..%.2f, vy %.2f..%.2f, yaw %.2f..%.2f): what it plans "
                                "there was never measured", [c.round(3).tolist() for c in outside],
                                data.lo[0], data.hi[0], data.lo[1], data.hi[1], data.lo[2], data.hi[2])
        if args.control:
            from robot.control_endpoint import ControlEndpoint

            control = ControlEndpoint(args.control)
            log.warning("control endpoint %s (resume | stop | status | stats | velocity)", control.endpoint)
        if args.sim:
            from robot.interface import load_simulator

            if args.dry_run:
                raise ValueError("--dry-run applies to the DDS robot; --sim writes no motor commands anyway")
            if args.release_sport_mode:
                raise ValueError("--release-sport-mode applies to the DDS robot")
            robot = load_simulator("mujoco")(args.model, go2.LYING_JOINT_POS if args.start_pose == "lying" else None)
            if planner is not None:
                planner.robot_clock = robot.now  # the simulator's time, not the client's monotonic one
        else:
            from robot.dds_bridge import DdsRobot, init_channels

            init_channels(args.domain_id, args.iface)
            if args.release_sport_mode:
                from robot.sport_mode import release_sport_mode

                extra["sport_mode"] = release_sport_mode(dry_run=args.dry_run)
            robot = DdsRobot(args.domain_id, args.iface, dry_run=args.dry_run,
                             check_state_crc=not args.no_state_crc, lowcmd_check_s=args.lowcmd_check)
            robot.wait_for_state(timeout=5.0)
    except Exception as exc:
        print(f"error: {exc}", file=sys.stderr)
        if planner is not None:
            planner.close()
        if control is not None:
            control.close()
        return 2

    ctl = Controller(robot, planner, schedule, config, velocity_estimator=estimator)
    ctl.control = control
    if args.record:
        from robot.observation import ACTION_DIM, STATE_DIM
        from robot.recording import ClosedLoopRecorder, RecordJournal, journal_path

        t0 = robot.now()
        try:
            journal = RecordJournal(journal_path(args.record), STATE_DIM, ACTION_DIM, t0, _policy_dt(ctl),
                                    config.semantics.as_dict(), _record_provenance(args, meta, estimator, t0))
        except OSError as exc:  # checked before the robot moved; raced by another writer
            print(f"error: --record {args.record}: journal: {exc}", file=sys.stderr)
            for part in (planner, control, robot):
                if part is not None:
                    part.close()
            return 2
        ctl.recorder = ClosedLoopRecorder(time_origin=t0, journal=journal)
    stops = {"n": 0}

    def _on_signal(signum, _frame):
        stops["n"] += 1
        name = signal.Signals(signum).name
        ctl.request_stop(f"signal {name}", resumable=False)
        if stops["n"] >= 3:  # the loop is stuck: leave now (the robot keeps the last command)
            raise KeyboardInterrupt

    def _on_resume(_signum, _frame):
        ctl.request_resume("SIGUSR1")

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGUSR1, _on_resume)
    try:
        summary = ctl.run(duration=args.duration,
                          damping_linger_s=None if args.on_fault == "latch" else 0.5)
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
        if control is not None:
            control.close()
        robot.close()
    if args.timing_out:
        timing: dict[str, Any] = ctl.timing()
        np.savez(args.timing_out, **timing)
    rc = 0 if negotiated else 3
    if args.record:
        try:
            summary["record"] = _write_record(args, ctl)
            log.warning("recorded %d policy ticks in %d episodes to %s", summary["record"]["samples"],
                        summary["record"]["episodes"], args.record)
        except Exception as exc:  # noqa: BLE001 - the run is over; say what was lost, do not hide the summary
            log.error("--record %s: nothing written: %s", args.record, exc)
            summary["record"] = {"path": args.record, "error": str(exc)}
            rc = rc or 4
    if hasattr(robot, "stats"):
        summary["robot"] = robot.stats()
    summary.update(extra)
    summary["cpus"] = sorted(cpus) if cpus is not None else None
    if args.json:
        print(json.dumps(summary))
    else:
        for tr in summary["transitions"]:
            print(f"t={tr['t']:.3f}  {tr['from']} -> {tr['to']}: {tr['reason']}")
        print(f"ticks {summary['ticks']}, period error median {summary['period_error_ms']['median']:.3f} ms "
              f"p99 {summary['period_error_ms']['p99']:.3f} ms; chunks {summary['counts']['chunks_accepted']}")
    return rc


def _check_record_path(path: str) -> None:
    """Refuse ``--record`` before the robot moves: an existing file or journal, a missing
    folder, no h5py."""
    from planner_runtime.dataset import DatasetError, _h5py
    from robot.recording import journal_path, new_dataset_path

    try:
        new_dataset_path(path)
        _h5py()
    except DatasetError as exc:
        raise ValueError(f"--record: {exc}") from exc
    if not Path(path).resolve().parent.is_dir():
        raise ValueError(f"--record {path}: its folder does not exist")
    if journal_path(path).exists():
        raise ValueError(f"--record {path}: {journal_path(path)} is the journal of a run that did not exit: "
                         f"write its dataset with `planner-runtime controller --recover {path}` (or remove it)")


def _policy_dt(ctl) -> float:
    return float(ctl.robot.control_dt * ctl.config.policy_decimation)


def _record_provenance(args, meta: dict | None, estimator, time_origin: float) -> dict[str, Any]:
    """What a recorded run's dataset says about where it came from (known at its start)."""
    import hashlib

    if args.sim:
        velocity = "ground truth (the simulator's)"
    else:
        digest = hashlib.sha256(estimator.path.read_bytes()).hexdigest()
        velocity = f"estimated (velocity estimator {estimator.path}, sha256 {digest})"
    return {"collector": "planner-runtime controller --record (robot/recording.py)",
            "robot": f"MuJoCo Go2 ({args.model})" if args.sim else f"DDS on {args.iface}",
            "base_velocity": velocity, "engine": (meta or {}).get("identity") or {}, "planner": args.planner,
            "time_origin_s": time_origin, "controller_argv": sys.argv[1:]}


def _write_record(args, ctl) -> dict[str, Any]:
    """The run's policy ticks as a dataset (robot.recording); what was written. The journal is
    removed once the dataset is written, or when there was nothing to write; kept otherwise
    (``--recover`` writes it later)."""
    from robot.recording import NothingRecorded, write_run

    rec = ctl.recorder
    journal = rec.journal
    assert journal is not None  # run() gives every recorder its journal
    try:
        written = write_run(args.record, rec, journal.header["semantics"], journal.header["dt"],
                            journal.header["provenance"])
    except NothingRecorded:
        journal.close(remove=True)
        raise
    except Exception as exc:
        journal.close()
        kept = journal.failed is None and journal.path.is_file()
        raise RuntimeError(f"{exc}" + (f" (the run is kept in {journal.path}: `planner-runtime controller "
                                         f"--recover {args.record}` once the cause is fixed)" if kept else "")) from exc
    journal.close(remove=True)
    return written


def _recover(args) -> int:
    """``--recover OUT.h5``: the dataset from a died run's journal."""
    from robot.recording import NothingRecorded, recover_run

    if args.record:
        print("error: --recover writes a died run's dataset and touches no robot: give no --record",
              file=sys.stderr)
        return 2
    try:
        written = recover_run(args.recover)
    except ValueError as exc:  # DatasetError (no / bad journal, file exists) and NothingRecorded
        print(f"error: --recover {args.recover}: {exc}", file=sys.stderr)
        return 4 if isinstance(exc, NothingRecorded) else 2
    if args.json:
        print(json.dumps({"record": written}))
    else:
        print(f"recovered {written['samples']} policy ticks in {written['episodes']} episodes into {written['path']}")
    return 0
