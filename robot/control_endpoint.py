"""The controller's local control endpoint: resume after a latched fault, stop, status.

``planner-runtime controller --control ipc:///run/go2-controller.sock`` (or a loopback
``tcp://127.0.0.1:PORT``) binds a ZeroMQ REP socket that the control loop polls once per
tick without blocking (no thread: the loop is the only user of the safety state machine).
A request is one JSON object, the reply one JSON object:

    {"cmd": "status"}   -> {"ok": true, "mode": ..., "fault": ..., "resumable": ...,
                            "planning_s": seconds since planning began, or null}
    {"cmd": "resume"}   -> {"ok": true, "mode": "stand_up", "after": FAULT}  (applied this tick)
                           {"ok": false, "refused": WHY}  (not in damping, state stale, tilted ...)
    {"cmd": "stop"}     -> {"ok": true, "mode": "damping"}  (a resumable operator stop)
    {"cmd": "stats"}    -> {"ok": true, "ticks", "mode", "period_ms", "plan_age_ms", "counts", ...}
                           loop period and plan age since the previous "stats" (robot/soak.py)
    {"cmd": "velocity", "vx": 0.5, "vy": 0.0, "yaw": 0.2}
                        -> {"ok": true, "command": [vx, vy, yaw] as clamped, "clamped": bool,
                            "timeout_s": S}  (with `controller --command-source endpoint`; the
                           command lapses to zero unless renewed within S: robot/live_command.py)
                           {"ok": false, "refused": WHY}  (another command source, non-finite)

From a shell: ``python -m robot.control_endpoint resume ipc:///run/go2-controller.sock``
(prints the reply; exit status 0 when ok, 1 when refused, 2 without an answer), or
``python -m robot.control_endpoint velocity EP --vx 0.5 --yaw 0.2``.
Only loopback and ipc:// endpoints are accepted: whoever can reach this socket can make the
robot stand up.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import zmq

log = logging.getLogger("robot.control_endpoint")
MAX_REQUEST_BYTES = 4096


class ControlEndpoint:
    """A REP socket the controller polls each tick (``poll``)."""

    def __init__(self, endpoint: str, context: zmq.Context | None = None) -> None:
        from planner_runtime.server import is_loopback_endpoint

        if not is_loopback_endpoint(endpoint):
            raise ValueError(f"control endpoint {endpoint!r} must be ipc:// or loopback tcp:// "
                             "(anyone who reaches it can stand the robot up)")
        self._ctx = context or zmq.Context.instance()
        self.sock = self._ctx.socket(zmq.REP)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.MAXMSGSIZE, MAX_REQUEST_BYTES)
        try:
            self.sock.bind(endpoint)
        except zmq.ZMQError as exc:
            self.sock.close(0)
            raise ValueError(f"cannot bind the control endpoint {endpoint}: {exc}") from exc
        self.endpoint = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.requests = 0

    def poll(self, ctl: Any, state: Any, state_age: float) -> None:
        """Answer at most one waiting request (non-blocking)."""
        if not self.sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            return
        try:
            data = self.sock.recv(zmq.NOBLOCK)
        except zmq.Again:
            return
        self.requests += 1
        try:
            reply = self.handle(ctl, json.loads(data), state, state_age)
        except (ValueError, TypeError, AttributeError) as exc:
            reply = {"ok": False, "error": f"bad request: {exc}"}
        self.sock.send(json.dumps(reply).encode(), zmq.NOBLOCK)

    @staticmethod
    def handle(ctl: Any, req: Any, state: Any, state_age: float) -> dict[str, Any]:
        from robot.safety import Mode

        if not isinstance(req, dict) or not isinstance(req.get("cmd"), str):
            raise ValueError('expected {"cmd": "status" | "resume" | "stop" | "stats" | "velocity"}')
        sm = ctl.safety
        cmd = req["cmd"]
        if cmd == "status":
            return {"ok": True, "mode": sm.mode.value, "fault": sm.fault,
                    "resumable": sm.fault_resumable if sm.fault else None, "resumes": len(sm.resumes),
                    "planning_s": ctl.planning_s()}
        if cmd == "resume":
            problem = sm.resume_problem(state, state_age)
            if problem is not None:
                log.warning("control endpoint: resume refused: %s", problem)
                return {"ok": False, "mode": sm.mode.value, "refused": problem}
            after = sm.fault
            ctl.request_resume("control endpoint")  # applied by this tick's safety step
            return {"ok": True, "mode": Mode.STAND_UP.value, "after": after}
        if cmd == "stats":
            return {"ok": True, **ctl.window_stats()}
        if cmd == "stop":
            ctl.request_stop("operator stop (control endpoint)")
            return {"ok": True, "mode": Mode.DAMPING.value}
        if cmd == "velocity":
            try:
                got, clamped = ctl.set_velocity([req.get(k) for k in ("vx", "vy", "yaw")])
            except ValueError as exc:
                return {"ok": False, "refused": str(exc)}
            return {"ok": True, "command": got.tolist(), "clamped": clamped, "timeout_s": ctl.command.timeout_s}
        raise ValueError(f"unknown cmd {cmd!r} (status, resume, stop, stats, velocity)")

    def close(self) -> None:
        self.sock.close(0)


def send(endpoint: str, cmd: str, timeout: float = 2.0, **fields: Any) -> dict[str, Any] | None:
    """Send one command (with ``fields``, e.g. vx=0.5) to a controller's control endpoint;
    its reply, or None on timeout."""
    ctx: zmq.Context = zmq.Context.instance()
    s = ctx.socket(zmq.REQ)
    s.setsockopt(zmq.LINGER, 0)
    try:
        s.connect(endpoint)
        s.send(json.dumps({"cmd": cmd, **fields}).encode())
        if not s.poll(int(timeout * 1000)):
            return None
        return json.loads(s.recv())
    finally:
        s.close(0)


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m robot.control_endpoint",
                                 description="send a command to a running `planner-runtime controller --control EP`")
    ap.add_argument("cmd", choices=["status", "resume", "stop", "stats", "velocity"])
    ap.add_argument("endpoint")
    ap.add_argument("--timeout", type=float, default=2.0)
    for k, what in (("vx", "m/s forward"), ("vy", "m/s left"), ("yaw", "rad/s counter-clockwise")):
        ap.add_argument(f"--{k}", type=float, default=0.0, help=f"velocity: {what} (default 0)")
    ap.add_argument("--for", dest="hold_s", type=float, default=0.0, metavar="S",
                    help="velocity: keep sending it for S s, --rate times a second (a command lapses to "
                         "zero unless renewed: the controller's --command-timeout); default: once")
    ap.add_argument("--rate", type=float, default=10.0, metavar="HZ", help="with --for (default 10)")
    args = ap.parse_args(argv)
    fields = {k: getattr(args, k) for k in ("vx", "vy", "yaw")} if args.cmd == "velocity" else {}
    if not (args.rate > 0 and args.hold_s >= 0):
        ap.error("--rate must be > 0 and --for >= 0")
    import time

    end = time.monotonic() + (args.hold_s if args.cmd == "velocity" else 0.0)
    while True:
        t = time.monotonic()
        reply = send(args.endpoint, args.cmd, args.timeout, **fields)
        if reply is None or not reply.get("ok") or t >= end:
            break
        time.sleep(max(0.0, t + 1.0 / args.rate - time.monotonic()))
    if reply is None:
        print(json.dumps({"ok": False, "error": f"no answer from {args.endpoint} within {args.timeout} s"}))
        return 2
    print(json.dumps(reply))
    return 0 if reply.get("ok") else 1


if __name__ == "__main__":
    raise SystemExit(main())
