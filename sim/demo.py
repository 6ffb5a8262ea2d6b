"""`planner-runtime demo`: the whole onboard stack on the embedded default engine.

Starts three processes, exactly as on the robot except that the robot is the MuJoCo Go2
standing in on loopback DDS:

    planner-runtime serve --engine <default>          (the planner service, ZeroMQ)
    planner-runtime sim --dds --iface lo               (the simulated Go2: rt/lowstate, rt/lowcmd)
    planner-runtime controller --iface lo --planner    (500 Hz loop + safety state machine)

The controller stands the robot up, plans through a command schedule, then goes to damping.
Tracking is measured on the simulator's ground-truth base velocity (written by the stand-in
with ``--dds-trace``) over the planning phase; the demo prints the metrics and writes a plot.
Chunks are executed by the runtime's chunk rules (``--merge``, ``--start-state``,
``--replan-every``, passed to the controller). ``--cpu-hog N`` runs N busy processes beside
the stack (the load a Jetson's other work puts on the planner); ``--runs N`` repeats the whole
demo and reports the falls of all runs. Each run writes the controller's loop periods and
plan turnarounds to ``timing.npz``: ``planner-runtime eval --timing-trace RUN_DIR`` replays
them in lockstep (sim/timing_replay.py).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from robot.safety import FALL
from sim.physics import add_model_argument, check_model_argument

HELP = "service + simulated Go2 (DDS) + controller on the embedded engine: walks, reports, plots"
DEFAULT_SCHEDULE = "0:0.5,0,0;5:0.5,0,0.5;9:0.3,0.15,0;13:0.6,0,-0.4;17:0,0,0"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine", default=None, help="engine file (default: the embedded Go2 engine)")
    p.add_argument("--schedule", default=DEFAULT_SCHEDULE, metavar="T:VX,VY,YAW;...",
                   help=f"command schedule from the start of planning (default '{DEFAULT_SCHEDULE}')")
    p.add_argument("--duration", type=float, default=20.0, help="seconds of planning (default 20)")
    add_model_argument(p)
    p.add_argument("--domain-id", type=int, default=None,
                   help="DDS domain id (default: a random one in 100-199, isolated from robots)")
    p.add_argument("--port", type=int, default=None, help="planner port on 127.0.0.1 (default: free one)")
    from planner_runtime.chunking import add_chunking_arguments

    add_chunking_arguments(p)
    p.add_argument("--cpu-hog", type=int, default=0, metavar="N",
                   help="busy-loop processes running beside the stack for the whole demo (default 0)")
    p.add_argument("--rt-priority", type=int, default=None, metavar="N",
                   help="run the controller's 500 Hz loop and the simulated robot under SCHED_FIFO at "
                        "priority N (1-99; needs root or CAP_SYS_NICE), as the controller runs on the "
                        "robot, whose physics no CPU load delays; the planner service stays at normal "
                        "priority (default: all at normal priority)")
    p.add_argument("--serve-rt-priority", type=int, default=None, metavar="N",
                   help="run the planner service under SCHED_FIFO at priority N (serve --rt-priority; "
                        "below --rt-priority's, so the controller still preempts it; default: normal "
                        "priority)")
    p.add_argument("--robot-rt-priority", type=int, default=None, metavar="N",
                   help="run the simulated robot under SCHED_FIFO at priority N (default: --rt-priority): "
                        "alone, its physics keeps real time under load, as a real robot's does, while "
                        "the controller and the planner share the loaded CPU")
    for who, what in (("serve", "the planner service (serve --cpus)"), ("controller", "the controller (controller --cpus)"),
                      ("robot", "the simulated robot")):
        p.add_argument(f"--{who}-cpus", default=None, metavar="LIST",
                       help=f"pin {what} to these CPUs, e.g. 0 (default: not pinned); on the robot the "
                            "planner and the real-time controller get cores of their own")
    p.add_argument("--steer", choices=["schedule", "endpoint"], default="schedule",
                   help="how the schedule reaches the controller: as its --schedule (default), or live "
                        "over its control endpoint, 20 velocity commands a second from this process as a "
                        "navigation program would send them (controller --command-source endpoint)")
    p.add_argument("--record", action="store_true",
                   help="the controller records the run as a dataset, OUT/run.h5 (controller --record: "
                        "the base velocity from its velocity estimator, as on a robot)")
    p.add_argument("--runs", type=int, default=1, help="repeat the demo this many times (default 1)")
    p.add_argument("--out", default="demo_out", help="directory for the plot, logs and JSON (default demo_out)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def rt_flags(args: argparse.Namespace, flag: str) -> list[str]:
    """The real-time priority flag for one of the demo's processes (``--rt-priority`` for the
    controller, ``--dds-rt-priority`` for the simulated robot: ``--robot-rt-priority`` when
    given, else ``--rt-priority``), or none."""
    prio = robot_priority(args) if flag == "--dds-rt-priority" else args.rt_priority
    return _option(flag, prio)


def _option(flag: str, value: object) -> list[str]:
    """``[flag, value]`` for a child's command line, or nothing when the value is None."""
    return [] if value is None else [flag, str(value)]


def pinning(args: argparse.Namespace) -> dict[str, set[int] | None]:
    """The CPU set of each of the demo's processes (``--serve-cpus`` / ``--controller-cpus``
    / ``--robot-cpus``; None: not pinned). Raises ValueError naming the bad option."""
    from planner_runtime.scheduling import parse_cpus

    out = {}
    for who in ("serve", "controller", "robot"):
        text = getattr(args, f"{who}_cpus")
        try:
            out[who] = parse_cpus(text)
        except ValueError as exc:
            raise ValueError(f"--{who}-cpus {text!r}: {exc}") from exc
    return out


def _cpu_flag(cpus: set[int] | None) -> list[str]:
    return _option("--cpus", None if cpus is None else ",".join(map(str, sorted(cpus))))


def robot_priority(args: argparse.Namespace) -> int | None:
    """The simulated robot's SCHED_FIFO priority: --robot-rt-priority, else --rt-priority."""
    return args.rt_priority if args.robot_rt_priority is None else args.robot_rt_priority


class EndpointDriver:
    """Sends the schedule to the controller's control endpoint as live velocity commands (20 a
    second), as a navigation program would: it polls ``status`` until the controller plans,
    then sends ``schedule(t - t_planning)``, with ``t_planning`` from the status's
    ``planning_s`` (seconds since the controller began planning), so the commands follow the
    same clock as the reference the demo tracks against."""

    PERIOD_S = 0.05

    def __init__(self, endpoint: str, schedule) -> None:
        import threading

        self.endpoint, self.schedule = endpoint, schedule
        self.sent = self.refused = self.unanswered = 0
        self.t0: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from robot.control_endpoint import send

        while not self._stop.wait(self.PERIOD_S):
            if self.t0 is None:
                st = send(self.endpoint, "status", timeout=0.5)
                since = None if st is None else st.get("planning_s")
                if isinstance(since, (int, float)) and math.isfinite(since) and since >= 0:
                    self.t0 = time.monotonic() - float(since)  # at the answer: off by its transit
                else:
                    continue
            vx, vy, yaw = (float(v) for v in self.schedule(time.monotonic() - self.t0))
            reply = send(self.endpoint, "velocity", timeout=0.5, vx=vx, vy=vy, yaw=yaw)
            if reply is None:
                self.unanswered += 1
            elif reply.get("ok"):
                self.sent += 1
            else:
                self.refused += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5.0)

    def stats(self) -> dict:
        return {"sent": self.sent, "refused": self.refused, "unanswered": self.unanswered}


def _pin_child(cpus: set[int] | None):
    """A ``preexec_fn`` pinning a child to ``cpus`` before it starts (None: no pinning)."""
    return None if cpus is None else (lambda: os.sched_setaffinity(0, cpus))


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "planner_runtime.cli", *args]


def _stop(proc: subprocess.Popen, timeout: float = 10.0) -> int | None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


def _wait_ready(endpoint: str, proc: subprocess.Popen, timeout: float) -> dict:
    from planner_runtime.client import PlannerClient, wait_for_service

    with PlannerClient(endpoint, timeout=1.0) as client:
        return wait_for_service(client, proc, timeout)


def planning_window(summary: dict) -> tuple[float | None, float | None]:
    """(start, end) of the walk on the controller's monotonic clock: from the first entry
    into PLANNING until the controller leaves the planning/hold pair for good (stand or
    damping), or the end of the run. A watchdog HOLD that returns to PLANNING is part of the
    walk (a late chunk), so its metrics and a fall after it are counted."""
    start = end = None
    for tr in summary.get("transitions", []):
        if tr["to"] == "planning":
            if start is None:
                start = tr["t"]
            end = None  # back to planning: the walk goes on
        elif start is not None and tr["to"] not in ("planning", "hold") and end is None:
            end = tr["t"]
    return start, end


def walk_end(summary: dict) -> tuple[bool, str | None]:
    """How the walk ended early, if it did: (fell, reason). The controller runs its whole
    duration in planning unless the safety machine ends the walk: a damping transition whose
    reason is a fall (tilt past 60 deg) is a fall; any other damping (stale robot state, a
    command out of limits), or leaving planning for good to stand (the planner lost), is a
    safety stop, and the walk did not finish either. (False, None): the walk ran to the end."""
    _, end = planning_window(summary)
    for tr in summary.get("transitions", []):
        if tr["to"] == "damping" or (end is not None and tr["t"] == end):
            return tr["reason"].startswith(f"{FALL}:"), tr["reason"]
    return False, None


def trace_metrics(trace: dict, t0: float, t1: float | None, schedule) -> tuple[dict, object]:
    """Tracking metrics of the stand-in's ground-truth trace over [t0, t1]."""
    from sim.episode import EpisodeTrace, episode_metrics

    t = np.asarray(trace["mono"])
    sel = (t >= t0) & (t <= (t1 if t1 is not None else t[-1]))
    idx = np.flatnonzero(sel)  # the stand-in records one row per 50 Hz tick
    tt = t[idx] - t0
    cmd = np.array([schedule(x) for x in tt])
    tr = EpisodeTrace(tt, cmd, np.asarray(trace["base_lin_vel"])[idx], np.asarray(trace["gyro"])[idx],
                      np.asarray(trace["gravity_z"])[idx], np.asarray(trace["base_pos"])[idx],
                      bool(np.any(np.asarray(trace["gravity_z"])[idx] > -0.5)), None)
    m = episode_metrics(tr)
    return m, tr


def _hogs(n: int) -> list[subprocess.Popen]:
    """``n`` processes that keep a core busy (pure Python arithmetic, no I/O)."""
    code = "import os\nos.nice(0)\nx = 0\nwhile True:\n    x = (x * 1103515245 + 12345) % 2147483648\n"
    return [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL) for _ in range(max(0, n))]


def run(args: argparse.Namespace) -> int:
    from planner_runtime.scheduling import PRIORITIES

    bad_prio = any(v is not None and v not in PRIORITIES
                   for v in (args.rt_priority, args.robot_rt_priority, args.serve_rt_priority))
    if args.runs < 1 or args.cpu_hog < 0 or bad_prio:
        print("error: --runs must be >= 1, --cpu-hog >= 0 and --rt-priority / --robot-rt-priority / "
              "--serve-rt-priority in 1-99", file=sys.stderr)
        return 2
    try:
        pinning(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.runs == 1:
        return _run_once(args, Path(args.out))
    reports, codes = [], []
    say = (lambda *a: print(*a, file=sys.stderr)) if args.json else print
    for i in range(args.runs):
        out = Path(args.out) / f"run{i:02d}"
        say(f"[demo] run {i + 1}/{args.runs}")
        codes.append(_run_once(args, out, quiet=True))
        rp = out / "demo_report.json"
        reports.append(json.loads(rp.read_text()) if rp.is_file() else None)
    falls = sum(bool(r is None or r["fell"]) for r in reports)
    stops = [None if r is None else r.get("safety_stop") for r in reports]
    summary = {"runs": args.runs, "falls": falls, "cpu_hog": args.cpu_hog,
               "rt_priority": args.rt_priority, "robot_rt_priority": robot_priority(args),
               "serve_rt_priority": args.serve_rt_priority,
               "cpus": {k: None if v is None else sorted(v) for k, v in pinning(args).items()},
               "failed_to_run": sum(r is None for r in reports),
               "safety_stops": sum(s is not None for s in stops), "safety_stop_reasons": stops,
               "vx_rmse": [None if r is None else r["metrics"]["vx_rmse"] for r in reports],
               "max_tilt_deg": [None if r is None else r["metrics"]["max_tilt_deg"] for r in reports],
               "plan_age_p99_ms": [None if r is None else (r["controller"]["plan_age_ms"] or {}).get("p99")
                                   for r in reports]}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "demo_runs.json").write_text(json.dumps(summary, indent=2, default=float))
    if args.json:
        print(json.dumps(summary, default=float))
    else:
        print(f"[demo] {args.runs} runs with {args.cpu_hog} CPU hog(s): {falls} fell "
              f"({summary['failed_to_run']} did not run), {summary['safety_stops']} stopped by the "
              f"safety layer before the end; per-run vx RMSE {summary['vx_rmse']}")
        for i, s in enumerate(stops):
            if s is not None:
                print(f"[demo]   run {i}: {s}")
    return 0 if falls == 0 and summary["safety_stops"] == 0 else 1


def _run_once(args: argparse.Namespace, out: Path, quiet: bool = False) -> int:
    from planner_runtime.server import free_tcp_port
    from robot.controller import CommandSchedule
    from sim.plots import plot_episode

    try:
        engine = Path(args.engine) if args.engine else None
        if engine is None:
            from planner_runtime.engines import default_engine_path

            engine = default_engine_path()
        if not engine.is_file():
            raise FileNotFoundError(f"engine not found: {engine}")
        schedule = CommandSchedule.parse(args.schedule)
        cpus = pinning(args)
        err = check_model_argument(args.model)
        if err:
            raise FileNotFoundError(err)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    domain = args.domain_id if args.domain_id is not None else int(np.random.default_rng().integers(100, 200))
    port = args.port or free_tcp_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    trace_path = Path(tempfile.mkdtemp(prefix="demo_")) / "trace.npz"
    logs = {n: open(out / f"{n}.log", "w") for n in ("serve", "sim", "controller")}  # noqa: SIM115
    procs: dict[str, subprocess.Popen] = {}
    say = (lambda *a: print(*a, file=sys.stderr)) if args.json or quiet else print
    hogs = _hogs(args.cpu_hog)
    driver: EndpointDriver | None = None
    try:
        say(f"[demo] engine {engine}" + (f"; {args.cpu_hog} CPU hog(s) running" if hogs else ""))
        procs["serve"] = subprocess.Popen(_cli("serve", "--engine", str(engine), "--bind", endpoint,
                                               "--threads", "1", *_cpu_flag(cpus["serve"]),
                                               *_option("--rt-priority", args.serve_rt_priority)),
                                          stdout=logs["serve"],
                                          stderr=subprocess.STDOUT, env=env)
        procs["sim"] = subprocess.Popen(_cli("sim", "--dds", "--domain-id", str(domain), "--iface", "lo",
                                             "--dds-start-pose", "lying", "--dds-trace", str(trace_path),
                                             "--model", str(args.model), *rt_flags(args, "--dds-rt-priority")),
                                        stdout=logs["sim"], stderr=subprocess.STDOUT, env=env,
                                        preexec_fn=_pin_child(cpus["robot"]))
        meta = _wait_ready(endpoint, procs["serve"], timeout=60.0)
        chunk = int(meta.get("chunk") or 4)
        say(f"[demo] planner service ready at {endpoint} (chunk {chunk}); simulated Go2 on DDS domain {domain}")
        control_ep = f"ipc://{trace_path.parent}/control.sock"
        steering = (["--schedule", args.schedule] if args.steer == "schedule" else
                    ["--command-source", "endpoint", "--control", control_ep])
        ctl_cmd = _cli("controller", "--iface", "lo", "--domain-id", str(domain), "--planner", endpoint,
                       "--start-state", args.start_state,
                       *steering, "--duration", str(args.duration + 4.0), "--json",
                       "--timing-out", str(out / "timing.npz"),
                       *rt_flags(args, "--rt-priority"), *_cpu_flag(cpus["controller"]))
        for flag, v in (("--merge", args.merge), ("--replan-every", args.replan_every),
                        ("--delay-ticks", args.delay_ticks)):
            if v is not None:
                ctl_cmd += [flag, str(v)]
        if args.record:
            (out / "run.h5").unlink(missing_ok=True)  # the demo's own output: replaced, as its report is
            ctl_cmd += ["--record", str(out / "run.h5")]
        say("[demo] controller: passive -> stand-up -> planning -> damping ...")
        driver = EndpointDriver(control_ep, schedule) if args.steer == "endpoint" else None
        try:
            res = subprocess.run(ctl_cmd, capture_output=True, text=True, env=env,
                                 timeout=args.duration + 120.0)
        finally:
            if driver is not None:
                driver.stop()
        logs["controller"].write(res.stderr)
        if res.returncode != 0:
            raise RuntimeError(f"controller exited with {res.returncode}: {res.stderr[-2000:]}")
        summary = json.loads(res.stdout.strip().splitlines()[-1])
    except (RuntimeError, subprocess.TimeoutExpired, json.JSONDecodeError) as exc:
        print(f"error: {exc} (logs in {out})", file=sys.stderr)
        return 1
    finally:
        codes = {n: _stop(p) for n, p in procs.items()}
        for h in hogs:
            _stop(h, 2.0)
        for f in logs.values():
            f.close()
    if not trace_path.is_file():
        print(f"error: the simulator wrote no trace (exit codes {codes}; logs in {out})", file=sys.stderr)
        return 1
    trace = dict(np.load(trace_path))
    t0, t1 = planning_window(summary)
    if t0 is None:
        print(f"error: the controller never reached planning; transitions: {summary.get('transitions')}",
              file=sys.stderr)
        return 1
    metrics, tr = trace_metrics(trace, t0, t1, schedule)
    # A fall ends planning (the safety machine damps at tilt > 60 deg): count it as one. Any
    # other damping is a safety stop: the walk was cut short, which the report says.
    damped_fall, reason = walk_end(summary)
    metrics["fell"] = bool(metrics["fell"] or damped_fall)
    stopped = None if metrics["fell"] else reason
    png = plot_episode(tr, out / "demo_tracking.png", title=f"demo: {engine.name}")
    report = {"engine": str(engine), "schedule": args.schedule, "planning_s": float(tr.t[-1]) if len(tr.t) else 0.0,
              "fell": metrics["fell"], "safety_stop": stopped, "metrics": metrics, "controller": {
                  k: summary.get(k) for k in ("robot", "mode", "counts", "chunks_rejected", "plan_age_ms",
                                              "period_error_ms", "transitions", "tracking", "chunking")},
              "cpu_hog": args.cpu_hog, "rt_priority": args.rt_priority,
              "robot_rt_priority": robot_priority(args), "serve_rt_priority": args.serve_rt_priority,
              "steer": args.steer, "command": summary.get("command"),
              "steering_sent": None if driver is None else driver.stats(), "record": summary.get("record"),
              "cpus": {k: None if v is None else sorted(v) for k, v in cpus.items()},
              "plot": str(png), "timing": str(out / "timing.npz"), "exit_codes": codes}
    (out / "demo_report.json").write_text(json.dumps(report, indent=2, default=float))
    if quiet:
        pass
    elif args.json:
        print(json.dumps(report, default=float))
    else:
        print(f"[demo] planned for {report['planning_s']:.1f} s; fell: {metrics['fell']}"
              + (f"; stopped by the safety layer: {stopped}" if stopped else ""))
        print(f"[demo] tracking RMSE vx {metrics['vx_rmse']:.3f} m/s, vy {metrics['vy_rmse']:.3f} m/s, "
              f"yaw {metrics['yaw_rmse']:.3f} rad/s; stride-averaged vx {metrics['stride_vx_rmse']:.3f}")
        print(f"[demo] mean vx {metrics['mean_vx']:.3f} m/s, distance {metrics['distance']:.2f} m, "
              f"max tilt {metrics['max_tilt_deg']:.1f} deg, cost {metrics['cost']:.0f}")
        pa = summary.get("plan_age_ms") or {}
        if driver is not None:
            print(f"[demo] steered over the control endpoint: {driver.sent} velocity commands taken, "
                  f"{driver.refused} refused, {driver.unanswered} unanswered; the controller counted "
                  f"{(summary.get('command') or {}).get('lapses')} lapses")
        print(f"[demo] plan age at receipt median {pa.get('median', float('nan')):.1f} ms, "
              f"p99 {pa.get('p99', float('nan')):.1f} ms; chunks {summary['counts'].get('chunks_accepted')}")
        ck = summary.get("chunking") or {}
        if ck:
            print(f"[demo] chunk rules: merge {ck.get('merge')}, start state {ck.get('start_state')}, "
                  f"delay {ck.get('delay_ticks')} ticks; switch jump mean {ck.get('switch_jump_mean') or 0:.3f} "
                  f"/ max {ck.get('switch_jump_max') or 0:.3f} rad")
        print(f"[demo] plot: {png}; report: {out / 'demo_report.json'}")
    return 0 if not (metrics["fell"] or stopped) else 1
